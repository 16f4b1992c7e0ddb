import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'

/**
 * Viewer tokens of the live view: `lv1.<scope>.<expiry>.<mac>`. `scope` is one CallSid or `*` (every
 * call, for a supervisor); `expiry` is Unix seconds; `mac` is base64url (unpadded) HMAC-SHA256 over
 * `lv1.<scope>.<expiry>`. Stateless, so a contact center's own backend can mint them with the key, and
 * any replica verifies them. They travel only in an `Authorization: Bearer` header.
 */

export const VIEWER_TOKEN_VERSION = 'lv1'
/** The scope of a supervisor token: every live call. */
export const SUPERVISOR_SCOPE = '*'
/** Default lifetime of a minted token, seconds. */
export const VIEWER_TOKEN_TTL_SECONDS = 3600
/** HKDF info string of the key derived from the stream token key when LIVE_VIEW_SECRET is unset. */
export const LIVE_VIEW_KEY_INFO = 'medstream live view v1'

/** base64url of a 32-byte HMAC-SHA256, unpadded. */
const MAC_LENGTH = 43
const MAX_EXPIRY_DIGITS = 11
/** Twilio CallSids are 34 characters; the bound only keeps a hostile header from costing anything. */
const MAX_SCOPE_LENGTH = 64
const MAX_TOKEN_LENGTH = VIEWER_TOKEN_VERSION.length + 1 + MAX_SCOPE_LENGTH + 1 + MAX_EXPIRY_DIGITS + 1 + MAC_LENGTH
const SCOPE = /^(\*|[A-Za-z0-9_-]{1,64})$/

export interface ViewerGrant {
  /** A CallSid, or `*`. */
  scope: string
  /** Unix seconds. */
  expiry: number
}

/** 'malformed' and 'forged' are both "not a token of ours" (401); 'expired' is a genuine token past its time. */
export type ViewerTokenCheck = { ok: true, grant: ViewerGrant } | { ok: false, reason: 'malformed' | 'forged' | 'expired' }

/** The viewer token key when LIVE_VIEW_SECRET is unset: its own key, derived from the stream token key. */
export function deriveLiveViewKey (streamTokenKey: Buffer): Buffer {
  if (streamTokenKey.length === 0) throw new TypeError('deriveLiveViewKey needs the stream token key; set LIVE_VIEW_SECRET or STREAM_TOKEN_SECRET')
  return Buffer.from(hkdfSync('sha256', streamTokenKey, Buffer.alloc(0), LIVE_VIEW_KEY_INFO, 32))
}

/**
 * @param key LIVE_VIEW_SECRET's UTF-8 bytes, or deriveLiveViewKey's output
 * @param scope a CallSid or `*`
 * @param nowMs wall clock, ms since the Unix epoch
 * @param ttlSeconds lifetime, a positive whole number of seconds; default 3600
 */
export function mintViewerToken (key: Buffer, scope: string, nowMs: number, ttlSeconds: number = VIEWER_TOKEN_TTL_SECONDS): string {
  if (!SCOPE.test(scope)) throw new TypeError('mintViewerToken scope must be a CallSid (letters, digits, "_" or "-", at most 64) or "*" for every call')
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) throw new RangeError('mintViewerToken ttlSeconds must be a positive whole number of seconds')
  const expiry = Math.floor(nowMs / 1000) + ttlSeconds
  return `${VIEWER_TOKEN_VERSION}.${scope}.${expiry}.${computeMac(key, scope, expiry)}`
}

/** Checks the MAC before the expiry, so 'expired' is only ever said of a genuine token. */
export function verifyViewerToken (key: Buffer, token: string, nowMs: number): ViewerTokenCheck {
  if (token.length > MAX_TOKEN_LENGTH) return { ok: false, reason: 'malformed' }
  const parts = token.split('.')
  if (parts.length !== 4 || parts[0] !== VIEWER_TOKEN_VERSION) return { ok: false, reason: 'malformed' }
  const [, scope = '', expiryText = '', mac = ''] = parts
  if (!SCOPE.test(scope) || !/^\d{1,11}$/.test(expiryText) || mac.length !== MAC_LENGTH || !/^[A-Za-z0-9_-]+$/.test(mac)) return { ok: false, reason: 'malformed' }
  const expiry = Number(expiryText)
  const expected = Buffer.from(computeMac(key, scope, expiry), 'latin1')
  if (!timingSafeEqual(Buffer.from(mac, 'latin1'), expected)) return { ok: false, reason: 'forged' }
  if (nowMs >= expiry * 1000) return { ok: false, reason: 'expired' }
  return { ok: true, grant: { scope, expiry } }
}

/** Whether a grant lets its holder watch `callSid`. */
export function grantCovers (grant: ViewerGrant, callSid: string): boolean {
  return grant.scope === SUPERVISOR_SCOPE || grant.scope === callSid
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken (header: string | undefined): string | null {
  if (header === undefined) return null
  const match = /^Bearer ([^\s]+)$/i.exec(header.trim())
  return match === null ? null : (match[1] as string)
}

function computeMac (key: Buffer, scope: string, expiry: number): string {
  return createHmac('sha256', key).update(`${VIEWER_TOKEN_VERSION}.${scope}.${expiry}`).digest('base64url')
}
