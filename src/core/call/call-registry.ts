import type { Metrics } from '../metrics.ts'
import type { CallSession, EndReason } from './call-session.ts'

/**
 * The process's live calls: capacity (MAX_CALLS, counting sockets still waiting for `start`), the
 * draining flag readiness reports, one live stream per CallSid, and lookup by StreamSid for status
 * callbacks.
 */
export class CallRegistry {
  readonly #maxCalls: number
  readonly #metrics: Metrics
  readonly #byCallSid = new Map<string, CallSession>()
  readonly #byStreamSid = new Map<string, CallSession>()
  #reserved = 0
  #draining = false
  #flushTimer: NodeJS.Timeout | null = null
  readonly #emptyWaiters = new Set<() => void>()

  constructor (options: { maxCalls: number, metrics: Metrics, metricsFlushMs?: number }) {
    this.#maxCalls = options.maxCalls
    this.#metrics = options.metrics
    // One timer for the whole process moves each call's batched counters to prom-client: the media
    // path itself never touches a labelled metric.
    this.#flushTimer = setInterval(() => this.flushMetrics(), options.metricsFlushMs ?? 1000)
    this.#flushTimer.unref()
  }

  get size (): number { return this.#byCallSid.size }
  get draining (): boolean { return this.#draining }
  get atCapacity (): boolean { return this.#byCallSid.size + this.#reserved >= this.#maxCalls }
  get ready (): boolean { return !this.#draining && !this.atCapacity }

  /** Holds a place for an accepted socket until its `start` arrives or it closes. */
  reserve (): void { this.#reserved++ }
  release (): void { if (this.#reserved > 0) this.#reserved-- }

  startDraining (): void { this.#draining = true }

  /** The live calls, at this moment. */
  sessions (): CallSession[] { return [...this.#byCallSid.values()] }

  has (callSid: string): boolean { return this.#byCallSid.has(callSid) }
  byStreamSid (streamSid: string): CallSession | undefined { return this.#byStreamSid.get(streamSid) }

  add (session: CallSession): void {
    this.#byCallSid.set(session.identity.callSid, session)
    this.#byStreamSid.set(session.identity.streamSid, session)
    this.#metrics.callsActive.set(this.#byCallSid.size)
  }

  remove (session: CallSession): void {
    if (this.#byCallSid.get(session.identity.callSid) === session) this.#byCallSid.delete(session.identity.callSid)
    if (this.#byStreamSid.get(session.identity.streamSid) === session) this.#byStreamSid.delete(session.identity.streamSid)
    this.#metrics.callsActive.set(this.#byCallSid.size)
    if (this.#byCallSid.size === 0) {
      for (const resolve of this.#emptyWaiters) resolve()
      this.#emptyWaiters.clear()
    }
  }

  /** Resolves true when no call is left, false when the deadline (epoch ms) passes first. */
  waitUntilEmpty (deadline: number): Promise<boolean> {
    if (this.#byCallSid.size === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const done = (): void => { clearTimeout(timer); resolve(true) }
      const timer = setTimeout(() => { this.#emptyWaiters.delete(done); resolve(false) }, Math.max(0, deadline - Date.now()))
      this.#emptyWaiters.add(done)
    })
  }

  /** Ends every live call with `reason` and waits for their `call.ended`. */
  async endAll (reason: EndReason): Promise<void> {
    await Promise.all([...this.#byCallSid.values()].map((session) => session.end(reason)))
  }

  flushMetrics (): void {
    for (const session of this.#byCallSid.values()) session.flushMetrics()
  }

  close (): void {
    if (this.#flushTimer !== null) clearInterval(this.#flushTimer)
    this.#flushTimer = null
  }
}
