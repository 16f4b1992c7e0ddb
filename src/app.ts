import websocket from '@fastify/websocket'
import Fastify from 'fastify'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import type { Config } from './config.ts'
import type { ReconnectPolicy } from './core/call/upstream-link.ts'
import type { EventSink } from './core/webhooks/events.ts'
import callsPlugin from './plugins/calls.ts'
import eventsPlugin from './plugins/events.ts'
import livePlugin from './plugins/live.ts'
import metricsPlugin from './plugins/metrics.ts'
import healthRoutes from './routes/health.ts'
import liveRoutes from './routes/live.ts'
import { MAX_MESSAGE_BYTES } from './core/twilio/messages.ts'
import twilioMediaRoutes from './routes/twilio-media.ts'
import twilioVoiceRoutes from './routes/twilio-voice.ts'

export interface AppOptions {
  config: Config
  logger: Logger
  version: string
  /** Replaces the sink the configuration chooses (tests). */
  events?: EventSink
  registry?: Registry
  processMetrics?: boolean
  startTimeoutMs?: number
  reconnect?: ReconnectPolicy
  terminateTimeoutMs?: number
  heartbeatMs?: number
  /** Live view timings (tests shorten them): SSE heartbeat, partial interval and grace, ms. */
  live?: { heartbeatMs?: number, partialIntervalMs?: number, graceMs?: number, databaseUrl?: string | null }
}

/**
 * Builds the Fastify app: plugins, routes, shared services. It never listens; `server.ts` owns the
 * process, the ports and the signals.
 */
export async function buildApp (options: AppOptions): Promise<FastifyInstance> {
  const { config } = options
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    // Twilio retries a voice webhook that takes longer than 15 s; ours answer in milliseconds.
    requestTimeout: 15000,
    trustProxy: true
  })
  await app.register(metricsPlugin, {
    version: options.version,
    registry: options.registry,
    processMetrics: options.processMetrics
  })
  await app.register(eventsPlugin, { config, version: options.version, ...(options.events === undefined ? {} : { sink: options.events }) })
  await app.register(callsPlugin, { maxCalls: config.maxCalls })
  await app.register(livePlugin, {
    ...(options.live?.partialIntervalMs === undefined ? {} : { partialIntervalMs: options.live.partialIntervalMs }),
    ...(options.live?.graceMs === undefined ? {} : { graceMs: options.live.graceMs }),
    databaseUrl: options.live?.databaseUrl ?? config.databaseUrl
  })
  await app.register(websocket, {
    options: {
      maxPayload: MAX_MESSAGE_BYTES,
      // Twilio offers no compression; refusing it keeps per-socket memory predictable.
      perMessageDeflate: false
    }
  })
  await app.register(healthRoutes)
  await app.register(twilioVoiceRoutes, { config })
  await app.register(liveRoutes, { key: config.liveViewKey, frameAncestors: config.liveViewFrameAncestors, ...(options.live?.heartbeatMs === undefined ? {} : { heartbeatMs: options.live.heartbeatMs }) })
  await app.register(twilioMediaRoutes, {
    config,
    startTimeoutMs: options.startTimeoutMs,
    reconnect: options.reconnect,
    terminateTimeoutMs: options.terminateTimeoutMs,
    heartbeatMs: options.heartbeatMs
  })
  return app
}
