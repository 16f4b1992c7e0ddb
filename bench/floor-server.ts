/**
 * The floor: the least any Media Streams receiver in Node can do with the same traffic. A bare `ws`
 * server that JSON-parses every message and base64-decodes each media payload, then drops it. The
 * service's CPU is reported as a ratio to this process's.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import type { ChildMessage, ParentMessage } from './lib/ipc.ts'

if (process.send === undefined) {
  process.stderr.write('bench/floor-server.ts is started by bench/run.ts (needs an IPC channel)\n')
  process.exit(1)
}

let connections = 0
let frames = 0
let payloadBytes = 0

const server = createServer((_request, response) => { response.writeHead(404).end() })
// Same socket settings as the service's @fastify/websocket: no compression, 64 KiB messages.
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 })
wss.on('connection', (socket) => {
  connections++
  socket.on('message', (data, isBinary) => {
    if (isBinary) return
    const message = JSON.parse(data.toString()) as { event?: string, media?: { payload?: string } }
    if (message.event === 'media' && typeof message.media?.payload === 'string') {
      payloadBytes += Buffer.from(message.media.payload, 'base64').length
      frames++
    } else if (message.event === 'stop') {
      socket.close(1000)
    }
  })
  socket.on('close', () => { connections-- })
  socket.on('error', () => {})
})

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo
  send({ type: 'ready', url: `ws://127.0.0.1:${port}/` })
})

function send (message: ChildMessage): void { process.send?.(message) }

process.on('message', (message: ParentMessage) => {
  if (message.type === 'floor-stats') send({ type: 'floor-stats', connections, frames, payloadBytes })
})
function exit (): void {
  wss.close()
  server.close()
  process.exit(0)
}
process.on('disconnect', exit)
// Exits rather than dies, so a --cpu-prof profile is written.
process.on('SIGTERM', exit)
