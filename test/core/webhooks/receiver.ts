import { after } from 'node:test'
import { mkdtempSync, rmSync } from 'node:fs'
import type { Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { createWebhookReceiver, listenWebhookReceiver } from '../../../scripts/webhook-receiver.ts'
import type { ReceivedAttempt, Reply } from '../../../scripts/webhook-receiver.ts'
import { serializeEvent } from '../../../src/core/webhooks/events.ts'
import type { OutgoingEvent, TranscriptTurnData } from '../../../src/core/webhooks/events.ts'
import { Outbox } from '../../../src/core/webhooks/outbox.ts'
import type { OutboxStore } from '../../../src/core/webhooks/outbox-store.ts'
import { PostgresOutbox } from '../../../src/core/webhooks/postgres-outbox.ts'
import { WebhookSink } from '../../../src/core/webhooks/webhook-sink.ts'
import type { WebhookSinkOptions } from '../../../src/core/webhooks/webhook-sink.ts'
import { createMetrics } from '../../../src/core/metrics.ts'
import type { Metrics } from '../../../src/core/metrics.ts'
import { startPostgres } from '../../helpers/postgres.ts'
import type { PostgresCluster } from '../../helpers/postgres.ts'

export type { ReceivedAttempt, Reply } from '../../../scripts/webhook-receiver.ts'

/** A test secret pair: `whsec_` + base64 of 24 fixed bytes. */
export const SECRET_OLD = 'whsec_' + Buffer.alloc(24, 1).toString('base64')
export const SECRET_NEW = 'whsec_' + Buffer.alloc(24, 2).toString('base64')

export interface Delivered {
  id: string
  callSid: string
  streamSid: string
  sequence: number
  type: string
}

/**
 * The receiver of scripts/webhook-receiver.ts on 127.0.0.1, scripted per attempt through `reply`,
 * with every attempt recorded. Accepted events go through its de-duplication by `webhook-id`, as the
 * README tells receivers to do.
 */
export class Receiver {
  readonly attempts: ReceivedAttempt[] = []
  /** First accepted delivery of each webhook-id, in order of acceptance. */
  readonly delivered: Delivered[] = []
  /** Accepted deliveries whose webhook-id had already been accepted. */
  duplicates = 0
  concurrent = 0
  maxConcurrent = 0
  reply: (attempt: ReceivedAttempt) => Reply = () => ({ status: 200 })
  url = ''
  readonly #server: Server
  readonly #waiters: Array<() => void> = []

  /** `verify: false` only where a test moves the sender's clock a day ahead (signatures would be "too new"). */
  constructor (secrets: string[] = [SECRET_OLD], options: { verify?: boolean } = {}) {
    this.#server = createWebhookReceiver({
      secrets,
      verify: options.verify ?? true,
      reply: (attempt) => this.reply(attempt),
      onAttempt: (attempt) => { this.attempts.push(attempt); this.#wake() },
      onEvent: (event) => {
        this.delivered.push({ id: event.id, callSid: event.callSid, streamSid: event.streamSid, sequence: event.sequence, type: event.type })
        this.#wake()
      },
      onDuplicate: () => { this.duplicates++ }
    })
    this.#server.on('request', (_req, res) => {
      this.concurrent++
      this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent)
      res.on('close', () => { this.concurrent--; this.#wake() })
    })
  }

  async listen (): Promise<this> {
    const { port } = await listenWebhookReceiver(this.#server)
    this.url = `http://127.0.0.1:${port}/hooks?tenant=t1`
    return this
  }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  attemptsFor (id: string): ReceivedAttempt[] {
    return this.attempts.filter((attempt) => attempt.id === id)
  }

  /** Accepted events of one call, in order of acceptance. */
  sequencesOf (callSid: string): number[] {
    return this.delivered.filter((event) => event.callSid === callSid).map((event) => event.sequence)
  }

  /** Resolves once `predicate` holds; rejects after `timeoutMs`. */
  async waitFor (predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
    const deadline = performance.now() + timeoutMs
    while (!(await predicate())) {
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`receiver condition not met within ${timeoutMs} ms (${this.attempts.length} attempts, ${this.delivered.length} delivered)`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100))
        this.#waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  #wake (): void {
    for (const wake of this.#waiters.splice(0)) wake()
  }
}

/** A Twilio-shaped CallSid / StreamSid for test call `n`. */
export function callSid (n: number): string {
  return 'CA' + n.toString(16).padStart(32, '0')
}

export function streamSid (n: number): string {
  return 'MZ' + n.toString(16).padStart(32, '0')
}

/** Event `sequence` of test call `n`, serialized once as the pipeline does. */
export function testEvent (n: number, sequence: number, type: OutgoingEvent['type'] = 'transcript.turn'): OutgoingEvent {
  return serializeEvent(type, { call_sid: callSid(n), stream_sid: streamSid(n), sequence, text: `I take metoprolol, ${sequence * 25} milligrams twice a day.` } as TranscriptTurnData)
}

export type Backend = 'sqlite' | 'postgres'
/** The delivery contract holds on both outbox backends: the tests run once per backend. */
export const BACKENDS: readonly Backend[] = ['sqlite', 'postgres']

/** Where an outbox lives: a DATA_DIR (SQLite) or a database of the shared test cluster. */
export interface Location {
  backend: Backend
  dataDir: string
  databaseUrl: string | null
}

let cluster: Promise<PostgresCluster> | null = null
let databases = 0
// Registered at the file's top level, so it runs once the whole file is done.
after(async () => { if (cluster !== null) await (await cluster).destroy() })

/** One throwaway PostgreSQL cluster per test file, started on first use. */
export function sharedCluster (): Promise<PostgresCluster> {
  cluster ??= startPostgres()
  return cluster
}

/** A fresh, empty outbox location of `backend`, removed after the test. */
export async function newLocation (t: { after: (fn: () => Promise<void> | void) => void }, backend: Backend): Promise<Location> {
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-webhooks-'))
  t.after(() => rmSync(dataDir, { recursive: true, force: true }))
  if (backend === 'sqlite') return { backend, dataDir, databaseUrl: null }
  const pg = await sharedCluster()
  const databaseUrl = await pg.createDatabase(`outbox_${process.pid}_${++databases}`)
  return { backend, dataDir, databaseUrl }
}

/** A second handle on the same outbox, as the operator command opens it (schema migrated). */
export async function openStore (t: { after: (fn: () => Promise<void> | void) => void }, location: Location): Promise<OutboxStore> {
  if (location.databaseUrl === null) {
    const outbox = new Outbox(Outbox.pathIn(location.dataDir))
    t.after(() => outbox.close())
    return outbox
  }
  const outbox = new PostgresOutbox({ url: location.databaseUrl, logger: pino({ level: 'silent' }) })
  t.after(() => outbox.close())
  await outbox.migrate()
  return outbox
}

export interface TestSink {
  sink: WebhookSink
  metrics: Metrics
  location: Location
}

/**
 * A started WebhookSink on `location` delivering to `url`, with retry waits shrunk so tests run in
 * milliseconds; closed after the test.
 */
export async function startSink (t: { after: (fn: () => Promise<void> | void) => void }, url: string, location: Location, options: Partial<WebhookSinkOptions> = {}): Promise<TestSink> {
  const metrics = createMetrics(new Registry(), 'test')
  // options.metrics, when given, replaces these (e.g. to add the optional paused gauge).
  const sink = new WebhookSink({
    url,
    secrets: [SECRET_OLD],
    metrics,
    logger: pino({ level: process.env.TEST_LOG ?? 'silent' }),
    timeoutMs: 2000,
    pollMs: 100,
    databaseUrl: location.databaseUrl,
    ...options,
    postgres: { leaseMs: 3000, ...options.postgres },
    retry: { initialMs: 20, maxDelayMs: 100, ...options.retry },
    dataDir: location.dataDir
  })
  t.after(async () => { await sink.close(Date.now()) })
  await sink.start()
  return { sink, metrics, location }
}

export async function counterValue (metrics: Metrics, result: 'success' | 'retry' | 'dead'): Promise<number> {
  const { values } = await metrics.webhookDeliveries.get()
  return values.find((value) => value.labels.result === result)?.value ?? 0
}

export async function lostValue (metrics: Metrics, reason: 'store_failed' | 'buffer_full' | 'shutdown'): Promise<number> {
  const { values } = await metrics.eventsLost.get()
  return values.find((value) => value.labels.reason === reason)?.value ?? 0
}
