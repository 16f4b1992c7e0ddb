import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { CallSession } from '../../../src/core/call/call-session.ts'
import type { EndReason, Segment } from '../../../src/core/call/call-session.ts'
import { startFakeAssemblyAi } from '../../fakes/assemblyai-server.ts'
import { ACCOUNT_SID, API_KEY, CALL_SID, STREAM_SID, counter, mulawSpeech, recordingLogger, recordingSink, testMetrics, until, upstreamOptions } from './fixtures.ts'

const SILENT_FRAME = Buffer.alloc(160, 0xff)
const NEXT_STREAM_SID = `MZ${'9'.repeat(32)}`
const PREVIOUS_STREAM_SID = `MZ${'8'.repeat(32)}`

async function setup (t: TestContext, segment?: Segment) {
  const server = await startFakeAssemblyAi({ apiKeys: [API_KEY], partialsPerTurn: 0, script: [{ text: 'One two three.' }, { text: 'Four five six.' }, { text: 'Seven eight nine.' }] })
  t.after(() => server.close())
  const sink = recordingSink()
  const metrics = testMetrics()
  const ended: EndReason[] = []
  const session = new CallSession({
    identity: { callSid: CALL_SID, streamSid: STREAM_SID, accountSid: ACCOUNT_SID, tracks: ['inbound', 'outbound'], customParameters: { clinic: 'north' } },
    upstream: upstreamOptions(server.url),
    chunkMs: 100,
    sink,
    metrics,
    logger: recordingLogger(),
    terminateTimeoutMs: 3000,
    segment,
    onEnded: (_session, reason) => ended.push(reason)
  })
  t.after(() => session.end('shutdown'))
  return { server, sink, metrics, ended, session }
}

/** Three 600 ms bursts of caller speech, 900 ms apart: at 0, 1500 and 3000 ms of the stream's clock. */
function feed (session: CallSession, frames = mulawSpeech(3)): void {
  frames.forEach((frame, index) => {
    session.handleMedia('inbound', index * 20, frame)
    session.handleMedia('outbound', index * 20, SILENT_FRAME)
  })
}

test('CallSession of a later segment holds every event until the cut, then publishes call.started and only words from the cut on, on the call timeline', async (t) => {
  const { server, sink, session } = await setup(t, { number: 2, previousStreamSid: PREVIOUS_STREAM_SID, offsetMs: 10_000 })
  session.start()
  feed(session)
  await until(() => (server.sessions[0]?.turnsSent ?? 0) >= 2)
  assert.equal(sink.events.length, 0, 'nothing is published before the cut is known')
  session.releaseFrom(11_200)
  await session.end('completed')
  const bodies = sink.bodies()
  assert.deepEqual(bodies.map((body) => body.type), ['call.started', 'transcript.turn', 'transcript.turn', 'call.ended'])
  const started = bodies[0]!.data
  assert.deepEqual([started.segment, started.previous_stream_sid, started.offset_ms], [2, PREVIOUS_STREAM_SID, 10_000])
  const turns = bodies.filter((body) => body.type === 'transcript.turn').map((body) => body.data)
  assert.deepEqual(turns.map((turn) => turn.turn_index), [1, 2], 'turn_index counts within the segment')
  assert.ok(Math.abs((turns[0]!.start_ms as number) - 11_500) <= 60, `first kept turn at ${turns[0]!.start_ms as number} ms`)
  assert.ok(Math.abs((turns[1]!.start_ms as number) - 13_000) <= 60)
  assert.deepEqual(turns.map((turn) => turn.role), ['customer', 'customer'], 'roles come from the stream\'s own audio')
  const ended = bodies.at(-1)!.data
  assert.equal(ended.reason, 'completed')
  assert.ok((ended.audio_ms as number) >= 10_000 + 4400, 'audio_ms is on the call timeline')
})

test('CallSession hands off with only words that end by the cut and call.ended handed_off naming the next stream', async (t) => {
  const { server, sink, metrics, ended, session } = await setup(t)
  session.start()
  // The third burst is still open (no silence after it) when the cut comes: its turn is final only
  // at the flush, after the cut, and lies wholly after it.
  feed(session, mulawSpeech(3).slice(0, 180))
  await until(() => (server.sessions[0]?.turnsSent ?? 0) >= 2)
  await session.handOff(2800, NEXT_STREAM_SID)
  assert.equal(server.sessions[0]?.turnsSent, 3, 'the upstream did return the third turn')
  const bodies = sink.bodies()
  assert.deepEqual(bodies.map((body) => body.type), ['call.started', 'transcript.turn', 'transcript.turn', 'call.ended'])
  const turns = bodies.filter((body) => body.type === 'transcript.turn').map((body) => body.data)
  assert.ok(turns.every((turn) => (turn.end_ms as number) <= 2800))
  const last = bodies.at(-1)!.data
  assert.deepEqual([last.reason, last.next_stream_sid, last.turn_count], ['handed_off', NEXT_STREAM_SID, 2])
  assert.deepEqual(ended, ['handed_off'])
  assert.equal(await counter(metrics.callsTotal, { outcome: 'handed_off' }), 1)
  assert.equal(await counter(metrics.callsTotal, { outcome: 'completed' }), 0)
})

test('CallSession of a later segment publishes nothing when it ends before its cut is known', async (t) => {
  const { server, sink, metrics, ended, session } = await setup(t, { number: 2, previousStreamSid: PREVIOUS_STREAM_SID, offsetMs: 5000 })
  session.start()
  feed(session)
  await until(() => (server.sessions[0]?.turnsSent ?? 0) >= 1)
  await session.end('completed')
  session.releaseFrom(0)
  assert.equal(sink.events.length, 0)
  assert.deepEqual(ended, ['completed'])
  assert.equal(await counter(metrics.callsTotal, { outcome: 'completed' }), 0, 'an abandoned segment is not a call')
})

test('CallSession finds a quiet moment only when both tracks have been quiet for the window', async (t) => {
  const { session } = await setup(t, { number: 2, previousStreamSid: PREVIOUS_STREAM_SID, offsetMs: 7000 })
  const frames = mulawSpeech(2)
  feed(session, frames.slice(0, 35))
  assert.equal(session.quietMomentMs(300), null, '100 ms after speech is not a pause yet')
  frames.slice(35, 46).forEach((frame, i) => {
    session.handleMedia('inbound', (35 + i) * 20, frame)
    session.handleMedia('outbound', (35 + i) * 20, SILENT_FRAME)
  })
  assert.equal(session.quietMomentMs(300), 7000 + 46 * 20)
  session.handleMedia('inbound', 46 * 20, SILENT_FRAME)
  session.handleMedia('outbound', 46 * 20, frames[5]!)
  assert.equal(session.quietMomentMs(300), null, 'speech on the other track breaks the pause')
  assert.ok(Math.abs(session.timelineNowMs - (7000 + 47 * 20)) <= 5)
})
