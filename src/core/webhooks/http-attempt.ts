import { Webhook } from 'standardwebhooks'
import { DeliveryError } from '../errors.ts'
import { parseRetryAfterMs } from './retry-policy.ts'

const MAX_RESPONSE_BYTES = 64 * 1024

/** Why an attempt was aborted from outside: the drain deadline passed. */
export const SHUTDOWN = Symbol('shutdown')
/** Why an attempt was aborted from outside: in a fleet, this replica could not renew its lease on the stream. */
export const LEASE_LOST = Symbol('lease')
const TIMEOUT = Symbol('timeout')

export interface HttpAttemptOptions {
  /** The receiver, `http:` or `https:`. Redirects are not followed: a 3xx is a failed attempt. */
  url: string
  /** Validated `whsec_…` secrets (see `loadConfig`); every attempt is signed with each. */
  secrets: readonly string[]
  /** From request to response headers and a short body, ms. */
  timeoutMs: number
  /** `user-agent` header. */
  userAgent: string
  /** Wall clock, epoch ms, for an HTTP-date `Retry-After`. Default Date.now. */
  now?: () => number
}

/** What is sent: the stored bytes of one event under its stable `webhook-id`. */
export interface AttemptEvent {
  id: string
  body: string
}

/**
 * One signed POST of one event (Standard Webhooks). Resolves with the status on 2xx; rejects with a
 * `DeliveryError` otherwise. Holds no state between attempts.
 */
export class HttpAttempt {
  readonly #url: string
  readonly #signers: Webhook[]
  readonly #timeoutMs: number
  readonly #userAgent: string
  readonly #now: () => number

  constructor (options: HttpAttemptOptions) {
    const url = new URL(options.url)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError('url must be an http: or https: URL')
    if (options.secrets.length === 0) throw new TypeError('secrets must hold at least one whsec_ secret; loadConfig validates WEBHOOK_SECRET')
    // Config validated the secrets; a failure here is a caller that skipped it, so the message names
    // the position only, never the value.
    this.#signers = options.secrets.map((secret, index) => {
      try {
        return new Webhook(secret)
      } catch {
        throw new TypeError(`secret #${index + 1} is not whsec_ followed by base64; loadConfig validates WEBHOOK_SECRET`)
      }
    })
    this.#url = url.href
    this.#timeoutMs = options.timeoutMs
    this.#userAgent = options.userAgent
    this.#now = options.now ?? Date.now
  }

  /** `attemptAt` (epoch ms) becomes `webhook-timestamp`; `signal` aborted with `SHUTDOWN` or `LEASE_LOST` cuts the attempt off. */
  async send (event: AttemptEvent, attemptAt: number, signal: AbortSignal): Promise<number> {
    const timestamp = new Date(Math.floor(attemptAt / 1000) * 1000)
    const signature = this.#signers.map((signer) => signer.sign(event.id, timestamp, event.body)).join(' ')
    const controller = new AbortController()
    const onAbort = (): void => controller.abort(signal.reason)
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
    const timer = setTimeout(() => controller.abort(TIMEOUT), this.#timeoutMs)
    let response: Response
    try {
      response = await fetch(this.#url, {
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
    } catch (err) {
      if (controller.signal.aborted) {
        const why = controller.signal.reason
        const reason = why === TIMEOUT ? 'timeout' : why === LEASE_LOST ? 'lease' : 'shutdown'
        const message = reason === 'timeout' ? 'timed out' : reason === 'lease' ? 'cut off: lease not renewed' : 'cut off by shutdown'
        throw new DeliveryError(`webhook attempt ${message}`, { reason, cause: err })
      }
      const code = networkCode(err)
      throw new DeliveryError(`webhook attempt failed: ${code}`, { reason: `network:${code}`, cause: err })
    } finally {
      clearTimeout(timer)
      signal.removeEventListener('abort', onAbort)
    }
    const status = response.status
    if (status >= 200 && status < 300) return status
    const redirect = status >= 300 && status < 400
    throw new DeliveryError(`webhook receiver answered ${status}`, {
      reason: redirect ? 'redirect' : 'status',
      status,
      retryAfterMs: parseRetryAfterMs(response.headers.get('retry-after'), this.#now()),
      retryable: status !== 410
    })
  }
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
