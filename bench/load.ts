/**
 * The load generator, a child of bench/run.ts. Plays N concurrent two-track calls of the sample
 * speech at real-time pace, as Twilio would: each call rings the voice webhook (via the Twilio
 * simulator, signed), opens the stream its TwiML names with a signed upgrade, sends `connected`,
 * `start`, one `media` per track every 20 ms, `stop`, and closes. Against the floor it skips the
 * webhook and sends a fabricated `start`.
 *
 * It is leaner than TwilioSimulator.openStream on purpose (it shares two cores with what it
 * measures): payloads are base64-encoded once, frames are built by one template, and there is one
 * timer per call. Frames are due at absolute times, so timer lateness never accumulates; for the
 * frame that completes each upstream chunk it records when it was sent and how late.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import { TwilioSimulator } from '../test/fakes/twilio-simulator.ts'
import type { CallReport, ChildMessage, LoadPlan, ParentMessage } from './lib/ipc.ts'
import { clockMs } from './lib/proc.ts'

const FRAME_MS = 20
const FRAME_BYTES = 160
const FIRST_TIMESTAMP_MS = 150
/** Calls start at different points of the sample so they do not all speak at once. */
const OFFSET_STRIDE_FRAMES = 389
const CLOSE_WAIT_MS = 20_000

if (process.send === undefined) {
  process.stderr.write('bench/load.ts is started by bench/run.ts (needs an IPC channel)\n')
  process.exit(1)
}

const samples = new URL('../samples/', import.meta.url)
const inbound = framesOf(readFileSync(new URL('call-inbound.ulaw', samples)))
const outbound = framesOf(readFileSync(new URL('call-outbound.ulaw', samples)))
const loopFrames = Math.min(inbound.length, outbound.length)

function framesOf (audio: Buffer): string[] {
  const frames: string[] = []
  for (let offset = 0; offset + FRAME_BYTES <= audio.length; offset += FRAME_BYTES) {
    frames.push(audio.subarray(offset, offset + FRAME_BYTES).toString('base64'))
  }
  return frames
}

/** The tick whose outbound frame completes chunk k: both tracks then cover (k + 1) × chunkMs. */
function completingTick (chunk: number, chunkMs: number): number {
  return Math.ceil((chunk + 1) * chunkMs / FRAME_MS) - 1
}

class Call {
  readonly key: string
  readonly #plan: LoadPlan
  readonly #offset: number
  readonly #streamSid = `MZ${randomBytes(16).toString('hex')}`
  #ws: WebSocket | null = null
  #callSid = `CA${randomBytes(16).toString('hex')}`
  #accountSid = `AC${'0'.repeat(32)}`
  #startedAt = 0
  #tick = 0
  #sequence = 1
  #framesSent = 0
  #nextChunk = 0
  #nextChunkTick: number
  #timer: NodeJS.Timeout | null = null
  #error: string | null = null
  #closeCode: number | null = null
  #recorded = 0
  readonly #chunkIndex: Int32Array
  readonly #chunkSentAt: Float64Array
  readonly #chunkLateness: Float64Array
  readonly closed: Promise<void>
  #resolveClosed!: () => void

  constructor (index: number, plan: LoadPlan) {
    this.key = `bench-${String(index + 1).padStart(4, '0')}`
    this.#plan = plan
    this.#nextChunkTick = completingTick(0, plan.chunkMs)
    this.#offset = (index * OFFSET_STRIDE_FRAMES) % loopFrames
    const capacity = Math.ceil((plan.windowEndAt - plan.windowStartAt) / plan.chunkMs) + 16
    this.#chunkIndex = new Int32Array(capacity)
    this.#chunkSentAt = new Float64Array(capacity)
    this.#chunkLateness = new Float64Array(capacity)
    this.closed = new Promise((resolve) => { this.#resolveClosed = resolve })
  }

  async start (simulator: TwilioSimulator | null): Promise<void> {
    try {
      const target = this.#plan.target
      let url: string
      let headers: Record<string, string> = {}
      let customParameters: Record<string, string> = { token: 'floor' }
      if (target.kind === 'service' && simulator !== null) {
        const call = await simulator.placeCall({ path: `/twilio/voice?keyterms=${this.key}` })
        const stream = call.twiml?.stream
        if (call.status !== 200 || stream == null) throw new Error(`voice webhook answered ${call.status}`)
        const resolved = simulator.resolveStreamUrl(stream.url)
        if ('error' in resolved) throw resolved.error
        url = resolved.connectUrl
        headers = { 'x-twilio-signature': simulator.signStreamUrl(stream.url) }
        this.#callSid = call.callSid
        this.#accountSid = call.accountSid
        customParameters = stream.parameters
      } else if (target.kind === 'floor') {
        url = target.wsUrl
      } else {
        throw new Error('no simulator for the service target')
      }
      const ws = new WebSocket(url, { headers, perMessageDeflate: false })
      this.#ws = ws
      ws.on('error', (error) => { this.#error ??= error.message })
      ws.on('close', (code) => {
        this.#closeCode = code
        this.#clearTimer()
        this.#resolveClosed()
      })
      ws.on('open', () => {
        ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        ws.send(JSON.stringify({
          event: 'start',
          sequenceNumber: '1',
          start: {
            accountSid: this.#accountSid,
            streamSid: this.#streamSid,
            callSid: this.#callSid,
            tracks: ['inbound', 'outbound'],
            mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
            customParameters
          },
          streamSid: this.#streamSid
        }))
        this.#startedAt = clockMs()
        this.#schedule()
      })
    } catch (error) {
      this.#error = error instanceof Error ? error.message : String(error)
      this.#resolveClosed()
    }
  }

  #schedule (): void {
    const due = this.#startedAt + (this.#tick + 1) * FRAME_MS
    this.#timer = setTimeout(() => { this.#pump() }, Math.max(0, due - clockMs()))
  }

  /** Sends every frame already due (a late wake-up catches up), then sleeps until the next. */
  #pump (): void {
    this.#timer = null
    const ws = this.#ws
    if (ws === null || ws.readyState !== WebSocket.OPEN) return
    const plan = this.#plan
    let now = clockMs()
    for (;;) {
      const due = this.#startedAt + (this.#tick + 1) * FRAME_MS
      if (due > now) break
      if (due > plan.endAt) {
        this.#stop(ws)
        return
      }
      this.#sendTick(ws, due)
      now = clockMs()
    }
    this.#schedule()
  }

  #sendTick (ws: WebSocket, due: number): void {
    const tick = this.#tick
    const frame = (this.#offset + tick) % loopFrames
    const timestamp = FIRST_TIMESTAMP_MS + tick * FRAME_MS
    const chunk = tick + 1
    ws.send(`{"event":"media","sequenceNumber":"${++this.#sequence}","media":{"track":"inbound","chunk":"${chunk}","timestamp":"${timestamp}","payload":"${inbound[frame]}"},"streamSid":"${this.#streamSid}"}`)
    const outboundFrame = `{"event":"media","sequenceNumber":"${++this.#sequence}","media":{"track":"outbound","chunk":"${chunk}","timestamp":"${timestamp}","payload":"${outbound[frame]}"},"streamSid":"${this.#streamSid}"}`
    if (tick === this.#nextChunkTick) {
      const sentAt = clockMs()
      ws.send(outboundFrame)
      if (sentAt >= this.#plan.windowStartAt && sentAt < this.#plan.windowEndAt && this.#recorded < this.#chunkIndex.length) {
        this.#chunkIndex[this.#recorded] = this.#nextChunk
        this.#chunkSentAt[this.#recorded] = sentAt
        this.#chunkLateness[this.#recorded] = sentAt - due
        this.#recorded++
      }
      this.#nextChunk++
      this.#nextChunkTick = completingTick(this.#nextChunk, this.#plan.chunkMs)
    } else {
      ws.send(outboundFrame)
    }
    this.#framesSent += 2
    this.#tick++
  }

  #stop (ws: WebSocket): void {
    ws.send(JSON.stringify({ event: 'stop', sequenceNumber: String(++this.#sequence), streamSid: this.#streamSid, stop: { accountSid: this.#accountSid, callSid: this.#callSid } }))
    ws.close(1000)
  }

  #clearTimer (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }

  abort (): void {
    this.#clearTimer()
    this.#ws?.terminate()
  }

  report (): CallReport {
    return {
      key: this.key,
      error: this.#error,
      closeCode: this.#closeCode,
      ticks: this.#tick,
      framesSent: this.#framesSent,
      chunkIndex: this.#chunkIndex.slice(0, this.#recorded),
      chunkSentAt: this.#chunkSentAt.slice(0, this.#recorded),
      chunkLatenessMs: this.#chunkLateness.slice(0, this.#recorded)
    }
  }
}

async function run (plan: LoadPlan): Promise<void> {
  const target = plan.target
  const simulator = target.kind === 'service'
    ? new TwilioSimulator({ serviceUrl: target.serviceUrl, publicUrl: target.serviceUrl, authToken: target.authToken })
    : null
  const calls: Call[] = []
  for (let i = 0; i < plan.calls; i++) {
    const call = new Call(i, plan)
    calls.push(call)
    const placeAt = plan.startAt + i * plan.staggerMs / plan.calls
    setTimeout(() => { void call.start(simulator) }, Math.max(0, placeAt - clockMs()))
  }
  const allClosed = Promise.all(calls.map((call) => call.closed))
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, plan.endAt + CLOSE_WAIT_MS - clockMs()).unref())
  await Promise.race([allClosed, deadline])
  for (const call of calls) call.abort()
  const message: ChildMessage = { type: 'report', calls: calls.map((call) => call.report()) }
  process.send?.(message, () => { process.exit(0) })
}

process.once('message', (message: ParentMessage) => {
  if (message.type === 'plan') void run(message.plan)
})
process.on('disconnect', () => { process.exit(0) })
