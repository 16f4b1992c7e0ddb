import { test } from 'node:test'
import assert from 'node:assert/strict'
import { UpstreamError } from '../../../src/core/errors.ts'
import { buildSessionUrl, classifyClose, isPartialTurnFrame, isPlaceholderSpeaker, normalizeKeyterms, parseServerMessage, upstreamErrorLabel } from '../../../src/core/assemblyai/protocol.ts'
import type { SessionOptions } from '../../../src/core/assemblyai/protocol.ts'

const base: SessionOptions = {
  url: 'wss://streaming.assemblyai.com/v3/ws',
  apiKey: 'secret',
  speechModel: 'u3-rt-pro',
  domain: 'medical-v1',
  speakerLabels: true,
  maxSpeakers: 2,
  keyterms: ['metoprolol', 'Dr. Patel'],
  minTurnSilenceMs: 800,
  maxTurnSilenceMs: 3600,
  sampleRate: 8000
}

test('buildSessionUrl puts every medical setting in the query when all are set', () => {
  const url = new URL(buildSessionUrl(base))
  assert.equal(url.origin + url.pathname, 'wss://streaming.assemblyai.com/v3/ws')
  const q = url.searchParams
  assert.equal(q.get('speech_model'), 'u3-rt-pro')
  assert.equal(q.get('sample_rate'), '8000')
  assert.equal(q.get('encoding'), 'pcm_s16le')
  assert.equal(q.get('domain'), 'medical-v1')
  assert.equal(q.get('speaker_labels'), 'true')
  assert.equal(q.get('max_speakers'), '2')
  assert.deepEqual(JSON.parse(q.get('keyterms_prompt') ?? 'null'), ['metoprolol', 'Dr. Patel'])
  assert.equal(q.get('min_turn_silence'), '800')
  assert.equal(q.get('max_turn_silence'), '3600')
  assert.equal(url.toString().includes('secret'), false)
})

test('buildSessionUrl omits domain, max_speakers and keyterms_prompt when they do not apply', () => {
  const q = new URL(buildSessionUrl({ ...base, domain: null, speakerLabels: false, keyterms: ['  ', ''] })).searchParams
  assert.equal(q.has('domain'), false)
  assert.equal(q.get('speaker_labels'), 'false')
  assert.equal(q.has('max_speakers'), false)
  assert.equal(q.has('keyterms_prompt'), false)
})

test('buildSessionUrl caps keyterms at 100 when given more', () => {
  const terms = Array.from({ length: 130 }, (_, i) => `term${i}`)
  const sent = JSON.parse(new URL(buildSessionUrl({ ...base, keyterms: terms })).searchParams.get('keyterms_prompt') ?? '[]') as string[]
  assert.equal(sent.length, 100)
  assert.equal(sent[99], 'term99')
})

test('normalizeKeyterms trims, de-duplicates case-insensitively and counts what it drops when over the limits', () => {
  const long = 'x'.repeat(51)
  const many = Array.from({ length: 105 }, (_, i) => `t${i}`)
  const result = normalizeKeyterms([' Metoprolol ', 'metoprolol', 'METOPROLOL', '', '   ', long, 'y'.repeat(50), ...many])
  assert.equal(result.terms[0], 'Metoprolol')
  assert.equal(result.terms[1], 'y'.repeat(50))
  assert.equal(result.terms.length, 100)
  assert.equal(result.droppedTooLong, 1)
  assert.equal(result.droppedOverLimit, 7)
})

test('normalizeKeyterms counts characters as code points when terms hold non-BMP characters', () => {
  const fifty = '𝛼'.repeat(50)
  assert.deepEqual(normalizeKeyterms([fifty]).terms, [fifty])
})

test('classifyClose follows the reference table for every v3 code', () => {
  const cases: Array<[number, string | null, boolean, string]> = [
    [1008, 'Unauthorized Connection: Invalid API key', false, '1008'],
    [1008, 'Unauthorized Connection: Missing Authorization header', false, '1008'],
    [1008, 'Unauthorized Connection: Insufficient funds', false, '1008'],
    [1008, 'Unauthorized Connection: Too many concurrent sessions', true, '1008'],
    [1008, 'Unauthorized Connection: Signature has expired', true, '1008'],
    [1008, null, false, '1008'],
    [3009, 'Too many concurrent sessions', true, '3009'],
    [1006, null, true, 'network'],
    [1011, null, true, '1011'],
    [3005, 'Session Cancelled: An error occurred', true, '3005'],
    [3006, "User Input Validation Error: Invalid 'speech_model'", false, '3006'],
    [3006, 'Session terminated due to inactivity: No messages received for 5 seconds', true, '3006'],
    [3007, 'Input Duration Error: Input Duration Violation: 20.0 ms. Expected between 50 and 1000 ms', false, '3007'],
    [3008, 'Session Expired: Maximum session duration exceeded', true, '3008'],
    [1009, null, false, 'other'],
    [4001, 'Not Authorized', false, 'other']
  ]
  for (const [code, text, retryable, label] of cases) {
    assert.deepEqual(classifyClose(code, text), { retryable, label }, `${code} ${text}`)
  }
})

test('upstreamErrorLabel maps network and HTTP statuses onto the closed label set', () => {
  assert.equal(upstreamErrorLabel(new UpstreamError({ closeCode: 'network' }, 'lost', true)), 'network')
  assert.equal(upstreamErrorLabel(new UpstreamError({ closeCode: 3005 }, 'server error', true)), '3005')
  assert.equal(upstreamErrorLabel(new UpstreamError({ httpStatus: 503 }, 'refused', true)), 'other')
  assert.equal(upstreamErrorLabel(new UpstreamError({ httpStatus: 1008 }, 'a status that looks like a close code', false)), 'other')
})

test('isPlaceholderSpeaker accepts only plain capital letters as real labels', () => {
  for (const label of ['A', 'B', 'J', 'AA']) assert.equal(isPlaceholderSpeaker(label), false, label)
  for (const label of ['UNKNOWN', 'PENDING', '', 'a', 'A1', ' A', undefined, null]) assert.equal(isPlaceholderSpeaker(label), true, String(label))
})

test('parseServerMessage detects errors by the error key when type is missing', () => {
  assert.deepEqual(parseServerMessage('{"error_code":3005,"error":"Session Cancelled: An error occurred"}'), { type: 'Error', error_code: 3005, error: 'Session Cancelled: An error occurred' })
  assert.deepEqual(parseServerMessage('{"type":"Error","error":"x"}'), { type: 'Error', error_code: null, error: 'x' })
})

test('parseServerMessage keeps unknown, malformed and non-JSON frames as Unknown without throwing', () => {
  assert.deepEqual(parseServerMessage('{"type":"Heartbeat","realtime_factor":1}'), { type: 'Unknown', messageType: 'Heartbeat', raw: '{"type":"Heartbeat","realtime_factor":1}' })
  assert.equal(parseServerMessage('not json').type, 'Unknown')
  assert.equal(parseServerMessage('[1,2]').type, 'Unknown')
  assert.equal(parseServerMessage('null').type, 'Unknown')
  assert.equal(parseServerMessage('{"type":"Turn","transcript":"x"}').type, 'Unknown')
  assert.equal(parseServerMessage('{"type":"Begin"}').type, 'Unknown')
})

test('parseServerMessage reads a diarized final Turn with its words when all fields are present', () => {
  const turn = parseServerMessage(JSON.stringify({
    type: 'Turn', turn_order: 1, turn_is_formatted: true, end_of_turn: true, transcript: 'I take it.', utterance: 'I take it.',
    end_of_turn_confidence: 1, speaker_label: 'B', words: [{ text: 'I', start: 10, end: 20, confidence: 0.9, word_is_final: true, speaker: 'B' }]
  }))
  assert.equal(turn.type, 'Turn')
  if (turn.type !== 'Turn') return
  assert.equal(turn.speaker_label, 'B')
  assert.deepEqual(turn.words, [{ text: 'I', start: 10, end: 20, confidence: 0.9, word_is_final: true, speaker: 'B' }])
})

test('parseServerMessage normalises the flat legacy SpeakerRevision into the revisions array', () => {
  const words = [{ text: 'Hi.', start: 0, end: 100, confidence: 0.9, word_is_final: true, speaker: 'B' }]
  const flat = parseServerMessage(JSON.stringify({ type: 'SpeakerRevision', turn_order: 3, speaker_label: 'B', words }))
  const current = parseServerMessage(JSON.stringify({ type: 'SpeakerRevision', revisions: [{ turn_order: 3, speaker_label: 'B', words }] }))
  assert.deepEqual(flat, { type: 'SpeakerRevision', revisions: [{ turn_order: 3, speaker_label: 'B', words }] })
  assert.deepEqual(current, flat)
})

test('parseServerMessage reads Begin, Termination and Warning when well formed', () => {
  assert.deepEqual(parseServerMessage('{"type":"Begin","id":"abc","expires_at":1790221526,"configuration":{"model":"u3-rt-pro","domain":"medical-v1"}}'),
    { type: 'Begin', id: 'abc', expires_at: 1790221526, configuration: { model: 'u3-rt-pro', domain: 'medical-v1' } })
  assert.deepEqual(parseServerMessage('{"type":"Termination","audio_duration_seconds":69,"session_duration_seconds":73}'),
    { type: 'Termination', audio_duration_seconds: 69, session_duration_seconds: 73 })
  assert.deepEqual(parseServerMessage('{"type":"Warning","warning_code":7,"warning":"w"}'), { type: 'Warning', warning_code: 7, warning: 'w' })
})

/** Deterministic pseudo-random numbers (mulberry32), so a failure names a reproducible case. */
function seeded (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Server-shaped frames: Turns (partial, final, both keys, spaced), other types, text that quotes the marks. */
function randomServerFrame (random: () => number): string {
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!
  const tricky = pick(['hello', 'say "end_of_turn":false', '"type":"Turn"', 'a \\"end_of_turn\\":false b', '', '"end_of_turn":true'])
  const words = [{ text: tricky, word_is_final: random() < 0.5, start: 100, end: 300, confidence: 0.9 }]
  const fields: Array<[string, unknown]> = [
    ['type', pick(['Turn', 'Turn', 'Turn', 'Begin', 'SpeechStarted', 'Warning', 'Termination', 'SpeakerRevision'])],
    ['turn_order', pick([0, 1, 7, '3', null])],
    ['end_of_turn', pick([false, false, true, 'false', 0, null])],
    ['transcript', tricky],
    ['utterance', pick(['', tricky])],
    ['end_of_turn_confidence', 0.5],
    ['words', pick([words, [], 'none'])]
  ]
  if (random() < 0.2) fields.push(['end_of_turn', pick([true, false])])
  if (random() < 0.3) fields.reverse()
  const spaced = random() < 0.3
  return `{${fields.filter(() => random() < 0.9).map(([key, value]) => `${JSON.stringify(key)}:${spaced ? ' ' : ''}${JSON.stringify(value)}`).join(',')}}`
}

test('isPartialTurnFrame accepts only frames parseServerMessage reads as a partial Turn or ignores when frames are random', () => {
  const random = seeded(15)
  let accepted = 0
  for (let i = 0; i < 20_000; i++) {
    const text = randomServerFrame(random)
    if (!isPartialTurnFrame(Buffer.from(text))) continue
    accepted++
    const message = parseServerMessage(text)
    assert.ok(message.type === 'Unknown' || (message.type === 'Turn' && !message.end_of_turn), `accepted ${text} which parses to ${JSON.stringify(message)}`)
  }
  assert.ok(accepted > 1000, `the pre-check took only ${accepted} frames: the differential test no longer exercises it`)
})

test('isPartialTurnFrame accepts a compact partial and refuses a final when the server sends them', () => {
  const partial = { type: 'Turn', turn_order: 2, turn_is_formatted: false, end_of_turn: false, transcript: '', utterance: '', end_of_turn_confidence: 0.1, words: [{ text: 'meto', word_is_final: false, start: 10, end: 20, confidence: 0.8 }] }
  assert.equal(isPartialTurnFrame(Buffer.from(JSON.stringify(partial))), true)
  assert.equal(isPartialTurnFrame(Buffer.from(JSON.stringify({ ...partial, end_of_turn: true, transcript: 'metoprolol' }))), false)
  assert.equal(isPartialTurnFrame(Buffer.from(JSON.stringify({ type: 'SpeechStarted', timestamp: 5 }))), false)
  assert.equal(isPartialTurnFrame(Buffer.from('{"type": "Turn", "end_of_turn": false}')), false)
})
