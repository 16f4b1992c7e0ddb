import assert from 'node:assert/strict'
import { test } from 'node:test'
import alawmulaw from 'alawmulaw'
import type { FakeAssemblyAi, FakeUtterance, FaultPlan } from '../fakes/assemblyai-server.ts'
import { loadSampleCall, metricValue, startHarness } from '../helpers/harness.ts'
import type { Harness } from '../helpers/harness.ts'

const sample = loadSampleCall()
const script: FakeUtterance[] = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))
const FAST_RECONNECT = { maxAttempts: 5, initialDelayMs: 20, maxDelayMs: 100, maxOutageMs: 5000 }

/**
 * A replacement session starts in the middle of the call: its first segment is the first turn the
 * earlier sessions did not finish, so its script continues from there.
 */
function continuingScript (fake: () => FakeAssemblyAi): (sessionIndex: number) => FakeUtterance[] {
  return (sessionIndex) => script.slice(fake().sessions.slice(0, sessionIndex).reduce((sum, session) => sum + session.turnsSent, 0))
}

function mix (): Int16Array {
  const mixed = new Int16Array(sample.inbound.length)
  for (let i = 0; i < mixed.length; i++) {
    mixed[i] = Math.max(-32768, Math.min(32767, alawmulaw.mulaw.decodeSample(sample.inbound[i] as number) + alawmulaw.mulaw.decodeSample(sample.outbound[i] as number)))
  }
  return mixed
}

function samplesOf (audio: Buffer): Int16Array {
  return new Int16Array(audio.buffer, audio.byteOffset, audio.length / 2)
}

/** Where in the call's mix a session's audio begins (it starts on a chunk boundary), or -1. */
function offsetInMix (expected: Int16Array, audio: Int16Array): number {
  const compare = Math.min(audio.length, 4000)
  for (let offset = 0; offset + compare <= expected.length; offset += 400) {
    let equal = true
    for (let i = 0; i < compare && equal; i++) equal = audio[i] === expected[offset + i]
    if (equal) return offset
  }
  return -1
}

async function startWithFaults (faults: (index: number) => FaultPlan, extra: Parameters<typeof startHarness>[0] = {}): Promise<Harness> {
  // The script function reads the fake's sessions, so it needs the harness it is part of.
  const box: { harness?: Harness } = {}
  box.harness = await startHarness({
    reconnect: FAST_RECONNECT,
    ...extra,
    fake: { script: continuingScript(() => box.harness!.fake), faults, ...extra.fake }
  })
  return box.harness
}

async function playCall (harness: Harness, speed = 10) {
  const call = await harness.simulator.placeCall()
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed })
  await stream.opened
  const result = await stream.done
  await harness.receiver!.waitFor((events) => events.some((event) => event.callSid === call.callSid && event.type === 'call.ended'))
  return { call, result, events: harness.receiver!.events.filter((event) => event.callSid === call.callSid) }
}

function assertCompleteTranscript (events: Awaited<ReturnType<typeof playCall>>['events']): void {
  assert.deepEqual(events.map((event) => event.sequence), events.map((_, index) => index + 1), 'sequence is gapless')
  const turns = events.filter((event) => event.type === 'transcript.turn').map((event) => event.data)
  assert.deepEqual(turns.map((turn) => turn.turn_index), script.map((_, index) => index + 1), 'turn_index is gapless')
  assert.deepEqual(turns.map((turn) => turn.text), script.map((line) => line.text), 'every turn arrives once, in order')
  turns.forEach((turn, index) => {
    const expected = sample.turns[index]!
    assert.ok(Math.abs((turn.start_ms as number) - (150 + expected.startMs)) <= 100, `turn ${index + 1} is on the call timeline`)
  })
  assert.equal(events.at(-1)?.data.reason, 'completed')
}

test('an upstream drop mid-sentence reconnects, keeps the sentence in flight and duplicates nothing', async (t) => {
  // 7 s into the audio is the middle of the caller's first sentence (5.6–9.6 s).
  const harness = await startWithFaults((index) => (index === 0 ? { dropAfterAudioMs: 7000 } : {}))
  t.after(() => harness.close())
  const { events } = await playCall(harness)
  assertCompleteTranscript(events)
  assert.equal(harness.fake.sessions.length, 2)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_reconnects_total'), 1)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_errors_total', { code: 'network' }), 1)
  const ended = events.at(-1)!.data
  const sessions = ended.upstream_sessions as Array<{ id: string, error: { code: unknown } | null }>
  assert.equal(sessions.length, 2)
  assert.equal(sessions[0]?.error?.code, 'network')
  assert.equal(sessions[1]?.error, null)

  // Every sample of the call reached the upstream at least once: the second session starts at or
  // before the point where the first one stopped receiving, and runs to the end.
  const expected = mix()
  const first = samplesOf(harness.fake.sessions[0]!.audio)
  const second = samplesOf(harness.fake.sessions[1]!.audio)
  assert.deepEqual(first.subarray(0, 1000), expected.subarray(0, 1000))
  const offset = offsetInMix(expected, second)
  assert.ok(offset >= 0, 'the replacement session was sent the call\'s own audio')
  assert.ok(offset <= first.length, `replay starts at sample ${offset}, the first session had ${first.length}`)
  assert.ok(offset + second.length >= expected.length, 'the replacement session got the rest of the call')
  let mismatch = -1
  for (let i = 0; i < expected.length - offset; i++) if (second[i] !== expected[offset + i]) { mismatch = i; break }
  assert.equal(mismatch, -1, 'replayed and live audio equal the mix exactly')
  assert.ok(offset / 8 <= 150 + sample.turns[1]!.startMs, 'the replay begins no later than the sentence in flight')
})

test('rate-limited connects (1008 and 3009) succeed after backoff', async (t) => {
  const harness = await startWithFaults((index) => {
    if (index === 0) return { rejectWith: { code: 1008, error: 'Unauthorized Connection: Too many concurrent sessions' } }
    if (index === 1) return { rejectWith: { code: 3009, error: 'Unauthorized Connection: Too many concurrent sessions' } }
    return {}
  })
  t.after(() => harness.close())
  const { events } = await playCall(harness, 5)
  assertCompleteTranscript(events)
  assert.equal(harness.fake.sessions.length, 3)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_reconnects_total'), 2)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_errors_total', { code: '1008' }), 1)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_errors_total', { code: '3009' }), 1)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_audio_dropped_seconds_total'), 0)
})

test('a session reaching its maximum duration (3008) rolls over and the transcript stays continuous', async (t) => {
  // A 12 s cap stands in for AssemblyAI's 3 hours; it expires in the agent's second sentence.
  const harness = await startWithFaults((index) => (index === 0 ? { sessionCapMs: 12000 } : {}))
  t.after(() => harness.close())
  const { events } = await playCall(harness)
  assertCompleteTranscript(events)
  assert.equal(harness.fake.sessions.length, 2)
  assert.equal(await metricValue(harness.app, 'medstream_upstream_errors_total', { code: '3008' }), 1)
})

test('a Twilio stop without a close, a close without stop and an abrupt drop each end the call once', async (t) => {
  const harness = await startHarness({ fake: { script } })
  t.after(() => harness.close())
  const short = { inbound: sample.inbound.subarray(0, 80000), outbound: sample.outbound.subarray(0, 80000) }

  const stopOnly = await harness.simulator.placeCall()
  const stopStream = harness.simulator.openStream(stopOnly, { ...short, speed: 20, closeAfterStop: false })
  assert.equal((await stopStream.done).code, 1000, 'the service closes after stop when Twilio does not')

  const noStop = await harness.simulator.placeCall()
  const noStopStream = harness.simulator.openStream(noStop, { ...short, speed: 20, sendStop: false, closeAfterStop: false })
  await noStopStream.opened
  await new Promise((resolve) => setTimeout(resolve, 600))
  noStopStream.close(1000)

  const dropped = await harness.simulator.placeCall()
  const droppedStream = harness.simulator.openStream(dropped, { ...short, speed: 20, sendStop: false, closeAfterStop: false })
  await droppedStream.opened
  await new Promise((resolve) => setTimeout(resolve, 300))
  droppedStream.abort()

  const viaCallback = await harness.simulator.placeCall()
  const callbackStream = harness.simulator.openStream(viaCallback, { ...short, speed: 1, sendStop: false, closeAfterStop: false })
  await callbackStream.opened
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(await harness.simulator.postStatus(viaCallback, callbackStream.streamSid, 'stream-stopped'), 204)
  assert.equal((await callbackStream.done).code, 1000, 'a stream-stopped callback ends the call and closes the socket')

  const receiver = harness.receiver!
  await receiver.waitFor((events) => events.filter((event) => event.type === 'call.ended').length === 4)
  const endedOf = (callSid: string) => receiver.events.filter((event) => event.callSid === callSid && event.type === 'call.ended')
  assert.equal(endedOf(stopOnly.callSid).length, 1)
  assert.equal(endedOf(stopOnly.callSid)[0]?.data.reason, 'completed')
  assert.equal(endedOf(noStop.callSid).length, 1)
  assert.equal(endedOf(noStop.callSid)[0]?.data.reason, 'stream_error')
  assert.equal(endedOf(dropped.callSid).length, 1)
  assert.equal(endedOf(dropped.callSid)[0]?.data.reason, 'stream_error')
  assert.equal(endedOf(viaCallback.callSid).length, 1)
  assert.equal(endedOf(viaCallback.callSid)[0]?.data.reason, 'completed')
  await new Promise((resolve) => setTimeout(resolve, 200))
  assert.equal(receiver.events.filter((event) => event.type === 'call.ended').length, 4, 'nothing ends twice')
  assert.equal(harness.app.calls.size, 0)
})

test('beyond MAX_CALLS the upgrade gets 503 and readiness reports not ready', async (t) => {
  const harness = await startHarness({ webhook: false, fake: { script }, env: { MAX_CALLS: '1' } })
  t.after(() => harness.close())
  const first = await harness.simulator.placeCall()
  const firstStream = harness.simulator.openStream(first, { inbound: sample.inbound, outbound: sample.outbound, speed: 2 })
  await firstStream.opened
  const ready = await fetch(`${harness.serviceUrl}/readyz`)
  assert.equal(ready.status, 503)
  assert.equal(((await ready.json()) as { status: string }).status, 'at_capacity')
  const second = await harness.simulator.placeCall()
  assert.equal(second.status, 200, 'the voice webhook still answers: the stream URL goes to a ready replica')
  const secondStream = harness.simulator.openStream(second, { inbound: sample.inbound, speed: 2 })
  await assert.rejects(secondStream.opened, (error: { statusCode?: number }) => error.statusCode === 503)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'capacity' }), 1)
  firstStream.close(1000)
  await firstStream.done
  const deadline = Date.now() + 5000
  while (harness.app.calls.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal((await fetch(`${harness.serviceUrl}/readyz`)).status, 200)
})

test('a Twilio peer that stops answering pings is detected and its call ended', async (t) => {
  const harness = await startHarness({ fake: { script }, heartbeatMs: 100 })
  t.after(() => harness.close())
  const call = await harness.simulator.placeCall()
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 1, sendStop: false, closeAfterStop: false })
  await stream.opened
  await new Promise((resolve) => setTimeout(resolve, 300))
  stream.freeze()
  t.after(() => stream.abort())
  await harness.receiver!.waitFor((events) => events.some((event) => event.callSid === call.callSid && event.type === 'call.ended'), 5000)
  const ended = harness.receiver!.events.find((event) => event.callSid === call.callSid && event.type === 'call.ended')
  assert.equal(ended?.data.reason, 'stream_error')
  assert.equal(harness.app.calls.size, 0)
})
