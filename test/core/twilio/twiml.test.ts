import { test } from 'node:test'
import assert from 'node:assert/strict'
import { buildStreamTwiml } from '../../../src/core/twilio/twiml.ts'
import { parseTwiml } from '../../fakes/twilio-simulator.ts'

const BASE = {
  streamUrl: 'wss://calls.example.org/twilio/media',
  statusCallbackUrl: 'https://calls.example.org/twilio/stream-status',
  parameters: { token: 'v1.1800000300.abc', clinic: 'north' }
}

test('buildStreamTwiml starts a both-tracks stream then dials when forwardTo is a number', () => {
  const { twiml, droppedParameters } = buildStreamTwiml({ ...BASE, forwardTo: '+15550002222' })
  assert.deepEqual(droppedParameters, [])
  assert.equal(twiml,
    '<?xml version="1.0" encoding="UTF-8"?><Response><Start><Stream name="medstream" url="wss://calls.example.org/twilio/media" track="both_tracks" ' +
    'statusCallback="https://calls.example.org/twilio/stream-status" statusCallbackMethod="POST"><Parameter name="token" value="v1.1800000300.abc"/>' +
    '<Parameter name="clinic" value="north"/></Stream></Start><Dial><Number>+15550002222</Number></Dial></Response>')
  assert.deepEqual(parseTwiml(twiml), {
    stream: {
      name: 'medstream',
      url: 'wss://calls.example.org/twilio/media',
      track: 'both_tracks',
      statusCallback: 'https://calls.example.org/twilio/stream-status',
      statusCallbackMethod: 'POST',
      parameters: { token: 'v1.1800000300.abc', clinic: 'north' }
    },
    dial: { number: '+15550002222' },
    redirect: null
  })
})

test('buildStreamTwiml dials a Sip noun when forwardTo is a sip URI', () => {
  const { twiml } = buildStreamTwiml({ ...BASE, forwardTo: 'sip:agents@pbx.example.org;transport=tls' })
  assert.match(twiml, /<Dial><Sip>sip:agents@pbx\.example\.org;transport=tls<\/Sip><\/Dial><\/Response>$/)
  assert.deepEqual(parseTwiml(twiml)?.dial, { sip: 'sip:agents@pbx.example.org;transport=tls' })
  assert.deepEqual(parseTwiml(buildStreamTwiml({ ...BASE, forwardTo: 'SIP:desk@pbx.example.org' }).twiml)?.dial, { sip: 'SIP:desk@pbx.example.org' })
})

test('buildStreamTwiml redirects with POST when only continueUrl is set', () => {
  const continueUrl = 'https://ivr.example.org/voice?flow=main&lang=en'
  const { twiml } = buildStreamTwiml({ ...BASE, forwardTo: null, continueUrl })
  assert.match(twiml, /<\/Start><Redirect method="POST">https:\/\/ivr\.example\.org\/voice\?flow=main&amp;lang=en<\/Redirect><\/Response>$/)
  const parsed = parseTwiml(twiml)
  assert.equal(parsed?.redirect, continueUrl)
  assert.equal(parsed?.dial, null)
})

test('buildStreamTwiml prefers the dial when both forwardTo and continueUrl are set', () => {
  const parsed = parseTwiml(buildStreamTwiml({ ...BASE, forwardTo: '+15550002222', continueUrl: 'https://ivr.example.org/voice' }).twiml)
  assert.deepEqual(parsed?.dial, { number: '+15550002222' })
  assert.equal(parsed?.redirect, null)
})

test('buildStreamTwiml throws when neither forwardTo nor continueUrl is set', () => {
  assert.throws(() => buildStreamTwiml({ ...BASE }), /FORWARD_TO or TWIML_CONTINUE_URL/)
  assert.throws(() => buildStreamTwiml({ ...BASE, forwardTo: '', continueUrl: null }), TypeError)
})

test('buildStreamTwiml uses the given stream name when one is set', () => {
  assert.equal(parseTwiml(buildStreamTwiml({ ...BASE, streamName: 'clinic-north', forwardTo: '+1555' }).twiml)?.stream?.name, 'clinic-north')
})

test('buildStreamTwiml escapes markup when parameters carry XML special characters', () => {
  const parameters = { token: 'v1.1.x', note: 'a & b < c > d "e" \'f\'', 'odd"name': '<Dial>+1999</Dial>' }
  const { twiml } = buildStreamTwiml({ ...BASE, parameters, forwardTo: '+15550002222' })
  assert.equal(twiml.includes('<Dial>+1999'), false)
  assert.equal((twiml.match(/<Parameter /g) ?? []).length, 3)
  const parsed = parseTwiml(twiml)
  assert.deepEqual(parsed?.stream?.parameters, parameters)
  assert.deepEqual(parsed?.dial, { number: '+15550002222' })
})

test('buildStreamTwiml drops a parameter when its name and value reach 500 characters', () => {
  const { twiml, droppedParameters } = buildStreamTwiml({
    ...BASE,
    // 'under' + 494 = 499 characters is kept; 'notes' + 495 = 500 is not.
    parameters: { token: 'v1.1.x', under: 'x'.repeat(494), notes: 'x'.repeat(495), clinic: 'north' },
    forwardTo: '+15550002222'
  })
  assert.deepEqual(droppedParameters, ['notes'])
  assert.deepEqual(Object.keys(parseTwiml(twiml)?.stream?.parameters ?? {}), ['token', 'under', 'clinic'])
})

test('buildStreamTwiml keeps the token when it is longer than the 500-character rule allows', () => {
  const token = 't'.repeat(600)
  const { twiml, droppedParameters } = buildStreamTwiml({ ...BASE, parameters: { token }, forwardTo: '+15550002222' })
  assert.deepEqual(droppedParameters, [])
  assert.equal(parseTwiml(twiml)?.stream?.parameters.token, token)
})

test('parseTwiml returns null when the body is not TwiML', () => {
  assert.equal(parseTwiml('{"error":"forbidden"}'), null)
  assert.equal(parseTwiml(''), null)
})
