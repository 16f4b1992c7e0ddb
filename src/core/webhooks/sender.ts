import { Webhook } from 'standardwebhooks'
import type { CoreLogger } from '../log.ts'
import { ConfigError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import type { DueEvent, FailureRecord, Outbox } from './outbox.ts'
import pkg from '../../../package.json' with { type: 'json' }

/** Backoff between attempts of one event. Waits are milliseconds. */
export interface RetryOptions {
  /** Wait after the first failure, ms. Default 1000: a short outage must heal within seconds. */
  initialMs: number
  /** Growth of the wait per failed attempt, > 1. Default 2. */
  factor: number
  /** Cap on each wait, ms. Default 300000 (5 min). */
  maxDelayMs: number
  /** How long an event is retried, from when it was queued, before it becomes a dead letter, ms. Default 86400000 (24 h). */
  maxAgeMs: number
  /** Cap on a receiver's `Retry-After`, ms. Default 600000 (10 min). */
  retryAfterCapMs: number
  /** 0–1: each wait is scaled by a random factor in [1 - jitter, 1 + jitter], then capped. Default 0.2. */
  jitter: number
}

/** The metrics the sender keeps. `webhookEndpointPaused` (1 while a 410 pauses delivery) is optional. */
export type WebhookMetrics = Pick<Metrics, 'webhookDeliveries' | 'webhookDelivery' | 'webhookOutboxEvents' | 'webhookOutboxOldestAge'> & {
  webhookEndpointPaused?: { set (value: number): void }
}

export interface WebhookSenderOptions {
  /** The receiver, `http:` or `https:`. Redirects are not followed: a 3xx is a failed attempt. */
  url: string
  /** `whsec_…` secrets; every attempt is signed with each, so a receiver can rotate without downtime. */
  secrets: string[]
  outbox: Outbox
  metrics: WebhookMetrics
  logger: CoreLogger
  /** Per attempt, ms, from request to response headers and a short body. Default 15000. */
  timeoutMs?: number
  /** Requests in flight at once, across streams (each stream has at most one). Default 32. */
  maxInFlight?: number
  retry?: Partial<RetryOptions>
  /**
   * How often the outbox is re-read for changes made by the operator CLI (a resume, a replay) and the
   * outbox gauges refreshed, ms. Default 5000.
   */
  pollMs?: number
  /** Sent as `user-agent: medstream/<version>`. Default: the package version. */
  version?: string
  /** Wall clock, epoch ms. Tests inject one to cross the 24 h limit. */
  now?: () => number
  /** Source of jitter in [0, 1). */
  random?: () => number
}

export const RETRY_DEFAULTS: Readonly<RetryOptions> = Object.freeze({
  initialMs: 1000,
  factor: 2,
  maxDelayMs: 300_000,
  maxAgeMs: 86_400_000,
  retryAfterCapMs: 600_000,
  jitter: 0.2
})

const DEFAULTS = { timeoutMs: 15_000, maxInFlight: 32, pollMs: 5000 }
const MAX_RESPONSE_BYTES = 64 * 1024
const TIMEOUT = Symbol('timeout')
const SHUTDOWN = Symbol('shutdown')

/** Splits `WEBHOOK_SECRET` (several `whsec_` secrets separated by spaces during a rotation). */
export function parseWebhookSecrets (value: string): string[] {
  return value.split(/\s+/).filter((secret) => secret !== '')
}

/**
 * The wait after the `attempts`-th failed attempt (1 = first failure), before Retry-After. Jitter is
 * applied after the cap as well as before it, so streams that all sit at the cap still spread out.
 */
export function backoffDelayMs (attempts: number, retry: RetryOptions, random: () => number = Math.random): number {
  const base = Math.min(retry.maxDelayMs, retry.initialMs * retry.factor ** Math.max(0, attempts - 1))
  const jittered = base * (1 - retry.jitter + 2 * retry.jitter * random())
  return Math.round(Math.min(retry.maxDelayMs, jittered))
}

/**
 * `Retry-After` in ms from `nowMs`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); null when
 * absent or unparsable. Uncapped: the caller applies its cap.
 */
export function parseRetryAfterMs (value: string | null | undefined, nowMs: number): number | null {
  if (value == null) return null
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  // An HTTP-date names a weekday and a month; Date.parse alone would also take "-5" or "2026".
  if (!/[A-Za-z]{3}/.test(text)) return null
  const at = Date.parse(text)
  if (Number.isNaN(at)) return null
  return Math.max(0, at - nowMs)
}

/**
 * The wait before the next attempt. A receiver's `Retry-After` (capped) is a floor, never a reason to
 * come back sooner than our own backoff: a `Retry-After: 0` must not turn into a tight loop.
 */
export function nextDelayMs (attempts: number, retryAfterMs: number | null, retry: RetryOptions, random: () => number = Math.random): number {
  const backoff = backoffDelayMs(attempts, retry, random)
  if (retryAfterMs === null) return backoff
  return Math.max(backoff, Math.min(retryAfterMs, retry.retryAfterCapMs))
}

interface Attempt {
  controller: AbortController
  done: Promise<void>
}

type Outcome =
  | { ok: true, status: number }
  | { ok: false, status: number | null, reason: string, retryAfterMs: number | null }

/**
 * Delivers the outbox to one endpoint with Standard Webhooks signatures. Each stream is strictly
 * serial (event N+1 only after N got a 2xx or became a dead letter); streams run in parallel up to
 * `maxInFlight`. The outbox is the only state that matters: the sender can die at any moment and a
 * new one resumes from the database.
 */
export class WebhookSender {
  readonly #url: string
  readonly #signers: Webhook[]
  readonly #outbox: Outbox
  readonly #metrics: WebhookMetrics
  readonly #logger: CoreLogger
  readonly #timeoutMs: number
  readonly #maxInFlight: number
  readonly #retry: RetryOptions
  readonly #pollMs: number
  readonly #userAgent: string
  readonly #now: () => number
  readonly #random: () => number

  readonly #inFlight = new Map<string, Attempt>()
  #started = false
  #paused = false
  #closed = false
  #pumpScheduled = false
  #timer: NodeJS.Timeout | null = null
  #timerAt = Infinity
  #pollTimer: NodeJS.Timeout | null = null
  #failuresSinceSuccess = 0
  #lastSuccessAt = 0
  // Set while closing: the streams that already had their attempt in the last pass.
  #closePass: Set<string> | null = null
  #deadlinePassed = false
  #closeDone: (() => void) | null = null
  #closePromise: Promise<void> | null = null

  constructor (options: WebhookSenderOptions) {
    let url: URL
    try {
      url = new URL(options.url)
    } catch {
      throw new ConfigError('WEBHOOK_URL', 'is not a valid URL; set it to the receiver, e.g. https://hooks.example.org/medstream')
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigError('WEBHOOK_URL', 'must be an http: or https: URL')
    }
    if (options.secrets.length === 0) {
      throw new ConfigError('WEBHOOK_SECRET', 'is required with WEBHOOK_URL; set one whsec_… secret (several, space-separated, while rotating)')
    }
    this.#signers = options.secrets.map((secret, index) => {
      if (!secret.startsWith('whsec_')) {
        throw new ConfigError('WEBHOOK_SECRET', `secret #${index + 1} does not start with whsec_; use the base64 secret your receiver was given, prefixed whsec_`)
      }
      try {
        return new Webhook(secret)
      } catch {
        throw new ConfigError('WEBHOOK_SECRET', `secret #${index + 1} is not valid base64 after whsec_`)
      }
    })
    const retry = { ...RETRY_DEFAULTS, ...options.retry }
    positive('timeoutMs', options.timeoutMs ?? DEFAULTS.timeoutMs)
    positive('maxInFlight', options.maxInFlight ?? DEFAULTS.maxInFlight)
    positive('pollMs', options.pollMs ?? DEFAULTS.pollMs)
    positive('retry.initialMs', retry.initialMs)
    positive('retry.maxDelayMs', retry.maxDelayMs)
    positive('retry.maxAgeMs', retry.maxAgeMs)
    positive('retry.retryAfterCapMs', retry.retryAfterCapMs)
    if (!(retry.factor >= 1)) throw new RangeError(`retry.factor must be at least 1, got ${retry.factor}`)
    if (!(retry.jitter >= 0 && retry.jitter <= 1)) throw new RangeError(`retry.jitter must be within 0–1, got ${retry.jitter}`)

    this.#url = url.href
    this.#outbox = options.outbox
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.#timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs
    this.#maxInFlight = options.maxInFlight ?? DEFAULTS.maxInFlight
    this.#retry = retry
    this.#pollMs = options.pollMs ?? DEFAULTS.pollMs
    this.#userAgent = `medstream/${options.version ?? pkg.version}`
    this.#now = options.now ?? Date.now
    this.#random = options.random ?? Math.random
  }

  /** True while a `410 Gone` keeps delivery stopped. */
  get paused (): boolean {
    return this.#paused
  }

  /** Requests in flight now. */
  get inFlight (): number {
    return this.#inFlight.size
  }

  /**
   * Begins delivery: clears a pause left from an earlier run (a restart is one way to resume) and
   * retries every waiting event at once.
   */
  start (): void {
    if (this.#started || this.#closePromise !== null) return
    this.#started = true
    this.#outbox.resume()
    this.#setPaused(false)
    this.#outbox.retryAllNow(this.#now())
    this.#refreshGauges()
    this.#pollTimer = setInterval(() => this.#poll(), this.#pollMs)
    this.#pollTimer.unref()
    this.#schedulePump()
  }

  /** New events are in the outbox. Cheap; a burst of calls leads to one pass. */
  wake (): void {
    this.#schedulePump()
  }

  /** Lifts a 410 pause (also done by `npm run webhooks -- resume`, seen within `pollMs`). */
  resume (): void {
    this.#outbox.resume()
    if (this.#paused) this.#onResumed()
  }

  /**
   * Stops new work and makes one last pass: every waiting stream gets attempts until it is empty or
   * one fails, until `deadline` (epoch ms). At the deadline requests in flight are aborted. Whatever
   * is left stays in the outbox for the next start. Idempotent; does not close the outbox.
   */
  close (deadline: number): Promise<void> {
    if (this.#closePromise !== null) return this.#closePromise
    if (this.#pollTimer !== null) clearInterval(this.#pollTimer)
    this.#pollTimer = null
    this.#closePass = new Set()
    this.#deadlinePassed = deadline <= this.#now()
    const deadlineTimer = setTimeout(() => {
      this.#deadlinePassed = true
      for (const attempt of this.#inFlight.values()) attempt.controller.abort(SHUTDOWN)
      this.#maybeFinishClose()
    }, Math.max(0, deadline - this.#now()))
    this.#closePromise = new Promise<void>((resolve) => {
      this.#closeDone = resolve
    }).then(() => {
      this.#closed = true
      this.#clearTimer()
      clearTimeout(deadlineTimer)
      this.#refreshGauges()
    })
    if (this.#started && !this.#paused) this.#outbox.retryAllNow(this.#now())
    this.#pump()
    return this.#closePromise
  }

  #schedulePump (): void {
    if (this.#pumpScheduled || this.#closed) return
    this.#pumpScheduled = true
    setImmediate(() => this.#pump())
  }

  #pump (): void {
    this.#pumpScheduled = false
    if (this.#closed || !this.#started || this.#paused || this.#deadlinePassed) {
      this.#maybeFinishClose()
      return
    }
    const now = this.#now()
    if (this.#inFlight.size < this.#maxInFlight) {
      for (const event of this.#outbox.due(now)) {
        if (this.#inFlight.has(event.streamSid) || this.#closePass?.has(event.streamSid) === true) continue
        this.#startAttempt(event)
        if (this.#inFlight.size >= this.#maxInFlight) break
      }
    }
    if (this.#closePass === null) this.#armTimer(now)
    this.#maybeFinishClose()
  }

  #armTimer (now: number): void {
    const next = this.#outbox.nextDueAt(now)
    if (next === null) {
      this.#clearTimer()
      return
    }
    if (this.#timer !== null && this.#timerAt <= next) return
    this.#clearTimer()
    this.#timerAt = next
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.#timerAt = Infinity
      this.#pump()
    }, Math.max(0, next - now))
    // The service's listeners own the process lifetime; a waiting retry must not hold it open.
    this.#timer.unref()
  }

  #clearTimer (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#timerAt = Infinity
  }

  #maybeFinishClose (): void {
    if (this.#closeDone === null || this.#inFlight.size > 0) return
    const done = this.#closeDone
    this.#closeDone = null
    done()
  }

  #startAttempt (event: DueEvent): void {
    const controller = new AbortController()
    const inClosingPass = this.#closePass !== null
    const done = this.#attempt(event, controller, inClosingPass)
      .catch((err: unknown) => {
        // Only an outbox failure (disk full, database closed) lands here; the event stays pending.
        this.#logger.error({ err, webhookId: event.id, callSid: event.callSid }, 'webhook outbox update failed')
      })
      .finally(() => {
        this.#inFlight.delete(event.streamSid)
        // The pass decides whether a closing sender is done: the stream's next event may be due.
        this.#schedulePump()
      })
    this.#inFlight.set(event.streamSid, { controller, done })
  }

  async #attempt (event: DueEvent, controller: AbortController, inClosingPass: boolean): Promise<void> {
    const attemptAt = this.#now()
    const started = performance.now()
    const outcome = await this.#send(event, attemptAt, controller)
    this.#metrics.webhookDelivery.observe((performance.now() - started) / 1000)
    if (outcome.ok) {
      this.#onSuccess(event)
    } else {
      this.#onFailure(event, outcome, attemptAt, inClosingPass)
    }
  }

  async #send (event: DueEvent, attemptAt: number, controller: AbortController): Promise<Outcome> {
    const timestamp = new Date(Math.floor(attemptAt / 1000) * 1000)
    const signature = this.#signers.map((signer) => signer.sign(event.id, timestamp, event.body)).join(' ')
    const timer = setTimeout(() => controller.abort(TIMEOUT), this.#timeoutMs)
    try {
      const response = await fetch(this.#url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': this.#userAgent,
          'webhook-id': event.id,
          'webhook-timestamp': String(timestamp.getTime() / 1000),
          'webhook-signature': signature
        },
        // The stored serialization, byte for byte: the signature covers exactly these bytes.
        body: event.body,
        redirect: 'manual',
        signal: controller.signal
      })
      await drain(response.body)
      const status = response.status
      if (status >= 200 && status < 300) return { ok: true, status }
      return {
        ok: false,
        status,
        reason: status >= 300 && status < 400 ? 'redirect' : 'status',
        retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after'), this.#now())
      }
    } catch (err) {
      let reason: string
      if (controller.signal.aborted) {
        reason = controller.signal.reason === SHUTDOWN ? 'shutdown' : 'timeout'
      } else {
        reason = `network:${networkCode(err)}`
      }
      return { ok: false, status: null, reason, retryAfterMs: null }
    } finally {
      clearTimeout(timer)
    }
  }

  #onSuccess (event: DueEvent): void {
    const now = this.#now()
    this.#outbox.markDelivered(event.id, event.streamSid, now)
    this.#metrics.webhookDeliveries.inc({ result: 'success' })
    this.#logger.debug({ webhookId: event.id, callSid: event.callSid, attempts: event.attempts + 1 }, 'webhook delivered')
    if (this.#failuresSinceSuccess > 0) {
      this.#logger.info({ failedAttempts: this.#failuresSinceSuccess }, 'webhook endpoint recovered')
      // Recovery after an outage: everything waiting goes now rather than at its backoff time.
      // Only when no success came for a while, so one poison event amid healthy traffic keeps its
      // backoff instead of being retried after every other delivery.
      if (now - this.#lastSuccessAt >= this.#retry.initialMs && this.#closePass === null) this.#outbox.retryAllNow(now)
    }
    this.#failuresSinceSuccess = 0
    this.#lastSuccessAt = now
  }

  #onFailure (event: DueEvent, outcome: Extract<Outcome, { ok: false }>, attemptAt: number, inClosingPass: boolean): void {
    const now = this.#now()
    const attempts = event.attempts + 1
    const failure: FailureRecord = { at: attemptAt, status: outcome.status, reason: outcome.reason }
    const fields = { webhookId: event.id, callSid: event.callSid, status: outcome.status, reason: outcome.reason, attempts }
    if (inClosingPass) this.#closePass?.add(event.streamSid)
    if (outcome.reason === 'shutdown') {
      // Cut off by the drain deadline, not the receiver's fault: due again at the next start.
      this.#outbox.markFailed(event.id, failure, now)
      return
    }
    if (this.#failuresSinceSuccess++ === 0) this.#logger.warn(fields, 'webhook endpoint failing; retrying with backoff')

    if (outcome.status === 410) {
      this.#outbox.markFailed(event.id, failure, now)
      this.#metrics.webhookDeliveries.inc({ result: 'retry' })
      if (!this.#paused) {
        this.#outbox.pause(410, now)
        this.#setPaused(true)
        this.#logger.error(fields, 'webhook endpoint answered 410 Gone; delivery paused, events kept; run `npm run webhooks -- resume` or restart to resume')
      }
      return
    }
    if (now - event.queuedAt >= this.#retry.maxAgeMs) {
      this.#outbox.markDead(event.id, event.streamSid, failure)
      this.#metrics.webhookDeliveries.inc({ result: 'dead' })
      this.#logger.error(fields, 'webhook event dead-lettered after its retry window; its stream goes on; see `npm run webhooks -- list`')
      return
    }
    const delayMs = nextDelayMs(attempts, outcome.retryAfterMs, this.#retry, this.#random)
    const notBefore = outcome.retryAfterMs === null ? null : now + Math.min(outcome.retryAfterMs, this.#retry.retryAfterCapMs)
    // The last attempt falls at the end of the window rather than after it. An attempt begun before
    // close() still leaves its stream a turn in the closing pass.
    const nextAttemptAt = this.#closePass !== null && !inClosingPass
      ? Math.max(now, notBefore ?? 0)
      : Math.min(now + delayMs, event.queuedAt + this.#retry.maxAgeMs)
    this.#outbox.markFailed(event.id, failure, nextAttemptAt, notBefore)
    this.#metrics.webhookDeliveries.inc({ result: 'retry' })
    this.#logger.debug({ ...fields, delayMs: nextAttemptAt - now }, 'webhook attempt failed')
  }

  #poll (): void {
    try {
      this.#refreshGauges()
      if (this.#paused && this.#outbox.pauseState() === null) this.#onResumed()
      // Picks up events an operator replayed from another process.
      this.#schedulePump()
    } catch (err) {
      this.#logger.error({ err }, 'webhook outbox poll failed')
    }
  }

  #onResumed (): void {
    this.#setPaused(false)
    this.#logger.info({ retried: this.#outbox.retryAllNow(this.#now()) }, 'webhook delivery resumed')
    this.#schedulePump()
  }

  #setPaused (paused: boolean): void {
    this.#paused = paused
    this.#metrics.webhookEndpointPaused?.set(paused ? 1 : 0)
  }

  #refreshGauges (): void {
    if (this.#outbox.closed) return
    const counts = this.#outbox.counts()
    this.#metrics.webhookOutboxEvents.set({ state: 'pending' }, counts.pending)
    this.#metrics.webhookOutboxEvents.set({ state: 'dead' }, counts.dead)
    const oldest = this.#outbox.oldestPendingCreatedAt()
    this.#metrics.webhookOutboxOldestAge.set(oldest === null ? 0 : Math.max(0, this.#now() - oldest) / 1000)
  }
}

function positive (name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number of the documented unit, got ${value}`)
}

/** Reads a short response so the connection can be reused; stops at 64 KiB. */
async function drain (body: ReadableStream<Uint8Array> | null): Promise<void> {
  if (body === null) return
  let bytes = 0
  for await (const chunk of body) {
    bytes += chunk.byteLength
    if (bytes > MAX_RESPONSE_BYTES) break
  }
}

/** A stable code for a network failure (ECONNREFUSED, UND_ERR_SOCKET, …), never a URL. */
function networkCode (err: unknown): string {
  let current: unknown = err
  for (let depth = 0; depth < 4 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string') return code
    current = current.cause
  }
  return 'unknown'
}
