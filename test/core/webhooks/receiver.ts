import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { Webhook } from 'standardwebhooks'
import { serializeEvent } from '../../../src/core/webhooks/events.ts'
import type { OutgoingEvent, TranscriptTurnData } from '../../../src/core/webhooks/events.ts'
import { WebhookSink } from '../../../src/core/webhooks/webhook-sink.ts'
import type { WebhookSinkOptions } from '../../../src/core/webhooks/webhook-sink.ts'
import { createMetrics } from '../../../src/core/metrics.ts'
import type { Metrics } from '../../../src/core/metrics.ts'

/** A test secret pair: `whsec_` + base64 of 24 fixed bytes. */
export const SECRET_OLD = 'whsec_' + Buffer.alloc(24, 1).toString('base64')
export const SECRET_NEW = 'whsec_' + Buffer.alloc(24, 2).toString('base64')

export interface ReceivedAttempt {
  path: string
  id: string
  timestamp: string
  signature: string
  body: string
  userAgent: string
  contentType: string
  /** True when the signature verified with every secret the receiver knows. */
  verified: boolean
  /** performance.now() when the request ended. */
  at: number
  status: number | 'hang'
}

export interface Reply {
  status: number | 'hang'
  headers?: Record<string, string>
  /** Answer after this long. */
  delayMs?: number
}

export interface Delivered {
  id: string
  callSid: string
  streamSid: string
  sequence: number
  type: string
}

/**
 * A real webhook receiver on 127.0.0.1: verifies every attempt with `standardwebhooks` against the
 * secrets it knows, then answers what `reply` says. Accepted events go through a de-duplication layer
 * keyed by `webhook-id`, as the README tells receivers to do.
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
  readonly #verifiers: Webhook[]
  readonly #seen = new Set<string>()
  readonly #server = createServer((req, res) => { this.#handle(req, res) })
  readonly #waiters: Array<() => void> = []

  readonly #verify: boolean

  /** `verify: false` only where a test moves the sender's clock a day ahead (signatures would be "too new"). */
  constructor (secrets: string[] = [SECRET_OLD], options: { verify?: boolean } = {}) {
    this.#verifiers = secrets.map((secret) => new Webhook(secret))
    this.#verify = options.verify ?? true
  }

  async listen (): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hooks?tenant=t1`
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
  async waitFor (predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = performance.now() + timeoutMs
    while (!predicate()) {
      const left = deadline - performance.now()
      if (left <= 0) throw new Error(`receiver condition not met within ${timeoutMs} ms (${this.attempts.length} attempts, ${this.delivered.length} delivered)`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200))
        this.#waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  #handle (req: IncomingMessage, res: ServerResponse): void {
    this.concurrent++
    this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent)
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    res.on('close', () => { this.concurrent-- })
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const headers = {
        'webhook-id': String(req.headers['webhook-id'] ?? ''),
        'webhook-timestamp': String(req.headers['webhook-timestamp'] ?? ''),
        'webhook-signature': String(req.headers['webhook-signature'] ?? '')
      }
      let verified = this.#verifiers.length > 0
      for (const verifier of this.#verify ? this.#verifiers : []) {
        try {
          verifier.verify(body, headers)
        } catch {
          verified = false
        }
      }
      const attempt: ReceivedAttempt = {
        path: req.url ?? '',
        id: headers['webhook-id'],
        timestamp: headers['webhook-timestamp'],
        signature: headers['webhook-signature'],
        body,
        userAgent: String(req.headers['user-agent'] ?? ''),
        contentType: String(req.headers['content-type'] ?? ''),
        verified,
        at: performance.now(),
        status: 500
      }
      const reply: Reply = verified ? this.reply(attempt) : { status: 401 }
      attempt.status = reply.status
      this.attempts.push(attempt)
      this.#wake()
      const status = reply.status
      if (status === 'hang') return
      const answer = (): void => {
        if (res.destroyed) return
        if (status >= 200 && status < 300) this.#accept(attempt)
        res.writeHead(status, reply.headers).end('{"ok":true}')
        this.#wake()
      }
      if (reply.delayMs === undefined) answer()
      else setTimeout(answer, reply.delayMs)
    })
  }

  #wake (): void {
    for (const wake of this.#waiters.splice(0)) wake()
  }

  #accept (attempt: ReceivedAttempt): void {
    if (this.#seen.has(attempt.id)) {
      this.duplicates++
      return
    }
    this.#seen.add(attempt.id)
    const { type, data } = JSON.parse(attempt.body) as { type: string, data: { call_sid: string, stream_sid: string, sequence: number } }
    this.delivered.push({ id: attempt.id, callSid: data.call_sid, streamSid: data.stream_sid, sequence: data.sequence, type })
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

export interface TestSink {
  sink: WebhookSink
  metrics: Metrics
  dataDir: string
}

/**
 * A started WebhookSink in a fresh DATA_DIR (or the given one) delivering to `url`, with retry waits
 * shrunk so tests run in milliseconds; closed and removed after the test.
 */
export function startSink (t: { after: (fn: () => Promise<void> | void) => void }, url: string, options: Partial<WebhookSinkOptions> = {}): TestSink {
  const ownDir = options.dataDir === undefined
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'medstream-webhooks-'))
  const metrics = createMetrics(new Registry(), 'test')
  // options.metrics, when given, replaces these (e.g. to add the optional paused gauge).
  const sink = new WebhookSink({
    url,
    secrets: [SECRET_OLD],
    metrics,
    logger: pino({ level: 'silent' }),
    timeoutMs: 2000,
    pollMs: 100,
    ...options,
    retry: { initialMs: 20, maxDelayMs: 100, ...options.retry },
    dataDir
  })
  t.after(async () => {
    await sink.close(Date.now())
    if (ownDir) rmSync(dataDir, { recursive: true, force: true })
  })
  sink.start()
  return { sink, metrics, dataDir }
}

export async function counterValue (metrics: Metrics, result: 'success' | 'retry' | 'dead'): Promise<number> {
  const { values } = await metrics.webhookDeliveries.get()
  return values.find((value) => value.labels.result === result)?.value ?? 0
}
