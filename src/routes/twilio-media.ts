import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { RawData, WebSocket } from 'ws'
import type { Config } from '../config.ts'
import { normalizeKeyterms } from '../core/assemblyai/protocol.ts'
import { CallSession } from '../core/call/call-session.ts'
import type { EndReason } from '../core/call/call-session.ts'
import type { ReconnectPolicy } from '../core/call/upstream-link.ts'
import type { InvalidReason } from '../core/metrics.ts'
import { parseMediaFrame } from '../core/twilio/media-fast-path.ts'
import { parseTwilioMessage } from '../core/twilio/messages.ts'
import type { StartInfo } from '../core/twilio/messages.ts'
import { validateUpgradeSignature } from '../core/twilio/signature.ts'
import { verifyStreamToken } from '../core/twilio/stream-token.ts'
import { streamUrls } from './twilio-voice.ts'

/** Twilio closes: 1000 after stop, 1001 at the drain deadline, 1008 policy, 1009 too big, 1011 internal. */
const CLOSE_FOR_REASON: Record<EndReason, number> = { completed: 1000, shutdown: 1001, stream_error: 1011, transcription_failed: 1011 }

export interface MediaRouteOptions {
  config: Config
  /** `start` must arrive within this many ms of the upgrade. Default 10000. */
  startTimeoutMs?: number
  /** Tests shorten the upstream reconnect policy. */
  reconnect?: ReconnectPolicy
  /** How long an ending call may wait for its last upstream turns, ms. */
  terminateTimeoutMs?: number
  /**
   * WebSocket ping interval, ms. Default 20000. A socket that has not answered the previous ping by
   * the next one is dead (a peer gone without a FIN) and is terminated, which ends its call.
   */
  heartbeatMs?: number
}

/** Twilio never sends a message near this; a 20 ms media frame is ~400 bytes. */
export const MAX_MESSAGE_BYTES = 64 * 1024

export default async function twilioMediaRoutes (fastify: FastifyInstance, options: MediaRouteOptions): Promise<void> {
  const { config } = options
  const { streamUrl } = streamUrls(config.publicUrl)
  const startTimeoutMs = options.startTimeoutMs ?? 10000
  const { metrics, calls } = fastify

  // Order per DESIGN.md: signature (403), then draining or capacity (503), then accept.
  fastify.addHook('preValidation', async (request, reply) => {
    if (config.twilioSignatureCheck) {
      const signature = request.headers['x-twilio-signature']
      if (!validateUpgradeSignature(config.twilioAuthToken ?? '', typeof signature === 'string' ? signature : undefined, streamUrl)) {
        metrics.streamRejections.inc({ reason: 'signature' })
        request.log.warn('media stream upgrade refused: bad signature')
        return reply.code(403).send({ error: 'invalid Twilio signature' })
      }
    }
    if (calls.draining || calls.atCapacity) {
      const reason = calls.draining ? 'draining' : 'capacity'
      metrics.streamRejections.inc({ reason })
      request.log.warn({ reason, calls: calls.size }, 'media stream upgrade refused')
      return reply.code(503).header('retry-after', '1').send({ error: reason })
    }
    if (fastify.events.accepting === false) {
      metrics.streamRejections.inc({ reason: 'outbox_unavailable' })
      request.log.warn({ reason: 'outbox_unavailable', calls: calls.size }, 'media stream upgrade refused')
      return reply.code(503).header('retry-after', '1').send({ error: 'outbox_unavailable' })
    }
  })

  // One timer for every socket of the process, not one per call.
  const alive = new Map<WebSocket, boolean>()
  const heartbeat = setInterval(() => {
    for (const [socket, answered] of alive) {
      if (!answered) {
        socket.terminate()
        continue
      }
      alive.set(socket, false)
      socket.ping()
    }
  }, options.heartbeatMs ?? 20000)
  heartbeat.unref()
  fastify.addHook('onClose', async () => clearInterval(heartbeat))

  fastify.get('/twilio/media', { websocket: true }, (socket: WebSocket, request: FastifyRequest) => {
    calls.reserve()
    const stream = new MediaStream(fastify, socket, request, options, startTimeoutMs)
    // The listener is attached before any await: Twilio sends `connected` and `start` at once.
    socket.on('message', (data, isBinary) => stream.onMessage(data, isBinary))
    socket.on('close', (code) => { alive.delete(socket); stream.onClose(code) })
    socket.on('error', (error) => stream.onError(error))
    socket.on('pong', () => { if (alive.has(socket)) alive.set(socket, true) })
    alive.set(socket, true)
  })
}

/** One Twilio WebSocket: before `start` a gatekeeper, after it the owner of a CallSession. */
class MediaStream {
  readonly #fastify: FastifyInstance
  readonly #socket: WebSocket
  readonly #request: FastifyRequest
  readonly #options: MediaRouteOptions
  #session: CallSession | null = null
  /** The stream's StreamSid as bytes, for the media fast path's in-place comparison. */
  #streamSidBytes: Buffer = Buffer.alloc(0)
  #startTimer: NodeJS.Timeout | null
  #reserved = true
  #closed = false
  readonly #invalid: Record<InvalidReason, number> = { json: 0, schema: 0, size: 0, binary: 0, order: 0, timestamp: 0 }

  constructor (fastify: FastifyInstance, socket: WebSocket, request: FastifyRequest, options: MediaRouteOptions, startTimeoutMs: number) {
    this.#fastify = fastify
    this.#socket = socket
    this.#request = request
    this.#options = options
    this.#startTimer = setTimeout(() => {
      this.#startTimer = null
      fastify.metrics.streamRejections.inc({ reason: 'start_timeout' })
      request.log.warn('media stream closed: no start message in time')
      this.#closeSocket(1008, 'start timeout')
    }, startTimeoutMs)
  }

  onMessage (data: RawData, isBinary: boolean): void {
    try {
      if (isBinary) {
        this.#countInvalid('binary')
        return
      }
      const session = this.#session
      if (session !== null && Buffer.isBuffer(data)) {
        const frame = parseMediaFrame(data)
        if (frame !== null) {
          if (data.compare(this.#streamSidBytes, 0, this.#streamSidBytes.length, frame.streamSidStart, frame.streamSidEnd) !== 0) {
            this.#countInvalid('schema')
            return
          }
          const result = session.handleMedia(frame.track, frame.timestampMs, frame.payload)
          if (result === 'backwards' || result === 'jump') this.#countInvalid('timestamp')
          return
        }
      }
      const message = parseTwilioMessage(data.toString())
      if (message.event === 'media') {
        if (session === null) {
          this.#countInvalid('order')
          this.#closeSocket(1008, 'media before start')
          return
        }
        if (message.streamSid !== session.identity.streamSid) {
          this.#countInvalid('schema')
          return
        }
        const result = session.handleMedia(message.track, message.timestampMs, message.payload)
        if (result === 'backwards' || result === 'jump') this.#countInvalid('timestamp')
        return
      }
      const { metrics } = this.#fastify
      switch (message.event) {
        case 'invalid':
          this.#countInvalid(message.reason)
          return
        case 'connected':
          metrics.twilioMessages.inc({ event: 'connected' })
          return
        case 'start':
          metrics.twilioMessages.inc({ event: 'start' })
          if (session !== null) {
            this.#countInvalid('order')
            return
          }
          this.#onStart(message.start)
          return
        case 'stop':
          metrics.twilioMessages.inc({ event: 'stop' })
          if (session === null) {
            this.#closeSocket(1000, 'stopped')
            return
          }
          void session.end('completed')
          return
        case 'mark':
        case 'dtmf':
          metrics.twilioMessages.inc({ event: message.event })
          return
        case 'unknown':
          metrics.twilioMessages.inc({ event: 'unknown' })
      }
    } catch (error) {
      // A bug in one call's handling must not reach the socket's emitter (and the process).
      this.#request.log.error({ err: error }, 'media message handling failed')
      this.#fail()
    }
  }

  onClose (code: number): void {
    this.#closed = true
    this.#clearStartTimer()
    this.#release()
    this.#flushInvalid()
    const session = this.#session
    if (session !== null && !session.ended) {
      this.#request.log.warn({ code }, 'media stream closed without stop')
      void session.end('stream_error')
    }
  }

  onError (error: Error & { code?: string }): void {
    if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      this.#countInvalid('size')
      return
    }
    this.#request.log.warn({ errCode: error.code ?? null }, 'media stream socket error')
  }

  #onStart (start: StartInfo): void {
    const { config } = this.#options
    const { metrics, calls, log } = this.#fastify
    const check = verifyStreamToken(config.streamTokenSecret, start.customParameters.token, start.callSid, start.accountSid, Date.now())
    if (check !== 'ok') {
      metrics.streamRejections.inc({ reason: 'token' })
      log.warn({ callSid: start.callSid, check }, 'media stream refused: stream token')
      this.#closeSocket(1008, 'invalid stream token')
      return
    }
    if (calls.has(start.callSid)) {
      metrics.streamRejections.inc({ reason: 'duplicate' })
      log.warn({ callSid: start.callSid }, 'media stream refused: the call already has a live stream')
      this.#closeSocket(1008, 'duplicate stream')
      return
    }
    this.#clearStartTimer()
    const { token: _token, keyterms: callKeyterms, ...customParameters } = start.customParameters
    const keyterms = normalizeKeyterms([...config.assemblyai.keyterms, ...(callKeyterms ?? '').split(',')])
    const logger = this.#request.log.child({ callSid: start.callSid, streamSid: start.streamSid })
    if (keyterms.droppedTooLong + keyterms.droppedOverLimit > 0) {
      logger.warn({ droppedTooLong: keyterms.droppedTooLong, droppedOverLimit: keyterms.droppedOverLimit }, 'keyterms over AssemblyAI\'s limits were left out')
    }
    const session = new CallSession({
      identity: { callSid: start.callSid, streamSid: start.streamSid, accountSid: start.accountSid, tracks: start.tracks, customParameters },
      upstream: { ...config.assemblyai, keyterms: keyterms.terms, sampleRate: 8000 },
      chunkMs: config.audioChunkMs,
      sink: this.#fastify.events,
      metrics,
      logger,
      ...(this.#options.reconnect === undefined ? {} : { reconnect: this.#options.reconnect }),
      ...(this.#options.terminateTimeoutMs === undefined ? {} : { terminateTimeoutMs: this.#options.terminateTimeoutMs }),
      onEnded: (ended, reason) => {
        calls.remove(ended)
        this.#closeSocket(CLOSE_FOR_REASON[reason], reason)
      }
    })
    this.#session = session
    this.#streamSidBytes = Buffer.from(start.streamSid)
    calls.add(session)
    this.#release()
    logger.info({ tracks: start.tracks, keyterms: keyterms.terms.length }, 'call started')
    session.start()
  }

  #countInvalid (reason: InvalidReason): void {
    this.#invalid[reason]++
    // Invalid frames can arrive as fast as good ones; count them in batches too.
    if (this.#invalid[reason] >= 100) this.#flushInvalid()
  }

  #flushInvalid (): void {
    for (const reason of Object.keys(this.#invalid) as InvalidReason[]) {
      const count = this.#invalid[reason]
      if (count > 0) {
        this.#fastify.metrics.twilioInvalidMessages.inc({ reason }, count)
        this.#invalid[reason] = 0
      }
    }
  }

  #fail (): void {
    const session = this.#session
    if (session !== null) void session.end('stream_error')
    else this.#closeSocket(1011, 'internal error')
  }

  #release (): void {
    if (this.#reserved) {
      this.#reserved = false
      this.#fastify.calls.release()
    }
  }

  #clearStartTimer (): void {
    if (this.#startTimer !== null) clearTimeout(this.#startTimer)
    this.#startTimer = null
  }

  #closeSocket (code: number, reason: string): void {
    this.#clearStartTimer()
    this.#flushInvalid()
    if (this.#closed) return
    this.#closed = true
    this.#socket.close(code, reason)
  }
}
