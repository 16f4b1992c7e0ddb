import fp from 'fastify-plugin'
import { Registry } from 'prom-client'
import { collectProcessMetrics, createMetrics } from '../core/metrics.ts'
import type { Metrics } from '../core/metrics.ts'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
    metricsRegistry: Registry
  }
}

export interface MetricsPluginOptions {
  version: string
  /** A registry to use instead of a new one (tests share one between two apps). */
  registry?: Registry | undefined
  /** Process and Node.js metrics; off in tests that build many apps in one process. */
  processMetrics?: boolean | undefined
}

/** The one prom-client registry, created with the app; every part adds its metrics to it. */
export default fp<MetricsPluginOptions>(async function metricsPlugin (fastify, options) {
  const registry = options.registry ?? new Registry()
  if (options.processMetrics !== false) collectProcessMetrics(registry)
  fastify.decorate('metricsRegistry', registry)
  fastify.decorate('metrics', createMetrics(registry, options.version))
}, { name: 'medstream-metrics', fastify: '5.x' })
