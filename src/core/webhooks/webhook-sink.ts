import { MedstreamError } from '../errors.ts'
import type { EventSink, OutgoingEvent } from './events.ts'
import { Outbox } from './outbox.ts'
import { WebhookSender } from './sender.ts'
import type { WebhookSenderOptions } from './sender.ts'

export interface WebhookSinkOptions extends Omit<WebhookSenderOptions, 'outbox'> {
  /** `DATA_DIR`: the outbox lives in `<dataDir>/outbox.db`. */
  dataDir: string
}

/**
 * Events to the customer's webhook: `publish` commits to the durable outbox and returns, the sender
 * delivers in the background.
 */
export class WebhookSink implements EventSink {
  readonly outbox: Outbox
  readonly sender: WebhookSender
  #closing = false
  #closePromise: Promise<void> | null = null

  constructor (options: WebhookSinkOptions) {
    const { dataDir, ...senderOptions } = options
    this.outbox = new Outbox(Outbox.pathIn(dataDir))
    try {
      this.sender = new WebhookSender({ ...senderOptions, outbox: this.outbox })
    } catch (err) {
      this.outbox.close()
      throw err
    }
  }

  /** Resumes events an earlier run left pending, at once. */
  start (): void {
    this.sender.start()
  }

  /** Durable when it returns: the event is committed to the outbox. Throws once the sink is closing. */
  publish (event: OutgoingEvent): void {
    if (this.#closing) {
      throw new MedstreamError('MS_ERR_SINK_CLOSED', `event ${event.id} published after the webhook sink closed; publish every event before closing the sink`)
    }
    this.outbox.insert(event)
    this.sender.wake()
  }

  /** Last delivery pass until `deadline` (epoch ms), then closes the outbox; the rest waits on disk. Idempotent. */
  close (deadline: number): Promise<void> {
    if (this.#closePromise !== null) return this.#closePromise
    this.#closing = true
    this.#closePromise = this.sender.close(deadline).finally(() => this.outbox.close())
    return this.#closePromise
  }
}
