import type { CoreLogger } from '../log.ts'
import type { LossReason, Metrics } from '../metrics.ts'
import type { OutgoingEvent } from './events.ts'

const MESSAGES: Record<LossReason, string> = {
  store_failed: 'event lost: it could not be stored',
  buffer_full: 'event lost: the outbox buffer is full while the database is unreachable',
  shutdown: 'event lost: the process stopped before the database took it'
}

/**
 * Counts and logs an event that will never be delivered, with the ids an operator needs to find
 * the call. Never the body: it holds the transcript.
 */
export function recordLostEvent (metrics: Pick<Metrics, 'eventsLost'>, logger: CoreLogger, event: OutgoingEvent, reason: LossReason, err?: unknown): void {
  metrics.eventsLost.inc({ reason })
  const fields = { reason, webhookId: event.id, callSid: event.callSid, streamSid: event.streamSid, sequence: event.sequence, type: event.type }
  logger.error(err === undefined ? fields : { ...fields, err }, MESSAGES[reason])
}
