import type { FastifyInstance } from 'fastify'

/**
 * Liveness answers while the event loop does; readiness goes 503 while draining, at MAX_CALLS, or
 * while the event sink takes no new calls (fleet mode: PostgreSQL not yet reached, or the in-memory
 * buffer past half of OUTBOX_BUFFER_BYTES).
 */
export default async function healthRoutes (fastify: FastifyInstance): Promise<void> {
  fastify.get('/healthz', async () => ({ status: 'ok' }))
  fastify.get('/readyz', async (_request, reply) => {
    const calls = fastify.calls
    if (calls.draining) return reply.code(503).send({ status: 'draining', calls: calls.size })
    if (calls.atCapacity) return reply.code(503).send({ status: 'at_capacity', calls: calls.size })
    if (fastify.events.accepting === false) return reply.code(503).send({ status: 'outbox_unavailable', calls: calls.size })
    return { status: 'ready', calls: calls.size }
  })
}
