import assert from 'node:assert/strict'
import { test } from 'node:test'
import { parseMediaFrame } from '../../../src/core/twilio/media-fast-path.ts'
import { MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES, parseTwilioMessage } from '../../../src/core/twilio/messages.ts'
import { prng } from '../../helpers/prng.ts'

const SID = 'MZ18ad3ab5a668481ce02b83e7395059f0'

function shuffle<T> (items: T[], random: () => number): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j] as T, out[i] as T]
  }
  return out
}

/** A valid media message as Twilio could send it: any key order, optional whitespace. */
function mediaMessage (random: () => number): string {
  const payload = Buffer.from(Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 256))).toString('base64')
  const space = (): string => (random() < 0.2 ? ' \n\t'.charAt(Math.floor(random() * 3)) : '')
  const pair = (key: string, value: string): string => `${space()}"${key}"${space()}:${space()}${value}${space()}`
  const media = shuffle([
    pair('track', JSON.stringify(random() < 0.5 ? 'inbound' : 'outbound')),
    pair('chunk', JSON.stringify(String(1 + Math.floor(random() * 1e6)))),
    pair('timestamp', JSON.stringify(String(Math.floor(random() * 1e7)))),
    pair('payload', JSON.stringify(payload))
  ], random)
  const top = shuffle([
    pair('event', '"media"'),
    pair('sequenceNumber', JSON.stringify(String(1 + Math.floor(random() * 1e6)))),
    pair('streamSid', JSON.stringify(SID)),
    pair('media', `{${media.join(',')}}`)
  ], random)
  return `${space()}{${top.join(',')}}${space()}`
}

/** The same as the general parser says, for every frame the fast path accepts. */
function assertAgrees (text: string): boolean {
  const frame = parseMediaFrame(Buffer.from(text))
  if (frame === null) return false
  const message = parseTwilioMessage(text)
  assert.equal(message.event, 'media', `fast path accepted what the parser calls ${JSON.stringify(message)}: ${text}`)
  if (message.event !== 'media') return true
  const bytes = Buffer.from(text)
  assert.equal(bytes.subarray(frame.streamSidStart, frame.streamSidEnd).toString(), message.streamSid)
  assert.equal(frame.sequenceNumber, message.sequenceNumber)
  assert.equal(frame.track, message.track)
  assert.equal(frame.chunk, message.chunk)
  assert.equal(frame.timestampMs, message.timestampMs)
  assert.ok(frame.payload.equals(Buffer.from(message.payload)), `payloads differ for ${text}`)
  return true
}

test('media fast path reads every valid media message exactly as the general parser does', () => {
  const random = prng(7)
  for (let i = 0; i < 5000; i++) {
    const text = mediaMessage(random)
    // The general parser reuses a scratch buffer too: compare before the next parse.
    const expected = parseTwilioMessage(text)
    assert.equal(expected.event, 'media')
    const payload = expected.event === 'media' ? Buffer.from(expected.payload) : Buffer.alloc(0)
    const frame = parseMediaFrame(Buffer.from(text))
    assert.ok(frame !== null, `the fast path must take a plain Twilio media message: ${text}`)
    assert.ok(frame.payload.equals(payload))
    assert.ok(assertAgrees(text))
  }
})

test('media fast path agrees with the general parser or steps aside when frames are mutated', () => {
  const random = prng(11)
  const alphabet = '{}[]":,\\ 0123456789abcAZ+/=-.\u00e9\n'
  let accepted = 0
  let declined = 0
  for (let i = 0; i < 20000; i++) {
    const text = mediaMessage(random).split('')
    const edits = 1 + Math.floor(random() * 3)
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * text.length)
      const kind = random()
      if (kind < 0.33) text.splice(at, 1)
      else if (kind < 0.66) text.splice(at, 0, alphabet.charAt(Math.floor(random() * alphabet.length)))
      else text[at] = alphabet.charAt(Math.floor(random() * alphabet.length))
    }
    if (assertAgrees(text.join(''))) accepted++
    else declined++
  }
  assert.ok(accepted > 100 && declined > 100, `both paths exercised (${accepted} accepted, ${declined} declined)`)
})

test('media fast path steps aside for every other event, escapes, duplicates, unknown keys and bad values', () => {
  const media = (fields: Record<string, unknown>, top: Record<string, unknown> = {}) => JSON.stringify({ event: 'media', sequenceNumber: '2', streamSid: SID, media: { track: 'inbound', chunk: '1', timestamp: '155', payload: '//////8=', ...fields }, ...top })
  const declined = [
    JSON.stringify({ event: 'start', sequenceNumber: '1' }),
    JSON.stringify({ event: 'stop', sequenceNumber: '3', streamSid: SID }),
    '{"event":"connected","protocol":"Call","version":"1.0.0"}',
    media({}, { extra: 'x' }),
    media({ extra: 'x' }),
    media({ timestamp: 155 }),
    media({ track: 'both' }),
    media({ payload: 'AAAAA' }),
    media({ payload: '!!!!' }),
    media({ chunk: '0' }),
    media({ timestamp: '-1' }),
    media({}, { sequenceNumber: '0' }),
    media({}, { streamSid: '' }),
    media({}, { event: 'mark' }),
    media({ payload: '\\/\\/\\/\\/' }),
    media({}).replace('"track":"inbound"', '"track":"inbound","track":"outbound"'),
    media({}).replace('"event":"media"', '"event":"media","event":"media"'),
    media({}).replace('"inbound"', '"in\\u0062ound"'),
    media({}) + 'x',
    '[' + media({}) + ']',
    media({}).slice(0, -1)
  ]
  for (const text of declined) assert.equal(parseMediaFrame(Buffer.from(text)), null, text)
  assert.ok(parseMediaFrame(Buffer.from(media({}))) !== null)
})

test('both media parsers decode the whole payload when a message is as large as MAX_MESSAGE_BYTES allows', () => {
  const envelope = JSON.stringify({ event: 'media', sequenceNumber: '1', streamSid: SID, media: { track: 'inbound', chunk: '1', timestamp: '0', payload: '' } })
  // The longest base64 that still fits: the scratch buffers are sized from the limit, not beside it.
  const base64Chars = Math.floor((MAX_MESSAGE_BYTES - envelope.length) / 4) * 4
  const payload = Buffer.alloc(base64Chars / 4 * 3, 0x5a)
  payload[payload.length - 1] = 0x01
  const text = envelope.replace('"payload":""', `"payload":"${payload.toString('base64')}"`)
  assert.ok(Buffer.byteLength(text) <= MAX_MESSAGE_BYTES && Buffer.byteLength(text) > MAX_MESSAGE_BYTES - 4)
  assert.ok(payload.length <= MAX_PAYLOAD_BYTES)
  const frame = parseMediaFrame(Buffer.from(text))
  assert.ok(frame !== null)
  assert.equal(Buffer.compare(frame.payload, payload), 0)
  const message = parseTwilioMessage(text)
  assert.equal(message.event, 'media')
  if (message.event === 'media') assert.equal(Buffer.compare(message.payload, payload), 0)
})
