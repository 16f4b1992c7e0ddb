// Fleet mode end to end: real replica processes (`src/server.ts`, as `npm start` runs it) sharing
// one real PostgreSQL outbox, between the Twilio and AssemblyAI fakes and a real webhook receiver.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import pg from 'pg'
import { MIGRATIONS } from '../../src/core/postgres/migrations.ts'
import { startFakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import type { FakeAssemblyAi, FakeUtterance } from '../fakes/assemblyai-server.ts'
import { TwilioSimulator } from '../fakes/twilio-simulator.ts'
import { API_KEY, AUTH_TOKEN, loadSampleCall, metricValue, startHarness, WEBHOOK_SECRET } from '../helpers/harness.ts'
import { freePort, waitForOk } from '../helpers/net.ts'
import { startPostgres } from '../helpers/postgres.ts'
import type { PostgresCluster } from '../helpers/postgres.ts'
import { startWebhookReceiver } from '../helpers/webhook-receiver.ts'
import type { ReceivedEvent, WebhookReceiver } from '../helpers/webhook-receiver.ts'

const ROOT = new URL('../../', import.meta.url).pathname
const sample = loadSampleCall()
const script: FakeUtterance[] = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))
/** Events of one sample call: call.started, one turn per sample turn, call.ended. */
const EVENTS_PER_CALL = sample.turns.length + 2

interface Replica {
  name: string
  process: ChildProcess
  url: string
  metricsUrl: string
  simulator: TwilioSimulator
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  output: () => string
}

let cluster: PostgresCluster
let fake: FakeAssemblyAi
let receiver: WebhookReceiver
/** What the receiver answers: 200, or 503 while "down". */
let receiverUp = true
let receiverDelayMs = 0
let databases = 0
const dataDir = mkdtempSync(join(tmpdir(), 'medstream-fleet-'))

before(async () => {
  cluster = await startPostgres()
  fake = await startFakeAssemblyAi({ apiKeys: [API_KEY], script })
  receiver = await startWebhookReceiver({
    secrets: [WEBHOOK_SECRET],
    respond: () => receiverDelayMs > 0 ? { status: receiverUp ? 200 : 503, hangMs: receiverDelayMs } : (receiverUp ? 200 : 503)
  })
})

after(async () => {
  await receiver?.close()
  await fake?.close()
  await cluster?.destroy()
  rmSync(dataDir, { recursive: true, force: true })
})

async function newDatabase (): Promise<string> {
  return await cluster.createDatabase(`fleet_${++databases}`)
}

/** One replica process on loopback ports; resolves once /healthz answers (not necessarily ready). */
async function startReplica (t: { after: (fn: () => void) => void }, name: string, databaseUrl: string, env: Record<string, string> = {}): Promise<Replica> {
  const port = await freePort()
  const metricsPort = await freePort()
  const url = `http://127.0.0.1:${port}`
  const child = spawn(process.execPath, ['src/server.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      PUBLIC_URL: url,
      TWILIO_AUTH_TOKEN: AUTH_TOKEN,
      FORWARD_TO: '+15550002222',
      ASSEMBLYAI_API_KEY: API_KEY,
      ASSEMBLYAI_URL: fake.url,
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET,
      DATA_DIR: join(dataDir, name),
      DATABASE_URL: databaseUrl,
      DRAIN_TIMEOUT_MS: '10000',
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  try {
    await waitForOk(`${url}/healthz`, 20_000, () => child.exitCode === null)
  } catch (error) {
    throw new Error(`replica ${name} did not start:\n${output}`, { cause: error })
  }
  const simulator = new TwilioSimulator({ serviceUrl: url, publicUrl: url, authToken: AUTH_TOKEN })
  return { name, process: child, url, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, simulator, exited, output: () => output }
}

async function waitReady (replica: Replica, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if ((await fetch(`${replica.url}/readyz`)).status === 200) return
    await sleep(50)
  }
  throw new Error(`replica ${replica.name} not ready within ${timeoutMs} ms:\n${replica.output()}`)
}

async function scrape (replica: Replica, series: string): Promise<number> {
  const text = await (await fetch(replica.metricsUrl)).text()
  const line = text.split('\n').find((candidate) => candidate.startsWith(series + ' '))
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1))
}

async function waitFor (predicate: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await sleep(50)
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Plays `count` whole sample calls on a replica at `speed`× and waits until each has ended there. */
async function playCalls (replica: Replica, count: number, speed: number): Promise<string[]> {
  const calls = await Promise.all(Array.from({ length: count }, () => replica.simulator.placeCall()))
  const streams = calls.map((call) => replica.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed }))
  for (const stream of streams) assert.equal((await stream.done).code, 1000)
  await waitFor(async () => await scrape(replica, 'medstream_calls_total{outcome="completed"}') >= count, 10_000, `${replica.name}: calls completed`)
  return calls.map((call) => call.callSid)
}

/** Every event of each call arrived, each webhook-id once (after de-duplication), in order. */
function assertComplete (callSids: string[], by: WebhookReceiver = receiver): void {
  for (const callSid of callSids) {
    const events = by.events.filter((event: ReceivedEvent) => event.callSid === callSid)
    assert.deepEqual(events.map((event) => event.sequence), Array.from({ length: EVENTS_PER_CALL }, (_, i) => i + 1), `call ${callSid}: every event, in order`)
    assert.equal(events[0]?.type, 'call.started')
    assert.equal(events.at(-1)?.type, 'call.ended')
    assert.equal(events.at(-1)?.data.reason, 'completed')
  }
  assert.deepEqual(by.badSignatures, [])
}

function ended (callSids: string[]): boolean {
  return callSids.every((callSid) => receiver.events.some((event) => event.callSid === callSid && event.type === 'call.ended'))
}

test('four replicas starting at once against an empty database migrate it once and all become ready', async (t) => {
  const url = await newDatabase()
  const replicas = await Promise.all(['m1', 'm2', 'm3', 'm4'].map((name) => startReplica(t, name, url)))
  await Promise.all(replicas.map((replica) => waitReady(replica)))
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.after(() => client.end())
  const { rows } = await client.query('SELECT version FROM medstream_schema ORDER BY version')
  assert.deepEqual(rows.map((row) => row.version), MIGRATIONS.map((migration) => migration.version), 'each migration recorded once')
  for (const replica of replicas) assert.doesNotMatch(replica.output(), /"level":(50|60)/, `${replica.name} logged no error`)
  for (const replica of replicas) replica.process.kill('SIGTERM')
  for (const replica of replicas) assert.equal((await replica.exited).code, 0)

  // A build older than the database's schema stops with one line rather than writing into it.
  await client.query("INSERT INTO medstream_schema (version, name) VALUES (99, 'from a newer release')")
  const old = spawn(process.execPath, ['src/server.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: '0', METRICS_PORT: '0', HOST: '127.0.0.1', PUBLIC_URL: 'http://127.0.0.1:1', TWILIO_AUTH_TOKEN: AUTH_TOKEN, FORWARD_TO: '+15550002222', ASSEMBLYAI_API_KEY: API_KEY, WEBHOOK_URL: receiver.url, WEBHOOK_SECRET, DATABASE_URL: url, LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  old.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => old.on('exit', resolve))
  assert.equal(code, 1)
  assert.equal(stderr.trim().split('\n').length, 1, stderr)
  assert.match(stderr, new RegExp(`schema version 99 is newer than this build's ${MIGRATIONS.length}`))
})

test('replica B delivers every event of the calls that ended on replica A when A is scaled down', async (t) => {
  const url = await newDatabase()
  const a = await startReplica(t, 'a-down', url)
  const b = await startReplica(t, 'b-down', url)
  await Promise.all([waitReady(a), waitReady(b)])
  receiverUp = false
  t.after(() => { receiverUp = true })
  const callSids = await playCalls(a, 2, 20)
  a.process.kill('SIGTERM')
  assert.deepEqual(await a.exited, { code: 0, signal: null }, a.output())
  assert.ok(!ended(callSids), 'nothing could be delivered before A went away')

  receiverUp = true
  await waitFor(() => ended(callSids), 30_000, 'B delivers A\'s events')
  assertComplete(callSids)
  assert.equal(await scrape(b, 'medstream_events_lost_total{reason="store_failed"}'), 0)
  b.process.kill('SIGTERM')
  assert.equal((await b.exited).code, 0)
})

test('replica B takes over the streams of replica A within 30 s when A is killed in the middle of delivery', async (t) => {
  const url = await newDatabase()
  const a = await startReplica(t, 'a-kill', url)
  await waitReady(a)
  receiverUp = false
  t.after(() => { receiverUp = true; receiverDelayMs = 0 })
  const callSids = await playCalls(a, 2, 20)
  const b = await startReplica(t, 'b-kill', url)
  await waitReady(b)

  // Slow answers keep attempts in flight, so the kill finds A holding streams.
  receiverDelayMs = 300
  receiverUp = true
  const before = receiver.events.length
  await waitFor(() => receiver.events.length >= before + 3, 20_000, 'delivery under way')
  a.process.kill('SIGKILL')
  const killedAt = Date.now()
  assert.equal((await a.exited).signal, 'SIGKILL')

  await waitFor(() => ended(callSids), 30_000, 'B delivers the rest')
  assert.ok(Date.now() - killedAt < 30_000)
  assertComplete(callSids)
  b.process.kill('SIGTERM')
  assert.equal((await b.exited).code, 0)
})

test('a live call completes and every event arrives in order when PostgreSQL is down for 20 s', async (t) => {
  const url = await newDatabase()
  // A whole sample call buffers ~15 KB (11.5 KB of bodies plus 384 B each): with a 16 KiB bound the
  // events of a 20 s outage pass the half-way mark (not ready) and still fit (nothing lost).
  const harness = await startHarness({ fake: { script }, env: { DATABASE_URL: url, OUTBOX_BUFFER_BYTES: '16384' } })
  t.after(() => harness.close())
  await waitFor(async () => (await fetch(`${harness.serviceUrl}/readyz`)).status === 200, 10_000, 'ready')
  const call = await harness.simulator.placeCall()
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 1.5 })
  await harness.receiver!.waitFor((events) => events.some((event) => event.callSid === call.callSid), 10_000)

  await cluster.stopServer()
  const down = Date.now()
  const readiness = new Set<number>()
  let health = 200
  let refused: number | null = null
  while (Date.now() - down < 20_000) {
    const ready = await fetch(`${harness.serviceUrl}/readyz`)
    readiness.add(ready.status)
    const live = (await fetch(`${harness.serviceUrl}/healthz`)).status
    if (live !== 200) health = live
    if (ready.status === 503 && refused === null) {
      // Above the high-water mark a new call goes elsewhere: its upgrade is refused and counted.
      const late = harness.simulator.openStream(await harness.simulator.placeCall(), { inbound: sample.inbound.subarray(0, 8000), speed: 4 })
      await late.opened.then(() => { refused = 101 }, (error: { statusCode?: number }) => { refused = error.statusCode ?? -1 })
    }
    await sleep(250)
  }
  await cluster.startServer()

  assert.equal((await stream.done).code, 1000, 'the call went on to its end')
  await harness.receiver!.waitFor((events) => events.some((event) => event.callSid === call.callSid && event.type === 'call.ended'), 30_000)
  assertComplete([call.callSid], harness.receiver!)
  assert.equal(health, 200, '/healthz stayed 200')
  assert.ok(readiness.has(503), 'not ready while the buffer was past half its bound')
  assert.equal(refused, 503)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'outbox_unavailable' }), 1)
  await waitFor(async () => (await fetch(`${harness.serviceUrl}/readyz`)).status === 200, 10_000, 'ready again')
  for (const reason of ['store_failed', 'buffer_full', 'shutdown']) {
    assert.equal(await metricValue(harness.app, 'medstream_events_lost_total', { reason }), 0, `nothing lost (${reason})`)
  }
})

test('a full replica still answers the voice webhook with TwiML and refuses the upgrade with 503 when MAX_CALLS is reached', async (t) => {
  const url = await newDatabase()
  const harness = await startHarness({ fake: { script }, env: { DATABASE_URL: url, MAX_CALLS: '1' } })
  t.after(() => harness.close())
  await waitFor(async () => (await fetch(`${harness.serviceUrl}/readyz`)).status === 200, 10_000, 'ready')
  const first = harness.simulator.openStream(await harness.simulator.placeCall(), { inbound: sample.inbound, outbound: sample.outbound, speed: 1 })
  await first.opened
  assert.equal((await fetch(`${harness.serviceUrl}/readyz`)).status, 503, 'full: not ready')

  const second = await harness.simulator.placeCall()
  assert.equal(second.status, 200)
  assert.ok(second.twiml?.stream !== undefined && second.twiml.stream !== null, 'the caller still gets TwiML')
  const refused = harness.simulator.openStream(second, { inbound: sample.inbound.subarray(0, 8000), speed: 4 })
  await assert.rejects(refused.opened, (error: { statusCode?: number }) => error.statusCode === 503)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'capacity' }), 1)
  first.close()
  await first.done
})

test('a replica started while PostgreSQL is down stays up but not ready, and becomes ready once it connects', async (t) => {
  const url = await newDatabase()
  await cluster.stopServer()
  let stopped = true
  t.after(async () => { if (stopped) await cluster.startServer() })
  const harness = await startHarness({ fake: { script }, env: { DATABASE_URL: url } })
  t.after(() => harness.close())
  for (let i = 0; i < 4; i++) {
    assert.equal((await fetch(`${harness.serviceUrl}/healthz`)).status, 200)
    const ready = await fetch(`${harness.serviceUrl}/readyz`)
    assert.equal(ready.status, 503)
    assert.deepEqual(await ready.json(), { status: 'outbox_unavailable', calls: 0 })
    await sleep(250)
  }
  await cluster.startServer()
  stopped = false
  await waitFor(async () => (await fetch(`${harness.serviceUrl}/readyz`)).status === 200, 15_000, 'ready once connected')
  assert.ok(harness.logs.some((line) => line.msg === 'postgres outbox unreachable; not ready until it connects'))
})

test('events still buffered at the drain deadline are counted lost with reason shutdown and logged with their ids', async (t) => {
  const url = await newDatabase()
  const harness = await startHarness({ fake: { script }, env: { DATABASE_URL: url } })
  t.after(() => harness.close())
  await waitFor(async () => (await fetch(`${harness.serviceUrl}/readyz`)).status === 200, 10_000, 'ready')
  await cluster.stopServer()
  let stopped = true
  t.after(async () => { if (stopped) await cluster.startServer() })
  const call = await harness.simulator.placeCall()
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 20 })
  assert.equal((await stream.done).code, 1000)
  await waitFor(async () => await metricValue(harness.app, 'medstream_calls_total', { outcome: 'completed' }) === 1, 10_000, 'call ended')

  // What server.ts does at the drain deadline: the sink keeps trying until then, then gives up.
  await harness.app.events.close(Date.now() + 500)
  assert.equal(await metricValue(harness.app, 'medstream_events_lost_total', { reason: 'shutdown' }), EVENTS_PER_CALL)
  assert.equal(await metricValue(harness.app, 'medstream_events_lost_total', { reason: 'buffer_full' }), 0)
  const lost = harness.logs.filter((line) => line.reason === 'shutdown' && line.callSid === call.callSid)
  assert.deepEqual(lost.map((line) => line.sequence), Array.from({ length: EVENTS_PER_CALL }, (_, i) => i + 1))
  for (const turn of sample.turns) assert.ok(!harness.logText().includes(turn.text), 'never a transcript in the log')
  await cluster.startServer()
  stopped = false
})
