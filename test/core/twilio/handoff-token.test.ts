import assert from 'node:assert/strict'
import { test } from 'node:test'
import { HANDOFF_PARAMETERS, isHandoffParameter, mintHandoffParameters, verifyHandoffParameters } from '../../../src/core/twilio/handoff-token.ts'
import type { HandoffClaim } from '../../../src/core/twilio/handoff-token.ts'
import { answerVoiceWebhook } from '../../../src/core/twilio/voice.ts'

const SECRET = Buffer.from('handoff-test-secret-0123456789abcdef')
const NOW = 1_780_000_000_000
const claim: HandoffClaim = {
  callSid: 'CA' + '1'.repeat(32),
  accountSid: 'AC' + '2'.repeat(32),
  previousStreamSid: 'MZ' + '3'.repeat(32),
  segment: 2,
  atMs: 61_240,
  atEpochMs: NOW - 5
}

test('handoff parameters verify for the call they were minted for', () => {
  const parameters = mintHandoffParameters(SECRET, claim, NOW)
  assert.match(parameters.handoff ?? '', /^h1\.\d+\.[A-Za-z0-9_-]{43}$/)
  assert.deepEqual(verifyHandoffParameters(SECRET, { ...parameters, clinic: 'north' }, claim.callSid, claim.accountSid, NOW + 1000), { check: 'ok', claim })
})

test('handoff verification answers null when the stream carries no handoff parameter', () => {
  assert.equal(verifyHandoffParameters(SECRET, { token: 'v1.1.x', clinic: 'north' }, claim.callSid, claim.accountSid, NOW), null)
})

test('handoff verification refuses with mismatch when the call, account, segment, offset, epoch or previous stream changed', () => {
  const parameters = mintHandoffParameters(SECRET, claim, NOW)
  const other = 'CA' + '9'.repeat(32)
  assert.deepEqual(verifyHandoffParameters(SECRET, parameters, other, claim.accountSid, NOW), { check: 'mismatch' })
  assert.deepEqual(verifyHandoffParameters(SECRET, parameters, claim.callSid, 'AC' + '9'.repeat(32), NOW), { check: 'mismatch' })
  const tampered: Array<[string, string]> = [
    [HANDOFF_PARAMETERS.segment, '3'],
    [HANDOFF_PARAMETERS.atMs, '60240'],
    [HANDOFF_PARAMETERS.atEpochMs, String(claim.atEpochMs + 1000)],
    [HANDOFF_PARAMETERS.previousStreamSid, 'MZ' + '4'.repeat(32)]
  ]
  for (const [name, value] of tampered) {
    assert.deepEqual(verifyHandoffParameters(SECRET, { ...parameters, [name]: value }, claim.callSid, claim.accountSid, NOW), { check: 'mismatch' }, name)
  }
})

test('handoff verification refuses with mismatch when the token was signed with another key', () => {
  const forged = mintHandoffParameters(Buffer.from('another-secret-another-secret-0000'), claim, NOW)
  assert.deepEqual(verifyHandoffParameters(SECRET, forged, claim.callSid, claim.accountSid, NOW), { check: 'mismatch' })
})

test('handoff verification refuses with expired when a genuine token is past its expiry', () => {
  const parameters = mintHandoffParameters(SECRET, claim, NOW, 60)
  assert.deepEqual(verifyHandoffParameters(SECRET, parameters, claim.callSid, claim.accountSid, NOW + 60_000), { check: 'expired' })
})

test('handoff verification refuses with malformed when a field is missing or not a whole number', () => {
  const parameters = mintHandoffParameters(SECRET, claim, NOW)
  const { [HANDOFF_PARAMETERS.atMs]: _atMs, ...withoutAt } = parameters
  assert.deepEqual(verifyHandoffParameters(SECRET, withoutAt, claim.callSid, claim.accountSid, NOW), { check: 'malformed' })
  assert.deepEqual(verifyHandoffParameters(SECRET, { ...parameters, [HANDOFF_PARAMETERS.segment]: '-2' }, claim.callSid, claim.accountSid, NOW), { check: 'malformed' })
  assert.deepEqual(verifyHandoffParameters(SECRET, { ...parameters, [HANDOFF_PARAMETERS.segment]: '1' }, claim.callSid, claim.accountSid, NOW), { check: 'malformed' })
  assert.deepEqual(verifyHandoffParameters(SECRET, { ...parameters, handoff: 'v1.1.abc' }, claim.callSid, claim.accountSid, NOW), { check: 'malformed' })
})

test('handoff parameter names are recognised so they stay out of custom_parameters', () => {
  for (const name of Object.values(HANDOFF_PARAMETERS)) assert.equal(isHandoffParameter(name), true)
  assert.equal(isHandoffParameter('clinic'), false)
  assert.equal(isHandoffParameter('token'), false)
})

test('a number\'s voice URL cannot set the handoff parameters of its first stream', () => {
  const settings = { publicUrl: new URL('https://calls.example.org'), streamTokenSecret: SECRET, forwardTo: '+15550002222', continueUrl: null }
  const query = new URLSearchParams({ clinic: 'north', handoff: 'h1.1.x', handoff_segment: '2', handoff_at_ms: '0', handoff_at_epoch_ms: '0', handoff_previous_stream_sid: 'MZ1' })
  const answer = answerVoiceWebhook({ CallSid: claim.callSid, AccountSid: claim.accountSid }, query, settings, NOW)
  assert.equal(answer.ok, true)
  if (!answer.ok) return
  assert.match(answer.twiml, /<Parameter name="clinic" value="north"\/>/)
  assert.doesNotMatch(answer.twiml, /handoff/)
})
