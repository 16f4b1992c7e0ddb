import { test } from 'node:test'
import assert from 'node:assert/strict'
import twilio from 'twilio'
import { TwilioSignatures, matchUpgradeSignature, validateHttpSignature, validateUpgradeSignature } from '../../../src/core/twilio/signature.ts'

// Vectors from Twilio's security docs and twilio-node's tests (docs/protocols.md, "Signatures"), all with auth token 12345.
const TOKEN = '12345'
const DOCS_URL = 'https://example.com/myapp.php?foo=1&bar=2'
const DOCS_PARAMS = { CallSid: 'CA1234567890ABCDE', Caller: '+14158675310', Digits: '1234', From: '+14158675310', To: '+18005551212' }
const SDK_URL = 'https://mycompany.com/myapp.php?foo=1&bar=2'
const SDK_PARAMS = { CallSid: 'CA1234567890ABCDE', Caller: '+14158675309', Digits: '1234', From: '+14158675309', To: '+18005551212' }
const ZEROS = '0'.repeat(32)
const VOICE_PARAMS = { AccountSid: `AC${ZEROS}`, ApiVersion: '2010-04-01', CallSid: `CA${ZEROS}`, CallStatus: 'ringing', Direction: 'inbound', From: '+15550001111', To: '+15550002222' }
const STATUS_PARAMS = { AccountSid: `AC${ZEROS}`, CallSid: `CA${ZEROS}`, StreamSid: `MZ${ZEROS}`, StreamName: 'transcriber', StreamEvent: 'stream-started', Timestamp: '2026-01-01T00:00:00.000Z' }

test('validateHttpSignature accepts the docs worked example when the signature matches', () => {
  assert.equal(validateHttpSignature(TOKEN, 'L/OH5YylLD5NRKLltdqwSvS0BnU=', DOCS_URL, DOCS_PARAMS), true)
})

test('validateHttpSignature accepts the twilio-node vectors when the port is present or absent', () => {
  assert.equal(validateHttpSignature(TOKEN, 'RSOYDt4T1cUTdK1PDd93/VVr8B8=', SDK_URL, SDK_PARAMS), true)
  assert.equal(twilio.getExpectedTwilioSignature(TOKEN, 'https://mycompany.com:443/myapp.php?foo=1&bar=2', SDK_PARAMS), 'kvajT1Ptam85bY51eRf/AJRuM3w=')
  assert.equal(validateHttpSignature(TOKEN, 'kvajT1Ptam85bY51eRf/AJRuM3w=', SDK_URL, SDK_PARAMS), true)
  assert.equal(validateHttpSignature(TOKEN, 'RSOYDt4T1cUTdK1PDd93/VVr8B8=', 'https://mycompany.com:443/myapp.php?foo=1&bar=2', SDK_PARAMS), true)
})

test('validateHttpSignature accepts our voice webhook vector when all fields are signed', () => {
  assert.equal(validateHttpSignature(TOKEN, 'z9E7ICjyJwfuLpXh+Yr0yaKjF0U=', 'https://example.com/twilio/voice', VOICE_PARAMS), true)
})

test('validateHttpSignature accepts the stream status callback vector when all fields are signed', () => {
  assert.equal(validateHttpSignature(TOKEN, 'pN81LVXtJCCFuVX5+mnlFnV+CmU=', 'https://example.com/twilio/stream-status', STATUS_PARAMS), true)
})

test('validateHttpSignature accepts the bodySHA256 vector when params are empty', () => {
  const url = 'https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620'
  assert.equal(validateHttpSignature(TOKEN, 'a9nBmqA0ju/hNViExpshrM61xv4=', url, {}), true)
})

test('validateHttpSignature rejects when a field, the URL, the token or the signature differs', () => {
  const url = 'https://example.com/twilio/voice'
  const signature = 'z9E7ICjyJwfuLpXh+Yr0yaKjF0U='
  assert.equal(validateHttpSignature(TOKEN, signature, url, { ...VOICE_PARAMS, From: '+15550009999' }), false)
  assert.equal(validateHttpSignature(TOKEN, signature, url, { ...VOICE_PARAMS, Extra: '' }), false)
  const { Direction: _direction, ...missingOne } = VOICE_PARAMS
  assert.equal(validateHttpSignature(TOKEN, signature, url, missingOne), false)
  assert.equal(validateHttpSignature(TOKEN, signature, `${url}?clinic=north`, VOICE_PARAMS), false)
  assert.equal(validateHttpSignature(TOKEN, signature, 'http://example.com/twilio/voice', VOICE_PARAMS), false)
  assert.equal(validateHttpSignature('54321', signature, url, VOICE_PARAMS), false)
  assert.equal(validateHttpSignature(TOKEN, 'z9E7ICjyJwfuLpXh+Yr0yaKjF0V=', url, VOICE_PARAMS), false)
})

test('validateHttpSignature returns false when the signature is missing or empty or the URL unparsable', () => {
  assert.equal(validateHttpSignature(TOKEN, undefined, DOCS_URL, DOCS_PARAMS), false)
  assert.equal(validateHttpSignature(TOKEN, '', DOCS_URL, DOCS_PARAMS), false)
  assert.equal(validateHttpSignature('', 'L/OH5YylLD5NRKLltdqwSvS0BnU=', DOCS_URL, DOCS_PARAMS), false)
  assert.equal(validateHttpSignature(TOKEN, 'L/OH5YylLD5NRKLltdqwSvS0BnU=', 'not a url', DOCS_PARAMS), false)
})

test('validateHttpSignature signs every value when a field repeats', () => {
  const url = 'https://example.com/twilio/voice'
  const params = { Digits: ['2', '1'], CallSid: 'CA1' }
  const signature = twilio.getExpectedTwilioSignature(TOKEN, url, params)
  assert.equal(validateHttpSignature(TOKEN, signature, url, params), true)
  assert.equal(validateHttpSignature(TOKEN, signature, url, { Digits: '1', CallSid: 'CA1' }), false)
})

test('validateUpgradeSignature accepts the stream URL vector when the signature is over wss and no params', () => {
  assert.equal(validateUpgradeSignature(TOKEN, 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=', 'wss://example.com/twilio/media'), true)
  assert.equal(validateUpgradeSignature(TOKEN, 'hoaxtdkWNBxVYCmDLq7UdjDdXIg=', 'wss://example.com/'), true)
})

test('validateUpgradeSignature accepts the trailing-slash variant when Twilio signed the other form', () => {
  assert.equal(validateUpgradeSignature(TOKEN, 'hoaxtdkWNBxVYCmDLq7UdjDdXIg=', 'wss://example.com'), true)
  assert.equal(validateUpgradeSignature(TOKEN, 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=', 'wss://example.com/twilio/media/'), true)
})

test('validateUpgradeSignature accepts a signature over the default port when the URL names it', () => {
  assert.equal(validateUpgradeSignature(TOKEN, 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=', 'wss://example.com:443/twilio/media'), true)
})

test('matchUpgradeSignature names the form when the signature is over the wss or https twin, with or without a slash', () => {
  const stream = 'wss://example.com/twilio/media'
  const over = (url: string): string => twilio.getExpectedTwilioSignature(TOKEN, url, {})
  assert.equal(over(stream), 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=')
  assert.equal(matchUpgradeSignature(TOKEN, over(stream), stream), 'wss')
  assert.equal(matchUpgradeSignature(TOKEN, over(`${stream}/`), stream), 'wss_slash')
  assert.equal(matchUpgradeSignature(TOKEN, over('https://example.com/twilio/media'), stream), 'https')
  assert.equal(matchUpgradeSignature(TOKEN, over('https://example.com/twilio/media/'), stream), 'https_slash')
})

test('matchUpgradeSignature maps ws to http when PUBLIC_URL is plain http', () => {
  const stream = 'ws://127.0.0.1:3000/twilio/media'
  assert.equal(matchUpgradeSignature(TOKEN, twilio.getExpectedTwilioSignature(TOKEN, 'http://127.0.0.1:3000/twilio/media', {}), stream), 'https')
  assert.equal(matchUpgradeSignature(TOKEN, twilio.getExpectedTwilioSignature(TOKEN, 'https://127.0.0.1:3000/twilio/media', {}), stream), null)
})

test('matchUpgradeSignature refuses when the signature is forged, made with another token or over another host', () => {
  const stream = 'wss://example.com/twilio/media'
  assert.equal(matchUpgradeSignature(TOKEN, 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=', stream), null)
  for (const url of [stream, `${stream}/`, 'https://example.com/twilio/media', 'https://example.com/twilio/media/']) {
    assert.equal(matchUpgradeSignature(TOKEN, twilio.getExpectedTwilioSignature('54321', url, {}), stream), null)
  }
  assert.equal(matchUpgradeSignature(TOKEN, twilio.getExpectedTwilioSignature(TOKEN, 'https://example.org/twilio/media', {}), stream), null)
  assert.equal(matchUpgradeSignature(TOKEN, twilio.getExpectedTwilioSignature(TOKEN, 'https://example.com/twilio/media', { a: '1' }), stream), null)
})

test('TwilioSignatures checks webhooks over PUBLIC_URL origin when the request came through a proxy', () => {
  const signatures = new TwilioSignatures(TOKEN, new URL('https://example.com/ignored/path'))
  assert.equal(signatures.checkWebhook('z9E7ICjyJwfuLpXh+Yr0yaKjF0U=', '/twilio/voice', VOICE_PARAMS), true)
  assert.equal(signatures.checkWebhook('z9E7ICjyJwfuLpXh+Yr0yaKjF0U=', '/twilio/voice?x=1', VOICE_PARAMS), false)
  assert.equal(signatures.checkWebhook(['z9E7ICjyJwfuLpXh+Yr0yaKjF0U='], '/twilio/voice', VOICE_PARAMS), false)
  assert.equal(signatures.checkUpgrade('Ko8aymfVk0cCegaxVKH0ZCvSyf4='), 'wss')
  assert.equal(new TwilioSignatures(null, new URL('https://example.com')).checkUpgrade('Ko8aymfVk0cCegaxVKH0ZCvSyf4='), null)
})

test('validateUpgradeSignature rejects when the header is missing, the path differs or the token differs', () => {
  assert.equal(validateUpgradeSignature(TOKEN, undefined, 'wss://example.com/twilio/media'), false)
  assert.equal(validateUpgradeSignature(TOKEN, '', 'wss://example.com/twilio/media'), false)
  assert.equal(validateUpgradeSignature(TOKEN, 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=', 'wss://example.com/twilio/media2'), false)
  assert.equal(validateUpgradeSignature(TOKEN, 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=', 'wss://example.org/twilio/media'), false)
  assert.equal(validateUpgradeSignature('54321', 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=', 'wss://example.com/twilio/media'), false)
})
