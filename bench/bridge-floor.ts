/**
 * The bridge floor: the cheapest correct Twilio → AssemblyAI bridge, and nothing more. A bare `ws`
 * server; per Twilio frame JSON.parse, base64 decode and a 256-entry μ-law table into a 160-sample
 * lane per track; when both tracks hold a frame, a saturating mix into the call's chunk; every exact
 * 800-byte (50 ms) PCM16 chunk sent to the call's own upstream session (wss with `--tls`, trusted
 * through NODE_EXTRA_CA_CERTS as the service is); upstream messages received and dropped unparsed;
 * `Terminate` on `stop`. No alignment, replay, roles, metrics or webhooks: the service's CPU is also
 * reported as a ratio to this process's.
 * Arguments: the upstream URL (the fake AssemblyAI) and the API key it accepts.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import type { ChildMessage, ParentMessage } from './lib/ipc.ts'

const [upstreamUrl, apiKey] = process.argv.slice(2)
if (upstreamUrl === undefined || apiKey === undefined || process.send === undefined) {
  process.stderr.write('bench/bridge-floor.ts is started by bench/run.ts (needs the upstream URL, its API key and an IPC channel)\n')
  process.exit(1)
}
const sessionUrl = `${upstreamUrl}?speech_model=u3-rt-pro&sample_rate=8000&encoding=pcm_s16le`

const FRAME_SAMPLES = 160
const CHUNK_SAMPLES = 400
const TERMINATE = '{"type":"Terminate"}'

/** G.711 μ-law code → linear PCM16. */
const MULAW = new Int16Array(256)
for (let code = 0; code < 256; code++) {
  const u = ~code & 0xff
  const magnitude = ((((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4)) - 0x84
  MULAW[code] = (u & 0x80) !== 0 ? -magnitude : magnitude
}

let connections = 0
let frames = 0
let payloadBytes = 0

class Bridge {
  readonly #lanes = [new Int16Array(FRAME_SAMPLES), new Int16Array(FRAME_SAMPLES)]
  readonly #held = [false, false]
  readonly #upstream = new WebSocket(sessionUrl, { headers: { Authorization: apiKey as string }, perMessageDeflate: false, generateMask: (mask) => { mask.fill(0) } })
  #chunk = Buffer.allocUnsafeSlow(CHUNK_SAMPLES * 2)
  #view = new Int16Array(this.#chunk.buffer, 0, CHUNK_SAMPLES)
  #filled = 0
  /** Chunks made before the upstream socket opened (its first few ms). */
  #early: Buffer[] | null = []
  /** `stop` came before the upstream socket opened: Terminate follows the early chunks. */
  #stopEarly = false

  constructor () {
    this.#upstream.on('error', () => {})
    this.#upstream.once('open', () => {
      for (const chunk of this.#early ?? []) this.#upstream.send(chunk)
      this.#early = null
      if (this.#stopEarly) this.#upstream.send(TERMINATE)
    })
  }

  media (track: number, payload: Buffer): void {
    // A track two frames ahead: its held frame goes out mixed with the silence of the other.
    if (this.#held[track] === true) this.#mix(track === 0 ? null : this.#lanes[0]!, track === 1 ? null : this.#lanes[1]!)
    const lane = this.#lanes[track]!
    for (let i = 0; i < FRAME_SAMPLES; i++) lane[i] = MULAW[payload[i]!]!
    this.#held[track] = true
    if (this.#held[0] === true && this.#held[1] === true) this.#mix(this.#lanes[0]!, this.#lanes[1]!)
  }

  #mix (a: Int16Array | null, b: Int16Array | null): void {
    for (let i = 0; i < FRAME_SAMPLES; i++) {
      const sum = (a === null ? 0 : a[i]!) + (b === null ? 0 : b[i]!)
      this.#view[this.#filled++] = sum > 32767 ? 32767 : (sum < -32768 ? -32768 : sum)
      if (this.#filled === CHUNK_SAMPLES) {
        if (this.#early !== null) this.#early.push(this.#chunk)
        else this.#upstream.send(this.#chunk)
        this.#chunk = Buffer.allocUnsafeSlow(CHUNK_SAMPLES * 2)
        this.#view = new Int16Array(this.#chunk.buffer, 0, CHUNK_SAMPLES)
        this.#filled = 0
      }
    }
    this.#held[0] = false
    this.#held[1] = false
  }

  stop (): void {
    if (this.#upstream.readyState === WebSocket.OPEN) this.#upstream.send(TERMINATE)
    else if (this.#upstream.readyState === WebSocket.CONNECTING) this.#stopEarly = true
    else this.#upstream.terminate()
  }
}

const server = createServer((_request, response) => { response.writeHead(404).end() })
// Same socket settings as the service's @fastify/websocket: no compression, 64 KiB messages.
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 })
wss.on('connection', (socket) => {
  connections++
  const bridge = new Bridge()
  let stopped = false
  socket.on('message', (data, isBinary) => {
    if (isBinary) return
    const message = JSON.parse(data.toString()) as { event?: string, media?: { track?: string, payload?: string } }
    if (message.event === 'media' && typeof message.media?.payload === 'string') {
      const payload = Buffer.from(message.media.payload, 'base64')
      if (payload.length !== FRAME_SAMPLES) return
      bridge.media(message.media.track === 'outbound' ? 1 : 0, payload)
      payloadBytes += payload.length
      frames++
    } else if (message.event === 'stop' && !stopped) {
      stopped = true
      bridge.stop()
      socket.close(1000)
    }
  })
  socket.on('close', () => {
    connections--
    if (!stopped) bridge.stop()
  })
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
