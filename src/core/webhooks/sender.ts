import type { CoreLogger } from '../log.ts'
import { DeliveryError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import { HttpAttempt, LEASE_LOST, SHUTDOWN } from './http-attempt.ts'
import type { Awaitable, DueEvent, FailureRecord, OutboxStore } from './outbox-store.ts'
import { decideRetry, positive, retryOptions } from './retry-policy.ts'
import type { RetryOptions } from './retry-policy.ts'
import pkg from '../../../package.json' with { type: 'json' }

export { RETRY_DEFAULTS, backoffDelayMs, nextDelayMs, parseRetryAfterMs } from './retry-policy.ts'
export type { RetryOptions } from './retry-policy.ts'

/** The metrics the sender keeps. `webhookEndpointPaused` (1 while a 410 pauses delivery) is optional. */
export type WebhookMetrics = Pick<Metrics, 'webhookDeliveries' | 'webhookDelivery' | 'webhookOutboxEvents' | 'webhookOutboxOldestAge'> & {
  webhookEndpointPaused?: { set (value: number): void }
}

export interface WebhookSenderOptions {
  /** The receiver, `http:` or `https:` (validated by `loadConfig`). Redirects are not followed: a 3xx is a failed attempt. */
  url: string
  /** Validated `whsec_…` secrets; every attempt is signed with each, so a receiver can rotate without downtime. */
  secrets: readonly string[]
  outbox: OutboxStore
  metrics: WebhookMetrics
  logger: CoreLogger
  /** Per attempt, ms, from request to response headers and a short body. Default 15000. */
  timeoutMs?: number
  /** Requests in flight at once, across streams (each stream has at most one). Default 32. */
  maxInFlight?: number
  retry?: Partial<RetryOptions>
  /**
   * How often the outbox is re-read for changes made elsewhere (the operator CLI's resume or replay;
   * in a fleet, other replicas' events, pauses and expired leases) and the gauges refreshed, ms.
   * Default 5000.
   */
  pollMs?: number
  /** Sent as `user-agent: medstream/<version>`. Default: the package version. */
  version?: string
  /** Wall clock, epoch ms. Tests inject one to cross the 24 h limit. */
  now?: () => number
  /** Source of jitter in [0, 1). */
  random?: () => number
}

const DEFAULTS = { timeoutMs: 15_000, maxInFlight: 32, pollMs: 5000 }
/** After an outbox read fails (database unreachable), the pump tries again this much later, ms. */
const STORE_RETRY_MS = 1000

interface Attempt {
  controller: AbortController
  done: Promise<void>
}

/**
 * Delivers the outbox to one endpoint with Standard Webhooks signatures. Each stream is strictly
 * serial (event N+1 only after N got a 2xx or became a dead letter); streams run in parallel up to
 * `maxInFlight`. The outbox is the only state that matters: the sender can die at any moment and a
 * new one, in this process or another replica, resumes from the database.
 */
export class WebhookSender {
  readonly #http: HttpAttempt
  readonly #outbox: OutboxStore
  readonly #metrics: WebhookMetrics
  readonly #logger: CoreLogger
  readonly #maxInFlight: number
  readonly #retry: RetryOptions
  readonly #pollMs: number
  readonly #now: () => number
  readonly #random: () => number

  readonly #inFlight = new Map<string, Attempt>()
  #started = false
  #paused = false
  #closed = false
  #pumpScheduled = false
  #pumping = false
  #pumpAgain = false
  #storeFailing = false
  #timer: NodeJS.Timeout | null = null
  #timerAt = Infinity
  #pollTimer: NodeJS.Timeout | null = null
  #failuresSinceSuccess = 0
  /** Counts "retry everything now" requests, so a failure written concurrently can tell it missed one. */
  #retryAllEpoch = 0
  #lastSuccessAt = 0
  // Set while closing: the streams that already had their attempt in the last pass.
  #closePass: Set<string> | null = null
  #deadlinePassed = false
  #closeDone: (() => void) | null = null
  #closePromise: Promise<void> | null = null

  constructor (options: WebhookSenderOptions) {
    const timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs
    positive('timeoutMs', timeoutMs)
    positive('maxInFlight', options.maxInFlight ?? DEFAULTS.maxInFlight)
    positive('pollMs', options.pollMs ?? DEFAULTS.pollMs)
    this.#retry = retryOptions(options.retry)
    this.#now = options.now ?? Date.now
    this.#http = new HttpAttempt({ url: options.url, secrets: options.secrets, timeoutMs, userAgent: `medstream/${options.version ?? pkg.version}`, now: this.#now })
    this.#outbox = options.outbox
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.#maxInFlight = options.maxInFlight ?? DEFAULTS.maxInFlight
    this.#pollMs = options.pollMs ?? DEFAULTS.pollMs
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
   * retries every waiting event at once. Resolves once the outbox has been read.
   */
  async start (): Promise<void> {
    if (this.#started || this.#closePromise !== null) return
    this.#started = true
    this.#pollTimer = setInterval(() => { void this.#poll() }, this.#pollMs)
    this.#pollTimer.unref()
    try {
      await this.#outbox.resume()
      this.#setPaused(false)
      await this.#retryAllNow()
      await this.#refreshGauges()
    } catch (err) {
      this.#onStoreError(err)
    }
    this.#schedulePump()
  }

  /** New events are in the outbox. Cheap; a burst of calls leads to one pass. */
  wake (): void {
    this.#schedulePump()
  }

  /** Lifts a 410 pause (also done by `npm run webhooks -- resume`, seen within `pollMs`). */
  async resume (): Promise<void> {
    await this.#outbox.resume()
    if (this.#paused) await this.#onResumed()
  }

  /**
   * Stops new work and makes one last pass: every waiting stream gets attempts until it is empty or
   * one fails, until `deadline` (epoch ms). At the deadline requests in flight are aborted. Whatever
   * is left stays in the outbox for the next start (or another replica). Idempotent; does not close
   * the outbox.
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
    }).then(async () => {
      this.#closed = true
      this.#clearTimer()
      clearTimeout(deadlineTimer)
      this.#http.close()
      try {
        await this.#refreshGauges()
      } catch {
        // The outbox may be unreachable at shutdown; the gauges die with the process.
      }
    })
    void this.#closingPass()
    return this.#closePromise
  }

  async #closingPass (): Promise<void> {
    if (this.#started && !this.#paused) {
      try {
        await this.#retryAllNow()
      } catch (err) {
        this.#onStoreError(err)
      }
    }
    this.#pump()
  }

  #schedulePump (): void {
    if (this.#pumpScheduled || this.#closed) return
    this.#pumpScheduled = true
    setImmediate(() => this.#pump())
  }

  /** One pass at a time: a wake during a pass runs another pass right after it. */
  #pump (): void {
    this.#pumpScheduled = false
    if (this.#pumping) {
      this.#pumpAgain = true
      return
    }
    this.#pumping = true
    void this.#pumpLoop()
  }

  async #pumpLoop (): Promise<void> {
    try {
      do {
        this.#pumpAgain = false
        await this.#pumpOnce()
      } while (this.#pumpAgain && !this.#closed)
      if (this.#storeFailing) {
        this.#storeFailing = false
        this.#logger.info('webhook outbox reachable again')
      }
    } catch (err) {
      this.#onStoreError(err)
      if (this.#closePass === null && !this.#closed) this.#armTimerAt(this.#now() + STORE_RETRY_MS, this.#now())
    } finally {
      this.#pumping = false
      this.#maybeFinishClose()
    }
  }

  async #pumpOnce (): Promise<void> {
    if (this.#closed || !this.#started || this.#paused || this.#deadlinePassed) return
    const free = this.#maxInFlight - this.#inFlight.size
    // The closing pass ignores backoff: every stream gets its turn. Made due on every pass rather
    // than once, so an attempt whose failure is recorded while the pass runs still gets it.
    if (this.#closePass !== null && free > 0) await this.#retryAllNow()
    const now = this.#now()
    if (free > 0) {
      const exclude = new Set(this.#inFlight.keys())
      for (const streamSid of this.#closePass ?? []) exclude.add(streamSid)
      const due = await this.#outbox.claimDue(now, free, exclude)
      for (const event of due) {
        // A stream in flight keeps its lease until its attempt ends.
        if (this.#inFlight.has(event.streamSid)) continue
        if (this.#closePass?.has(event.streamSid) === true || this.#paused || this.#deadlinePassed) {
          await this.#outbox.release(event.streamSid)
          continue
        }
        this.#startAttempt(event)
      }
      // A full batch may mean more is due.
      if (due.length >= free && this.#inFlight.size < this.#maxInFlight) this.#pumpAgain = true
    }
    if (this.#closePass === null) {
      const next = await this.#outbox.nextDueAt(now)
      this.#armTimerAt(next, now)
    }
  }

  #armTimerAt (next: number | null, now: number): void {
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
    if (this.#closeDone === null || this.#inFlight.size > 0 || this.#pumping || this.#pumpScheduled) return
    const done = this.#closeDone
    this.#closeDone = null
    done()
  }

  #startAttempt (event: DueEvent): void {
    const controller = new AbortController()
    const inClosingPass = this.#closePass !== null
    // Fleet mode: the attempt ends before the stream's lease could pass to another replica.
    const onLeaseLost = (): void => controller.abort(LEASE_LOST)
    if (event.lease?.aborted === true) onLeaseLost()
    else event.lease?.addEventListener('abort', onLeaseLost, { once: true })
    const done = this.#attempt(event, controller.signal, inClosingPass)
      .catch((err: unknown) => {
        // Only an outbox failure lands here (disk full, database unreachable): the event stays
        // pending and is attempted again, so the receiver may see it twice (same webhook-id).
        this.#logger.error({ err, webhookId: event.id, callSid: event.callSid, streamSid: event.streamSid }, 'webhook outbox update failed')
      })
      .then(() => this.#outbox.release(event.streamSid))
      .catch(() => {
        // An unreleased lease expires on its own.
      })
      .finally(() => {
        event.lease?.removeEventListener('abort', onLeaseLost)
        this.#inFlight.delete(event.streamSid)
        // The pass decides whether a closing sender is done: the stream's next event may be due.
        this.#schedulePump()
      })
    this.#inFlight.set(event.streamSid, { controller, done })
  }

  async #attempt (event: DueEvent, signal: AbortSignal, inClosingPass: boolean): Promise<void> {
    const attemptAt = this.#now()
    const started = performance.now()
    let failure: DeliveryError | null = null
    try {
      await this.#http.send(event, attemptAt, signal)
    } catch (err) {
      failure = err instanceof DeliveryError ? err : new DeliveryError('webhook attempt failed', { reason: 'network:unknown', cause: err })
    }
    this.#metrics.webhookDelivery.observe((performance.now() - started) / 1000)
    if (failure === null) await this.#onSuccess(event)
    else await this.#onFailure(event, failure, attemptAt, inClosingPass)
  }

  async #onSuccess (event: DueEvent): Promise<void> {
    const now = this.#now()
    this.#metrics.webhookDeliveries.inc({ result: 'success' })
    // The endpoint's state changes when the answer arrives, not when the outbox has recorded it.
    const recovered = this.#failuresSinceSuccess > 0
    const sinceLastSuccess = now - this.#lastSuccessAt
    this.#failuresSinceSuccess = 0
    this.#lastSuccessAt = now
    await this.#outbox.markDelivered(event.id, event.streamSid, now)
    this.#logger.debug({ webhookId: event.id, callSid: event.callSid, attempts: event.attempts + 1 }, 'webhook delivered')
    if (recovered) {
      this.#logger.info('webhook endpoint recovered')
      // Recovery after an outage: everything waiting goes now rather than at its backoff time.
      // Only when no success came for a while, so one poison event amid healthy traffic keeps its
      // backoff instead of being retried after every other delivery.
      if (sinceLastSuccess >= this.#retry.initialMs && this.#closePass === null) await this.#retryAllNow()
    }
  }

  async #onFailure (event: DueEvent, error: DeliveryError, attemptAt: number, inClosingPass: boolean): Promise<void> {
    const now = this.#now()
    const attempts = event.attempts + 1
    const failure: FailureRecord = { at: attemptAt, status: error.status, reason: error.reason }
    const fields = { webhookId: event.id, callSid: event.callSid, status: error.status, reason: error.reason, attempts }
    if (inClosingPass) this.#closePass?.add(event.streamSid)
    if (error.reason === 'lease') {
      // Not the receiver's fault, and the stream may be another replica's by now: nothing is written.
      // The event stays due and whoever holds the stream next sends it again, same webhook-id.
      this.#logger.warn({ webhookId: event.id, callSid: event.callSid, streamSid: event.streamSid }, 'webhook attempt cut off: its stream\'s lease could not be renewed (outbox unreachable); another replica may take the stream')
      return
    }
    if (error.reason === 'shutdown') {
      // Cut off by the drain deadline, not the receiver's fault: due again at the next start.
      await this.#outbox.markFailed(event.id, failure, now)
      return
    }
    if (this.#failuresSinceSuccess++ === 0) this.#logger.warn(fields, 'webhook endpoint failing; retrying with backoff')

    if (!error.retryable) {
      // 410 Gone: the endpoint asked us to stop. Every replica sees the pause through the outbox.
      this.#metrics.webhookDeliveries.inc({ result: 'retry' })
      await this.#outbox.markFailed(event.id, failure, now)
      if (!this.#paused) {
        this.#setPaused(true)
        await this.#outbox.pause(error.status ?? 410, now)
        this.#logger.error(fields, 'webhook endpoint answered 410 Gone; delivery paused, events kept; run `npm run webhooks -- resume` or restart to resume')
      }
      return
    }
    const epoch = this.#retryAllEpoch
    const decision = decideRetry(event, error.retryAfterMs, now, this.#retry, this.#random)
    if (decision.action === 'dead') {
      this.#metrics.webhookDeliveries.inc({ result: 'dead' })
      await this.#outbox.markDead(event.id, event.streamSid, failure)
      this.#logger.error(fields, 'webhook event dead-lettered after its retry window; its stream goes on; see `npm run webhooks -- list`')
      return
    }
    // An attempt begun before close() still leaves its stream a turn in the closing pass.
    const nextAttemptAt = this.#closePass !== null && !inClosingPass
      ? Math.max(now, decision.notBefore ?? 0)
      : decision.nextAttemptAt
    this.#metrics.webhookDeliveries.inc({ result: 'retry' })
    await this.#outbox.markFailed(event.id, failure, nextAttemptAt, decision.notBefore)
    // With an asynchronous outbox, a "retry everything now" (recovery, resume, the closing pass) may
    // have run while this write was on its way and been overwritten by it: repeat it.
    if (this.#retryAllEpoch !== epoch && nextAttemptAt > now) await this.#retryAllNow()
    this.#logger.debug({ ...fields, delayMs: nextAttemptAt - now }, 'webhook attempt failed')
  }

  async #poll (): Promise<void> {
    try {
      await this.#refreshGauges()
      const pause = await this.#outbox.pauseState()
      if (this.#paused && pause === null) {
        await this.#onResumed()
      } else if (!this.#paused && pause !== null) {
        // Another replica met the 410: the endpoint is paused for the whole fleet.
        this.#setPaused(true)
        this.#logger.warn({ status: pause.status }, 'webhook delivery paused by another process after a 410 Gone')
      }
      // Picks up events an operator replayed, or other replicas left behind.
      this.#schedulePump()
    } catch (err) {
      this.#onStoreError(err)
    }
  }

  async #onResumed (): Promise<void> {
    this.#setPaused(false)
    this.#logger.info({ retried: await this.#retryAllNow() }, 'webhook delivery resumed')
    this.#schedulePump()
  }

  #retryAllNow (): Awaitable<number> {
    this.#retryAllEpoch++
    return this.#outbox.retryAllNow(this.#now())
  }

  #onStoreError (err: unknown): void {
    if (this.#storeFailing) return
    this.#storeFailing = true
    this.#logger.error({ err }, 'webhook outbox unreachable; delivery waits and retries')
  }

  #setPaused (paused: boolean): void {
    this.#paused = paused
    this.#metrics.webhookEndpointPaused?.set(paused ? 1 : 0)
  }

  async #refreshGauges (): Promise<void> {
    if (this.#outbox.closed) return
    const counts = await this.#outbox.counts()
    this.#metrics.webhookOutboxEvents.set({ state: 'pending' }, counts.pending)
    this.#metrics.webhookOutboxEvents.set({ state: 'dead' }, counts.dead)
    const oldest = await this.#outbox.oldestPendingCreatedAt()
    this.#metrics.webhookOutboxOldestAge.set(oldest === null ? 0 : Math.max(0, this.#now() - oldest) / 1000)
  }
}
