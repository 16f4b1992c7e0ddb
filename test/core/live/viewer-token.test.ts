import assert from 'node:assert/strict'
import { createHmac, hkdfSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { bearerToken, deriveLiveViewKey, grantCovers, mintViewerToken, verifyViewerToken } from '../../../src/core/live/viewer-token.ts'

const KEY = Buffer.from('a live view secret of at least thirty-two characters', 'utf8')
const NOW = Date.UTC(2026, 11, 1, 12, 0, 0)

test('viewer token matches the documented HMAC over lv1.<scope>.<expiry> when minted', () => {
  const token = mintViewerToken(KEY, 'CA0123456789abcdef0123456789abcdef', NOW, 600)
  const expiry = NOW / 1000 + 600
  const mac = createHmac('sha256', KEY).update(`lv1.CA0123456789abcdef0123456789abcdef.${expiry}`).digest('base64url')
  assert.equal(token, `lv1.CA0123456789abcdef0123456789abcdef.${expiry}.${mac}`)
  assert.deepEqual(verifyViewerToken(KEY, token, NOW), { ok: true, grant: { scope: 'CA0123456789abcdef0123456789abcdef', expiry } })
})

test('viewer token verifies a supervisor scope and covers every call when the scope is *', () => {
  const check = verifyViewerToken(KEY, mintViewerToken(KEY, '*', NOW), NOW)
  assert.ok(check.ok)
  assert.equal(grantCovers(check.grant, 'CAanything'), true)
  const one = verifyViewerToken(KEY, mintViewerToken(KEY, 'CA1', NOW), NOW)
  assert.ok(one.ok)
  assert.equal(grantCovers(one.grant, 'CA1'), true)
  assert.equal(grantCovers(one.grant, 'CA2'), false)
})

test('viewer token is refused as forged when its scope, expiry or key differ', () => {
  const token = mintViewerToken(KEY, 'CA1', NOW)
  const [version, , expiry, mac] = token.split('.')
  assert.deepEqual(verifyViewerToken(KEY, `${version}.*.${expiry}.${mac}`, NOW), { ok: false, reason: 'forged' })
  assert.deepEqual(verifyViewerToken(KEY, `${version}.CA1.${Number(expiry) + 1}.${mac}`, NOW), { ok: false, reason: 'forged' })
  assert.deepEqual(verifyViewerToken(Buffer.from('another key of at least thirty-two characters!'), token, NOW), { ok: false, reason: 'forged' })
})

test('viewer token is refused as expired only when genuine and past its expiry', () => {
  const token = mintViewerToken(KEY, 'CA1', NOW, 60)
  assert.equal(verifyViewerToken(KEY, token, NOW + 59_999).ok, true)
  assert.deepEqual(verifyViewerToken(KEY, token, NOW + 60_000), { ok: false, reason: 'expired' })
})

test('viewer token is refused as malformed when it is not an lv1 token', () => {
  for (const bad of ['', 'lv1', 'v1.123.abc', 'lv2.CA1.1.' + 'a'.repeat(43), 'lv1.CA.1.1.' + 'a'.repeat(43), 'lv1.C A.1.' + 'a'.repeat(43), 'lv1.CA1.x.' + 'a'.repeat(43), 'lv1.CA1.1.' + 'a'.repeat(42), 'lv1.' + 'C'.repeat(65) + '.1.' + 'a'.repeat(43)]) {
    assert.deepEqual(verifyViewerToken(KEY, bad, NOW), { ok: false, reason: 'malformed' }, bad)
  }
})

test('mintViewerToken refuses a scope with a dot and a ttl that is not a positive whole number', () => {
  assert.throws(() => mintViewerToken(KEY, 'CA.1', NOW), TypeError)
  assert.throws(() => mintViewerToken(KEY, 'CA1', NOW, 0), RangeError)
  assert.throws(() => mintViewerToken(KEY, 'CA1', NOW, 1.5), RangeError)
})

test('deriveLiveViewKey is HKDF-SHA256 of the stream token key with the live view info when LIVE_VIEW_SECRET is unset', () => {
  const streamKey = Buffer.from('stream token secret of at least 32 chars', 'utf8')
  assert.deepEqual(deriveLiveViewKey(streamKey), Buffer.from(hkdfSync('sha256', streamKey, Buffer.alloc(0), 'medstream live view v1', 32)))
  assert.notDeepEqual(deriveLiveViewKey(streamKey), streamKey)
})

test('bearerToken reads only an Authorization Bearer header', () => {
  assert.equal(bearerToken('Bearer lv1.x'), 'lv1.x')
  assert.equal(bearerToken('bearer lv1.x'), 'lv1.x')
  assert.equal(bearerToken(undefined), null)
  assert.equal(bearerToken('Basic abc'), null)
  assert.equal(bearerToken('Bearer a b'), null)
})

test('the worked example in docs/interface.md is what mintViewerToken makes from its key, scope and expiry', () => {
  const doc = readFileSync(new URL('../../../docs/interface.md', import.meta.url), 'utf8')
  const key = Buffer.from('example-live-view-secret-0123456789abcdef', 'utf8')
  const at = 1764600000 * 1000 - 3600 * 1000
  for (const scope of ['CA5f2b7c0d9e8a41f3b6c2d1e0f9a8b7c6', '*']) {
    const token = mintViewerToken(key, scope, at, 3600)
    assert.ok(doc.includes(token), `${token} is in the worked example`)
  }
})
