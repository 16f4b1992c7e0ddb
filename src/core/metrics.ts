import { Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client'
import type { Metric, Registry } from 'prom-client'
import { ROLES, TRACKS } from './call/types.ts'

/**
 * Every medstream metric, declared once, on the one registry the app creates.
 * Names, labels and buckets are part of the interface contract (docs/interface.md, "Metrics"): dashboards and
 * alerts depend on them. Labels are closed sets; never a call id, phone number or URL.
 */
export function createMetrics (registry: Registry, version: string) {
  const registers = [registry]
  const metrics = {
    callsActive: new Gauge({ name: 'medstream_calls_active', help: 'Calls with a live Twilio media stream.', registers }),
    callsTotal: new Counter({ name: 'medstream_calls_total', help: 'Calls finished, by outcome.', labelNames: ['outcome'] as const, registers }),
    callDuration: new Histogram({ name: 'medstream_call_duration_seconds', help: 'Length of finished calls.', buckets: [30, 60, 120, 300, 600, 1200, 1800, 3600, 7200], registers }),
    streamRejections: new Counter({ name: 'medstream_stream_rejections_total', help: 'Media stream upgrades or starts refused, by reason.', labelNames: ['reason'] as const, registers }),
    upgradeSignatures: new Counter({ name: 'medstream_upgrade_signatures_total', help: 'Media stream upgrades accepted, by the URL form their Twilio signature was computed over.', labelNames: ['form'] as const, registers }),
    twilioMessages: new Counter({ name: 'medstream_twilio_messages_total', help: 'Twilio Media Streams messages received, by event.', labelNames: ['event'] as const, registers }),
    twilioInvalidMessages: new Counter({ name: 'medstream_twilio_invalid_messages_total', help: 'Twilio messages ignored or refused as invalid, by reason.', labelNames: ['reason'] as const, registers }),
    audioReceived: new Counter({ name: 'medstream_audio_received_seconds_total', help: 'Audio received from Twilio, by track.', labelNames: ['track'] as const, registers }),
    audioGap: new Counter({ name: 'medstream_audio_gap_seconds_total', help: 'Silence inserted for missing or late Twilio audio, by track.', labelNames: ['track'] as const, registers }),
    upstreamAudioSent: new Counter({ name: 'medstream_upstream_audio_sent_seconds_total', help: 'Audio sent to AssemblyAI (a cost proxy).', registers }),
    // Audio that could not be kept for the upstream during a long outage
    // (beyond the 30 s replay bound). Nothing is dropped silently.
    upstreamAudioDropped: new Counter({ name: 'medstream_upstream_audio_dropped_seconds_total', help: 'Audio given up because the upstream was unavailable for longer than the replay bound.', registers }),
    upstreamSessionsActive: new Gauge({ name: 'medstream_upstream_sessions_active', help: 'Open AssemblyAI streaming sessions.', registers }),
    upstreamConnect: new Histogram({ name: 'medstream_upstream_connect_seconds', help: 'Time from opening an AssemblyAI session to its Begin message.', buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10], registers }),
    upstreamErrors: new Counter({ name: 'medstream_upstream_errors_total', help: 'AssemblyAI session errors, by close code.', labelNames: ['code'] as const, registers }),
    upstreamReconnects: new Counter({ name: 'medstream_upstream_reconnects_total', help: 'AssemblyAI sessions reopened for a live call.', registers }),
    turnsTotal: new Counter({ name: 'medstream_turns_total', help: 'Final transcript turns, by role.', labelNames: ['role'] as const, registers }),
    transcriptLag: new Histogram({ name: 'medstream_transcript_lag_seconds', help: 'Audio of the last word received from Twilio to its final Turn received from AssemblyAI.', buckets: [0.25, 0.5, 1, 1.5, 2, 3, 5, 10], registers }),
    // Observed for every upstream chunk (20 a second per call): the hot-path histogram below.
    bridgeLatency: new HotHistogram({ name: 'medstream_bridge_latency_seconds', help: 'Twilio frame that completes a chunk received to that chunk sent upstream.', buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1], registers }),
    webhookDeliveries: new Counter({ name: 'medstream_webhook_deliveries_total', help: 'Webhook delivery attempts, by result.', labelNames: ['result'] as const, registers }),
    webhookDelivery: new Histogram({ name: 'medstream_webhook_delivery_seconds', help: 'Duration of webhook delivery attempts.', buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30], registers }),
    // How long handing one event to the outbox holds the event loop, which every call's audio shares:
    // the SQLite transaction, or the push onto the PostgreSQL write queue.
    webhookPublish: new Histogram({ name: 'medstream_webhook_publish_seconds', help: 'Time publishing one event to the webhook outbox holds the event loop.', buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025], registers }),
    webhookOutboxEvents: new Gauge({ name: 'medstream_webhook_outbox_events', help: 'Events in the durable outbox, by state.', labelNames: ['state'] as const, registers }),
    webhookOutboxOldestAge: new Gauge({ name: 'medstream_webhook_outbox_oldest_age_seconds', help: 'Age of the oldest pending event in the outbox.', registers }),
    // A 410 Gone pauses delivery until an operator resumes it, and that
    // must page someone rather than hide in a log line.
    webhookEndpointPaused: new Gauge({ name: 'medstream_webhook_endpoint_paused', help: '1 while delivery is paused after the receiver answered 410 Gone.', registers }),
    // An event that could not be stored (a failed write, a full in-memory buffer while PostgreSQL is
    // unreachable, or shutdown before the write): it is gone, so it is counted, never only logged.
    eventsLost: new Counter({ name: 'medstream_events_lost_total', help: 'Events that could not be stored and are lost, by reason.', labelNames: ['reason'] as const, registers }),
    outboxBufferBytes: new Gauge({ name: 'medstream_outbox_buffer_bytes', help: 'Bytes of events held in memory until the PostgreSQL outbox takes them (fleet mode).', registers }),
    handoffs: new Counter({ name: 'medstream_handoffs_total', help: 'Attempts to hand a live call to another replica while draining, by result.', labelNames: ['result'] as const, registers }),
    buildInfo: new Gauge({ name: 'medstream_build_info', help: 'Always 1; the version label says which build runs.', labelNames: ['version'] as const, registers })
  }
  metrics.buildInfo.set({ version }, 1)
  // Pre-create every label value so a series exists (at 0) before its first event: rate() and
  // absent-based alerts then behave from the first scrape.
  for (const outcome of CALL_OUTCOMES) metrics.callsTotal.inc({ outcome }, 0)
  for (const reason of REJECTION_REASONS) metrics.streamRejections.inc({ reason }, 0)
  for (const form of UPGRADE_SIGNATURE_FORMS) metrics.upgradeSignatures.inc({ form }, 0)
  for (const event of TWILIO_EVENTS) metrics.twilioMessages.inc({ event }, 0)
  for (const reason of INVALID_REASONS) metrics.twilioInvalidMessages.inc({ reason }, 0)
  for (const track of TRACKS) { metrics.audioReceived.inc({ track }, 0); metrics.audioGap.inc({ track }, 0) }
  for (const code of UPSTREAM_ERROR_CODES) metrics.upstreamErrors.inc({ code }, 0)
  for (const role of ROLES) metrics.turnsTotal.inc({ role }, 0)
  for (const result of DELIVERY_RESULTS) metrics.webhookDeliveries.inc({ result }, 0)
  for (const state of OUTBOX_STATES) metrics.webhookOutboxEvents.set({ state }, 0)
  for (const reason of LOSS_REASONS) metrics.eventsLost.inc({ reason }, 0)
  for (const result of HANDOFF_RESULTS) metrics.handoffs.inc({ result }, 0)
  return metrics
}

export type Metrics = ReturnType<typeof createMetrics>

/** What a registry reads from a metric (prom-client's typings name `type` an enum; at run time it is this string). */
interface HistogramSeries {
  name: string
  help: string
  type: 'histogram'
  aggregator: 'sum'
  values: Array<{ labels: Record<string, string | number>, value: number, metricName: string }>
}

/**
 * A histogram without labels for a value observed on the hot path, exposed exactly as prom-client's
 * `Histogram` exposes one (same series, same text; a test holds the two equal). `observe` is a
 * search of a few bounds and three additions to typed arrays. prom-client's own `observe` hashes
 * the (empty) label set, makes a closure and keeps bucket counts under numeric-string keys of a
 * plain object: about 1 % of the service's CPU when it ran for every upstream chunk.
 */
export class HotHistogram {
  readonly name: string
  readonly help: string
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  readonly #bounds: Float64Array
  /** Observations per bucket, not cumulative; the last slot is above every bound (+Inf). */
  readonly #counts: Float64Array
  #sum = 0
  #count = 0
  /** As with prom-client: every series at 0 from the start, none after reset() until an observation. */
  #exposed = true

  constructor (config: { name: string, help: string, buckets: readonly number[], registers?: Registry[] }) {
    const buckets = [...config.buckets].sort((a, b) => a - b)
    if (buckets.length === 0 || !buckets.every(Number.isFinite) || new Set(buckets).size !== buckets.length) {
      throw new RangeError(`HotHistogram ${config.name}: buckets must be distinct finite numbers`)
    }
    this.name = config.name
    this.help = config.help
    this.#bounds = Float64Array.from(buckets)
    this.#counts = new Float64Array(buckets.length + 1)
    // Registered as prom-client registers its own metrics; the registry only reads name and get().
    for (const registry of config.registers ?? []) registry.registerMetric(this as unknown as Metric)
  }

  /** Records one value; refuses a non-finite one with a TypeError, as prom-client does. */
  observe (value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`)
    const bounds = this.#bounds
    let bucket = 0
    while (bucket < bounds.length && value > bounds[bucket]!) bucket++
    this.#counts[bucket]!++
    this.#sum += value
    this.#count++
    this.#exposed = true
  }

  /** The series in prom-client's shape: cumulative `_bucket`s by `le`, `+Inf`, `_sum`, `_count`. */
  async get (): Promise<HistogramSeries> {
    const bucketName = `${this.name}_bucket`
    const values: HistogramSeries['values'] = []
    if (!this.#exposed) return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
    let cumulative = 0
    this.#bounds.forEach((le, i) => {
      cumulative += this.#counts[i]!
      values.push({ labels: { le }, value: cumulative, metricName: bucketName })
    })
    values.push({ labels: { le: '+Inf' }, value: this.#count, metricName: bucketName })
    values.push({ labels: {}, value: this.#sum, metricName: `${this.name}_sum` })
    values.push({ labels: {}, value: this.#count, metricName: `${this.name}_count` })
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  reset (): void {
    this.#counts.fill(0)
    this.#sum = 0
    this.#count = 0
    this.#exposed = false
  }
}

export const CALL_OUTCOMES = ['completed', 'transcription_failed', 'stream_error', 'shutdown', 'handed_off'] as const
/** What became of one attempt to hand a live call to another replica (docs/interface.md, "Stream handoff"). */
export const HANDOFF_RESULTS = ['success', 'create_failed', 'track_limit', 'rate_limited', 'unconfirmed', 'store_failed'] as const
export type HandoffResult = typeof HANDOFF_RESULTS[number]
export const REJECTION_REASONS = ['signature', 'token', 'capacity', 'draining', 'start_timeout', 'duplicate', 'outbox_unavailable'] as const
/** The URL a media upgrade's accepted Twilio signature was computed over (see core/twilio/signature.ts). */
export const UPGRADE_SIGNATURE_FORMS = ['wss', 'wss_slash', 'https', 'https_slash'] as const
export const TWILIO_EVENTS = ['connected', 'start', 'media', 'stop', 'mark', 'dtmf', 'unknown'] as const
export const INVALID_REASONS = ['json', 'schema', 'size', 'binary', 'order', 'timestamp'] as const
export const UPSTREAM_ERROR_CODES = ['1008', '1011', '3005', '3006', '3007', '3008', '3009', 'network', 'other'] as const
export const DELIVERY_RESULTS = ['success', 'retry', 'dead'] as const
export const OUTBOX_STATES = ['pending', 'dead'] as const
export const LOSS_REASONS = ['store_failed', 'buffer_full', 'shutdown'] as const

export type InvalidReason = typeof INVALID_REASONS[number]
export type LossReason = typeof LOSS_REASONS[number]
export type UpgradeSignatureForm = typeof UPGRADE_SIGNATURE_FORMS[number]
export type UpstreamErrorLabel = typeof UPSTREAM_ERROR_CODES[number]

/**
 * prom-client's default process_* and nodejs_* metrics, minus the ones `promtool check metrics`
 * rejects: prom-client 15 exports `nodejs_active_{handles,requests,resources}_total` as gauges, and
 * promtool wants `_total` only on counters (and `_count` only on histograms and summaries, so a rename
 * to `…_count` fails too). They are dropped, not renamed: the per-type gauges
 * `nodejs_active_handles{type}` etc. stay, and `sum()` over them is the same total.
 */
export function collectProcessMetrics (registry: Registry): void {
  collectDefaultMetrics({ register: registry })
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name)
  }
}
