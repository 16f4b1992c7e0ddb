import { createWebhookReceiver, listenWebhookReceiver } from '../../scripts/webhook-receiver.ts'
import type { ReceivedEvent } from '../../scripts/webhook-receiver.ts'

export type { ReceivedEvent } from '../../scripts/webhook-receiver.ts'

export interface ReceiverOptions {
  /** The secrets this receiver knows; a delivery is accepted when any verifies it. */
  secrets: string[]
  /** Status to answer per attempt (default 200); lets a test simulate an outage. */
  respond?: (attempt: { id: string, count: number }) => number | { status: number, headers?: Record<string, string>, hangMs?: number }
  /** Called for each new (de-duplicated, verified) event. */
  onEvent?: (event: ReceivedEvent) => void
}

/**
 * The receiver of scripts/webhook-receiver.ts on loopback, as the end-to-end tests and the demo use
 * it: events in arrival order, attempts counted per webhook-id, failed signatures listed.
 */
export async function startWebhookReceiver (options: ReceiverOptions) {
  const events: ReceivedEvent[] = []
  const attempts = new Map<string, number>()
  const badSignatures: string[] = []
  const listeners = new Set<() => void>()
  const server = createWebhookReceiver({
    secrets: options.secrets,
    reply: (attempt) => {
      const count = (attempts.get(attempt.id) ?? 0) + 1
      attempts.set(attempt.id, count)
      const answer = options.respond?.({ id: attempt.id, count }) ?? 200
      if (typeof answer === 'number') return { status: answer }
      return { status: answer.status, ...(answer.headers === undefined ? {} : { headers: answer.headers }), ...(answer.hangMs === undefined ? {} : { delayMs: answer.hangMs }) }
    },
    onAttempt: (attempt) => {
      if (attempt.verified) return
      attempts.set(attempt.id, (attempts.get(attempt.id) ?? 0) + 1)
      badSignatures.push(attempt.id)
    },
    onEvent: (event) => {
      events.push(event)
      options.onEvent?.(event)
      for (const listener of listeners) listener()
    }
  })
  const { port } = await listenWebhookReceiver(server)
  const url = `http://127.0.0.1:${port}/hooks`
  return {
    url,
    events,
    attempts,
    badSignatures,
    /** Resolves once `predicate` holds over the received events, or rejects after `timeoutMs`. */
    waitFor (predicate: (events: ReceivedEvent[]) => boolean, timeoutMs = 20000): Promise<void> {
      if (predicate(events)) return Promise.resolve()
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { listeners.delete(check); reject(new Error(`receiver: condition not met within ${timeoutMs} ms (${events.length} events)`)) }, timeoutMs)
        const check = (): void => {
          if (predicate(events)) { clearTimeout(timer); listeners.delete(check); resolve() }
        }
        listeners.add(check)
      })
    },
    async close (): Promise<void> {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

export type WebhookReceiver = Awaited<ReturnType<typeof startWebhookReceiver>>
