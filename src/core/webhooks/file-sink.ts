import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { MedstreamError } from '../errors.ts'
import type { CoreLogger } from '../log.ts'
import type { Metrics } from '../metrics.ts'
import { recordLostEvent } from './event-loss.ts'
import type { EventSink, OutgoingEvent } from './events.ts'

const CALL_SID = /^CA[0-9a-fA-F]{32}$/

export interface FileSinkOptions {
  /** `DATA_DIR`: events go to `<dataDir>/transcripts/<call_sid>.jsonl`. */
  dataDir: string
  metrics: Pick<Metrics, 'eventsLost'>
  logger: CoreLogger
}

/**
 * Call files held open at once, well under a default 1024-descriptor limit beside two sockets per call;
 * beyond it the least recently opened is closed (and reopened at its next event).
 */
const MAX_OPEN_FILES = 512

/**
 * Events without a webhook: each body plus "\n" appended to the call's JSONL file, synchronously, so it
 * survives a crash of the process once `publish` returns (it is in the page cache, not yet on the
 * disk: there is no fsync). Files are 0600 and the directory 0700: PHI. A write that fails (a full
 * disk) is counted in `medstream_events_lost_total{reason="store_failed"}`.
 *
 * A call's file is opened at its first event and closed after its `call.ended` (or when more than
 * MAX_OPEN_FILES are open): an open, write and close per event cost three system calls where one will
 * do. A file moved away while its call runs keeps receiving that call's lines where it now is.
 */
export class FileSink implements EventSink {
  readonly directory: string
  readonly #metrics: Pick<Metrics, 'eventsLost'>
  readonly #logger: CoreLogger
  /** Open call files by CallSid, oldest opened first. */
  readonly #open = new Map<string, number>()
  #closed = false

  constructor (options: FileSinkOptions) {
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.directory = join(options.dataDir, 'transcripts')
    mkdirSync(this.directory, { recursive: true, mode: 0o700 })
  }

  /** Call files open now. */
  get openFiles (): number {
    return this.#open.size
  }

  /** The file a call's events go to. Refuses anything but a Twilio CallSid, so no path can escape. */
  pathFor (callSid: string): string {
    if (!CALL_SID.test(callSid)) {
      throw new MedstreamError('MS_ERR_INVALID_CALL_SID', 'call_sid is not a Twilio CallSid (CA followed by 32 hex digits); the event was not written')
    }
    return join(this.directory, `${callSid}.jsonl`)
  }

  publish (event: OutgoingEvent): void {
    if (this.#closed) {
      throw new MedstreamError('MS_ERR_SINK_CLOSED', `event ${event.id} published after the file sink closed; publish every event before closing the sink`)
    }
    const callSid = event.callSid
    let fd = this.#open.get(callSid)
    try {
      if (fd === undefined) {
        fd = openSync(this.pathFor(callSid), 'a', 0o600)
        this.#open.set(callSid, fd)
        if (this.#open.size > MAX_OPEN_FILES) this.#closeFile(this.#open.keys().next().value as string)
      }
      // Written before publish returns, so a SIGKILL loses nothing; no fsync per event, for the same
      // reason as the outbox's synchronous=NORMAL (an fsync on the event loop stalls every call).
      writeSync(fd, event.body + '\n')
    } catch (err) {
      if (err instanceof MedstreamError) throw err
      // Opened afresh at the next event: a disk that filled up may have room again.
      this.#closeFile(callSid)
      recordLostEvent(this.#metrics, this.#logger, event, 'store_failed', err)
      return
    }
    if (event.type === 'call.ended') this.#closeFile(callSid)
  }

  close (_deadline: number): Promise<void> {
    this.#closed = true
    for (const callSid of [...this.#open.keys()]) this.#closeFile(callSid)
    return Promise.resolve()
  }

  #closeFile (callSid: string): void {
    const fd = this.#open.get(callSid)
    if (fd === undefined) return
    this.#open.delete(callSid)
    try {
      closeSync(fd)
    } catch (err) {
      // Every line was written when its event was published; a failing close is told, not thrown.
      this.#logger.warn({ callSid, code: (err as NodeJS.ErrnoException).code }, 'transcript file close failed')
    }
  }
}
