import { createHmac, timingSafeEqual } from 'node:crypto'
import type { TokenCheck } from './stream-token.ts'

/**
 * The handoff token (docs/interface.md, "Stream handoff"): what a draining replica puts on the second
 * stream it creates for a live call, so that the replica receiving that stream knows which call it
 * continues, from where on the call timeline, and that a medstream replica asked for it. Its own
 * version (`h1`) and its own `<Parameter>`s, all kept out of `custom_parameters`:
 *
 * - `handoff` = `h1.<expiry>.<mac>` (expiry in Unix seconds)
 * - `handoff_previous_stream_sid`, `handoff_segment`, `handoff_at_ms`, `handoff_at_epoch_ms`
 *
 * `mac` is base64url HMAC-SHA256, keyed like the stream token, over
 * `h1.<call_sid>.<account_sid>.<previous_stream_sid>.<segment>.<at_ms>.<at_epoch_ms>.<expiry>`: every
 * field is bound, so changing any of them (or presenting it on another call) breaks the MAC. The
 * `h1.` prefix keeps its MAC input apart from the stream token's `v1.` strings.
 */

export interface HandoffClaim {
  callSid: string
  accountSid: string
  /** The StreamSid the call is moving away from. */
  previousStreamSid: string
  /** The new stream's segment number: 2 for a call's first handoff. */
  segment: number
  /** The old replica's position on the call timeline when it asked Twilio for the new stream, ms. */
  atMs: number
  /** The old replica's wall clock at that moment, ms since the Unix epoch. */
  atEpochMs: number
}

export const HANDOFF_PARAMETERS = {
  token: 'handoff',
  previousStreamSid: 'handoff_previous_stream_sid',
  segment: 'handoff_segment',
  atMs: 'handoff_at_ms',
  atEpochMs: 'handoff_at_epoch_ms'
} as const

const HANDOFF_PARAMETER_NAMES: ReadonlySet<string> = new Set(Object.values(HANDOFF_PARAMETERS))

/** Whether a `<Parameter>` name belongs to the handoff (and so never reaches custom_parameters). */
export function isHandoffParameter (name: string): boolean {
  return HANDOFF_PARAMETER_NAMES.has(name)
}

/** A handoff must be taken up within this many seconds of the create. */
const HANDOFF_TOKEN_TTL_SECONDS = 120
const VERSION = 'h1'
const MAC_LENGTH = 43
/** Segments beyond this are not a call we handed off (one handoff per deploy, with room to spare). */
const MAX_SEGMENT = 10_000

export type HandoffCheck = { check: 'ok', claim: HandoffClaim } | { check: Exclude<TokenCheck, 'ok'> }

/** The `<Parameter>`s of the new stream, name → value. */
export function mintHandoffParameters (secret: Buffer, claim: HandoffClaim, nowMs: number, ttlSeconds: number = HANDOFF_TOKEN_TTL_SECONDS): Record<string, string> {
  for (const sid of [claim.callSid, claim.accountSid, claim.previousStreamSid]) {
    if (sid.length === 0 || sid.includes('.')) throw new TypeError('mintHandoffParameters needs non-empty Sids without "."')
  }
  if (!Number.isInteger(claim.segment) || claim.segment < 2 || claim.segment > MAX_SEGMENT) throw new RangeError(`handoff segment must be an integer from 2 to ${MAX_SEGMENT}, got ${claim.segment}`)
  if (!Number.isInteger(claim.atMs) || claim.atMs < 0 || !Number.isInteger(claim.atEpochMs) || claim.atEpochMs < 0) {
    throw new RangeError('handoff atMs and atEpochMs must be non-negative whole milliseconds')
  }
  const expiry = Math.floor(nowMs / 1000) + ttlSeconds
  return {
    [HANDOFF_PARAMETERS.token]: `${VERSION}.${expiry}.${computeMac(secret, claim, expiry)}`,
    [HANDOFF_PARAMETERS.previousStreamSid]: claim.previousStreamSid,
    [HANDOFF_PARAMETERS.segment]: String(claim.segment),
    [HANDOFF_PARAMETERS.atMs]: String(claim.atMs),
    [HANDOFF_PARAMETERS.atEpochMs]: String(claim.atEpochMs)
  }
}

/**
 * Reads and verifies the handoff of a `start` message's customParameters for the stream's own
 * CallSid and AccountSid. null when the stream carries no handoff at all (a call's first stream).
 */
export function verifyHandoffParameters (secret: Buffer, parameters: Record<string, string>, callSid: string, accountSid: string, nowMs: number): HandoffCheck | null {
  const present = Object.values(HANDOFF_PARAMETERS).some((name) => Object.hasOwn(parameters, name))
  if (!present) return null
  const token = parameters[HANDOFF_PARAMETERS.token]
  const previousStreamSid = parameters[HANDOFF_PARAMETERS.previousStreamSid] ?? ''
  const segment = wholeNumber(parameters[HANDOFF_PARAMETERS.segment])
  const atMs = wholeNumber(parameters[HANDOFF_PARAMETERS.atMs])
  const atEpochMs = wholeNumber(parameters[HANDOFF_PARAMETERS.atEpochMs])
  if (typeof token !== 'string' || segment === null || atMs === null || atEpochMs === null || segment < 2 || segment > MAX_SEGMENT) return { check: 'malformed' }
  const parts = token.split('.')
  const expiry = wholeNumber(parts[1])
  const mac = parts[2] ?? ''
  if (parts.length !== 3 || parts[0] !== VERSION || expiry === null || mac.length !== MAC_LENGTH) return { check: 'malformed' }
  for (const sid of [callSid, accountSid, previousStreamSid]) {
    if (sid.length === 0 || sid.includes('.')) return { check: 'mismatch' }
  }
  const claim: HandoffClaim = { callSid, accountSid, previousStreamSid, segment, atMs, atEpochMs }
  const expected = Buffer.from(computeMac(secret, claim, expiry), 'latin1')
  const given = Buffer.from(mac, 'latin1')
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { check: 'mismatch' }
  if (nowMs >= expiry * 1000) return { check: 'expired' }
  return { check: 'ok', claim }
}

function computeMac (secret: Buffer, claim: HandoffClaim, expiry: number): string {
  const input = [VERSION, claim.callSid, claim.accountSid, claim.previousStreamSid, claim.segment, claim.atMs, claim.atEpochMs, expiry].join('.')
  return createHmac('sha256', secret).update(input).digest('base64url')
}

/** Digits only (no sign, no exponent), at most 15 of them: a safe integer. */
function wholeNumber (text: string | undefined): number | null {
  if (text === undefined || !/^\d{1,15}$/.test(text)) return null
  return Number(text)
}
