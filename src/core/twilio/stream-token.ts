import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'

/**
 * The per-call stream token (docs/interface.md, "Twilio-facing behaviour", stream token): `v1.<expiry>.<mac>`, carried in the TwiML as
 * `<Parameter name="token">` and read back from `start.customParameters.token`. `expiry` is Unix
 * seconds; `mac` is base64url HMAC-SHA256 over `v1.<call_sid>.<account_sid>.<expiry>`. Stateless, so
 * any replica holding the secret can verify it.
 */

/** Lifetime of a freshly minted token, in seconds. */
const STREAM_TOKEN_TTL_SECONDS = 300

export type TokenCheck = 'ok' | 'malformed' | 'expired' | 'mismatch'

const VERSION = 'v1'
/** base64url of a 32-byte HMAC-SHA256, unpadded. */
const MAC_LENGTH = 43
/** Unix seconds fit in 11 digits until the year 5138; more digits are not a token we minted. */
const MAX_EXPIRY_DIGITS = 11
const MAX_TOKEN_LENGTH = VERSION.length + 1 + MAX_EXPIRY_DIGITS + 1 + MAC_LENGTH
const DERIVATION_LABEL = 'medstream stream token v1'

/**
 * @param secret the STREAM_TOKEN_SECRET bytes (or deriveStreamTokenSecret's output)
 * @param callSid the webhook's CallSid (must not contain '.', which separates the MAC's fields)
 * @param accountSid the webhook's AccountSid (same rule)
 * @param nowMs wall clock, ms since the Unix epoch
 * @param ttlSeconds lifetime; default 300
 */
export function mintStreamToken (secret: Buffer, callSid: string, accountSid: string, nowMs: number, ttlSeconds: number = STREAM_TOKEN_TTL_SECONDS): string {
  if (!isIdentity(callSid) || !isIdentity(accountSid)) {
    throw new TypeError('mintStreamToken needs a non-empty CallSid and AccountSid without "."; validate the webhook fields before minting')
  }
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) throw new RangeError('mintStreamToken ttlSeconds must be a positive integer')
  const expiry = Math.floor(nowMs / 1000) + ttlSeconds
  return `${VERSION}.${expiry}.${computeMac(secret, callSid, accountSid, expiry)}`
}

/**
 * Verifies a token presented in `start.customParameters.token` for the stream's CallSid and
 * AccountSid. The MAC is checked before the expiry so that 'expired' is only said of genuine tokens.
 * @returns 'malformed' (not a v1 token), 'mismatch' (bad MAC, or minted for another call or account),
 *   'expired' (genuine but past its expiry) or 'ok'
 */
export function verifyStreamToken (secret: Buffer, token: unknown, callSid: string, accountSid: string, nowMs: number): TokenCheck {
  if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) return 'malformed'
  const firstDot = token.indexOf('.')
  const secondDot = token.indexOf('.', firstDot + 1)
  if (firstDot < 0 || secondDot < 0 || token.slice(0, firstDot) !== VERSION) return 'malformed'
  const expiryText = token.slice(firstDot + 1, secondDot)
  const mac = token.slice(secondDot + 1)
  if (!isDigits(expiryText, MAX_EXPIRY_DIGITS) || mac.length !== MAC_LENGTH || !isBase64Url(mac)) return 'malformed'
  if (!isIdentity(callSid) || !isIdentity(accountSid)) return 'mismatch'
  const expiry = Number(expiryText)
  const expected = Buffer.from(computeMac(secret, callSid, accountSid, expiry), 'latin1')
  if (!timingSafeEqual(Buffer.from(mac, 'latin1'), expected)) return 'mismatch'
  return nowMs >= expiry * 1000 ? 'expired' : 'ok'
}

/**
 * The token key when STREAM_TOKEN_SECRET is not set: HKDF-SHA256 of the Twilio auth token with a
 * fixed label, so the auth token itself never keys anything but Twilio's own signatures, and every
 * replica with the same auth token derives the same key.
 */
export function deriveStreamTokenSecret (twilioAuthToken: string): Buffer {
  if (twilioAuthToken.length === 0) throw new TypeError('deriveStreamTokenSecret needs the Twilio auth token; set TWILIO_AUTH_TOKEN or STREAM_TOKEN_SECRET')
  return Buffer.from(hkdfSync('sha256', twilioAuthToken, Buffer.alloc(0), DERIVATION_LABEL, 32))
}

function computeMac (secret: Buffer, callSid: string, accountSid: string, expiry: number): string {
  return createHmac('sha256', secret).update(`${VERSION}.${callSid}.${accountSid}.${expiry}`).digest('base64url')
}

/** '.' separates the MAC's fields: a Sid containing one could collide with another pair. */
function isIdentity (sid: string): boolean {
  return sid.length > 0 && !sid.includes('.')
}

function isDigits (text: string, maxLength: number): boolean {
  if (text.length === 0 || text.length > maxLength) return false
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 48 || code > 57) return false
  }
  return true
}

function isBase64Url (text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    const ok = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 95
    if (!ok) return false
  }
  return true
}
