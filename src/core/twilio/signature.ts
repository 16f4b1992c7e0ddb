import twilio from 'twilio'
import type { UpgradeSignatureForm } from '../metrics.ts'
import { streamUrls } from './twiml.ts'
import type { FormParams } from './voice.ts'

/**
 * Twilio request signatures (docs/protocols.md, "Signatures" and "The upgrade signature"). The official helper does the
 * HMAC, the port variants and the constant-time compare; this module pins down what is signed over,
 * turns every malformed input into a refusal instead of an exception, and is the one place where
 * both Twilio routes check a signature (`TwilioSignatures`).
 */

/**
 * Checks `X-Twilio-Signature` of a form-encoded webhook (voice, stream status callback).
 * @param url the URL Twilio requested, as configured on Twilio: PUBLIC_URL's origin plus the request's
 *   path and query string, byte-exact (never the Host header or a re-encoded query).
 * @param params every form field received, untrimmed; `{}` for a GET.
 */
export function validateHttpSignature (authToken: string, signature: unknown, url: string, params: FormParams): boolean {
  if (authToken.length === 0 || typeof signature !== 'string' || signature.length === 0) return false
  try {
    return twilio.validateRequest(authToken, signature, url, params)
  } catch {
    // The helper throws on a URL it cannot parse; that is a failed check, not a server error.
    return false
  }
}

function toggleSlash (url: string): string {
  return url.endsWith('/') ? url.slice(0, -1) : `${url}/`
}

/**
 * Checks `x-twilio-signature` of a Media Streams upgrade, signed with no parameters, against the
 * stream URL and its twins; returns the form that matched, or null when none did (a forged signature,
 * or one made with another auth token).
 *
 * How Twilio signs the upgrade is not documented: the best evidence says the `wss://` URL as written
 * in the TwiML, but one of Twilio's own libraries maps it back to `https://`, and Twilio's advice for
 * a failed WebSocket check is to retry with the trailing `/` toggled. Every twin proves knowledge of
 * the auth token, so all four are accepted, and `medstream_upgrade_signatures_total{form}` counts
 * which one real calls use. With a plain-http PUBLIC_URL (loopback development) `wss` stands for
 * `ws://` and `https` for `http://`.
 * @param streamUrl the `wss://` (or loopback `ws://`) URL this service put in the TwiML, no query.
 */
export function matchUpgradeSignature (authToken: string, signature: unknown, streamUrl: string): UpgradeSignatureForm | null {
  const httpUrl = streamUrl.replace(/^ws(s?):/, 'http$1:')
  const candidates: Array<[UpgradeSignatureForm, string]> = [
    ['wss', streamUrl],
    ['wss_slash', toggleSlash(streamUrl)],
    ['https', httpUrl],
    ['https_slash', toggleSlash(httpUrl)]
  ]
  for (const [form, url] of candidates) {
    if (validateHttpSignature(authToken, signature, url, {})) return form
  }
  return null
}

/** `matchUpgradeSignature` as a yes or no. */
export function validateUpgradeSignature (authToken: string, signature: unknown, streamUrl: string): boolean {
  return matchUpgradeSignature(authToken, signature, streamUrl) !== null
}

/** The service's signature checks, bound to TWILIO_AUTH_TOKEN and PUBLIC_URL. */
export class TwilioSignatures {
  readonly #authToken: string
  readonly #origin: string
  readonly #streamUrl: string

  /**
   * @param authToken TWILIO_AUTH_TOKEN; null or empty refuses every signature.
   * @param publicUrl PUBLIC_URL: Twilio signs the URL it was given, not the Host header behind a proxy.
   */
  constructor (authToken: string | null, publicUrl: URL) {
    this.#authToken = authToken ?? ''
    this.#origin = publicUrl.origin
    this.#streamUrl = streamUrls(publicUrl).streamUrl
  }

  /**
   * A form-encoded webhook: PUBLIC_URL's origin plus `pathAndQuery` (the request's URL as received,
   * never re-encoded) and every form field received.
   */
  checkWebhook (signature: unknown, pathAndQuery: string, params: FormParams): boolean {
    return validateHttpSignature(this.#authToken, signature, this.#origin + pathAndQuery, params)
  }

  /** A Media Streams upgrade: the form that matched, or null. */
  checkUpgrade (signature: unknown): UpgradeSignatureForm | null {
    return matchUpgradeSignature(this.#authToken, signature, this.#streamUrl)
  }
}
