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
 * Events without a webhook: each body plus "\n" appended to the call's JSONL file, synchronously, so it
 * survives a crash of the process once `publish` returns (it is in the page cache, not yet on the
 * disk: there is no fsync). Files are 0600 and the directory 0700: PHI. A write that fails (a full
 * disk) is counted in `medstream_events_lost_total{reason="store_failed"}`.
 */
export class FileSink implements EventSink {
  readonly directory: string
  readonly #metrics: Pick<Metrics, 'eventsLost'>
  readonly #logger: CoreLogger
  #closed = false

  constructor (options: FileSinkOptions) {
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.directory = join(options.dataDir, 'transcripts')
    mkdirSync(this.directory, { recursive: true, mode: 0o700 })
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
    const path = this.pathFor(event.callSid)
    try {
      const fd = openSync(path, 'a', 0o600)
      try {
        // Written before publish returns, so a SIGKILL loses nothing; no fsync per event, for the same
        // reason as the outbox's synchronous=NORMAL (an fsync on the event loop stalls every call).
        writeSync(fd, event.body + '\n')
      } finally {
        closeSync(fd)
      }
    } catch (err) {
      recordLostEvent(this.#metrics, this.#logger, event, 'store_failed', err)
    }
  }

  close (_deadline: number): Promise<void> {
    this.#closed = true
    return Promise.resolve()
  }
}
