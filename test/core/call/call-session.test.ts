import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { CallSession } from '../../../src/core/call/call-session.ts'
import type { CallSessionOptions, EndReason } from '../../../src/core/call/call-session.ts'
import type { FakeAssemblyAiOptions } from '../../fakes/assemblyai-server.ts'
import { startFakeAssemblyAi } from '../../fakes/assemblyai-server.ts'
import { ACCOUNT_SID, API_KEY, CALL_SID, STREAM_SID, counter, mulawSpeech, recordingLogger, recordingSink, testMetrics, until, upstreamOptions } from './fixtures.ts'

// Field lists of docs/interface.md ("Webhook events"): a payload with a field more or less fails here.
const CALL_STARTED_FIELDS = ['account_sid', 'call_sid', 'custom_parameters', 'sequence', 'started_at', 'stream_sid', 'tracks', 'transcription']
const TRANSCRIPTION_FIELDS = ['domain', 'sample_rate', 'speaker_labels', 'speech_model']
const TURN_FIELDS = ['call_sid', 'confidence', 'end_ms', 'role', 'sequence', 'speaker', 'start_ms', 'stream_sid', 'text', 'turn_index', 'upstream', 'words']
const WORD_FIELDS = ['confidence', 'end_ms', 'role', 'speaker', 'start_ms', 'text']
const CALL_ENDED_FIELDS = ['audio_ms', 'call_sid', 'ended_at', 'reason', 'sequence', 'started_at', 'stream_sid', 'transcript', 'turn_count', 'upstream_sessions']
const TRANSCRIPT_ENTRY_FIELDS = ['end_ms', 'role', 'speaker', 'start_ms', 'text', 'turn_index', 'words']
const UPSTREAM_SESSION_FIELDS = ['audio_seconds', 'error', 'id', 'session_seconds']

async function setup (t: TestContext, fake: Partial<FakeAssemblyAiOptions> = {}, overrides: Partial<CallSessionOptions> = {}) {
  const server = await startFakeAssemblyAi({ apiKeys: [API_KEY], partialsPerTurn: 0, ...fake })
  t.after(() => server.close())
  const sink = recordingSink()
  const metrics = testMetrics()
  const logger = recordingLogger()
  const ended: EndReason[] = []
  const session = new CallSession({
    identity: { callSid: CALL_SID, streamSid: STREAM_SID, accountSid: ACCOUNT_SID, tracks: ['inbound', 'outbound'], customParameters: { clinic: 'north' } },
    upstream: upstreamOptions(server.url),
    chunkMs: 100,
    sink,
    metrics,
    logger,
    terminateTimeoutMs: 3000,
    reconnect: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10, maxOutageMs: 1000 },
    onEnded: (_session, reason) => ended.push(reason),
    ...overrides
  })
  t.after(() => session.end('shutdown'))
  return { server, sink, metrics, logger, ended, session }
}

/** μ-law silence: what the outbound track carries while only the caller speaks. */
const SILENT_FRAME = Buffer.alloc(160, 0xff)

/** Feeds μ-law frames on the inbound track and silence on the outbound one, 20 ms apart from 0. */
function feed (session: CallSession, frames: Buffer[]): void {
  frames.forEach((frame, index) => {
    session.handleMedia('inbound', index * 20, frame)
    session.handleMedia('outbound', index * 20, SILENT_FRAME)
  })
}

test('CallSession publishes call.started, one turn per speech burst and call.ended with gapless sequences when a call completes', async (t) => {
  const { server, sink, metrics, ended, session } = await setup(t, { script: [{ text: 'I take metoprolol.', speaker: 'A' }, { text: 'Twice a day.', speaker: 'A' }] })
  session.start()
  const frames = mulawSpeech(2)
  feed(session, frames)
  await until(() => server.sessions[0]?.turnsSent === 2)
  await session.end('completed')

  const bodies = sink.bodies()
  assert.deepEqual(bodies.map((body) => body.type), ['call.started', 'transcript.turn', 'transcript.turn', 'call.ended'])
  assert.deepEqual(sink.events.map((event) => [event.sequence, event.id, event.callSid, event.streamSid]), [1, 2, 3, 4].map((n) => [n, `${STREAM_SID}-${n}`, CALL_SID, STREAM_SID]))
  const [started, first, second, last] = bodies.map((body) => body.data)
  assert.deepEqual(Object.keys(started!).sort(), CALL_STARTED_FIELDS)
  assert.deepEqual(Object.keys(started!.transcription as object).sort(), TRANSCRIPTION_FIELDS)
  assert.deepEqual(started!.custom_parameters, { clinic: 'north' })
  assert.deepEqual(started!.transcription, { speech_model: 'u3-rt-pro', domain: 'medical-v1', speaker_labels: true, sample_rate: 8000 })
  for (const turn of [first!, second!]) {
    assert.deepEqual(Object.keys(turn).sort(), TURN_FIELDS)
    assert.deepEqual(Object.keys((turn.words as object[])[0]!).sort(), WORD_FIELDS)
    assert.equal(turn.role, 'customer', 'only the inbound track carries speech')
  }
  assert.deepEqual([first!.turn_index, first!.text, second!.turn_index, second!.text], [1, 'I take metoprolol.', 2, 'Twice a day.'])
  assert.deepEqual(Object.keys(last!).sort(), CALL_ENDED_FIELDS)
  assert.equal(last!.reason, 'completed')
  assert.equal(last!.audio_ms, frames.length * 20)
  assert.equal(last!.turn_count, 2)
  assert.deepEqual(Object.keys((last!.transcript as object[])[0]!).sort(), TRANSCRIPT_ENTRY_FIELDS)
  const upstreamSessions = last!.upstream_sessions as Array<Record<string, unknown>>
  assert.equal(upstreamSessions.length, 1)
  assert.deepEqual(Object.keys(upstreamSessions[0]!).sort(), UPSTREAM_SESSION_FIELDS)
  assert.equal(upstreamSessions[0]!.error, null)

  assert.deepEqual(ended, ['completed'])
  assert.equal(await counter(metrics.callsTotal, { outcome: 'completed' }), 1)
  assert.equal(await counter(metrics.twilioMessages, { event: 'media' }), 2 * frames.length, 'media frames are counted once flushed at the end')
  assert.equal(await counter(metrics.turnsTotal, { role: 'customer' }), 2)
})

test('CallSession ends once and ignores later media when several causes ask it to end', async (t) => {
  const { sink, metrics, ended, session } = await setup(t)
  session.start()
  feed(session, mulawSpeech(1).slice(0, 10))
  const endings = [session.end('completed'), session.end('stream_error'), session.end('shutdown')]
  assert.equal(endings[0], endings[1])
  assert.equal(endings[1], endings[2])
  assert.equal(session.ended, true)
  await endings[0]
  assert.equal(session.handleMedia('inbound', 200, Buffer.alloc(160, 0xff)), 'ok')
  session.flushMetrics()
  assert.deepEqual(ended, ['completed'])
  assert.deepEqual(sink.bodies().filter((body) => body.type === 'call.ended').map((body) => body.data.reason), ['completed'])
  assert.equal(await counter(metrics.twilioMessages, { event: 'media' }), 20)
  assert.equal(await counter(metrics.callsTotal, { outcome: 'stream_error' }), 0)
})

test('CallSession ends as transcription_failed with the close code when the upstream refuses the key', async (t) => {
  const { sink, logger, ended, session } = await setup(t, { apiKeys: ['another-key'] })
  session.start()
  await until(() => ended.length === 1)
  assert.deepEqual(ended, ['transcription_failed'])
  const last = sink.bodies().at(-1)!
  assert.equal(last.type, 'call.ended')
  assert.equal(last.data.reason, 'transcription_failed')
  const error = (last.data.upstream_sessions as Array<{ error: { code: unknown, message: string } | null }>)[0]?.error
  assert.equal(error?.code, 1008)
  const line = logger.lines.find((entry) => entry.message === 'transcription failed for this call')
  assert.deepEqual(line?.fields, { code: 1008, httpStatus: null })
})

test('CallSession logs the event type and sequence and still ends when the sink cannot store an event', async (t) => {
  const { sink, logger, ended, session } = await setup(t)
  sink.failWith = new Error('ENOSPC: no space left on device')
  session.start()
  await session.end('completed')
  assert.deepEqual(ended, ['completed'])
  assert.equal(sink.events.length, 0)
  const failures = logger.lines.filter((line) => line.message === 'event could not be stored')
  assert.deepEqual(failures.map((line) => [line.level, line.fields.type, line.fields.sequence]), [['error', 'call.started', 1], ['error', 'call.ended', 2]])
})
