import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseTwilioMessage } from '../../../src/core/twilio/messages.ts'

const STREAM_SID = 'MZ18ad3ab5a668481ce02b83e7395059f0'
const ACCOUNT_SID = 'AC9b0e2ddfbd8e0e6bd6b72b0e2d5b4c8a'
const CALL_SID = 'CA5f0a1c1b6fbc0a7e43c3b7d9b0f5e1c2'
// 160 bytes of μ-law as in the capture: 216 base64 characters.
const FRAME = Buffer.alloc(160, 0xff)
FRAME[0] = 0x7f
const PAYLOAD = FRAME.toString('base64')

function media (overrides: Record<string, unknown> = {}, mediaOverrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    event: 'media',
    sequenceNumber: '2',
    media: { track: 'inbound', chunk: '1', timestamp: '155', payload: PAYLOAD, ...mediaOverrides },
    streamSid: STREAM_SID,
    ...overrides
  })
}

function start (startOverrides: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    event: 'start',
    sequenceNumber: '1',
    start: {
      accountSid: ACCOUNT_SID,
      streamSid: STREAM_SID,
      callSid: CALL_SID,
      tracks: ['inbound', 'outbound'],
      mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
      customParameters: { token: 'v1.1.x', clinic: 'north' },
      ...startOverrides
    },
    streamSid: STREAM_SID,
    ...overrides
  })
}

test('parseTwilioMessage reads connected when given the captured message', () => {
  assert.deepEqual(parseTwilioMessage('{"event":"connected","protocol":"Call","version":"1.0.0"}'), { event: 'connected' })
})

test('parseTwilioMessage reads start when given the captured message', () => {
  assert.deepEqual(parseTwilioMessage(start()), {
    event: 'start',
    sequenceNumber: 1,
    start: {
      streamSid: STREAM_SID,
      accountSid: ACCOUNT_SID,
      callSid: CALL_SID,
      tracks: ['inbound', 'outbound'],
      customParameters: { token: 'v1.1.x', clinic: 'north' },
      mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 }
    }
  })
})

test('parseTwilioMessage accepts start when customParameters is empty or absent', () => {
  const empty = parseTwilioMessage(start({ customParameters: {} }))
  assert.equal(empty.event, 'start')
  if (empty.event === 'start') assert.deepEqual(empty.start.customParameters, {})
  const absent = parseTwilioMessage(start({ customParameters: undefined }))
  assert.equal(absent.event, 'start')
  if (absent.event === 'start') assert.deepEqual(absent.start.customParameters, {})
})

test('parseTwilioMessage accepts start when only one track is streamed', () => {
  const message = parseTwilioMessage(start({ tracks: ['inbound'] }))
  assert.equal(message.event, 'start')
  if (message.event === 'start') assert.deepEqual(message.start.tracks, ['inbound'])
})

test('parseTwilioMessage reads media when given the captured message', () => {
  const message = parseTwilioMessage(media())
  assert.equal(message.event, 'media')
  if (message.event !== 'media') return
  assert.equal(message.sequenceNumber, 2)
  assert.equal(message.streamSid, STREAM_SID)
  assert.equal(message.track, 'inbound')
  assert.equal(message.chunk, 1)
  assert.equal(message.timestampMs, 155)
  assert.deepEqual(message.payload, FRAME)
})

test('parseTwilioMessage reads media when the payload is padded or of another length', () => {
  for (const bytes of [1, 2, 3, 80, 320]) {
    const payload = Buffer.alloc(bytes, 0x7f)
    const message = parseTwilioMessage(media({}, { payload: payload.toString('base64'), track: 'outbound', timestamp: '0' }))
    assert.equal(message.event, 'media', `payload of ${bytes} bytes`)
    if (message.event === 'media') {
      assert.deepEqual(message.payload, payload)
      assert.equal(message.track, 'outbound')
      assert.equal(message.timestampMs, 0)
    }
  }
})

test('parseTwilioMessage reads stop when given the captured message', () => {
  const text = JSON.stringify({ event: 'stop', sequenceNumber: '378', streamSid: STREAM_SID, stop: { accountSid: ACCOUNT_SID, callSid: CALL_SID } })
  assert.deepEqual(parseTwilioMessage(text), { event: 'stop', sequenceNumber: 378, streamSid: STREAM_SID })
})

test('parseTwilioMessage reads mark and dtmf when given the documented messages', () => {
  assert.deepEqual(
    parseTwilioMessage(`{"event":"dtmf","streamSid":"${STREAM_SID}","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}`),
    { event: 'dtmf', streamSid: STREAM_SID }
  )
  assert.deepEqual(
    parseTwilioMessage(`{"event":"mark","sequenceNumber":"4","streamSid":"${STREAM_SID}","mark":{"name":"my label"}}`),
    { event: 'mark', streamSid: STREAM_SID }
  )
})

test('parseTwilioMessage returns unknown when the event name is not a Twilio one', () => {
  assert.deepEqual(parseTwilioMessage('{"event":"clear","streamSid":"MZ1"}'), { event: 'unknown', name: 'clear' })
  assert.deepEqual(parseTwilioMessage('{"event":"__proto__"}'), { event: 'unknown', name: '__proto__' })
})

test('parseTwilioMessage returns invalid json when the text is not JSON', () => {
  for (const text of ['', '{', 'media', '{"event":"media",}', '\u0000']) {
    assert.deepEqual(parseTwilioMessage(text), { event: 'invalid', reason: 'json' }, JSON.stringify(text))
  }
})

test('parseTwilioMessage returns invalid schema when the JSON is not an object with an event string', () => {
  for (const text of ['null', '[]', '42', '"media"', '{}', '{"event":5}', '{"event":null}', '[{"event":"connected"}]']) {
    assert.deepEqual(parseTwilioMessage(text), { event: 'invalid', reason: 'schema' }, text)
  }
})

test('parseTwilioMessage returns invalid schema when a media field is missing or of the wrong type', () => {
  const cases: [string, string][] = [
    ['sequence number as a JSON number', media({ sequenceNumber: 2 })],
    ['missing sequence number', media({ sequenceNumber: undefined })],
    ['sequence number 0', media({ sequenceNumber: '0' })],
    ['missing streamSid', media({ streamSid: undefined })],
    ['empty streamSid', media({ streamSid: '' })],
    ['missing media object', media({ media: undefined })],
    ['media as a string', media({ media: 'x' })],
    ['media as an array', media({ media: [] })],
    ['unknown track', media({}, { track: 'inbound_track' })],
    ['missing track', media({}, { track: undefined })],
    ['chunk as a number', media({}, { chunk: 1 })],
    ['chunk 0', media({}, { chunk: '0' })],
    ['negative timestamp', media({}, { timestamp: '-20' })],
    ['fractional timestamp', media({}, { timestamp: '155.5' })],
    ['timestamp with a sign', media({}, { timestamp: '+155' })],
    ['timestamp in exponent form', media({}, { timestamp: '1e3' })],
    ['empty timestamp', media({}, { timestamp: '' })],
    ['timestamp beyond 15 digits', media({}, { timestamp: '1234567890123456' })],
    ['timestamp as a number', media({}, { timestamp: 155 })],
    ['missing payload', media({}, { payload: undefined })],
    ['payload as a number', media({}, { payload: 5 })]
  ]
  for (const [name, text] of cases) {
    assert.deepEqual(parseTwilioMessage(text), { event: 'invalid', reason: 'schema' }, name)
  }
})

test('parseTwilioMessage returns invalid schema when the payload is not valid base64', () => {
  const cases: [string, string][] = [
    ['length not a multiple of 4', PAYLOAD.slice(0, -1)],
    ['a character outside the alphabet', `!${PAYLOAD.slice(1)}`],
    ['base64url characters', `-_${PAYLOAD.slice(2)}`],
    ['embedded whitespace', `${PAYLOAD.slice(0, 100)} ${PAYLOAD.slice(101)}`],
    ['padding in the middle', `AB==${PAYLOAD.slice(4)}`],
    ['three padding characters', 'A==='],
    ['non-ASCII character', `é${PAYLOAD.slice(1)}`]
  ]
  for (const [name, payload] of cases) {
    assert.deepEqual(parseTwilioMessage(media({}, { payload })), { event: 'invalid', reason: 'schema' }, name)
  }
})

test('parseTwilioMessage returns invalid schema when a start field is missing or wrong', () => {
  const cases: [string, string][] = [
    ['missing start object', start({}, { start: undefined })],
    ['start as an array', start({}, { start: [] })],
    ['sequence number as a number', start({}, { sequenceNumber: 1 })],
    ['missing streamSid', start({ streamSid: undefined })],
    ['missing accountSid', start({ accountSid: undefined })],
    ['callSid as a number', start({ callSid: 7 })],
    ['top-level streamSid that disagrees', start({}, { streamSid: 'MZother' })],
    ['tracks not an array', start({ tracks: 'inbound' })],
    ['no tracks', start({ tracks: [] })],
    ['unknown track', start({ tracks: ['inbound', 'both'] })],
    ['duplicate track', start({ tracks: ['inbound', 'inbound'] })],
    ['three tracks', start({ tracks: ['inbound', 'outbound', 'inbound'] })],
    ['missing mediaFormat', start({ mediaFormat: undefined })],
    ['a-law encoding', start({ mediaFormat: { encoding: 'audio/x-alaw', sampleRate: 8000, channels: 1 } })],
    ['16 kHz', start({ mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 16000, channels: 1 } })],
    ['sample rate as a string', start({ mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: '8000', channels: 1 } })],
    ['stereo', start({ mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 2 } })],
    ['customParameters as a string', start({ customParameters: 'token=x' })],
    ['customParameters with a number value', start({ customParameters: { token: 'x', n: 1 } })],
    ['customParameters with an object value', start({ customParameters: { token: { nested: true } } })]
  ]
  for (const [name, text] of cases) {
    assert.deepEqual(parseTwilioMessage(text), { event: 'invalid', reason: 'schema' }, name)
  }
})

test('parseTwilioMessage returns invalid schema when stop, mark or dtmf lack their fields', () => {
  for (const text of [
    '{"event":"stop","streamSid":"MZ1"}',
    '{"event":"stop","sequenceNumber":"3"}',
    '{"event":"stop","sequenceNumber":3,"streamSid":"MZ1"}',
    '{"event":"mark","sequenceNumber":"4"}',
    '{"event":"dtmf","streamSid":5}'
  ]) {
    assert.deepEqual(parseTwilioMessage(text), { event: 'invalid', reason: 'schema' }, text)
  }
})

test('parseTwilioMessage keeps a __proto__ parameter as a plain key when customParameters carries one', () => {
  const text = `{"event":"start","sequenceNumber":"1","start":{"accountSid":"${ACCOUNT_SID}","streamSid":"${STREAM_SID}","callSid":"${CALL_SID}","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"__proto__":"x","constructor":"y","token":"t"}},"streamSid":"${STREAM_SID}"}`
  const message = parseTwilioMessage(text)
  assert.equal(message.event, 'start')
  if (message.event !== 'start') return
  const parameters = message.start.customParameters
  assert.equal(Object.getPrototypeOf(parameters), Object.prototype)
  assert.deepEqual(Object.keys(parameters), ['__proto__', 'constructor', 'token'])
  assert.equal(Object.getOwnPropertyDescriptor(parameters, '__proto__')?.value, 'x')
  assert.equal(parameters.token, 't')
  const copy = { ...parameters }
  assert.equal(Object.getPrototypeOf(copy), Object.prototype)
  assert.equal(({} as Record<string, unknown>).x, undefined)
})

test('parseTwilioMessage refuses a __proto__ parameter when its value is an object', () => {
  const text = start({}, {}).replace('"customParameters":{', '"customParameters":{"__proto__":{"polluted":"yes"},')
  assert.deepEqual(parseTwilioMessage(text), { event: 'invalid', reason: 'schema' })
  assert.equal(({} as Record<string, unknown>).polluted, undefined)
})

test('parseTwilioMessage never throws when given hostile input', () => {
  const inputs = ['{"event":"media","media":{"payload":null}}', '{"event":"start","start":{"tracks":{"length":1,"0":"inbound"}}}', `{"event":"${'x'.repeat(10_000)}"}`, '{"event":"media","sequenceNumber":"2","streamSid":"MZ","media":{"track":"inbound","chunk":"1","timestamp":"1","payload":""}}']
  for (const text of inputs) assert.doesNotThrow(() => parseTwilioMessage(text))
})
