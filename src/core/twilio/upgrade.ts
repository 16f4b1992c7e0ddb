import type { CallRegistry } from '../call/call-registry.ts'
import type { Metrics } from '../metrics.ts'
import type { EventSink } from '../webhooks/events.ts'
import type { TwilioSignatures } from './signature.ts'

export type UpgradeVerdict =
  | { accept: true }
  | { accept: false, status: 403, reason: 'signature' }
  | { accept: false, status: 503, reason: 'draining' | 'capacity' | 'outbox_unavailable' }

/**
 * Whether a Media Streams upgrade may go ahead, in the order docs/interface.md ("Twilio-facing behaviour", upgrade order) gives: the
 * Twilio signature (403), then draining or capacity (503), then an event sink that takes no new
 * calls (503: fleet mode with PostgreSQL not yet reached or its buffer past half). Counts the
 * refusal's reason, or the signature form of an accepted upgrade.
 * @param signatures null when TWILIO_SIGNATURE_CHECK is off.
 */
export function admitUpgrade (signature: unknown, signatures: TwilioSignatures | null, calls: CallRegistry, metrics: Metrics, events?: Pick<EventSink, 'accepting'>): UpgradeVerdict {
  if (signatures !== null) {
    const form = signatures.checkUpgrade(signature)
    if (form === null) {
      metrics.streamRejections.inc({ reason: 'signature' })
      return { accept: false, status: 403, reason: 'signature' }
    }
    metrics.upgradeSignatures.inc({ form })
  }
  if (calls.draining || calls.atCapacity) {
    const reason = calls.draining ? 'draining' : 'capacity'
    metrics.streamRejections.inc({ reason })
    return { accept: false, status: 503, reason }
  }
  if (events?.accepting === false) {
    metrics.streamRejections.inc({ reason: 'outbox_unavailable' })
    return { accept: false, status: 503, reason: 'outbox_unavailable' }
  }
  return { accept: true }
}
