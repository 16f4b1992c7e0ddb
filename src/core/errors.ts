/**
 * The one registry of medstream's error codes. Errors that cross an I/O boundary (AssemblyAI, the
 * webhook receiver) say whether a retry can help. Messages tell the operator what to do; they never
 * carry transcript text, phone numbers, tokens or keys.
 */
export const ERROR_CODES = {
  MS_ERR_CONFIG: 'a configuration value is missing or invalid; the message names the variable and the fix',
  MS_ERR_UPSTREAM: 'an AssemblyAI session failed; `retryable` says whether a new session can help',
  MS_ERR_DELIVERY: 'a webhook attempt failed; it is retried with backoff for 24 hours (`retryable` false: 410 Gone paused delivery)',
  MS_ERR_SCHEMA: 'the PostgreSQL database holds a newer medstream schema than this build knows; run the newer build (never an older one) against it',
  MS_ERR_SINK_CLOSED: 'an event was published after the event sink closed (a bug: calls end before the sink)',
  MS_ERR_INVALID_CALL_SID: 'an event carried a call_sid that is not a Twilio CallSid; it was not written to a file'
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class MedstreamError extends Error {
  readonly code: ErrorCode
  readonly retryable: boolean
  constructor (code: ErrorCode, message: string, options: { retryable?: boolean, cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'MedstreamError'
    this.code = code
    this.retryable = options.retryable ?? false
  }
}

export class ConfigError extends MedstreamError {
  readonly variable: string
  constructor (variable: string, message: string) {
    super('MS_ERR_CONFIG', `${variable}: ${message}`)
    this.name = 'ConfigError'
    this.variable = variable
  }
}

/**
 * What ended an AssemblyAI session: a WebSocket close code (equal to the Error frame's `error_code`),
 * 'network' when the socket failed without one (1006, DNS, TCP reset), or the HTTP status with which
 * the server refused the upgrade.
 */
export type UpstreamFailure = { closeCode: number | 'network' } | { httpStatus: number }

/** An AssemblyAI session failure; exactly one of `closeCode` and `httpStatus` is set. */
export class UpstreamError extends MedstreamError {
  /** The WebSocket close code, or 'network'; null when the upgrade was refused over HTTP. */
  readonly closeCode: number | 'network' | null
  /** The HTTP status of a refused upgrade; null once the WebSocket was open. */
  readonly httpStatus: number | null
  constructor (failure: UpstreamFailure, message: string, retryable: boolean, cause?: unknown) {
    super('MS_ERR_UPSTREAM', message, { retryable, cause })
    this.name = 'UpstreamError'
    this.closeCode = 'closeCode' in failure ? failure.closeCode : null
    this.httpStatus = 'httpStatus' in failure ? failure.httpStatus : null
  }
}

/**
 * A webhook attempt that failed: a non-2xx answer, a timeout or a network error. `reason` is
 * `status`, `redirect`, `timeout`, `shutdown`, `lease` or `network:<code>` (never a URL); `retryable` is false
 * only for `410 Gone`, which pauses delivery until an operator resumes it.
 */
export class DeliveryError extends MedstreamError {
  readonly status: number | null
  readonly reason: string
  readonly retryAfterMs: number | null
  constructor (message: string, options: { reason: string, status?: number | null, retryAfterMs?: number | null, retryable?: boolean, cause?: unknown }) {
    super('MS_ERR_DELIVERY', message, { retryable: options.retryable ?? true, cause: options.cause })
    this.name = 'DeliveryError'
    this.reason = options.reason
    this.status = options.status ?? null
    this.retryAfterMs = options.retryAfterMs ?? null
  }
}
