import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { MedstreamError } from '../errors.ts'
import type { EventSink, OutgoingEvent } from './events.ts'

const CALL_SID = /^CA[0-9a-fA-F]{32}$/

export interface FileSinkOptions {
  /** `DATA_DIR`: events go to `<dataDir>/transcripts/<call_sid>.jsonl`. */
  dataDir: string
}

/**
 * Events without a webhook: each body plus "\n" appended to the call's JSONL file, synchronously, so it
 * survives a crash of the process once `publish` returns. Files are 0600 and the directory 0700: PHI.
 */
export class FileSink implements EventSink {
  readonly directory: string
  #closed = false

  constructor (options: FileSinkOptions) {
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
    const fd = openSync(this.pathFor(event.callSid), 'a', 0o600)
    try {
      // Written before publish returns, so a SIGKILL loses nothing; no fsync per event, for the same
      // reason as the outbox's synchronous=NORMAL (an fsync on the event loop stalls every call).
      writeSync(fd, event.body + '\n')
    } finally {
      closeSync(fd)
    }
  }

  close (_deadline: number): Promise<void> {
    this.#closed = true
    return Promise.resolve()
  }
}
