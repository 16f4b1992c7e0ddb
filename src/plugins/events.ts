import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Config } from '../config.ts'
import type { EventSink } from '../core/webhooks/events.ts'
import { FileSink } from '../core/webhooks/file-sink.ts'
import { WebhookSink } from '../core/webhooks/webhook-sink.ts'

declare module 'fastify' {
  interface FastifyInstance {
    events: EventSink
  }
}

export interface EventsPluginOptions {
  config: Config
  version: string
  /** A sink to use instead of the configured one (tests). */
  sink?: EventSink
}

/** How long the app's own close gives the last delivery pass when the server did not run one. */
const CLOSE_FLUSH_MS = 5000

/**
 * Where call events go: the durable webhook outbox with WEBHOOK_URL, JSONL files without it.
 * Pending webhook events resume as soon as the app starts.
 */
export default fp<EventsPluginOptions>(async function eventsPlugin (fastify, options) {
  const { config } = options
  let sink: EventSink
  if (options.sink !== undefined) {
    sink = options.sink
  } else if (config.webhookUrl !== null) {
    const webhooks = new WebhookSink({
      dataDir: config.dataDir,
      databaseUrl: config.databaseUrl,
      bufferBytes: config.outboxBufferBytes,
      url: config.webhookUrl,
      secrets: config.webhookSecrets,
      timeoutMs: config.webhookTimeoutMs,
      metrics: fastify.metrics,
      logger: fastify.log as Logger,
      version: options.version,
      onFatal: (err) => {
        // Found after a start with the database down: nothing this process can do fixes it.
        fastify.log.fatal({ code: (err as { code?: string }).code }, err.message)
        process.stderr.write(`medstream: ${err.message}\n`)
        process.exit(1)
      }
    })
    // Settles after the first connection attempt: a newer schema fails the start here, with one
    // line; an unreachable database does not (the sink retries and readiness stays off).
    await webhooks.start()
    sink = webhooks
  } else {
    sink = new FileSink({ dataDir: config.dataDir, metrics: fastify.metrics, logger: fastify.log as Logger })
  }
  fastify.decorate('events', sink)
  // onClose runs after the calls plugin's preClose has ended every call, so call.ended is in.
  fastify.addHook('onClose', async () => {
    await sink.close(Date.now() + CLOSE_FLUSH_MS)
  })
}, { name: 'medstream-events', fastify: '5.x', dependencies: ['medstream-metrics'] })
