/**
 * The webhook receiver of an `--outbox` run, in a process of its own so its CPU is not the service's:
 * the one receiver of scripts/webhook-receiver.ts, answering every delivery 204 at once. It does not
 * verify signatures (the tests do that): the benchmark measures the sender and its outbox, not a
 * receiver. It counts requests and distinct `webhook-id`s.
 */
import type { AddressInfo } from 'node:net'
import { createWebhookReceiver } from '../scripts/webhook-receiver.ts'
import type { ChildMessage, ParentMessage } from './lib/ipc.ts'

if (process.send === undefined) {
  process.stderr.write('bench/webhook-receiver.ts is started by bench/run.ts (needs an IPC channel)\n')
  process.exit(1)
}

let requests = 0
const ids = new Set<string>()

const server = createWebhookReceiver({
  // Never used to verify (verify: false); the receiver needs one well-formed secret all the same.
  secrets: ['whsec_' + Buffer.alloc(24).toString('base64')],
  verify: false,
  onAttempt: (attempt) => {
    requests++
    ids.add(attempt.id)
  }
})
server.keepAliveTimeout = 60_000

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo
  send({ type: 'ready', url: `http://127.0.0.1:${port}/hooks` })
})

function send (message: ChildMessage): void { process.send?.(message) }

process.on('message', (message: ParentMessage) => {
  if (message.type === 'receiver-stats') send({ type: 'receiver-stats', requests, events: ids.size })
})
process.on('disconnect', () => {
  server.closeAllConnections()
  server.close()
  process.exit(0)
})
