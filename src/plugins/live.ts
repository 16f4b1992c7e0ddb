import fp from 'fastify-plugin'
import pg from 'pg'
import { LiveHub } from '../core/live/hub.ts'
import type { LiveCallRow, LiveViewer } from '../core/live/hub.ts'
import { createLiveMetrics } from '../core/live/metrics.ts'
import type { LiveMetrics } from '../core/live/metrics.ts'
import { PgLive } from '../core/live/pg-live.ts'
import { LiveTapSink } from '../core/live/tap-sink.ts'

/** What the routes use, whichever the mode: this process's memory, or PostgreSQL shared by the fleet. */
export interface LiveFeed {
  list (): Promise<LiveCallRow[]>
  /** Null when the call is not live (nor within its grace) anywhere this mode can see. */
  open (callSid: string, lastEventId: string | undefined, viewer: LiveViewer): Promise<{ close: () => void } | null>
}

declare module 'fastify' {
  interface FastifyInstance {
    live: LiveHub
    liveFeed: LiveFeed
    liveMetrics: LiveMetrics
  }
}

export interface LivePluginOptions {
  /** Shortest time between two partials of one call, ms. Default 200 (5 a second). */
  partialIntervalMs?: number
  /** How long an ended call stays available to reconnecting viewers, ms. Default 60000. */
  graceMs?: number
  /** Fleet mode: `postgres://…` shared by every replica; null or absent keeps the bus in process. */
  databaseUrl?: string | null
}

/**
 * The live view's bus (single mode: in process). It taps the configured event sink: `fastify.events`
 * becomes a LiveTapSink around it, so whatever publishes a call's events feeds the viewers too,
 * after the event is stored and without knowing about them.
 */
export default fp<LivePluginOptions>(async function livePlugin (fastify, options) {
  const metrics = createLiveMetrics(fastify.metricsRegistry)
  let fleet: PgLive | null = null
  const hub = new LiveHub({
    sourceOf: (streamSid) => fastify.calls.byStreamSid(streamSid),
    fanOutPartial: (callSid, event) => fleet?.fanOutPartial(callSid, event),
    ...(options.partialIntervalMs === undefined ? {} : { partialIntervalMs: options.partialIntervalMs }),
    ...(options.graceMs === undefined ? {} : { graceMs: options.graceMs }),
    onViewerCount: (delta) => metrics.viewers.inc(delta),
    onSent: (type) => metrics.events.inc({ type })
  })
  let pool: pg.Pool | null = null
  if (options.databaseUrl != null) {
    pool = new pg.Pool({ connectionString: options.databaseUrl, max: 4 })
    pool.on('error', (error) => { fastify.log.warn({ err: error }, 'live view: idle PostgreSQL connection failed') })
    // Every connection keeps an 'error' listener for its whole life: a server restart can cut one in
    // any state (checked out between queries, mid-handover to the pool), and an 'error' event with no
    // listener would end the process and every call on it. The failed query reports the error itself.
    pool.on('connect', (client) => { client.on('error', () => {}) })
    fleet = new PgLive({
      pool,
      hub,
      logger: fastify.log,
      ...(options.graceMs === undefined ? {} : { graceMs: options.graceMs }),
      localCalls: () => hub.list().map((row) => row.call_sid).filter((callSid) => fastify.calls.has(callSid))
    })
    fleet.start()
  }
  fastify.events = new LiveTapSink(fastify.events, (event) => {
    hub.publishFinal(event)
    fleet?.record(event)
  }, (error) => {
    fastify.log.error({ err: error }, 'live view could not take an event')
  })
  const feed: LiveFeed = fleet === null
    ? { list: async () => hub.list(), open: async (callSid, lastEventId, viewer) => hub.subscribe(callSid, lastEventId, viewer) }
    : fleet
  fastify.decorate('live', hub)
  fastify.decorate('liveFeed', feed)
  fastify.decorate('liveMetrics', metrics)
  // Viewers' streams end before the server waits for its open connections.
  fastify.addHook('preClose', async () => { hub.close() })
  fastify.addHook('onClose', async () => {
    await fleet?.close()
    await pool?.end()
  })
}, { name: 'medstream-live', fastify: '5.x', dependencies: ['medstream-metrics', 'medstream-events', 'medstream-calls'] })
