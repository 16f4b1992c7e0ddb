import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { deriveStreamTokenSecret, mintStreamToken, verifyStreamToken } from '../../../src/core/twilio/stream-token.ts'

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef')
const CALL = `CA${'1'.repeat(32)}`
const ACCOUNT = `AC${'2'.repeat(32)}`
const NOW_MS = 1_800_000_000_500

test('mintStreamToken builds v1.<expiry>.<mac> as docs/interface.md specifies when given a CallSid, AccountSid and time', () => {
  const token = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS)
  const expiry = 1_800_000_000 + 300
  const mac = createHmac('sha256', SECRET).update(`v1.${CALL}.${ACCOUNT}.${expiry}`).digest('base64url')
  assert.equal(token, `v1.${expiry}.${mac}`)
  assert.match(token, /^v1\.\d+\.[A-Za-z0-9_-]{43}$/)
})

test('verifyStreamToken returns ok when the token is presented for its call before expiry', () => {
  const token = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS)
  assert.equal(verifyStreamToken(SECRET, token, CALL, ACCOUNT, NOW_MS), 'ok')
  assert.equal(verifyStreamToken(SECRET, token, CALL, ACCOUNT, NOW_MS + 299_000), 'ok')
})

test('verifyStreamToken returns expired when the lifetime has passed', () => {
  const token = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS)
  assert.equal(verifyStreamToken(SECRET, token, CALL, ACCOUNT, 1_800_000_300_000), 'expired')
  assert.equal(verifyStreamToken(SECRET, token, CALL, ACCOUNT, NOW_MS + 3_600_000), 'expired')
  const short = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS, 5)
  assert.equal(verifyStreamToken(SECRET, short, CALL, ACCOUNT, NOW_MS + 4_000), 'ok')
  assert.equal(verifyStreamToken(SECRET, short, CALL, ACCOUNT, NOW_MS + 5_000), 'expired')
})

test('verifyStreamToken returns mismatch when the call, account or secret differs', () => {
  const token = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS)
  assert.equal(verifyStreamToken(SECRET, token, `CA${'3'.repeat(32)}`, ACCOUNT, NOW_MS), 'mismatch')
  assert.equal(verifyStreamToken(SECRET, token, CALL, `AC${'3'.repeat(32)}`, NOW_MS), 'mismatch')
  assert.equal(verifyStreamToken(SECRET, token, ACCOUNT, CALL, NOW_MS), 'mismatch')
  assert.equal(verifyStreamToken(Buffer.from('another secret'), token, CALL, ACCOUNT, NOW_MS), 'mismatch')
})

test('verifyStreamToken returns mismatch when the MAC or the expiry was tampered with', () => {
  const token = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS)
  const [version, expiry, mac] = token.split('.') as [string, string, string]
  const flipped = mac.slice(0, -1) + (mac.endsWith('A') ? 'B' : 'A')
  assert.equal(verifyStreamToken(SECRET, `${version}.${expiry}.${flipped}`, CALL, ACCOUNT, NOW_MS), 'mismatch')
  assert.equal(verifyStreamToken(SECRET, `${version}.${Number(expiry) + 3600}.${mac}`, CALL, ACCOUNT, NOW_MS), 'mismatch')
  // An expired token whose expiry was pushed forward is a forgery, not an expired token.
  assert.equal(verifyStreamToken(SECRET, `${version}.${Number(expiry) + 3600}.${mac}`, CALL, ACCOUNT, NOW_MS + 600_000), 'mismatch')
})

test('mintStreamToken throws when a Sid is empty or contains a dot', () => {
  assert.throws(() => mintStreamToken(SECRET, '', ACCOUNT, NOW_MS), TypeError)
  assert.throws(() => mintStreamToken(SECRET, 'CA1.AC2', ACCOUNT, NOW_MS), TypeError)
  assert.throws(() => mintStreamToken(SECRET, CALL, 'AC.2', NOW_MS), TypeError)
  assert.throws(() => mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS, 0), RangeError)
  const token = mintStreamToken(SECRET, 'CA1', 'AC2', NOW_MS)
  // The MAC input for (CA1, AC2) must not be reachable through a dotted pair.
  assert.equal(verifyStreamToken(SECRET, token, 'CA1.AC2', '', NOW_MS), 'mismatch')
  assert.equal(verifyStreamToken(SECRET, token, 'CA1', 'AC2.', NOW_MS), 'mismatch')
})

test('verifyStreamToken returns malformed when the token is not a v1 token string', () => {
  const token = mintStreamToken(SECRET, CALL, ACCOUNT, NOW_MS)
  const [, expiry, mac] = token.split('.') as [string, string, string]
  const cases: unknown[] = [
    undefined, null, 42, {}, ['v1'], '',
    'v1', 'v1.', 'v1..', `v1.${expiry}`, `v1.${expiry}.`,
    `v2.${expiry}.${mac}`, `V1.${expiry}.${mac}`,
    `v1.${expiry}.${mac}=`, `v1.${expiry}.${mac.slice(1)}`, `v1.${expiry}.${mac}.extra`,
    `v1.-${expiry}.${mac}`, `v1.${expiry}.0.${mac}`, `v1.1e9.${mac}`, `v1.${'9'.repeat(12)}.${mac}`,
    `v1.${expiry}.${mac.slice(0, -1)}+`, `v1.${expiry}.${mac.slice(0, -1)}/`,
    `v1.${expiry}.${mac} `, 'x'.repeat(10_000)
  ]
  for (const candidate of cases) {
    assert.equal(verifyStreamToken(SECRET, candidate, CALL, ACCOUNT, NOW_MS), 'malformed', String(candidate).slice(0, 80))
  }
})

test('deriveStreamTokenSecret returns a stable 32-byte key unlike the auth token when derived', () => {
  const a = deriveStreamTokenSecret('auth-token-1')
  assert.equal(a.length, 32)
  assert.deepEqual(deriveStreamTokenSecret('auth-token-1'), a)
  assert.notDeepEqual(deriveStreamTokenSecret('auth-token-2'), a)
  assert.notDeepEqual(a.subarray(0, 'auth-token-1'.length), Buffer.from('auth-token-1'))
  const token = mintStreamToken(a, CALL, ACCOUNT, NOW_MS)
  assert.equal(verifyStreamToken(deriveStreamTokenSecret('auth-token-1'), token, CALL, ACCOUNT, NOW_MS), 'ok')
  assert.equal(verifyStreamToken(Buffer.from('auth-token-1'), token, CALL, ACCOUNT, NOW_MS), 'mismatch')
})

test('deriveStreamTokenSecret throws when the auth token is empty', () => {
  assert.throws(() => deriveStreamTokenSecret(''), /TWILIO_AUTH_TOKEN/)
})
