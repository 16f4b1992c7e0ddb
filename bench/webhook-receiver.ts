/**
 * The webhook receiver of an `--outbox` run, in a process of its own so its CPU is not the service's.
 * It answers every delivery 204 at once and counts requests and distinct `webhook-id`s; it does not
 * verify signatures (the tests do that): the benchmark measures the sender and its outbox, not a
 * receiver.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { ChildMessage, ParentMessage } from './lib/ipc.ts'

if (process.send === undefined) {
  process.stderr.write('bench/webhook-receiver.ts is started by bench/run.ts (needs an IPC channel)\n')
  process.exit(1)
}

let requests = 0
const ids = new Set<string>()

const server = createServer((request, response) => {
  requests++
  const id = request.headers['webhook-id']
  if (typeof id === 'string') ids.add(id)
  request.resume()
  request.on('end', () => { response.writeHead(204).end() })
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
