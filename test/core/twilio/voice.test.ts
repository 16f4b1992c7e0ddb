import assert from 'node:assert/strict'
import { test } from 'node:test'
import { verifyStreamToken } from '../../../src/core/twilio/stream-token.ts'
import { answerVoiceWebhook, parseForm, readStreamStatus } from '../../../src/core/twilio/voice.ts'

const SECRET = Buffer.from('voice-test-secret-voice-test-sec')
const CALL_SID = `CA${'a'.repeat(32)}`
const ACCOUNT_SID = `AC${'b'.repeat(32)}`
const SETTINGS = { publicUrl: new URL('https://calls.example.org'), streamTokenSecret: SECRET, forwardTo: '+15550002222', continueUrl: null }

test('parseForm keeps every value in order and gives the result no prototype when a field repeats', () => {
  const params = parseForm('Digits=2&CallSid=CA1&Digits=1&Digits=3&__proto__=x')
  assert.deepEqual(params.Digits, ['2', '1', '3'])
  assert.equal(params.CallSid, 'CA1')
  assert.equal(params.__proto__, 'x')
  assert.equal(Object.getPrototypeOf(params), null)
})

test('answerVoiceWebhook starts a stream with a token for this call and the query as parameters when the SIDs are valid', () => {
  const now = Date.now()
  const answer = answerVoiceWebhook({ CallSid: CALL_SID, AccountSid: ACCOUNT_SID }, new URLSearchParams('clinic=north&token=forged'), SETTINGS, now)
  assert.equal(answer.ok, true)
  if (!answer.ok) return
  assert.equal(answer.callSid, CALL_SID)
  assert.match(answer.twiml, /<Stream name="medstream" url="wss:\/\/calls\.example\.org\/twilio\/media" track="both_tracks" statusCallback="https:\/\/calls\.example\.org\/twilio\/stream-status" statusCallbackMethod="POST">/)
  assert.match(answer.twiml, /<Parameter name="clinic" value="north"\/>/)
  assert.doesNotMatch(answer.twiml, /forged/, 'a token in the voice URL is never passed on')
  const token = /<Parameter name="token" value="([^"]+)"\/>/.exec(answer.twiml)?.[1]
  assert.equal(verifyStreamToken(SECRET, token, CALL_SID, ACCOUNT_SID, now), 'ok')
  assert.match(answer.twiml, /<Dial><Number>\+15550002222<\/Number><\/Dial>/)
})

test('answerVoiceWebhook refuses when CallSid or AccountSid is missing or malformed', () => {
  for (const params of [{}, { CallSid: CALL_SID }, { CallSid: 'CA123', AccountSid: ACCOUNT_SID }, { CallSid: CALL_SID, AccountSid: `XX${'b'.repeat(32)}` }]) {
    const answer = answerVoiceWebhook(params, new URLSearchParams(), SETTINGS, Date.now())
    assert.equal(answer.ok, false, JSON.stringify(params))
  }
})

test('readStreamStatus ends the call as completed or stream_error only for a stopped or errored stream', () => {
  const base = { CallSid: CALL_SID, StreamSid: `MZ${'c'.repeat(32)}` }
  assert.equal(readStreamStatus({ ...base, StreamEvent: 'stream-stopped' }).endReason, 'completed')
  assert.deepEqual(readStreamStatus({ ...base, StreamEvent: 'stream-error', StreamError: 'Stream - Protocol - Malformed Message' }), {
    callSid: CALL_SID, streamSid: base.StreamSid, event: 'stream-error', error: 'Stream - Protocol - Malformed Message', endReason: 'stream_error'
  })
  assert.equal(readStreamStatus({ ...base, StreamEvent: 'stream-started' }).endReason, null)
  assert.deepEqual(readStreamStatus({}), { callSid: null, streamSid: null, event: null, error: null, endReason: null })
})
