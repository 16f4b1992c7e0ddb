import fp from 'fastify-plugin'
import { LiveHub } from '../core/live/hub.ts'
import { createLiveMetrics } from '../core/live/metrics.ts'
import type { LiveMetrics } from '../core/live/metrics.ts'
import { LiveTapSink } from '../core/live/tap-sink.ts'

declare module 'fastify' {
  interface FastifyInstance {
    live: LiveHub
    liveMetrics: LiveMetrics
  }
}

export interface LivePluginOptions {
  /** Shortest time between two partials of one call, ms. Default 200 (5 a second). */
  partialIntervalMs?: number
  /** How long an ended call stays available to reconnecting viewers, ms. Default 60000. */
  graceMs?: number
}

/**
 * The live view's bus (single mode: in process). It taps the configured event sink: `fastify.events`
 * becomes a LiveTapSink around it, so whatever publishes a call's events feeds the viewers too,
 * after the event is stored and without knowing about them.
 */
export default fp<LivePluginOptions>(async function livePlugin (fastify, options) {
  const metrics = createLiveMetrics(fastify.metricsRegistry)
  const hub = new LiveHub({
    sourceOf: (streamSid) => fastify.calls.byStreamSid(streamSid),
    ...(options.partialIntervalMs === undefined ? {} : { partialIntervalMs: options.partialIntervalMs }),
    ...(options.graceMs === undefined ? {} : { graceMs: options.graceMs }),
    onViewerCount: (delta) => metrics.viewers.inc(delta),
    onSent: (type) => metrics.events.inc({ type })
  })
  fastify.events = new LiveTapSink(fastify.events, (event) => hub.publishFinal(event), (error) => {
    fastify.log.error({ err: error }, 'live view could not take an event')
  })
  fastify.decorate('live', hub)
  fastify.decorate('liveMetrics', metrics)
  // Viewers' streams end before the server waits for its open connections.
  fastify.addHook('preClose', async () => { hub.close() })
}, { name: 'medstream-live', fastify: '5.x', dependencies: ['medstream-metrics', 'medstream-events', 'medstream-calls'] })
