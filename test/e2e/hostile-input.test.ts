import assert from 'node:assert/strict'
import { test } from 'node:test'
import { INVALID_REASONS } from '../../src/core/metrics.ts'
import type { FakeUtterance } from '../fakes/assemblyai-server.ts'
import { API_KEY, AUTH_TOKEN, loadSampleCall, metricValue, startHarness, WEBHOOK_SECRET } from '../helpers/harness.ts'
import type { Harness } from '../helpers/harness.ts'

const sample = loadSampleCall()
const script: FakeUtterance[] = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))

type Expect = 'json' | 'schema' | 'binary' | 'timestamp' | 'order' | 'unknown' | 'mark'

/** A generator of bad frames for a stream that has started, each with the counter it must move. */
function badFrame (i: number, streamSid: string, random: () => number): { data: string | Buffer, expect: Expect } {
  const media = (fields: Record<string, unknown>) => JSON.stringify({ event: 'media', sequenceNumber: String(1000 + i), streamSid, media: { track: 'inbound', chunk: String(i + 1), timestamp: '160', payload: '//////8=', ...fields } })
  const junk = Buffer.from(Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 256)))
  switch (i % 14) {
    case 0: return { data: junk.toString('latin1').replace(/^[[{"]/, 'x'), expect: 'json' }
    case 1: return { data: '{"event":"media",', expect: 'json' }
    case 2: return { data: JSON.stringify([1, 2, 3]), expect: 'schema' }
    case 3: return { data: media({ timestamp: 160 }), expect: 'schema' }
    case 4: return { data: JSON.stringify({ event: 'media', sequenceNumber: '5', streamSid, media: { track: 'inbound', chunk: '1', timestamp: '160' } }), expect: 'schema' }
    case 5: return { data: media({ track: 'both' }), expect: 'schema' }
    case 6: return { data: media({ payload: '!!not*base64!!' }), expect: 'schema' }
    case 7: return { data: media({ payload: 'AAAAA' }), expect: 'schema' }
    case 8: return { data: media({ timestamp: '0' }), expect: 'timestamp' }
    case 9: return { data: media({ timestamp: String(10_000_000 + i) }), expect: 'timestamp' }
    case 10: return { data: junk, expect: 'binary' }
    case 11: return { data: JSON.stringify({ event: 'start', sequenceNumber: '1', start: { streamSid, accountSid: 'AC' + '1'.repeat(32), callSid: 'CA' + '2'.repeat(32), tracks: ['inbound'], customParameters: {}, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } }, streamSid }), expect: 'order' }
    case 12: return { data: JSON.stringify({ event: 'teleport', streamSid }), expect: 'unknown' }
    default: return { data: media({ track: 'inbound' }).replace(streamSid, 'MZ' + 'e'.repeat(32)), expect: 'schema' }
  }
}

async function counters (harness: Harness): Promise<Record<string, number>> {
  const result: Record<string, number> = {}
  for (const reason of INVALID_REASONS) result[reason] = await metricValue(harness.app, 'medstream_twilio_invalid_messages_total', { reason })
  result.unknown = await metricValue(harness.app, 'medstream_twilio_messages_total', { event: 'unknown' })
  return result
}

test('10,000 generated bad frames across many connections are counted, and a good call beside them completes', async (t) => {
  const harness = await startHarness({ fake: { script } })
  t.after(() => harness.close())
  let seed = 42
  const random = (): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  const expected: Record<string, number> = { json: 0, schema: 0, binary: 0, timestamp: 0, order: 0, size: 0, unknown: 0 }

  const good = await harness.simulator.placeCall()
  const goodStream = harness.simulator.openStream(good, { inbound: sample.inbound, outbound: sample.outbound, speed: 8 })
  await goodStream.opened

  // Started streams that then send garbage: each frame is ignored and counted once.
  const started = 20
  const framesEach = 500
  for (let c = 0; c < started; c++) {
    const call = await harness.simulator.placeCall()
    const stream = harness.simulator.openStream(call, { inbound: sample.inbound.subarray(0, 16000), speed: 1, sendStop: false, closeAfterStop: false })
    await stream.opened
    // Let `start` and the first real frames land so a timestamp of 0 is really backwards.
    await new Promise((resolve) => setTimeout(resolve, 120))
    for (let i = 0; i < framesEach; i++) {
      const frame = badFrame(i + c, stream.streamSid, random)
      expected[frame.expect]! += 1
      stream.sendRaw(frame.data)
    }
    stream.close(1000)
    await stream.done
  }

  // Streams that misbehave before `start`: garbage is counted, media before start closes with 1008.
  for (let c = 0; c < 10; c++) {
    const call = await harness.simulator.placeCall()
    const stream = harness.simulator.openStream(call, { inbound: sample.inbound.subarray(0, 1600), sendStart: false })
    await stream.opened
    stream.sendRaw('not json at all')
    stream.sendRaw(JSON.stringify({ event: 'media', sequenceNumber: '2', streamSid: 'MZ' + '0'.repeat(32), media: { track: 'inbound', chunk: '1', timestamp: '20', payload: '//////8=' } }))
    expected.json! += 1
    expected.order! += 1
    assert.equal((await stream.done).code, 1008)
  }

  // Oversized messages: refused by the WebSocket layer with 1009.
  for (let c = 0; c < 5; c++) {
    const call = await harness.simulator.placeCall()
    const stream = harness.simulator.openStream(call, { inbound: sample.inbound.subarray(0, 1600), sendStart: false })
    await stream.opened
    stream.sendRaw('x'.repeat(70 * 1024))
    expected.size! += 1
    assert.equal((await stream.done).code, 1009)
  }

  const total = Object.values(expected).reduce((sum, count) => sum + count, 0)
  assert.ok(total >= 10_000, `${total} bad frames sent`)

  await goodStream.done
  const receiver = harness.receiver!
  await receiver.waitFor((events) => events.some((event) => event.callSid === good.callSid && event.type === 'call.ended'), 30000)
  const goodTurns = receiver.events.filter((event) => event.callSid === good.callSid && event.type === 'transcript.turn')
  assert.deepEqual(goodTurns.map((event) => event.data.text), script.map((line) => line.text), 'the good call\'s transcript is complete')
  assert.equal(receiver.events.find((event) => event.callSid === good.callSid && event.type === 'call.ended')?.data.reason, 'completed')

  const deadline = Date.now() + 10000
  while (harness.app.calls.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.deepEqual(await counters(harness), expected, 'every bad frame moved exactly its counter')
  assert.equal(harness.fake.sessions.length, 1 + started, 'streams refused before start never opened an upstream session')
  assert.equal((await fetch(`${harness.serviceUrl}/healthz`)).status, 200)
})

test('a full call logged at debug level holds no transcript words, numbers, parameter values or secrets', async (t) => {
  for (const logPii of [false, true]) {
    const harness = await startHarness({ fake: { script }, env: { LOG_LEVEL: 'debug', LOG_PII: String(logPii) } })
    const call = await harness.simulator.placeCall({ path: '/twilio/voice?clinic=northwing&keyterms=Holterstudy', from: '+15557654321', to: '+15551234567' })
    const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 20, statusCallbacks: true })
    await stream.opened
    await stream.done
    await harness.receiver!.waitFor((events) => events.some((event) => event.type === 'call.ended'))
    await harness.close()
    const logs = harness.logText()
    const lower = logs.toLowerCase()
    assert.ok(logs.split('\n').length > 10, 'the call was logged')
    assert.match(logs, /"msg":"turn"/, 'debug lines for each turn were written')
    const words = ['metoprolol', 'lisinopril', 'dizzy', 'refill', 'goodbye', 'nurse']
    if (!logPii) {
      for (const word of words) assert.ok(!lower.includes(word), `transcript word "${word}" leaked`)
      for (const secret of ['northwing', 'holterstudy', '5557654321', '5551234567', '5550002222', AUTH_TOKEN.toLowerCase(), API_KEY.toLowerCase(), WEBHOOK_SECRET.toLowerCase(), 'whsec_']) {
        assert.ok(!lower.includes(secret), `"${secret}" leaked into the logs`)
      }
      const token = call.twiml?.stream?.parameters.token
      assert.ok(token !== undefined && !logs.includes(token), 'the stream token leaked')
    } else {
      // The same check can fail: with the debug switch on, the words are there.
      assert.ok(lower.includes('metoprolol'), 'LOG_PII=true lets transcript text into the logs')
      assert.ok(!lower.includes(API_KEY.toLowerCase()), 'secrets stay out even with LOG_PII=true')
    }
  }
  t.diagnostic('checked with LOG_PII=false and LOG_PII=true')
})
