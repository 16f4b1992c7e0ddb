import { MedstreamError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import { SchemaError } from '../postgres/migrations.ts'
import { recordLostEvent } from './event-loss.ts'
import type { EventSink, OutgoingEvent } from './events.ts'
import { Outbox } from './outbox.ts'
import type { OutboxStore } from './outbox-store.ts'
import { PostgresOutbox } from './postgres-outbox.ts'
import type { PostgresOutboxOptions } from './postgres-outbox.ts'
import { WebhookSender } from './sender.ts'
import type { WebhookMetrics, WebhookSenderOptions } from './sender.ts'
import { WriteQueue } from './write-queue.ts'

export interface WebhookSinkOptions extends Omit<WebhookSenderOptions, 'outbox' | 'metrics'> {
  /** `DATA_DIR`: without `databaseUrl` the outbox lives in `<dataDir>/outbox.db`. */
  dataDir: string
  /** `DATABASE_URL`: fleet mode, the outbox in PostgreSQL shared by every replica. */
  databaseUrl?: string | null
  /** `OUTBOX_BUFFER_BYTES` (fleet mode): events held in memory while PostgreSQL is unreachable. Default 64 MiB. */
  bufferBytes?: number
  /** Fleet mode: how the PostgreSQL outbox connects and leases (tests shorten the lease). */
  postgres?: Omit<PostgresOutboxOptions, 'url' | 'logger'>
  metrics: WebhookMetrics & Pick<Metrics, 'eventsLost' | 'outboxBufferBytes' | 'webhookPublish'>
  /**
   * The database holds a schema newer than this build (found after a start with the database
   * down): the process must stop. Default: throws from a timer, which ends the process.
   */
  onFatal?: (err: Error) => void
}

const DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
const CONNECT_RETRY_INITIAL_MS = 250
const CONNECT_RETRY_MAX_MS = 5000

/**
 * Events to the customer's webhook: `publish` puts the event into the outbox and returns, the sender
 * delivers in the background. SQLite (the default): committed before `publish` returns. PostgreSQL
 * (fleet mode): queued in memory and written in order within milliseconds, or when the database is
 * back. An event that cannot be kept either way is counted in `medstream_events_lost_total`.
 */
export class WebhookSink implements EventSink {
  readonly outbox: OutboxStore
  readonly sender: WebhookSender
  readonly #queue: WriteQueue | null
  readonly #metrics: WebhookSinkOptions['metrics']
  readonly #logger: WebhookSinkOptions['logger']
  readonly #onFatal: (err: Error) => void
  #connected = false
  #connecting: Promise<void> | null = null
  #closing = false
  #gaveUp = false
  #closePromise: Promise<void> | null = null
  #connectWake: (() => void) | null = null

  constructor (options: WebhookSinkOptions) {
    const { dataDir, databaseUrl, bufferBytes, postgres, onFatal, ...senderOptions } = options
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.#onFatal = onFatal ?? ((err) => { setImmediate(() => { throw err }) })
    if (databaseUrl != null) {
      const outbox = new PostgresOutbox({ ...postgres, url: databaseUrl, logger: options.logger })
      this.outbox = outbox
      this.#queue = new WriteQueue({
        store: outbox,
        maxBytes: bufferBytes ?? DEFAULT_BUFFER_BYTES,
        metrics: options.metrics,
        logger: options.logger,
        onWritten: () => this.sender.wake()
      })
    } else {
      this.outbox = new Outbox(Outbox.pathIn(dataDir))
      this.#queue = null
      this.#connected = true
    }
    try {
      this.sender = new WebhookSender({ ...senderOptions, outbox: this.outbox })
    } catch (err) {
      void this.outbox.close()
      throw err
    }
  }

  /**
   * False while new calls should go elsewhere: fleet mode before the database was first reached,
   * or with the in-memory buffer past half its bound.
   */
  get accepting (): boolean {
    return this.#connected && this.#queue?.aboveHighWater !== true
  }

  /**
   * Resumes events an earlier run (or, in a fleet, any replica) left pending. Fleet mode first
   * migrates the schema, retrying with backoff while the database is unreachable (until the sink
   * closes and its deadline passes). The promise settles after the first try: it rejects only for a
   * schema newer than this build; found on a later try, that calls `onFatal`.
   */
  start (): Promise<void> {
    if (this.#queue === null) return this.sender.start()
    this.#connecting ??= new Promise<void>((resolve, reject) => { void this.#connect(resolve, reject) })
    return this.#connecting
  }

  async #connect (settle: () => void, fail: (err: Error) => void): Promise<void> {
    const outbox = this.outbox as PostgresOutbox
    let delay = CONNECT_RETRY_INITIAL_MS
    for (let attempt = 1; !this.#gaveUp; attempt++) {
      try {
        const { from, to } = await outbox.migrate()
        this.#logger.info({ from, to }, from === to ? 'postgres outbox schema is current' : 'postgres outbox schema migrated')
        this.#connected = true
        this.#queue?.start()
        if (!this.#closing) await this.sender.start()
        settle()
        return
      } catch (err) {
        if (err instanceof SchemaError) {
          if (attempt === 1) fail(err)
          else this.#onFatal(err)
          return
        }
        this.#logger.error({ err: { message: (err as Error).message, code: (err as { code?: string }).code }, attempt, retryInMs: delay }, 'postgres outbox unreachable; not ready until it connects')
        settle()
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay)
          this.#connectWake = () => { clearTimeout(timer); resolve() }
        })
        this.#connectWake = null
        delay = Math.min(CONNECT_RETRY_MAX_MS, delay * 2)
      }
    }
  }

  /**
   * Hands the event to the outbox. Never throws for a storage failure: an event that cannot be
   * stored is counted and logged with its ids. Throws once the sink is closing (a caller's bug).
   */
  publish (event: OutgoingEvent): void {
    if (this.#closing) {
      throw new MedstreamError('MS_ERR_SINK_CLOSED', `event ${event.id} published after the webhook sink closed; publish every event before closing the sink`)
    }
    const started = performance.now()
    try {
      this.#store(event)
    } finally {
      this.#metrics.webhookPublish.observe((performance.now() - started) / 1000)
    }
  }

  /** Fleet mode queues the event for the next batch; the SQLite outbox commits it now. */
  #store (event: OutgoingEvent): void {
    if (this.#queue !== null) {
      this.#queue.push(event)
      return
    }
    try {
      (this.outbox as Outbox).insertMany([event])
    } catch (err) {
      recordLostEvent(this.#metrics, this.#logger, event, 'store_failed', err)
      return
    }
    this.sender.wake()
  }

  /**
   * Last delivery pass until `deadline` (epoch ms), then closes the outbox; the rest waits in the
   * database. Fleet mode keeps writing buffered events until the deadline; any still unwritten are
   * counted lost (`shutdown`). Idempotent.
   */
  close (deadline: number): Promise<void> {
    if (this.#closePromise !== null) return this.#closePromise
    this.#closing = true
    this.#closePromise = (async () => {
      try {
        // Buffered events first, so the last delivery pass can include them (a call's call.ended is
        // often the last thing written).
        await this.#queue?.drain(deadline)
        await this.sender.close(deadline)
      } finally {
        this.#gaveUp = true
        this.#connectWake?.()
        await this.outbox.close()
      }
    })()
    return this.#closePromise
  }
}
