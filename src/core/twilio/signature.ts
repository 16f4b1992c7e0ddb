import twilio from 'twilio'

/**
 * Twilio request signatures (reference/twilio-media-streams.md §4). The official helper does the
 * HMAC, the port variants and the constant-time compare; these wrappers pin down what we sign over
 * and turn every malformed input into `false` instead of an exception.
 */

/**
 * Checks `X-Twilio-Signature` of a form-encoded webhook (voice, stream status callback).
 * @param url the URL Twilio requested, as configured on Twilio: PUBLIC_URL's origin plus the request's
 *   path and query string, byte-exact (never the Host header or a re-encoded query).
 * @param params every form field received, untrimmed; `{}` for a GET.
 */
export function validateHttpSignature (authToken: string, signature: string | undefined, url: string, params: Record<string, string | string[]>): boolean {
  if (authToken.length === 0 || typeof signature !== 'string' || signature.length === 0) return false
  try {
    return twilio.validateRequest(authToken, signature, url, params)
  } catch {
    // The helper throws on a URL it cannot parse; that is a failed check, not a server error.
    return false
  }
}

/**
 * Checks `x-twilio-signature` of a Media Streams upgrade: Twilio signs the stream `url` exactly as
 * written in the TwiML (`wss://host/path`) with no params. Twilio's docs say to retry with a
 * trailing `/` toggled when a WSS handshake fails to verify (§4.3), so both forms are accepted.
 * @param streamUrl the `wss://` URL this service put in the TwiML, without a query string.
 */
export function validateUpgradeSignature (authToken: string, signature: string | undefined, streamUrl: string): boolean {
  if (validateHttpSignature(authToken, signature, streamUrl, {})) return true
  const toggled = streamUrl.endsWith('/') ? streamUrl.slice(0, -1) : `${streamUrl}/`
  return validateHttpSignature(authToken, signature, toggled, {})
}
