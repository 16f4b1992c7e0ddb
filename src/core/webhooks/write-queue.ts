import type { CoreLogger } from '../log.ts'
import type { Metrics } from '../metrics.ts'
import type { OutgoingEvent } from './events.ts'
import { recordLostEvent } from './event-loss.ts'
import type { OutboxStore } from './outbox-store.ts'

export interface WriteQueueOptions {
  store: Pick<OutboxStore, 'insertMany'>
  /** `OUTBOX_BUFFER_BYTES`: events held in memory at most; past it each new event is lost and counted. */
  maxBytes: number
  metrics: Pick<Metrics, 'eventsLost' | 'outboxBufferBytes'>
  logger: CoreLogger
  /** A write with no answer for this long counts as failed: the database is unreachable, ms. Default 2000. */
  writeTimeoutMs?: number
  /** First wait after a failed write, doubling to 5 s, ms. Default 250. */
  retryInitialMs?: number
  /** Events were written: the sender may have work. */
  onWritten: () => void
}

/**
 * Per event, beyond its UTF-8 body: the id strings, the event object and its queue slots. Measured
 * at about 330 bytes in V8 (50,000 sample turns, heap after GC); counted with some margin.
 */
const EVENT_OVERHEAD_BYTES = 384
const BATCH_EVENTS = 256
const RETRY_MAX_MS = 5000
const TIMEOUT = Symbol('timeout')

/** The bytes an event holds in the buffer: its UTF-8 body plus a fixed overhead. */
export function bufferedBytes (event: OutgoingEvent): number {
  return Buffer.byteLength(event.body) + EVENT_OVERHEAD_BYTES
}

/**
 * Fleet mode's path into PostgreSQL: `push` never waits on the network. Events are written in the
 * order pushed, in batches; while the database is unreachable they wait here, up to `maxBytes`, and
 * are written in order when it returns. What cannot be kept is counted in
 * `medstream_events_lost_total` and logged with its ids: `buffer_full` past the bound, `shutdown` when
 * the drain deadline passes first.
 */
export class WriteQueue {
  readonly #store: Pick<OutboxStore, 'insertMany'>
  readonly #maxBytes: number
  readonly #metrics: Pick<Metrics, 'eventsLost' | 'outboxBufferBytes'>
  readonly #logger: CoreLogger
  readonly #writeTimeoutMs: number
  readonly #retryInitialMs: number
  readonly #onWritten: () => void
  #events: OutgoingEvent[] = []
  #sizes: number[] = []
  #head = 0
  #bytes = 0
  #started = false
  #writing = false
  #stopped = false
  #failing = false
  #retryTimer: NodeJS.Timeout | null = null
  #retryWake: (() => void) | null = null
  readonly #idleWaiters = new Set<() => void>()

  constructor (options: WriteQueueOptions) {
    if (!(Number.isInteger(options.maxBytes) && options.maxBytes > 0)) throw new RangeError(`maxBytes must be a positive whole number of bytes, got ${options.maxBytes}`)
    this.#store = options.store
    this.#maxBytes = options.maxBytes
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.#writeTimeoutMs = options.writeTimeoutMs ?? 2000
    this.#retryInitialMs = options.retryInitialMs ?? 250
    this.#onWritten = options.onWritten
  }

  /** Events waiting to be written. */
  get length (): number {
    return this.#events.length - this.#head
  }

  /** Past half the bound: the replica should take no new calls until the database catches up. */
  get aboveHighWater (): boolean {
    return this.#bytes > this.#maxBytes / 2
  }

  /** True from a failed or slow write until the next write succeeds. */
  get failing (): boolean {
    return this.#failing
  }

  /** Writes may begin (the schema is in place). */
  start (): void {
    this.#started = true
    this.#kick()
  }

  push (event: OutgoingEvent): void {
    if (this.#stopped) {
      recordLostEvent(this.#metrics, this.#logger, event, 'shutdown')
      return
    }
    const size = bufferedBytes(event)
    if (this.#bytes + size > this.#maxBytes) {
      recordLostEvent(this.#metrics, this.#logger, event, 'buffer_full')
      return
    }
    this.#events.push(event)
    this.#sizes.push(size)
    this.#bytes += size
    this.#metrics.outboxBufferBytes.set(this.#bytes)
    this.#kick()
  }

  /**
   * Keeps writing until the queue is empty or `deadline` (epoch ms) passes; then every event still
   * here is counted lost with reason `shutdown`. Idempotent.
   */
  async drain (deadline: number): Promise<void> {
    if (this.length > 0) {
      // A database that just came back should not wait out a long backoff.
      this.#retryWake?.()
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()))
        function done (): void { clearTimeout(timer); resolve() }
        this.#idleWaiters.add(done)
        if (this.length === 0) done()
      })
    }
    this.#stopped = true
    this.#retryWake?.()
    const left = this.#events.slice(this.#head)
    this.#events = []
    this.#sizes = []
    this.#head = 0
    this.#bytes = 0
    this.#metrics.outboxBufferBytes.set(0)
    for (const event of left) recordLostEvent(this.#metrics, this.#logger, event, 'shutdown')
  }

  #kick (): void {
    if (!this.#started || this.#writing || this.#stopped || this.length === 0) return
    this.#writing = true
    void this.#writeLoop()
  }

  async #writeLoop (): Promise<void> {
    let delay = this.#retryInitialMs
    while (this.length > 0 && !this.#stopped) {
      const end = Math.min(this.#events.length, this.#head + BATCH_EVENTS)
      const batch = this.#events.slice(this.#head, end)
      try {
        await this.#write(batch)
      } catch (err) {
        if (!this.#failing) {
          this.#failing = true
          this.#logger.error({ err: describe(err), buffered: this.length, bufferedBytes: this.#bytes }, 'outbox write failed; events wait in memory and are written in order when the database answers')
        }
        await this.#sleep(delay)
        delay = Math.min(RETRY_MAX_MS, delay * 2)
        continue
      }
      if (this.#stopped) break
      let written = 0
      for (let i = this.#head; i < end; i++) written += this.#sizes[i] as number
      this.#head = end
      this.#bytes -= written
      if (this.#head > 4096 && this.#head * 2 > this.#events.length) {
        this.#events = this.#events.slice(this.#head)
        this.#sizes = this.#sizes.slice(this.#head)
        this.#head = 0
      }
      this.#metrics.outboxBufferBytes.set(this.#bytes)
      if (this.#failing) {
        this.#failing = false
        this.#logger.info({ buffered: this.length }, 'outbox writes succeed again')
      }
      delay = this.#retryInitialMs
      this.#onWritten()
    }
    this.#writing = false
    if (this.length === 0) {
      for (const done of this.#idleWaiters) done()
      this.#idleWaiters.clear()
    }
  }

  async #write (batch: OutgoingEvent[]): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<typeof TIMEOUT>((resolve) => { timer = setTimeout(() => resolve(TIMEOUT), this.#writeTimeoutMs) })
    const write = Promise.resolve(this.#store.insertMany(batch))
    // A write that times out may still commit later; the retry then finds its ids and skips them.
    write.catch(() => {})
    try {
      const result = await Promise.race([write, timeout])
      if (result === TIMEOUT) throw new Error(`outbox write took longer than ${this.#writeTimeoutMs} ms`)
    } finally {
      clearTimeout(timer)
    }
  }

  #sleep (ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#retryWake = () => { if (this.#retryTimer !== null) clearTimeout(this.#retryTimer); this.#retryTimer = null; this.#retryWake = null; resolve() }
      this.#retryTimer = setTimeout(() => this.#retryWake?.(), ms)
    })
  }
}

/** An error's message and code only: a driver error may quote parameters. */
function describe (err: unknown): { message: string, code?: string } {
  const code = (err as { code?: unknown }).code
  return { message: err instanceof Error ? err.message : String(err), ...(typeof code === 'string' ? { code } : {}) }
}
