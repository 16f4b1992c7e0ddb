// Stream handoff between two real replica processes (`src/server.ts`, as `npm start` runs it) sharing
// one real PostgreSQL, behind a proxy that routes upgrades to ready replicas. The call plays in real
// time (about 100 s): offset_ms comes from the replicas' wall clocks, so the call cannot run faster.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startFakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import { TwilioSimulator } from '../fakes/twilio-simulator.ts'
import { assertEveryTurnOnce, callOver, repeatCall, segmentsOf } from '../helpers/handoff.ts'
import { API_KEY, AUTH_TOKEN, loadSampleCall, WEBHOOK_SECRET } from '../helpers/harness.ts'
import { freePort, waitForOk } from '../helpers/net.ts'
import { startPostgres } from '../helpers/postgres.ts'
import { startReadyProxy } from '../helpers/ready-proxy.ts'
import { startWebhookReceiver } from '../helpers/webhook-receiver.ts'

const ROOT = new URL('../../', import.meta.url).pathname
const API_KEY_SID = 'SK' + 'f'.repeat(32)
const API_KEY_SECRET = 'handoff-process-api-key-secret'
const FIRST_TIMESTAMP_MS = 150

interface Replica {
  process: ChildProcess
  url: string
  metricsUrl: string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  output: () => string
}

async function startReplica (port: number, env: Record<string, string>): Promise<Replica> {
  const metricsPort = await freePort()
  const child = spawn(process.execPath, ['src/server.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: String(port), METRICS_PORT: String(metricsPort), HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const url = `http://127.0.0.1:${port}`
  try {
    await waitForOk(`${url}/readyz`, 20_000, () => child.exitCode === null)
  } catch (error) {
    throw new Error(`replica did not start:\n${output}`, { cause: error })
  }
  return { process: child, url, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, exited, output: () => output }
}

async function metric (replica: Replica, line: string): Promise<boolean> {
  return (await (await fetch(replica.metricsUrl)).text()).includes(line)
}

test('a SIGTERMed replica hands a 100 s two-party call to the other replica: A exits within 30 s, B ends it at stop, every turn once with its role', { timeout: 200_000 }, async (t) => {
  const cluster = await startPostgres()
  t.after(() => cluster.destroy())
  const fake = await startFakeAssemblyAi({ apiKeys: [API_KEY] })
  t.after(() => fake.close())
  const receiver = await startWebhookReceiver({ secrets: [WEBHOOK_SECRET] })
  t.after(() => receiver.close())
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-handoff-process-'))
  t.after(() => rmSync(dataDir, { recursive: true, force: true }))

  const [aPort, bPort] = [await freePort(), await freePort()]
  const proxy = await startReadyProxy([`http://127.0.0.1:${aPort}`, `http://127.0.0.1:${bPort}`])
  t.after(() => proxy.close())
  const publicUrl = proxy.url
  const simulator = new TwilioSimulator({ serviceUrl: publicUrl, publicUrl, authToken: AUTH_TOKEN })
  simulator.addApiKey(API_KEY_SID, API_KEY_SECRET)
  const api = await simulator.listenApi()
  t.after(() => simulator.close())
  const env = (name: string): Record<string, string> => ({
    PUBLIC_URL: publicUrl,
    TWILIO_AUTH_TOKEN: AUTH_TOKEN,
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: API_KEY,
    ASSEMBLYAI_URL: fake.url,
    WEBHOOK_URL: receiver.url,
    WEBHOOK_SECRET,
    DATA_DIR: join(dataDir, name),
    DATABASE_URL: cluster.url,
    TWILIO_API_URL: api.url,
    TWILIO_API_KEY_SID: API_KEY_SID,
    TWILIO_API_KEY_SECRET: API_KEY_SECRET,
    // Far longer than the rest of the call: only a handoff lets A leave early.
    DRAIN_TIMEOUT_MS: '600000'
  })

  // A alone takes the call; B starts once the call is on A.
  const a = await startReplica(aPort, env('a'))
  t.after(() => { a.process.kill('SIGKILL') })
  await waitForOk(`${publicUrl}/readyz`, 5000)
  const call = repeatCall(loadSampleCall(), 3)
  assert.ok(call.inbound.length / 8 >= 90_000 && call.turns.length >= 20)
  const live = simulator.startCall(await simulator.placeCall(), { inbound: call.inbound, outbound: call.outbound })
  const b = await startReplica(bPort, env('b'))
  t.after(() => { b.process.kill('SIGKILL') })
  assert.equal(proxy.upgrades.get(a.url), 1)
  // The proxy polls readiness every 100 ms: let it see B.
  await new Promise((resolve) => setTimeout(resolve, 300))

  // Mid-call, a turn or so in the middle of the second repetition.
  await new Promise((resolve) => setTimeout(resolve, 45_000 - live.nowMs))
  const signalledAt = performance.now()
  proxy.terminating(a.url)
  a.process.kill('SIGTERM')
  const exit = await a.exited
  const exitAfterMs = performance.now() - signalledAt
  assert.deepEqual(exit, { code: 0, signal: null }, a.output())
  assert.ok(exitAfterMs < 30_000, `A exited ${Math.round(exitAfterMs)} ms after SIGTERM\n${a.output().split('\n').filter((line) => line.includes('handoff') || line.includes('"level":50') || line.includes('"level":40')).join('\n')}\nB:\n${b.output().split('\n').filter((line) => line.includes('handoff') || line.includes('"level":50') || line.includes('"level":40')).join('\n')}`)
  assert.ok(live.nowMs < call.inbound.length / 8, 'A left while the call was still going on')

  await live.ended
  await receiver.waitFor((events) => callOver(events, live.callSid), 30_000)
  const segments = segmentsOf(receiver.events, live.callSid)
  assert.equal(segments.length, 2, `${a.output()}\n${b.output()}`)
  const [first, second] = segments as [typeof segments[0], typeof segments[0]]
  assert.equal(first.ended.reason, 'handed_off')
  assert.equal(first.ended.next_stream_sid, second.streamSid)
  assert.deepEqual([second.started.segment, second.started.previous_stream_sid], [2, first.streamSid])
  assert.equal(second.ended.reason, 'completed', 'B ended the call normally at stop')
  const forked = live.streams.find((stream) => stream.sid === second.streamSid)
  assert.ok(forked?.zeroOnTimelineMs != null)
  const offsetError = (second.started.offset_ms as number) - forked.zeroOnTimelineMs
  assert.ok(Math.abs(offsetError) <= 300, `offset_ms ${second.started.offset_ms as number} vs stream start ${forked.zeroOnTimelineMs}`)
  t.diagnostic(`A exited after ${Math.round(exitAfterMs)} ms; offset error ${offsetError} ms; turns A ${first.turns.length}, B ${second.turns.length}`)
  assertEveryTurnOnce(segments, call.turns, FIRST_TIMESTAMP_MS)
  assert.ok(first.turns.length >= 8 && second.turns.length >= 8, 'both segments carry a good part of the call')
  assert.ok(await metric(b, 'medstream_calls_total{outcome="completed"} 1'))
  b.process.kill('SIGTERM')
  assert.equal((await b.exited).code, 0)
})
