import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import alawmulaw from 'alawmulaw'
import { mintStreamToken } from '../../src/core/twilio/stream-token.ts'
import { deriveStreamTokenSecret } from '../../src/core/twilio/stream-token.ts'
import { AUTH_TOKEN, loadSampleCall, metricValue, startHarness } from '../helpers/harness.ts'
import type { Harness } from '../helpers/harness.ts'
import type { ReceivedEvent } from '../helpers/webhook-receiver.ts'
import type { PlacedCall } from '../fakes/twilio-simulator.ts'

const sample = loadSampleCall()
const script = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))

/** An independent decode-and-mix: per-sample μ-law decoding from alawmulaw, summed and clamped. */
function referenceMix (inbound: Uint8Array, outbound: Uint8Array): Int16Array {
  const length = Math.max(inbound.length, outbound.length)
  const mixed = new Int16Array(length)
  for (let i = 0; i < length; i++) {
    const a = i < inbound.length ? alawmulaw.mulaw.decodeSample(inbound[i] as number) : 0
    const b = i < outbound.length ? alawmulaw.mulaw.decodeSample(outbound[i] as number) : 0
    mixed[i] = Math.max(-32768, Math.min(32767, a + b))
  }
  return mixed
}

async function playSampleCall (harness: Harness, options: { path?: string, speed?: number } = {}) {
  const call = await harness.simulator.placeCall({ path: options.path ?? '/twilio/voice?clinic=north&keyterms=Holter%20monitor' })
  assert.equal(call.status, 200)
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: options.speed ?? 40 })
  await stream.opened
  return { call, stream, result: await stream.done }
}

describe('a two-party sample call played through the service with a webhook receiver', () => {
  // One call, played once; each test below states one behaviour of it.
  let harness: Harness
  let call: PlacedCall
  let closeCode: number
  let events: ReceivedEvent[]
  before(async () => {
    harness = await startHarness({ fake: { script } })
    const played = await playSampleCall(harness)
    call = played.call
    closeCode = played.result.code
    await harness.receiver!.waitFor((received) => received.some((event) => event.type === 'call.ended'))
    events = harness.receiver!.events.filter((event) => event.callSid === call.callSid)
  })
  after(() => harness?.close())

  test('the service closes the Twilio socket with 1000 when the call sends stop', () => {
    assert.equal(closeCode, 1000, 'the service closes the Twilio socket with 1000 after stop')
  })

  test('the events arrive signed, gapless and in order, from call.started to call.ended, when the call ends', () => {
    assert.deepEqual(harness.receiver!.badSignatures, [], 'every delivery verifies')
    assert.deepEqual(events.map((event) => event.sequence), events.map((_, index) => index + 1), 'sequence is gapless and in order')
    assert.equal(events[0]?.type, 'call.started')
    assert.equal(events.at(-1)?.type, 'call.ended')
  })

  test('call.started carries the tags, tracks, transcription settings and account when the stream starts', () => {
    const started = events[0]!.data
    assert.deepEqual(started.custom_parameters, { clinic: 'north' }, 'tags arrive, the token and keyterms do not')
    assert.deepEqual(started.tracks, ['inbound', 'outbound'])
    assert.deepEqual(started.transcription, { speech_model: 'u3-rt-pro', domain: 'medical-v1', speaker_labels: true, sample_rate: 8000 })
    assert.equal(started.account_sid, call.accountSid)
  })

  test('each spoken turn yields one transcript.turn with its text, role, speaker, timing and words when it is final', () => {
    const turns = events.filter((event) => event.type === 'transcript.turn').map((event) => event.data)
    assert.equal(turns.length, sample.turns.length, 'one turn per spoken turn')
    turns.forEach((turn, index) => {
      const expected = sample.turns[index]!
      assert.equal(turn.turn_index, index + 1)
      assert.equal(turn.text, expected.text)
      assert.equal(turn.role, expected.track === 'inbound' ? 'customer' : 'agent', `role of turn ${index + 1}`)
      assert.equal(turn.speaker, expected.track === 'outbound' ? 'A' : 'B')
      // Call timeline = Twilio's media.timestamp clock: the audio starts at 150 ms on it.
      const startMs = turn.start_ms as number
      const endMs = turn.end_ms as number
      assert.ok(Math.abs(startMs - (150 + expected.startMs)) <= 100, `turn ${index + 1} starts at ${startMs}, spoken at ${150 + expected.startMs}`)
      assert.ok(Math.abs(endMs - (150 + expected.endMs)) <= 100, `turn ${index + 1} ends at ${endMs}, spoken until ${150 + expected.endMs}`)
      const words = turn.words as Array<{ text: string, start_ms: number, end_ms: number, confidence: number, speaker: string | null }>
      assert.equal(words.map((word) => word.text).join(' '), expected.text)
      assert.equal(words[0]?.start_ms, startMs)
      assert.equal(words.at(-1)?.end_ms, endMs)
      const meanConfidence = words.reduce((sum, word) => sum + word.confidence, 0) / words.length
      assert.ok(Math.abs((turn.confidence as number) - meanConfidence) < 0.001)
      assert.equal((turn.upstream as { session_id: string }).session_id, harness.fake.sessions[0]?.id)
    })
  })

  test('call.ended reports completion, every turn, the audio length and one clean upstream session when the call ends', () => {
    const ended = events.at(-1)!.data
    assert.equal(ended.reason, 'completed')
    assert.equal(ended.turn_count, sample.turns.length)
    assert.equal((ended.transcript as unknown[]).length, sample.turns.length)
    assert.ok(Math.abs((ended.audio_ms as number) - (150 + sample.inbound.length / 8)) <= 50, `audio_ms ${String(ended.audio_ms)}`)
    const sessions = ended.upstream_sessions as Array<{ id: string, error: unknown }>
    assert.equal(sessions.length, 1)
    assert.equal(sessions[0]?.error, null)
  })

  test('the upstream session opens once with the API key and the medical parameters when the call starts', () => {
    assert.equal(harness.fake.sessions.length, 1)
    const session = harness.fake.sessions[0]!
    assert.equal(session.headers.authorization, 'aai-test-key-123')
    assert.equal(session.query.get('speech_model'), 'u3-rt-pro')
    assert.equal(session.query.get('sample_rate'), '8000')
    assert.equal(session.query.get('encoding'), 'pcm_s16le')
    assert.equal(session.query.get('domain'), 'medical-v1')
    assert.equal(session.query.get('speaker_labels'), 'true')
    assert.equal(session.query.get('max_speakers'), '2')
    assert.equal(session.query.get('min_turn_silence'), '800')
    assert.equal(session.query.get('max_turn_silence'), '3600')
    assert.deepEqual(JSON.parse(session.query.get('keyterms_prompt') ?? '[]'), ['metoprolol', 'lisinopril', 'Holter monitor'])
  })

  test('the upstream receives exactly the mix of both tracks in 50 ms frames when the call is played', () => {
    const session = harness.fake.sessions[0]!
    assert.ok(session.frameBytes.every((bytes) => bytes === 800), 'every frame is 50 ms of PCM16 at 8 kHz')
    const received = new Int16Array(session.audio.buffer, session.audio.byteOffset, session.audio.length / 2)
    const expected = referenceMix(sample.inbound, sample.outbound)
    assert.ok(received.length >= expected.length && received.length - expected.length < 400, `received ${received.length} samples for a ${expected.length}-sample call`)
    let firstDifference = -1
    for (let i = 0; i < expected.length; i++) {
      if (received[i] !== expected[i]) { firstDifference = i; break }
    }
    assert.equal(firstDifference, -1, 'upstream audio equals an independent decode-and-mix of both tracks')
    assert.ok(received.subarray(expected.length).every((value) => value === 0), 'the tail is padded with silence')
  })

  test('the counters agree with the call when it has ended', async () => {
    assert.equal(await metricValue(harness.app, 'medstream_calls_total', { outcome: 'completed' }), 1)
    assert.equal(await metricValue(harness.app, 'medstream_turns_total', { role: 'agent' }), 4)
    assert.equal(await metricValue(harness.app, 'medstream_turns_total', { role: 'customer' }), 4)
    assert.equal(await metricValue(harness.app, 'medstream_calls_active'), 0)
    const seconds = sample.inbound.length / 8000
    assert.ok(Math.abs(await metricValue(harness.app, 'medstream_audio_received_seconds_total', { track: 'inbound' }) - seconds) < 0.05)
    assert.ok(Math.abs(await metricValue(harness.app, 'medstream_upstream_audio_sent_seconds_total') - seconds) < 0.1)
  })
})

test('the file sink receives the same events when no webhook is configured', async (t) => {
  const harness = await startHarness({ webhook: false, fake: { script } })
  t.after(() => harness.close())
  const { call } = await playSampleCall(harness)
  const { readFileSync, statSync } = await import('node:fs')
  const path = `${harness.dataDir}/transcripts/${call.callSid}.jsonl`
  const read = () => readFileSync(path, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { type: string, data: { sequence: number } })
  // Twilio closes the socket right after stop; call.ended follows once the upstream has finished.
  const deadline = Date.now() + 10000
  while (read().at(-1)?.type !== 'call.ended' && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  const lines = read()
  assert.equal(lines[0]?.type, 'call.started')
  assert.equal(lines.at(-1)?.type, 'call.ended')
  assert.equal(lines.filter((line) => line.type === 'transcript.turn').length, sample.turns.length)
  assert.deepEqual(lines.map((line) => line.data.sequence), lines.map((_, index) => index + 1))
  assert.equal(statSync(path).mode & 0o777, 0o600, 'transcripts are readable by the service user only')
})

test('an unsigned or wrongly signed voice webhook gets 403', async (t) => {
  const harness = await startHarness({ webhook: false })
  t.after(() => harness.close())
  assert.equal((await harness.simulator.placeCall({ signature: null })).status, 403)
  assert.equal((await harness.simulator.placeCall({ signature: 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' })).status, 403)
  assert.equal((await harness.simulator.placeCall()).status, 200)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'signature' }), 2)
})

test('a stream is refused, and no upstream session opened, for a bad signature or token', async (t) => {
  const harness = await startHarness({ webhook: false, startTimeoutMs: 500 })
  t.after(() => harness.close())
  const audio = sample.inbound.subarray(0, 8000)

  for (const signature of [null, 'Ko8aymfVk0cCegaxVKH0ZCvSyf4=']) {
    const call = await harness.simulator.placeCall()
    const stream = harness.simulator.openStream(call, { inbound: audio, speed: Infinity, signature })
    await assert.rejects(stream.opened, (error: { statusCode?: number }) => error.statusCode === 403)
  }

  const secret = deriveStreamTokenSecret(AUTH_TOKEN)
  const cases: Array<{ name: string, token: (callSid: string, accountSid: string) => string | undefined }> = [
    { name: 'missing', token: () => undefined },
    { name: 'forged', token: (callSid, accountSid) => mintStreamToken(Buffer.from('not-the-secret-not-the-secret-00'), callSid, accountSid, Date.now()) },
    { name: 'expired', token: (callSid, accountSid) => mintStreamToken(secret, callSid, accountSid, Date.now() - 10 * 60 * 1000) },
    { name: 'another call', token: (_callSid, accountSid) => mintStreamToken(secret, 'CA' + '0'.repeat(32), accountSid, Date.now()) },
    { name: 'malformed', token: () => 'v1.garbage' }
  ]
  for (const { name, token } of cases) {
    const call = await harness.simulator.placeCall()
    const value = token(call.callSid, call.accountSid)
    const stream = harness.simulator.openStream(call, { inbound: audio, speed: Infinity, customParameters: value === undefined ? {} : { token: value } })
    const result = await stream.done
    assert.equal(result.code, 1008, `${name} token closes with 1008`)
  }

  // A valid token presented for a different CallSid than the one it was minted for.
  const call = await harness.simulator.placeCall()
  const stream = harness.simulator.openStream(call, { inbound: audio, speed: Infinity, callSid: 'CA' + 'f'.repeat(32) })
  assert.equal((await stream.done).code, 1008)

  // No start at all within the start timeout.
  const silent = harness.simulator.openStream(await harness.simulator.placeCall(), { inbound: audio, sendStart: false })
  assert.equal((await silent.done).code, 1008)

  assert.equal(harness.fake.sessions.length, 0, 'no refused stream ever opens an upstream session')
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'signature' }), 2)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'token' }), 6)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'start_timeout' }), 1)
})

for (const failure of [
  { name: '1008 invalid key', plan: { rejectWith: { code: 1008 as const, error: 'Unauthorized Connection: Invalid API key' } }, code: 1008 },
  { name: '3006 validation error', plan: { rejectWith: { code: 3006 as const, error: 'User Input Validation Error: Invalid \'speech_model\'' } }, code: 3006 },
  { name: '3007 input duration', plan: { errorAfterAudioMs: { atMs: 2000, code: 3007, error: 'Input Duration Error: Input Duration Violation: 20.0 ms. Expected between 50 and 1000 ms' } }, code: 3007 }
]) {
  test(`a non-retryable upstream error (${failure.name}) fails that call's transcription while another call completes`, async (t) => {
    const harness = await startHarness({ fake: { script, faults: (index) => (index === 0 ? failure.plan : {}) } })
    t.after(() => harness.close())
    const failing = await harness.simulator.placeCall()
    const failingStream = harness.simulator.openStream(failing, { inbound: sample.inbound, outbound: sample.outbound, speed: 40 })
    await failingStream.opened
    const deadline = Date.now() + 5000
    while (harness.fake.sessions.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    const { call: healthy } = await playSampleCall(harness)
    const receiver = harness.receiver!
    await receiver.waitFor((events) => events.filter((event) => event.type === 'call.ended').length === 2)
    const failedEnd = receiver.events.find((event) => event.callSid === failing.callSid && event.type === 'call.ended')!
    assert.equal(failedEnd.data.reason, 'transcription_failed')
    const upstream = failedEnd.data.upstream_sessions as Array<{ error: { code: number, message: string } | null }>
    assert.equal(upstream[0]?.error?.code, failure.code)
    const healthyEvents = receiver.events.filter((event) => event.callSid === healthy.callSid)
    assert.equal(healthyEvents.at(-1)?.data.reason, 'completed')
    assert.equal(healthyEvents.filter((event) => event.type === 'transcript.turn').length, sample.turns.length)
    assert.equal(await metricValue(harness.app, 'medstream_calls_total', { outcome: 'transcription_failed' }), 1)
    assert.equal(await metricValue(harness.app, 'medstream_upstream_errors_total', { code: String(failure.code) }), 1)
    assert.equal(await metricValue(harness.app, 'medstream_upstream_reconnects_total'), 0, 'a non-retryable error is not retried')
    assert.equal((await failingStream.done).code, 1011)
  })
}

test('a voice webhook with a malformed CallSid gets 400, not a token', async (t) => {
  const harness = await startHarness({ webhook: false })
  t.after(() => harness.close())
  const call = await harness.simulator.placeCall({ callSid: 'CA.not.a.sid' })
  assert.equal(call.status, 400)
  assert.doesNotMatch(call.body, /token/)
})

test('call.ended carries speaker revisions while the turn events and roles stay as emitted', async (t) => {
  const harness = await startHarness({ fake: { script, speakerRevision: true } })
  t.after(() => harness.close())
  const { call } = await playSampleCall(harness)
  const receiver = harness.receiver!
  await receiver.waitFor((events) => events.some((event) => event.callSid === call.callSid && event.type === 'call.ended'))
  const events = receiver.events.filter((event) => event.callSid === call.callSid)
  const firstTurn = events.find((event) => event.type === 'transcript.turn')!.data
  assert.equal(firstTurn.speaker, 'A', 'the turn was emitted with the label the upstream gave then')
  const transcript = events.at(-1)!.data.transcript as Array<{ turn_index: number, speaker: string | null, role: string }>
  assert.equal(transcript[0]?.speaker, 'B', 'the revision relabels the first turn in call.ended')
  assert.equal(transcript[0]?.role, 'agent', 'a revision changes the speaker, never the role')
  assert.equal(transcript[1]?.speaker, 'B', 'other turns keep their labels')
})
