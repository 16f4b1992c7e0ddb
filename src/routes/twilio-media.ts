import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { WebSocket } from 'ws'
import type { Config } from '../config.ts'
import type { ReconnectPolicy } from '../core/call/upstream-link.ts'
import { Heartbeat } from '../core/twilio/heartbeat.ts'
import { MediaStream } from '../core/twilio/media-stream.ts'
import { TwilioSignatures } from '../core/twilio/signature.ts'
import { admitUpgrade } from '../core/twilio/upgrade.ts'

export interface MediaRouteOptions {
  config: Config
  /** `start` must arrive within this many ms of the upgrade. Default 10000. */
  startTimeoutMs?: number | undefined
  /** Tests shorten the upstream reconnect policy. */
  reconnect?: ReconnectPolicy | undefined
  /** How long an ending call may wait for its last upstream turns, ms. */
  terminateTimeoutMs?: number | undefined
  /** WebSocket ping interval, ms. Default 20000. */
  heartbeatMs?: number | undefined
}

/** The Media Streams WebSocket: the upgrade's checks, then one MediaStream per socket. */
export default async function twilioMediaRoutes (fastify: FastifyInstance, options: MediaRouteOptions): Promise<void> {
  const { config } = options
  const { metrics, calls } = fastify
  const signatures = config.twilioSignatureCheck ? new TwilioSignatures(config.twilioAuthToken, config.publicUrl) : null
  const settings = {
    streamTokenSecret: config.streamTokenSecret,
    assemblyai: config.assemblyai,
    audioChunkMs: config.audioChunkMs,
    startTimeoutMs: options.startTimeoutMs ?? 10000,
    reconnect: options.reconnect,
    terminateTimeoutMs: options.terminateTimeoutMs
  }

  fastify.addHook('preValidation', async (request, reply) => {
    const verdict = admitUpgrade(request.headers['x-twilio-signature'], signatures, calls, metrics, fastify.events)
    if (verdict.accept) return
    if (verdict.status === 403) {
      request.log.warn('media stream upgrade refused: bad signature')
      return reply.code(403).send({ error: 'invalid Twilio signature' })
    }
    request.log.warn({ reason: verdict.reason, calls: calls.size }, 'media stream upgrade refused')
    return reply.code(503).header('retry-after', '1').send({ error: verdict.reason })
  })

  const heartbeat = new Heartbeat(options.heartbeatMs ?? 20000)
  fastify.addHook('onClose', async () => heartbeat.close())

  fastify.get('/twilio/media', { websocket: true }, (socket: WebSocket, request: FastifyRequest) => {
    const stream = new MediaStream({ socket, settings, calls, sink: fastify.events, metrics, logger: request.log })
    // The listener is attached before any await: Twilio sends `connected` and `start` at once.
    socket.on('message', (data, isBinary) => stream.onMessage(data, isBinary))
    socket.on('close', (code) => { heartbeat.delete(socket); stream.onClose(code) })
    socket.on('error', (error) => stream.onError(error))
    socket.on('pong', () => heartbeat.pong(socket))
    heartbeat.add(socket)
  })
}
