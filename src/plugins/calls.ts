import fp from 'fastify-plugin'
import { CallRegistry } from '../core/call/call-registry.ts'

declare module 'fastify' {
  interface FastifyInstance {
    calls: CallRegistry
  }
}

export interface CallsPluginOptions {
  maxCalls: number
}

/** Live calls. On app close any call still live ends with reason `shutdown`. */
export default fp<CallsPluginOptions>(async function callsPlugin (fastify, options) {
  const calls = new CallRegistry({ maxCalls: options.maxCalls, metrics: fastify.metrics })
  fastify.decorate('calls', calls)
  fastify.addHook('preClose', async () => {
    calls.startDraining()
    await calls.endAll('shutdown')
    calls.close()
  })
}, { name: 'medstream-calls', fastify: '5.x', dependencies: ['medstream-metrics'] })
