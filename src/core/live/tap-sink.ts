import type { EventSink, OutgoingEvent } from '../webhooks/events.ts'

/**
 * The call's event sink with the live view beside it: each event goes to the durable sink first and,
 * once stored, to `tap`. A failing tap never fails the call's publish.
 */
export class LiveTapSink implements EventSink {
  readonly #inner: EventSink
  readonly #tap: (event: OutgoingEvent) => void
  readonly #onTapError: (error: unknown) => void

  constructor (inner: EventSink, tap: (event: OutgoingEvent) => void, onTapError: (error: unknown) => void) {
    this.#inner = inner
    this.#tap = tap
    this.#onTapError = onTapError
  }

  start (): void | Promise<void> {
    return this.#inner.start?.()
  }

  /** The durable sink's own answer: the live view never decides whether a call may start. */
  get accepting (): boolean {
    return this.#inner.accepting ?? true
  }

  publish (event: OutgoingEvent): void {
    this.#inner.publish(event)
    try {
      this.#tap(event)
    } catch (error) {
      this.#onTapError(error)
    }
  }

  close (deadline: number): Promise<void> {
    return this.#inner.close(deadline)
  }
}
