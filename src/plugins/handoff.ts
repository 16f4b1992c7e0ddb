import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { HandoffAcceptor, HandoffCoordinator } from '../core/handoff/handoff.ts'
import { HandoffStore, createHandoffPool } from '../core/handoff/store.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Stream handoff in fleet mode; null in single mode. */
    handoff: { acceptor: HandoffAcceptor, coordinator: HandoffCoordinator | null, store: HandoffStore } | null
  }
}

export interface HandoffPluginOptions {
  config: Config
  /** Tests shorten the confirmation wait, ms. */
  confirmTimeoutMs?: number
}

/**
 * Stream handoff (docs/interface.md, "Stream handoff"). In fleet mode every replica takes up streams
 * handed to it; with HANDOFF_ON_DRAIN a draining replica also hands its own calls on.
 */
export default fp<HandoffPluginOptions>(async function handoffPlugin (fastify, options) {
  const { config } = options
  if (config.databaseUrl === null) {
    fastify.decorate('handoff', null)
    return
  }
  const pool = createHandoffPool(config.databaseUrl)
  const store = new HandoffStore(pool)
  try {
    await store.ensureSchema()
  } catch (error) {
    // PostgreSQL down at start: handoffs fail (and are counted) until it is back; calls are unaffected.
    fastify.log.warn({ err: error }, 'handoff records: could not reach PostgreSQL at start')
  }
  const acceptor = new HandoffAcceptor({ store, logger: fastify.log })
  const coordinator = config.handoffOnDrain
    ? new HandoffCoordinator({
      settings: {
        publicUrl: config.publicUrl,
        tokenSecret: config.streamTokenSecret,
        apiUrl: config.twilioApiUrl,
        apiKey: config.twilioApiKey,
        authToken: config.twilioAuthToken
      },
      store,
      metrics: fastify.metrics,
      logger: fastify.log,
      ...(options.confirmTimeoutMs === undefined ? {} : { confirmTimeoutMs: options.confirmTimeoutMs })
    })
    : null
  fastify.decorate('handoff', { acceptor, coordinator, store })
  fastify.addHook('onClose', async () => {
    store.close()
    await pool.end()
  })
}, { name: 'medstream-handoff', fastify: '5.x', dependencies: ['medstream-metrics', 'medstream-calls'] })
