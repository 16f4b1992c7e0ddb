import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.ts'
import { loadConfig } from '../../src/config.ts'
import type { Config } from '../../src/config.ts'
import type { ReconnectPolicy } from '../../src/core/call/upstream-link.ts'
import { createLogger } from '../../src/logger.ts'
import { startFakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import type { FakeAssemblyAi, FakeAssemblyAiOptions } from '../fakes/assemblyai-server.ts'
import { TwilioSimulator } from '../fakes/twilio-simulator.ts'
import { startWebhookReceiver } from './webhook-receiver.ts'
import type { ReceiverOptions, WebhookReceiver } from './webhook-receiver.ts'

export const AUTH_TOKEN = 'test-auth-token-5f1c9a7e2b'
export const API_KEY = 'aai-test-key-123'
export const WEBHOOK_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
/** Twilio reaches the service at this public origin; the simulator signs over it. */
export const PUBLIC_URL = 'https://medstream.test'

const ROOT = new URL('../../', import.meta.url).pathname

/** The bundled two-party sample call (see scripts/make-sample.sh). */
export function loadSampleCall (): { inbound: Buffer, outbound: Buffer, turns: Array<{ track: 'inbound' | 'outbound', text: string, startMs: number, endMs: number }> } {
  const manifest = JSON.parse(readFileSync(join(ROOT, 'samples/call.json'), 'utf8')) as { turns: Array<{ track: 'inbound' | 'outbound', text: string, startMs: number, endMs: number }> }
  return {
    inbound: readFileSync(join(ROOT, 'samples/call-inbound.ulaw')),
    outbound: readFileSync(join(ROOT, 'samples/call-outbound.ulaw')),
    turns: manifest.turns
  }
}

export interface HarnessOptions {
  /** Deliver to a real local receiver (default) or leave WEBHOOK_URL unset (file sink). */
  webhook?: boolean
  receiver?: Omit<ReceiverOptions, 'secrets'>
  fake?: Omit<FakeAssemblyAiOptions, 'apiKeys'> & { apiKeys?: string[] }
  env?: Record<string, string>
  startTimeoutMs?: number
  reconnect?: ReconnectPolicy
  /** The media route's ping interval, ms. */
  heartbeatMs?: number
  /** prom-client's process_* and nodejs_* metrics (default off: most tests build many apps). */
  processMetrics?: boolean
  /** Live view timings: SSE heartbeat, partial interval, grace (ms). */
  live?: { heartbeatMs?: number, partialIntervalMs?: number, graceMs?: number, databaseUrl?: string }
}

export interface Harness {
  app: FastifyInstance
  config: Config
  serviceUrl: string
  fake: FakeAssemblyAi
  receiver: WebhookReceiver | null
  simulator: TwilioSimulator
  dataDir: string
  /** Every log line the service wrote, as parsed JSON. */
  logs: Array<Record<string, unknown>>
  logText: () => string
  close: () => Promise<void>
}

/**
 * The real service (the Fastify app on a loopback port) between the two protocol fakes and a real
 * webhook receiver: what the end-to-end tests drive.
 */
export async function startHarness (options: HarnessOptions = {}): Promise<Harness> {
  const fake = await startFakeAssemblyAi({ apiKeys: [API_KEY], ...options.fake })
  const receiver = options.webhook === false ? null : await startWebhookReceiver({ secrets: [WEBHOOK_SECRET], ...options.receiver })
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-test-'))
  const config = loadConfig({
    PUBLIC_URL,
    PORT: '0',
    HOST: '127.0.0.1',
    METRICS_PORT: '0',
    TWILIO_AUTH_TOKEN: AUTH_TOKEN,
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: API_KEY,
    ASSEMBLYAI_URL: fake.url,
    ASSEMBLYAI_KEYTERMS: 'metoprolol,lisinopril',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'debug',
    ...(receiver === null ? {} : { WEBHOOK_URL: receiver.url, WEBHOOK_SECRET }),
    ...options.env
  })
  const lines: string[] = []
  const destination = new Writable({
    write (chunk: Buffer, _encoding, callback) { lines.push(chunk.toString('utf8')); callback() }
  })
  const logger = createLogger({ level: config.logLevel, logPii: config.logPii }, destination)
  const app = await buildApp({
    config,
    logger,
    version: '0.0.0-test',
    processMetrics: options.processMetrics ?? false,
    terminateTimeoutMs: 5000,
    ...(options.startTimeoutMs === undefined ? {} : { startTimeoutMs: options.startTimeoutMs }),
    ...(options.reconnect === undefined ? {} : { reconnect: options.reconnect }),
    ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
    ...(options.live === undefined ? {} : { live: options.live })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const serviceUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const simulator = new TwilioSimulator({ serviceUrl, publicUrl: PUBLIC_URL, authToken: AUTH_TOKEN })
  const logText = (): string => lines.join('')
  return {
    app,
    config,
    serviceUrl,
    fake,
    receiver,
    simulator,
    dataDir,
    get logs () { return lines.flatMap((line) => line.split('\n')).filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>) },
    logText,
    async close () {
      await app.close()
      await fake.close()
      await receiver?.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

/** Reads one metric sample from the app's registry, e.g. value('medstream_turns_total', { role: 'agent' }). */
export async function metricValue (app: FastifyInstance, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = app.metricsRegistry.getSingleMetric(name)
  if (metric === undefined) throw new Error(`no metric ${name}`)
  const { values } = await metric.get()
  const match = values.find((sample) => {
    const sampleName = (sample as { metricName?: string }).metricName
    return (sampleName === undefined || sampleName === name) && Object.entries(labels).every(([key, value]) => String(sample.labels[key]) === value)
  })
  return match?.value ?? 0
}
