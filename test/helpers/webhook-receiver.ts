import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Webhook } from 'standardwebhooks'

export interface ReceivedEvent {
  id: string
  type: string
  sequence: number
  callSid: string
  data: Record<string, unknown>
  body: string
}

export interface ReceiverOptions {
  /** The secrets this receiver knows; a delivery is accepted when any verifies it. */
  secrets: string[]
  /** Status to answer per attempt (default 200); lets a test simulate an outage. */
  respond?: (attempt: { id: string, count: number }) => number | { status: number, headers?: Record<string, string>, hangMs?: number }
  /** Called for each new (de-duplicated, verified) event. */
  onEvent?: (event: ReceivedEvent) => void
}

/**
 * A real webhook receiver on loopback, as a customer would write one: verifies every signature with
 * standardwebhooks, de-duplicates by webhook-id, and keeps events in arrival order.
 */
export async function startWebhookReceiver (options: ReceiverOptions) {
  const verifiers = options.secrets.map((secret) => new Webhook(secret))
  const events: ReceivedEvent[] = []
  const seen = new Set<string>()
  const attempts = new Map<string, number>()
  const badSignatures: string[] = []
  const listeners = new Set<() => void>()
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      const headers = {
        'webhook-id': String(request.headers['webhook-id'] ?? ''),
        'webhook-timestamp': String(request.headers['webhook-timestamp'] ?? ''),
        'webhook-signature': String(request.headers['webhook-signature'] ?? '')
      }
      const id = headers['webhook-id']
      const count = (attempts.get(id) ?? 0) + 1
      attempts.set(id, count)
      const verified = verifiers.some((verifier) => {
        try { verifier.verify(body, headers); return true } catch { return false }
      })
      if (!verified) {
        badSignatures.push(id)
        response.writeHead(401).end()
        return
      }
      const answer = options.respond?.({ id, count }) ?? 200
      const { status, headers: extra, hangMs } = typeof answer === 'number' ? { status: answer, headers: undefined, hangMs: undefined } : answer
      const finish = (): void => {
        if (status >= 200 && status < 300 && !seen.has(id)) {
          seen.add(id)
          const parsed = JSON.parse(body) as { type: string, data: Record<string, unknown> }
          const event = { id, type: parsed.type, sequence: parsed.data.sequence as number, callSid: parsed.data.call_sid as string, data: parsed.data, body }
          events.push(event)
          options.onEvent?.(event)
          for (const listener of listeners) listener()
        }
        if (!response.destroyed) response.writeHead(status, extra).end()
      }
      if (hangMs !== undefined) setTimeout(finish, hangMs)
      else finish()
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`
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
      server.close()
      await once(server, 'close')
    }
  }
}

export type WebhookReceiver = Awaited<ReturnType<typeof startWebhookReceiver>>
