// Stream handoff with the real app: two replicas (Fastify apps on loopback) sharing one real
// PostgreSQL, behind a proxy that sends upgrades to ready replicas, between the Twilio simulator (its
// REST Stream resource included) and the AssemblyAI fake, delivering to a real webhook receiver.
// The call plays in real time: offset_ms is computed from wall clocks, so the call's clock cannot run
// faster than them. The two-process version with a 90 s call is handoff-process.test.ts.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, test } from 'node:test'
import { WebSocketServer } from 'ws'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.ts'
import { loadConfig, loadLiveViewKey } from '../../src/config.ts'
import { mintViewerToken } from '../../src/core/live/viewer-token.ts'
import { createLogger } from '../../src/logger.ts'
import { mintHandoffParameters } from '../../src/core/twilio/handoff-token.ts'
import { TwilioStreams } from '../../src/core/twilio/rest.ts'
import { startFakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import type { FakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import { TwilioSimulator } from '../fakes/twilio-simulator.ts'
import type { LiveCall } from '../fakes/twilio-simulator.ts'
import { assertEveryTurnOnce, callOver, segmentsOf, sliceAudio } from '../helpers/handoff.ts'
import type { SpokenTurn } from '../helpers/handoff.ts'
import { API_KEY, AUTH_TOKEN, loadSampleCall, metricValue, WEBHOOK_SECRET } from '../helpers/harness.ts'
import { freePort } from '../helpers/net.ts'
import { startPostgres } from '../helpers/postgres.ts'
import type { PostgresCluster } from '../helpers/postgres.ts'
import { startReadyProxy } from '../helpers/ready-proxy.ts'
import type { ReadyProxy } from '../helpers/ready-proxy.ts'
import { openSse } from '../helpers/sse.ts'
import type { SseMessage, SseStream } from '../helpers/sse.ts'
import { startWebhookReceiver } from '../helpers/webhook-receiver.ts'
import type { WebhookReceiver } from '../helpers/webhook-receiver.ts'

const API_KEY_SID = 'SK' + 'e'.repeat(32)
const API_KEY_SECRET = 'handoff-test-api-key-secret'
const STREAM_TOKEN_SECRET = 'handoff-test-stream-token-secret-0123456789'
/** The TwiML stream's first media.timestamp: audio position 0 is this on the call timeline. */
const FIRST_TIMESTAMP_MS = 150
const sample = loadSampleCall()

let cluster: PostgresCluster
let fake: FakeAssemblyAi
let receiver: WebhookReceiver
let databases = 0

before(async () => {
  cluster = await startPostgres()
  fake = await startFakeAssemblyAi({ apiKeys: [API_KEY] })
  receiver = await startWebhookReceiver({ secrets: [WEBHOOK_SECRET] })
})

after(async () => {
  await receiver?.close()
  await fake?.close()
  await cluster?.destroy()
})

interface Fleet {
  a: FastifyInstance
  b: FastifyInstance
  proxy: ReadyProxy
  simulator: TwilioSimulator
  logs: () => string
  close: () => Promise<void>
}

/** Two replicas on one fresh database; `withB: false` leaves only A behind the proxy. */
async function startFleet (options: { withB?: boolean, confirmTimeoutMs?: number } = {}): Promise<Fleet> {
  const databaseUrl = await cluster.createDatabase(`handoff_${++databases}`)
  const proxyPort = await freePort()
  const publicUrl = `http://127.0.0.1:${proxyPort}`
  const simulator = new TwilioSimulator({ serviceUrl: publicUrl, publicUrl, authToken: AUTH_TOKEN })
  simulator.addApiKey(API_KEY_SID, API_KEY_SECRET)
  const api = await simulator.listenApi()
  const lines: string[] = []
  const dirs: string[] = []
  const replica = async (name: string): Promise<FastifyInstance> => {
    const dataDir = mkdtempSync(join(tmpdir(), `medstream-handoff-${name}-`))
    dirs.push(dataDir)
    const config = loadConfig({
      PUBLIC_URL: publicUrl,
      PORT: '0',
      HOST: '127.0.0.1',
      METRICS_PORT: '0',
      TWILIO_AUTH_TOKEN: AUTH_TOKEN,
      STREAM_TOKEN_SECRET,
      FORWARD_TO: '+15550002222',
      ASSEMBLYAI_API_KEY: API_KEY,
      ASSEMBLYAI_URL: fake.url,
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET,
      DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
      TWILIO_API_URL: api.url,
      TWILIO_API_KEY_SID: API_KEY_SID,
      TWILIO_API_KEY_SECRET: API_KEY_SECRET,
      LOG_LEVEL: 'info'
    })
    const destination = new Writable({ write (chunk: Buffer, _encoding, callback) { lines.push(`${name} ${chunk.toString()}`); callback() } })
    const app = await buildApp({
      config,
      logger: createLogger({ level: 'info', logPii: false }, destination),
      version: '0.0.0-test',
      processMetrics: false,
      terminateTimeoutMs: 5000,
      ...(options.confirmTimeoutMs === undefined ? {} : { handoffConfirmTimeoutMs: options.confirmTimeoutMs })
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    return app
  }
  const a = await replica('A')
  const b = await replica('B')
  const origin = (app: FastifyInstance): string => `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const proxy = await startReadyProxy(options.withB === false ? [origin(a)] : [origin(a), origin(b)], proxyPort)
  return {
    a,
    b,
    proxy,
    simulator,
    logs: () => lines.join(''),
    async close () {
      await proxy.close()
      await a.close()
      await b.close()
      await simulator.close()
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
    }
  }
}

/** What SIGTERM does on a replica with HANDOFF_ON_DRAIN (src/server.ts): drain, then hand off every call. */
async function drain (app: FastifyInstance): Promise<void> {
  app.calls.startDraining()
  const coordinator = app.handoff?.coordinator
  assert.ok(coordinator != null, 'handoff is on in fleet mode with credentials')
  await coordinator.handOffAll(app.calls.sessions())
}

const SHORT_TURNS = sample.turns.filter((turn) => turn.endMs < 22_500) as SpokenTurn[]
const shortCall = { inbound: sliceAudio(sample.inbound, 23_000), outbound: sliceAudio(sample.outbound, 23_000) }

for (const delayMs of [0, 500, 2000]) {
  test(`handoff moves a live call to the ready replica with nothing lost or doubled when the first media comes ${delayMs} ms after create`, { timeout: 90_000 }, async (t) => {
    const fleet = await startFleet()
    t.after(() => fleet.close())
    const live = await startCallOnAWithBReady(fleet, delayMs)
    await new Promise((resolve) => setTimeout(resolve, 6000))
    await drain(fleet.a)
    assert.equal(fleet.a.calls.size, 0, 'A holds no call after the handoff')
    await live.ended
    await receiver.waitFor((events) => callOver(events, live.callSid), 30_000)

    const segments = segmentsOf(receiver.events, live.callSid)
    assert.equal(segments.length, 2, fleet.logs())
    const [first, second] = segments as [typeof segments[0], typeof segments[0]]
    assert.deepEqual([first.started.segment, first.started.previous_stream_sid, first.started.offset_ms], [1, null, 0])
    assert.equal(first.ended.reason, 'handed_off')
    assert.equal(first.ended.next_stream_sid, second.streamSid)
    assert.deepEqual([second.started.segment, second.started.previous_stream_sid], [2, first.streamSid])
    assert.equal(second.ended.reason, 'completed')
    assert.equal(second.ended.next_stream_sid, null)
    assert.deepEqual(second.started.custom_parameters, first.started.custom_parameters, 'per-number parameters come along, the handoff\'s stay out')
    const forked = live.streams.find((stream) => stream.sid === second.streamSid)
    assert.ok(forked?.zeroOnTimelineMs != null)
    const offsetError = (second.started.offset_ms as number) - forked.zeroOnTimelineMs
    assert.ok(Math.abs(offsetError) <= 300, `offset_ms ${second.started.offset_ms as number} vs stream start ${forked.zeroOnTimelineMs}`)
    t.diagnostic(`offset error ${offsetError} ms; turns A ${first.turns.map((turn) => `${turn.start_ms as number}-${turn.end_ms as number}`).join(' ')}; B ${second.turns.map((turn) => `${turn.start_ms as number}-${turn.end_ms as number}`).join(' ')}`)
    assert.equal(live.streams.length, 2, 'never more than two streams of the call')
    assert.ok(first.turns.length >= 1 && second.turns.length >= 1, 'each segment carries part of the call')
    assertEveryTurnOnce(segments, SHORT_TURNS, FIRST_TIMESTAMP_MS)
    assert.equal(await metricValue(fleet.a, 'medstream_handoffs_total', { result: 'success' }), 1)
    assert.equal(await metricValue(fleet.a, 'medstream_calls_total', { outcome: 'handed_off' }), 1)
    assert.equal(await metricValue(fleet.b, 'medstream_calls_total', { outcome: 'completed' }), 1)
  })
}

/** Opens a call's live events, again while the replica does not know the call yet (404) or its live view is not ready (503). */
async function openLiveEvents (url: string, headers: Record<string, string>): Promise<SseStream> {
  const until = Date.now() + 10_000
  for (;;) {
    const stream = await openSse(url, headers)
    if (stream.status === 200 || Date.now() > until) return stream
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** The finals (`id`, event type and data) a viewer got, in order; partials carry no id. */
function finalsOf (messages: SseMessage[]): Array<{ id: string | null, type: string, data: unknown }> {
  return messages.filter((message) => message.event !== 'turn.partial').map((message) => ({ id: message.id, type: message.event, data: JSON.parse(message.data) }))
}

/** Resolves true when the server ends the stream within `ms`, false otherwise. */
async function endsWithin (stream: SseStream, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const ended = await Promise.race([stream.done.then(() => true), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms) })])
  clearTimeout(timer)
  return ended
}

// On B, the viewer reads segment 1 from PostgreSQL and segment 2 in process; on A, the other way
// round, and the one resuming then reaches a B that had the call from segment 2 only.
for (const viewerOn of ['B', 'A'] as const) {
  test(`a viewer on replica ${viewerOn} follows a call across its handoff, and one resuming from segment 1 gets the rest once`, { timeout: 90_000 }, async (t) => {
    const fleet = await startFleet()
    t.after(() => fleet.close())
    const live = await startCallOnAWithBReady(fleet, 500)
    const headers = { authorization: `Bearer ${mintViewerToken(loadLiveViewKey({ STREAM_TOKEN_SECRET }), live.callSid, Date.now(), 600)}` }
    const path = `/live/calls/${live.callSid}/events`
    const replica = viewerOn === 'A' ? fleet.a : fleet.b
    // Opened while the call is live on A.
    const viewer = await openLiveEvents(`http://127.0.0.1:${(replica.server.address() as AddressInfo).port}${path}`, headers)
    t.after(() => viewer.abort())
    assert.equal(viewer.status, 200, viewer.messages[0]?.data)
    assert.equal(fleet.a.calls.has(live.callSid), true, 'the call is on A')
    await viewer.waitFor((messages) => messages.some((message) => message.event === 'transcript.turn'), 15_000)
    await new Promise((resolve) => setTimeout(resolve, 2000))
    await drain(fleet.a)

    // Once segment 1 is over for this viewer and B has started segment 2, another one comes back
    // (through the load balancer, to B: A is draining) from a segment-1 final, as a page does after a
    // dropped stream.
    await viewer.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 30_000)
    while (!fleet.b.live.has(live.callSid)) await new Promise((resolve) => setTimeout(resolve, 20))
    const resumeFrom = finalsOf(viewer.messages).filter((final) => final.type === 'transcript.turn')[0]?.id
    assert.ok(resumeFrom != null)
    const resumed = await openSse(`${fleet.proxy.url}${path}`, { ...headers, 'last-event-id': resumeFrom })
    t.after(() => resumed.abort())
    assert.equal(resumed.status, 200, resumed.messages[0]?.data)

    await live.ended
    await receiver.waitFor((events) => callOver(events, live.callSid), 30_000)
    assert.equal(await endsWithin(viewer, 10_000), true, 'the stream ends by itself after the last call.ended')
    assert.equal(await endsWithin(resumed, 10_000), true, 'the resumed stream ends by itself too')

    // What the webhook receiver got, rebuilt as a receiver does: the viewer's finals are the same.
    const segments = segmentsOf(receiver.events, live.callSid)
    assert.equal(segments.length, 2, fleet.logs())
    const expected = segments.flatMap((segment) => [
      ...segment.turns.map((turn) => ({ id: `${segment.started.segment as number}-${turn.sequence as number}`, type: 'transcript.turn', data: turn })),
      { id: `${segment.started.segment as number}-${segment.ended.sequence as number}`, type: 'call.ended', data: segment.ended }
    ])
    const [first, second] = segments as [typeof segments[0], typeof segments[0]]
    assert.ok(first.turns.length >= 1 && second.turns.length >= 1, 'each segment carries part of the call')
    assert.equal(first.ended.reason, 'handed_off')
    assert.equal(second.ended.reason, 'completed')
    const finals = finalsOf(viewer.messages)
    t.diagnostic(`viewer ids ${finals.map((final) => final.id).join(' ')}; expected ${expected.map((final) => final.id).join(' ')}`)
    assert.deepEqual(finals, expected, 'segment 1\'s finals, call.ended handed_off, segment 2\'s finals, call.ended completed: each once, in order, as the webhooks carry them')
    assert.equal(new Set(finals.map((final) => final.id)).size, finals.length, 'ids are unique across the segments')
    assert.ok(viewer.messages.every((message) => (message.event === 'turn.partial') === (message.id === null)), 'only finals carry an id')

    const after = expected.findIndex((final) => final.id === resumeFrom)
    assert.deepEqual(finalsOf(resumed.messages), expected.slice(after + 1), `after ${resumeFrom}: the finals missed, then the rest, none twice`)
  })
}

/** A call that starts on A while B is not ready, then B becomes ready. */
async function startCallOnAWithBReady (fleet: Fleet, firstMediaDelayMs: number, audio = shortCall): Promise<LiveCall> {
  const origin = fleet.proxy.backends[0] as string
  // Only A behind the proxy for the first stream: B joins once the call is on A.
  fleet.proxy.backends.splice(1)
  const placed = await fleet.simulator.placeCall()
  const live = fleet.simulator.startCall(placed, { ...audio, firstMediaDelayMs })
  while (!fleet.a.calls.has(placed.callSid)) await new Promise((resolve) => setTimeout(resolve, 20))
  fleet.proxy.backends.splice(0, fleet.proxy.backends.length, origin, `http://127.0.0.1:${(fleet.b.server.address() as AddressInfo).port}`)
  await new Promise((resolve) => setTimeout(resolve, 300))
  return live
}

async function assertStaysOnA (fleet: Fleet, live: LiveCall, result: string): Promise<void> {
  assert.equal(fleet.a.calls.size, 1, 'the call stays on A')
  assert.equal(await metricValue(fleet.a, 'medstream_handoffs_total', { result }), 1)
  await live.ended
  await receiver.waitFor((events) => callOver(events, live.callSid), 30_000)
  const segments = segmentsOf(receiver.events, live.callSid)
  assert.equal(segments.length, 1, 'no second segment was published')
  assert.equal(segments[0]?.ended.reason, 'completed')
  assert.equal(segments[0]?.ended.next_stream_sid, null)
  assertEveryTurnOnce(segments, sample.turns.filter((turn) => turn.endMs < 9_800) as SpokenTurn[], FIRST_TIMESTAMP_MS)
  assert.equal(await metricValue(fleet.a, 'medstream_calls_total', { outcome: 'completed' }), 1)
  assert.equal(await metricValue(fleet.a, 'medstream_handoffs_total', { result: 'success' }), 0)
}

const failCall = { inbound: sliceAudio(sample.inbound, 10_000), outbound: sliceAudio(sample.outbound, 10_000) }

for (const status of [429, 500] as const) {
  test(`a call stays on its replica and drains, counted, when Twilio answers the create with ${status}`, { timeout: 60_000 }, async (t) => {
    const fleet = await startFleet()
    t.after(() => fleet.close())
    const live = await startCallOnAWithBReady(fleet, 0, failCall)
    await new Promise((resolve) => setTimeout(resolve, 2000))
    fleet.simulator.injectRestFault({ status })
    await drain(fleet.a)
    await assertStaysOnA(fleet, live, status === 429 ? 'rate_limited' : 'create_failed')
    assert.equal(live.streams.length, 1)
  })
}

test('a call stays on its replica and drains, counted, when the four-track limit refuses the second stream', { timeout: 60_000 }, async (t) => {
  const fleet = await startFleet()
  t.after(() => fleet.close())
  // Another fork of the call (a recorder, say) holds the other two tracks.
  const holder = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(holder, 'listening')
  t.after(() => { for (const client of holder.clients) client.terminate(); holder.close() })
  const live = await startCallOnAWithBReady(fleet, 0, failCall)
  const api = await fleet.simulator.listenApi()
  const rest = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: API_KEY_SECRET }, fleet.simulator.accountSid)
  await rest.create(live.callSid, { url: `ws://127.0.0.1:${(holder.address() as AddressInfo).port}/recorder`, name: 'recorder', track: 'both_tracks', parameters: {} })
  assert.equal(live.forkedTracks, 4)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  await drain(fleet.a)
  await assertStaysOnA(fleet, live, 'track_limit')
})

test('a call stays on its replica and drains, counted, when no replica confirms the new stream', { timeout: 60_000 }, async (t) => {
  const fleet = await startFleet({ withB: false, confirmTimeoutMs: 2000 })
  t.after(() => fleet.close())
  const placed = await fleet.simulator.placeCall()
  const live = fleet.simulator.startCall(placed, failCall)
  while (!fleet.a.calls.has(placed.callSid)) await new Promise((resolve) => setTimeout(resolve, 20))
  await new Promise((resolve) => setTimeout(resolve, 2000))
  await drain(fleet.a)
  // The only replica is draining: the new stream's upgrade got 503, nobody accepted, A stopped it.
  const created = live.streams[1]
  assert.ok(created !== undefined)
  assert.equal(created.status, 'stopped')
  await assertStaysOnA(fleet, live, 'unconfirmed')
})

test('a forged or tampered handoff token is refused with 1008 and no upstream session opens', { timeout: 60_000 }, async (t) => {
  const fleet = await startFleet()
  t.after(() => fleet.close())
  const placed = await fleet.simulator.placeCall()
  const other = await fleet.simulator.placeCall()
  const secret = Buffer.from(STREAM_TOKEN_SECRET)
  const claim = { callSid: placed.callSid, accountSid: placed.accountSid, previousStreamSid: 'MZ' + '7'.repeat(32), segment: 2, atMs: 5000, atEpochMs: Date.now() }
  const genuine = mintHandoffParameters(secret, claim, Date.now())
  const cases: Array<[string, Record<string, string>, typeof placed]> = [
    ['another call', mintHandoffParameters(secret, { ...claim, callSid: other.callSid }, Date.now()), placed],
    ['a changed segment', { ...genuine, handoff_segment: '3' }, placed],
    ['a changed offset', { ...genuine, handoff_at_ms: '1000' }, placed],
    ['a forged key', mintHandoffParameters(Buffer.from('not-the-stream-token-secret-0123456789'), claim, Date.now()), placed]
  ]
  const sessionsBefore = fake.sessions.length
  for (const [what, customParameters, call] of cases) {
    const stream = fleet.simulator.openStream(call, { inbound: sliceAudio(sample.inbound, 2000), customParameters: { ...customParameters, clinic: 'north' } })
    const result = await stream.done
    assert.equal(result.code, 1008, what)
  }
  assert.equal(fake.sessions.length, sessionsBefore, 'no upstream session was opened')
  const refused = await metricValue(fleet.a, 'medstream_stream_rejections_total', { reason: 'token' }) + await metricValue(fleet.b, 'medstream_stream_rejections_total', { reason: 'token' })
  assert.equal(refused, cases.length)
})
