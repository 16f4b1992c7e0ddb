import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { startFakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import type { FakeUtterance } from '../fakes/assemblyai-server.ts'
import { TwilioSimulator } from '../fakes/twilio-simulator.ts'
import { API_KEY, AUTH_TOKEN, loadSampleCall, WEBHOOK_SECRET } from '../helpers/harness.ts'
import { freePort, waitForOk } from '../helpers/net.ts'
import { startWebhookReceiver } from '../helpers/webhook-receiver.ts'
import type { ReceiverOptions } from '../helpers/webhook-receiver.ts'

const ROOT = new URL('../../', import.meta.url).pathname
const sample = loadSampleCall()
const script: FakeUtterance[] = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))

interface Service {
  process: ChildProcess
  url: string
  metricsUrl: string
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  output: () => string
}

/** The real process, as `npm start` runs it, on loopback ports. */
async function startService (env: Record<string, string>): Promise<Service> {
  const port = env.PORT ?? String(await freePort())
  const metricsPort = await freePort()
  const child = spawn(process.execPath, ['src/server.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: port, METRICS_PORT: String(metricsPort), HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  const url = `http://127.0.0.1:${port}`
  try {
    await waitForOk(`${url}/healthz`, 15000, () => child.exitCode === null)
  } catch (error) {
    throw new Error(`service did not start:\n${output}`, { cause: error })
  }
  return { process: child, url, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, exited, output: () => output }
}

async function setUp (receiverOptions: Omit<ReceiverOptions, 'secrets'> = {}) {
  const fake = await startFakeAssemblyAi({ apiKeys: [API_KEY], script })
  const receiver = await startWebhookReceiver({ secrets: [WEBHOOK_SECRET], ...receiverOptions })
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-process-'))
  const env = (publicPort: string) => ({
    PUBLIC_URL: `http://127.0.0.1:${publicPort}`,
    TWILIO_AUTH_TOKEN: AUTH_TOKEN,
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: API_KEY,
    ASSEMBLYAI_URL: fake.url,
    WEBHOOK_URL: receiver.url,
    WEBHOOK_SECRET,
    DATA_DIR: dataDir
  })
  return {
    fake,
    receiver,
    dataDir,
    env,
    async close () {
      await receiver.close()
      await fake.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

test('SIGTERM turns readiness off, refuses new streams, lets the call finish and deliver call.ended, and exits 0', async (t) => {
  const setup = await setUp()
  t.after(() => setup.close())
  // The public URL must name the port the service listens on; pick it first.
  const port = await freePort()
  const service = await startService({ ...setup.env(String(port)), PORT: String(port), DRAIN_TIMEOUT_MS: '30000' })
  t.after(() => { service.process.kill('SIGKILL') })
  const simulator = new TwilioSimulator({ serviceUrl: service.url, publicUrl: service.url, authToken: AUTH_TOKEN })
  const call = await simulator.placeCall()
  // The first 10.5 s of the sample hold two full turns; played at 4× it lasts ~3 s.
  const audio = { inbound: sample.inbound.subarray(0, 84000), outbound: sample.outbound.subarray(0, 84000) }
  const stream = simulator.openStream(call, { ...audio, speed: 4 })
  await stream.opened
  await new Promise((resolve) => setTimeout(resolve, 500))

  service.process.kill('SIGTERM')
  let ready = 200
  for (let attempt = 0; attempt < 50 && ready === 200; attempt++) {
    ready = (await fetch(`${service.url}/readyz`)).status
    if (ready === 200) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.equal(ready, 503, 'readiness is off while draining')
  const late = simulator.openStream(await simulator.placeCall(), { ...audio, speed: 4 })
  await assert.rejects(late.opened, (error: { statusCode?: number }) => error.statusCode === 503)

  assert.equal((await stream.done).code, 1000, 'the live call finished normally')
  const exit = await service.exited
  assert.deepEqual(exit, { code: 0, signal: null }, service.output())
  const events = setup.receiver.events.filter((event) => event.callSid === call.callSid)
  assert.equal(events.at(-1)?.type, 'call.ended')
  assert.equal(events.at(-1)?.data.reason, 'completed')
  assert.equal(events.filter((event) => event.type === 'transcript.turn').length, 2)
})

test('at the drain deadline the remaining calls end with reason shutdown and close 1001', async (t) => {
  const setup = await setUp()
  t.after(() => setup.close())
  const port = await freePort()
  const service = await startService({ ...setup.env(String(port)), PORT: String(port), DRAIN_TIMEOUT_MS: '1500' })
  t.after(() => { service.process.kill('SIGKILL') })
  const simulator = new TwilioSimulator({ serviceUrl: service.url, publicUrl: service.url, authToken: AUTH_TOKEN })
  const call = await simulator.placeCall()
  const stream = simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 1 })
  await stream.opened
  await new Promise((resolve) => setTimeout(resolve, 6000))
  service.process.kill('SIGTERM')
  assert.equal((await stream.done).code, 1001)
  assert.deepEqual(await service.exited, { code: 0, signal: null }, service.output())
  const ended = setup.receiver.events.find((event) => event.callSid === call.callSid && event.type === 'call.ended')
  assert.equal(ended?.data.reason, 'shutdown')
  assert.ok((ended?.data.turn_count as number) >= 1, 'turns spoken before the deadline were kept')
})

test('events pending when the process is SIGKILLed are delivered after a restart on the same DATA_DIR', async (t) => {
  let healthy = false
  const setup = await setUp({ respond: () => (healthy ? 200 : 503) })
  t.after(() => setup.close())
  const port = await freePort()
  const env = { ...setup.env(String(port)), PORT: String(port) }
  const first = await startService(env)
  t.after(() => { first.process.kill('SIGKILL') })
  const simulator = new TwilioSimulator({ serviceUrl: first.url, publicUrl: first.url, authToken: AUTH_TOKEN })
  const call = await simulator.placeCall()
  const stream = simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 20 })
  await stream.opened
  await stream.done
  // Wait until the call has ended (its call.ended is in the outbox), with the receiver still failing.
  for (let attempt = 0; attempt < 200; attempt++) {
    const metrics = await (await fetch(first.metricsUrl)).text()
    if (/medstream_calls_total\{outcome="completed"\} 1/.test(metrics)) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  first.process.kill('SIGKILL')
  assert.equal((await first.exited).signal, 'SIGKILL')
  assert.equal(setup.receiver.events.length, 0, 'nothing was accepted before the kill')

  healthy = true
  const second = await startService(env)
  t.after(() => { second.process.kill('SIGKILL') })
  await setup.receiver.waitFor((events) => events.some((event) => event.type === 'call.ended'), 30000)
  const events = setup.receiver.events
  assert.equal(events[0]?.type, 'call.started')
  assert.deepEqual(events.map((event) => event.sequence), events.map((_, index) => index + 1), 'every event, once, in order')
  assert.equal(events.filter((event) => event.type === 'transcript.turn').length, sample.turns.length)
  assert.deepEqual(setup.receiver.badSignatures, [])
  second.process.kill('SIGTERM')
  assert.equal((await second.exited).code, 0)
})

test('the process refuses to start with one line naming a missing variable', async () => {
  const child = spawn(process.execPath, ['src/server.ts'], { cwd: ROOT, env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const [code] = await once(child, 'exit') as [number]
  assert.equal(code, 1)
  assert.equal(stderr.trim().split('\n').length, 1)
  assert.match(stderr, /PUBLIC_URL: is required/)
})
