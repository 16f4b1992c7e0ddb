/**
 * When a failed webhook attempt is tried again: exponential backoff with jitter, a receiver's
 * `Retry-After` as a floor, and the 24 h window after which an event becomes a dead letter. Pure
 * functions of their inputs; the sender owns the clock.
 */

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

export const RETRY_DEFAULTS: Readonly<RetryOptions> = Object.freeze({
  initialMs: 1000,
  factor: 2,
  maxDelayMs: 300_000,
  maxAgeMs: 86_400_000,
  retryAfterCapMs: 600_000,
  jitter: 0.2
})

/** Merges `overrides` into the defaults and refuses values that cannot work. */
export function retryOptions (overrides: Partial<RetryOptions> = {}): RetryOptions {
  const retry = { ...RETRY_DEFAULTS, ...overrides }
  positive('retry.initialMs', retry.initialMs)
  positive('retry.maxDelayMs', retry.maxDelayMs)
  positive('retry.maxAgeMs', retry.maxAgeMs)
  positive('retry.retryAfterCapMs', retry.retryAfterCapMs)
  if (!(retry.factor >= 1)) throw new RangeError(`retry.factor must be at least 1, got ${retry.factor}`)
  if (!(retry.jitter >= 0 && retry.jitter <= 1)) throw new RangeError(`retry.jitter must be within 0–1, got ${retry.jitter}`)
  return retry
}

export function positive (name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number of the documented unit, got ${value}`)
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

/** What to do with an event after a failed attempt that was not cut off by shutdown or a 410. */
export type RetryDecision =
  | { action: 'dead' }
  | { action: 'retry', nextAttemptAt: number, notBefore: number | null }

/**
 * Dead letter once the event's window (from `queuedAt`) is used up; otherwise the next attempt time.
 * The last attempt falls at the end of the window rather than after it.
 */
export function decideRetry (event: { attempts: number, queuedAt: number }, retryAfterMs: number | null, now: number, retry: RetryOptions, random: () => number): RetryDecision {
  if (now - event.queuedAt >= retry.maxAgeMs) return { action: 'dead' }
  const delayMs = nextDelayMs(event.attempts + 1, retryAfterMs, retry, random)
  const notBefore = retryAfterMs === null ? null : now + Math.min(retryAfterMs, retry.retryAfterCapMs)
  return { action: 'retry', nextAttemptAt: Math.min(now + delayMs, event.queuedAt + retry.maxAgeMs), notBefore }
}
