import { randomBytes, randomUUID } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from 'node:timers/promises'
import twilio from 'twilio'
import WebSocket from 'ws'

/**
 * A protocol-faithful stand-in for Twilio Programmable Voice + Media Streams, as docs/protocols.md
 * describes them: it places a call by POSTing the
 * signed voice webhook, reads the TwiML back, opens the media WebSocket the TwiML asks for with a
 * signed upgrade, and plays μ-law audio as `connected` → `start` → `media`… → `stop` → close, paced by
 * the wall clock. Used by the end-to-end tests, the demo and the benchmark.
 */

export interface SimulatorOptions {
  /** Where the service really listens, e.g. `http://127.0.0.1:PORT`; only its origin is used. */
  serviceUrl: string
  /** The service's PUBLIC_URL: its origin is what Twilio requested, so it is what gets signed. */
  publicUrl: string
  /** The Twilio auth token the service validates signatures with. */
  authToken: string
  /** Default: a random `AC` + 32 hex, fixed for this simulator. */
  accountSid?: string
}

export interface PlaceCallOptions {
  /** Path and query string of the voice webhook as configured on the number. Default '/twilio/voice'. */
  path?: string
  /** Default: a random `CA` + 32 hex. */
  callSid?: string
  /** Caller number. Default '+15550001111'. */
  from?: string
  /** Called number. Default '+15550002222'. */
  to?: string
  /** More form fields, signed like the rest (Twilio adds fields without notice). */
  extraParams?: Record<string, string>
  /** Replaces the computed X-Twilio-Signature; null sends no header. */
  signature?: string | null
}

export interface ParsedStream {
  name: string | null
  url: string
  /** Twilio's default when absent: 'inbound_track'. */
  track: string
  statusCallback: string | null
  /** Twilio's default when absent: 'POST'. */
  statusCallbackMethod: string
  /** Every `<Parameter>` as written, including any the 500-character rule makes Twilio drop. */
  parameters: Record<string, string>
}

export interface ParsedTwiml {
  /** The `<Start><Stream>`, or null (a `<Connect><Stream>` is not what medstream asks for). */
  stream: ParsedStream | null
  dial: { number?: string, sip?: string } | null
  redirect: string | null
}

export interface PlacedCall {
  callSid: string
  accountSid: string
  /** HTTP status of the voice webhook. */
  status: number
  body: string
  /** Parsed when the answer was 200 with a `<Response>`. */
  twiml: ParsedTwiml | null
}

export interface StreamOptions {
  /** Raw μ-law, 8 kHz mono: what the caller says (Twilio's inbound track). */
  inbound: Uint8Array
  /** Raw μ-law for the outbound track (the agent); omitted → `tracks: ['inbound']` only. */
  outbound?: Uint8Array
  /** Milliseconds of audio per media message. Default 20 (160 bytes, as Twilio sends). */
  frameMs?: number
  /** 1 = real time (default), 10 = ten times faster, Infinity = as fast as the socket drains. */
  speed?: number
  /** `media.timestamp` of the first frame, ms. Default 150 (captures show 155 and 171). */
  firstTimestampMs?: number
  /** Replaces the upgrade's x-twilio-signature; null sends no header. */
  signature?: string | null
  /** Replaces `start.customParameters`. Default: the TwiML's `<Parameter>`s under 500 characters. */
  customParameters?: Record<string, string>
  /** Replace `start.callSid` / `start.accountSid` (and `stop`'s). */
  callSid?: string
  accountSid?: string
  /** Send `stop` after the audio. Default true. */
  sendStop?: boolean
  /** Close the socket (1000) right after `stop`. Default true; false emulates a close that never comes. */
  closeAfterStop?: boolean
  /**
   * Send `start` after `connected`. Default true; false sends `connected` only and then nothing (no
   * media, no stop), for start-timeout tests and hand-written sequences with sendRaw.
   */
  sendStart?: boolean
  /**
   * Audio Twilio discards under congestion (warning 31930): frames of `track` whose audio position
   * (ms into the given buffer, not `media.timestamp`) is in [fromMs, toMs) are never sent, so the
   * next frame's timestamp jumps. `chunk` and `sequenceNumber` count only messages sent.
   */
  dropFrames?: { track: 'inbound' | 'outbound', fromMs: number, toMs: number }[]
  /**
   * Bursty delivery (≤250 ms in real captures): frames falling due between atMs and atMs + forMs on
   * the audio clock are held back and sent together when the hold ends; no audio is lost, timestamps
   * stay continuous. Scaled by `speed` like all pacing (so no effect at Infinity).
   */
  holdMs?: { atMs: number, forMs: number }[]
  /** Default: a random `MZ` + 32 hex. */
  streamSid?: string
  /**
   * Post signed status callbacks on their own: `stream-started` once the socket opens,
   * `stream-stopped` after `stop`, `stream-error` when the stream cannot start. Default false (call
   * postStatus yourself); failures to deliver them are ignored.
   */
  statusCallbacks?: boolean
}

export interface StreamResult {
  /** WebSocket close code as seen by the simulator; 1006 when the socket died or never opened. */
  code: number
  reason: string
  /** `media` messages sent. */
  framesSent: number
}

export interface StreamHandle {
  streamSid: string
  /** Resolves when the upgrade is accepted; rejects with a SimulatedStreamError otherwise. */
  opened: Promise<void>
  /** Resolves (never rejects) when the socket is closed by either side, or could not open. */
  done: Promise<StreamResult>
  /** Sends a frame as is: a string as a text frame, a Buffer as a binary frame. Ignored unless open. */
  sendRaw (data: string | Buffer): void
  /** Abrupt TCP destroy, no close frame (Twilio's 31903). */
  abort (): void
  /**
   * A peer that vanished without a FIN (a dead NAT, a crashed host): stops sending and stops reading,
   * so pings go unanswered. `abort()` cleans up afterwards.
   */
  freeze (): void
  /** Close handshake with `code` (default 1000). */
  close (code?: number): void
}

export type StreamStatusEvent = 'stream-started' | 'stream-stopped' | 'stream-error'

/** Why a stream did not open: refused upgrade (statusCode set), unreachable service, or bad TwiML. */
export class SimulatedStreamError extends Error {
  /** HTTP status of a refused upgrade; null when no HTTP answer came. */
  readonly statusCode: number | null
  /** The Twilio error code this would log: 31920 handshake, 31902 refused, 31941 track. */
  readonly twilioCode: number
  constructor (message: string, twilioCode: number, statusCode: number | null = null, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'SimulatedStreamError'
    this.twilioCode = twilioCode
    this.statusCode = statusCode
  }
}

const DEFAULT_FROM = '+15550001111'
const DEFAULT_TO = '+15550002222'
const BYTES_PER_MS = 8
const MULAW_SILENCE = 0xff
const MAX_PARAMETER_CHARS = 500
const VALID_TRACKS = new Set(['inbound_track', 'outbound_track', 'both_tracks'])
/** At speed Infinity, let timers and the other sockets run this often. */
const FRAMES_PER_YIELD = 16
/** At speed Infinity, wait for the kernel to take data beyond this much queued in ws. */
const MAX_BUFFERED_BYTES = 1 << 20
const HTTP_TIMEOUT_MS = 15_000

export class TwilioSimulator {
  readonly #serviceOrigin: URL
  readonly #publicOrigin: string
  readonly #publicIsPlainText: boolean
  readonly #authToken: string
  readonly #accountSid: string

  constructor (options: SimulatorOptions) {
    const service = new URL(options.serviceUrl)
    const publicUrl = new URL(options.publicUrl)
    if (!['http:', 'https:'].includes(service.protocol) || !['http:', 'https:'].includes(publicUrl.protocol)) {
      throw new TypeError('TwilioSimulator serviceUrl and publicUrl must be http(s) URLs, e.g. http://127.0.0.1:8080')
    }
    if (options.authToken.length === 0) throw new TypeError('TwilioSimulator needs the authToken the service validates with')
    this.#serviceOrigin = new URL(service.origin)
    this.#publicOrigin = publicUrl.origin
    this.#publicIsPlainText = publicUrl.protocol === 'http:'
    this.#authToken = options.authToken
    this.#accountSid = options.accountSid ?? randomSid('AC')
  }

  get accountSid (): string {
    return this.#accountSid
  }

  /** Rings the service's voice webhook as Twilio does for an inbound call. */
  async placeCall (options: PlaceCallOptions = {}): Promise<PlacedCall> {
    const path = options.path ?? '/twilio/voice'
    const callSid = options.callSid ?? randomSid('CA')
    const accountSid = this.#accountSid
    const from = options.from ?? DEFAULT_FROM
    const to = options.to ?? DEFAULT_TO
    const params: Record<string, string> = {
      AccountSid: accountSid,
      ApiVersion: '2010-04-01',
      CallSid: callSid,
      CallStatus: 'ringing',
      Direction: 'inbound',
      From: from,
      To: to,
      Called: to,
      Caller: from,
      ...geoFields('From', CALLER_GEO),
      ...geoFields('Caller', CALLER_GEO),
      ...geoFields('To', CALLED_GEO),
      ...geoFields('Called', CALLED_GEO),
      ...options.extraParams
    }
    const signedUrl = this.#publicOrigin + path
    const signature = options.signature === undefined
      ? twilio.getExpectedTwilioSignature(this.#authToken, signedUrl, params)
      : options.signature
    const response = await sendHttp(new URL(path, this.#serviceOrigin), 'POST', new URLSearchParams(params).toString(), signature)
    const twiml = response.status === 200 ? parseTwiml(response.body) : null
    return { callSid, accountSid, status: response.status, body: response.body, twiml }
  }

  /** Opens the media stream the call's TwiML asks for and plays the given audio through it. */
  openStream (call: PlacedCall, options: StreamOptions): StreamHandle {
    checkStreamOptions(options)
    return startStream(this, call, options)
  }

  /**
   * Posts a signed stream status callback to the TwiML's statusCallback, as Twilio does.
   * @returns the HTTP status the service answered
   */
  async postStatus (call: PlacedCall, streamSid: string, event: StreamStatusEvent, error?: string): Promise<number> {
    const stream = call.twiml?.stream
    if (stream == null || stream.statusCallback === null) throw new TypeError('postStatus needs a call whose TwiML has a <Stream statusCallback>')
    const params: Record<string, string> = {
      AccountSid: call.accountSid,
      CallSid: call.callSid,
      StreamSid: streamSid,
      StreamName: stream.name ?? streamSid,
      StreamEvent: event,
      Timestamp: new Date().toISOString()
    }
    if (error !== undefined) params.StreamError = error
    const callbackUrl = new URL(stream.statusCallback)
    const target = new URL(callbackUrl.pathname + callbackUrl.search, this.#serviceOrigin)
    if (stream.statusCallbackMethod.toUpperCase() === 'GET') {
      // A GET carries the fields in the query string and signs the full URL with no params (docs/protocols.md, "Signatures").
      const query = new URLSearchParams(params).toString()
      const separator = stream.statusCallback.includes('?') ? '&' : '?'
      const signedUrl = stream.statusCallback + separator + query
      target.search = target.search === '' ? `?${query}` : `${target.search}&${query}`
      const signature = twilio.getExpectedTwilioSignature(this.#authToken, signedUrl, {})
      return (await sendHttp(target, 'GET', null, signature)).status
    }
    const signature = twilio.getExpectedTwilioSignature(this.#authToken, stream.statusCallback, params)
    return (await sendHttp(target, 'POST', new URLSearchParams(params).toString(), signature)).status
  }

  /** The ws:// URL to dial for a stream URL, or why Twilio would refuse it. */
  resolveStreamUrl (streamUrl: string): { connectUrl: string } | { error: SimulatedStreamError } {
    let url: URL
    try {
      url = new URL(streamUrl)
    } catch {
      return { error: new SimulatedStreamError('the simulator needs an absolute stream url', 31920) }
    }
    if (streamUrl.includes('?')) return { error: new SimulatedStreamError('stream url has a query string, which Twilio does not support', 31920) }
    // Twilio only dials wss; plain ws is allowed when the service itself is configured for plain HTTP
    // (tests and the demo on loopback), mirroring the config's warning-only rule.
    const plainTextOk = this.#publicIsPlainText && url.protocol === 'ws:'
    if (url.protocol !== 'wss:' && !plainTextOk) return { error: new SimulatedStreamError(`stream url scheme ${url.protocol} is not wss`, 31910) }
    const scheme = this.#serviceOrigin.protocol === 'https:' ? 'wss:' : 'ws:'
    return { connectUrl: `${scheme}//${this.#serviceOrigin.host}${url.pathname}` }
  }

  /** The upgrade's x-twilio-signature: over the stream url exactly as written, params {} (docs/protocols.md, "The upgrade signature"). */
  signStreamUrl (streamUrl: string): string {
    return twilio.getExpectedTwilioSignature(this.#authToken, streamUrl, {})
  }
}

function startStream (simulator: TwilioSimulator, call: PlacedCall, options: StreamOptions): StreamHandle {
  const streamSid = options.streamSid ?? randomSid('MZ')
  const callSid = options.callSid ?? call.callSid
  const accountSid = options.accountSid ?? call.accountSid
  let framesSent = 0
  let stopped = false
  let ws: WebSocket | null = null

  let resolveOpened!: () => void
  let rejectOpened!: (error: SimulatedStreamError) => void
  const opened = new Promise<void>((resolve, reject) => { resolveOpened = resolve; rejectOpened = reject })
  // A test that only awaits `done` must not die of an unhandled rejection.
  opened.catch(() => {})
  let resolveDone!: (result: StreamResult) => void
  const done = new Promise<StreamResult>((resolve) => { resolveDone = resolve })
  let finished = false
  const finish = (code: number, reason: string): void => {
    if (finished) return
    finished = true
    stopped = true
    resolveDone({ code, reason, framesSent })
  }
  const notify = (event: StreamStatusEvent, error?: string): void => {
    if (options.statusCallbacks !== true) return
    simulator.postStatus(call, streamSid, event, error).catch(() => {})
  }
  const refuse = (error: SimulatedStreamError): void => {
    if (finished) return
    rejectOpened(error)
    notify('stream-error', `${error.twilioCode} ${error.message}`)
    finish(1006, error.message)
  }

  const handle: StreamHandle = {
    streamSid,
    opened,
    done,
    sendRaw (data) {
      if (ws !== null && ws.readyState === WebSocket.OPEN) ws.send(data)
    },
    abort () {
      stopped = true
      ws?.terminate()
    },
    freeze () {
      stopped = true
      ws?.pause()
    },
    close (code = 1000) {
      stopped = true
      if (ws !== null && ws.readyState !== WebSocket.CLOSED && ws.readyState !== WebSocket.CLOSING) ws.close(code)
    }
  }

  const stream = call.twiml?.stream ?? null
  if (stream === null) {
    refuse(new SimulatedStreamError('the call has no <Start><Stream> TwiML to open', 31920))
    return handle
  }
  if (!VALID_TRACKS.has(stream.track)) {
    refuse(new SimulatedStreamError(`invalid track ${stream.track}`, 31941))
    return handle
  }
  const target = simulator.resolveStreamUrl(stream.url)
  if ('error' in target) {
    refuse(target.error)
    return handle
  }
  const headers: Record<string, string> = { 'user-agent': 'Twilio.TmeWs/1.0', 'accept-encoding': 'gzip' }
  const signature = options.signature === undefined ? simulator.signStreamUrl(stream.url) : options.signature
  if (signature !== null) headers['x-twilio-signature'] = signature

  const socket = new WebSocket(target.connectUrl, { headers, perMessageDeflate: false, followRedirects: false, handshakeTimeout: HTTP_TIMEOUT_MS })
  ws = socket
  socket.on('unexpected-response', (request, response) => {
    const status = response.statusCode ?? 0
    response.resume()
    refuse(new SimulatedStreamError(`upgrade refused with HTTP ${status}`, 31920, status))
    // Destroying the request makes ws emit 'error' then 'close'; both are already settled.
    request.destroy()
  })
  let isOpened = false
  socket.on('error', (error) => {
    // After the upgrade, an error is followed by 'close', which settles `done`.
    if (!isOpened) {
      refuse(new SimulatedStreamError(`stream could not connect: ${error.message}`, 31902, null, error))
    }
  })
  socket.on('close', (code, reason) => { finish(code, reason.toString()) })
  socket.on('open', () => {
    isOpened = true
    resolveOpened()
    notify('stream-started')
    play(socket, options, stream, { streamSid, callSid, accountSid }, () => { framesSent++ }, () => stopped)
      .then((sentStop) => { if (sentStop) notify('stream-stopped') })
      .catch(() => { socket.terminate() })
  })
  return handle
}

/**
 * The sending side of one stream. Frames are due at absolute times computed from one start time, so
 * timer lateness never accumulates: a late wake-up sends every frame already due, then sleeps again.
 * @returns whether `stop` was sent
 */
async function play (
  ws: WebSocket,
  options: StreamOptions,
  stream: ParsedStream,
  ids: { streamSid: string, callSid: string, accountSid: string },
  onFrame: () => void,
  isStopped: () => boolean
): Promise<boolean> {
  const frameMs = options.frameMs ?? 20
  const speed = options.speed ?? 1
  const firstTimestampMs = options.firstTimestampMs ?? 150
  const streamSidJson = JSON.stringify(ids.streamSid)
  const live = (): boolean => !isStopped() && ws.readyState === WebSocket.OPEN

  ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
  if (options.sendStart === false) return false
  const tracks: { name: 'inbound' | 'outbound', audio: Uint8Array, chunk: number }[] = [{ name: 'inbound', audio: options.inbound, chunk: 0 }]
  if (options.outbound !== undefined) tracks.push({ name: 'outbound', audio: options.outbound, chunk: 0 })
  const customParameters = options.customParameters ?? twilioVisibleParameters(stream.parameters)
  // Key order as in a real capture.
  ws.send(JSON.stringify({
    event: 'start',
    sequenceNumber: '1',
    start: {
      accountSid: ids.accountSid,
      streamSid: ids.streamSid,
      callSid: ids.callSid,
      tracks: tracks.map((track) => track.name),
      mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
      customParameters
    },
    streamSid: ids.streamSid
  }))
  let sequenceNumber = 1

  const frameBytes = Math.round(frameMs * BYTES_PER_MS)
  // Twilio sends every track for the life of the call, silence included, in whole frames.
  const longest = Math.max(...tracks.map((track) => track.audio.length))
  const ticks = Math.ceil(longest / frameBytes)
  const startedAt = performance.now()
  for (let tick = 0; tick < ticks; tick++) {
    if (!live()) return false
    const audioMs = tick * frameMs
    if (Number.isFinite(speed)) {
      // A frame leaves once its audio has been captured, i.e. at the end of its interval.
      const dueAt = startedAt + deliveryMs(audioMs + frameMs, options.holdMs) / speed
      const waitMs = dueAt - performance.now()
      if (waitMs >= 1) await sleep(waitMs)
    } else if (tick % FRAMES_PER_YIELD === 0 || ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      await yieldToEventLoop()
      while (ws.bufferedAmount > MAX_BUFFERED_BYTES && live()) await sleep(1)
    }
    if (!live()) return false
    const timestamp = firstTimestampMs + audioMs
    for (const track of tracks) {
      if (isDropped(options.dropFrames, track.name, audioMs)) continue
      track.chunk++
      sequenceNumber++
      const payload = frameSlice(track.audio, tick * frameBytes, frameBytes).toString('base64')
      ws.send(`{"event":"media","sequenceNumber":"${sequenceNumber}","media":{"track":"${track.name}","chunk":"${track.chunk}","timestamp":"${timestamp}","payload":"${payload}"},"streamSid":${streamSidJson}}`)
      onFrame()
    }
  }
  if (!live() || options.sendStop === false) return false
  sequenceNumber++
  ws.send(JSON.stringify({
    event: 'stop',
    sequenceNumber: String(sequenceNumber),
    streamSid: ids.streamSid,
    stop: { accountSid: ids.accountSid, callSid: ids.callSid }
  }))
  if (options.closeAfterStop !== false) ws.close(1000)
  return true
}

/** Where a frame is delivered on the audio clock, once holds are applied. */
function deliveryMs (audioMs: number, holds: StreamOptions['holdMs']): number {
  if (holds === undefined) return audioMs
  for (const hold of holds) {
    if (audioMs > hold.atMs && audioMs <= hold.atMs + hold.forMs) return hold.atMs + hold.forMs
  }
  return audioMs
}

function isDropped (drops: StreamOptions['dropFrames'], track: 'inbound' | 'outbound', audioMs: number): boolean {
  if (drops === undefined) return false
  for (const drop of drops) {
    if (drop.track === track && audioMs >= drop.fromMs && audioMs < drop.toMs) return true
  }
  return false
}

/** One frame of a track; past its end, μ-law silence. */
function frameSlice (audio: Uint8Array, offset: number, frameBytes: number): Buffer {
  if (offset + frameBytes <= audio.length) return Buffer.from(audio.buffer, audio.byteOffset + offset, frameBytes)
  const frame = Buffer.alloc(frameBytes, MULAW_SILENCE)
  if (offset < audio.length) frame.set(audio.subarray(offset))
  return frame
}

/** Twilio drops a `<Parameter>` whose name + value reaches 500 characters. */
function twilioVisibleParameters (parameters: Record<string, string>): Record<string, string> {
  const visible: Record<string, string> = {}
  for (const [name, value] of Object.entries(parameters)) {
    if (name.length + value.length < MAX_PARAMETER_CHARS) Object.defineProperty(visible, name, { value, enumerable: true, writable: true, configurable: true })
  }
  return visible
}

function checkStreamOptions (options: StreamOptions): void {
  if (!(options.inbound instanceof Uint8Array)) throw new TypeError('openStream needs inbound μ-law audio as a Uint8Array')
  if (options.outbound !== undefined && !(options.outbound instanceof Uint8Array)) throw new TypeError('openStream outbound must be a Uint8Array or omitted')
  const frameMs = options.frameMs ?? 20
  if (!Number.isFinite(frameMs) || frameMs <= 0 || !Number.isInteger(frameMs * BYTES_PER_MS)) throw new RangeError('openStream frameMs must be a positive multiple of 0.125 ms, e.g. 20')
  const speed = options.speed ?? 1
  if (!(speed > 0)) throw new RangeError('openStream speed must be > 0 (1 = real time, Infinity = unpaced)')
}

const ATTRIBUTES = '((?:[^>"\']|"[^"]*"|\'[^\']*\')*)'
const START_STREAM = new RegExp(`<Start\\b[^>]*>\\s*<Stream\\b${ATTRIBUTES}>`)
const PARAMETER = new RegExp(`<Parameter\\b${ATTRIBUTES}>`, 'g')
const DIAL = new RegExp(`<Dial\\b${ATTRIBUTES}>([\\s\\S]*?)</Dial>`)
const DIAL_NOUN = new RegExp(`<(Number|Sip)\\b${ATTRIBUTES}>([\\s\\S]*?)</\\1>`)
const REDIRECT = new RegExp(`<Redirect\\b${ATTRIBUTES}>([\\s\\S]*?)</Redirect>`)
const ATTRIBUTE = /([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g

/**
 * Reads the TwiML medstream writes back into a structure: a small parser for this shape of document,
 * not general XML. Attribute values and text are entity-decoded. Null when there is no `<Response>`.
 */
export function parseTwiml (xml: string): ParsedTwiml | null {
  if (!/<Response[\s/>]/.test(xml)) return null
  let stream: ParsedStream | null = null
  const streamTag = START_STREAM.exec(xml)
  if (streamTag !== null) {
    const rawAttributes = streamTag[1] ?? ''
    const attributes = parseAttributes(rawAttributes)
    const parameters: Record<string, string> = {}
    if (!rawAttributes.trimEnd().endsWith('/')) {
      const bodyStart = streamTag.index + streamTag[0].length
      const bodyEnd = xml.indexOf('</Stream>', bodyStart)
      const body = xml.slice(bodyStart, bodyEnd < 0 ? xml.length : bodyEnd)
      for (const parameter of body.matchAll(PARAMETER)) {
        const { name, value } = parseAttributes(parameter[1] ?? '')
        if (name !== undefined) Object.defineProperty(parameters, name, { value: value ?? '', enumerable: true, writable: true, configurable: true })
      }
    }
    stream = {
      name: attributes.name ?? null,
      url: attributes.url ?? '',
      track: attributes.track ?? 'inbound_track',
      statusCallback: attributes.statusCallback ?? null,
      statusCallbackMethod: attributes.statusCallbackMethod ?? 'POST',
      parameters
    }
  }
  let dial: ParsedTwiml['dial'] = null
  const dialTag = DIAL.exec(xml)
  if (dialTag !== null) {
    const inner = dialTag[2] ?? ''
    const noun = DIAL_NOUN.exec(inner)
    if (noun === null) dial = { number: decodeXml(inner.trim()) }
    else if (noun[1] === 'Sip') dial = { sip: decodeXml((noun[3] ?? '').trim()) }
    else dial = { number: decodeXml((noun[3] ?? '').trim()) }
  }
  const redirectTag = REDIRECT.exec(xml)
  const redirect = redirectTag === null ? null : decodeXml((redirectTag[2] ?? '').trim())
  return { stream, dial, redirect }
}

function parseAttributes (text: string): Record<string, string | undefined> {
  const attributes: Record<string, string | undefined> = {}
  for (const match of text.matchAll(ATTRIBUTE)) {
    const name = match[1]
    if (name !== undefined) attributes[name] = decodeXml(match[2] ?? match[3] ?? '')
  }
  return attributes
}

const NAMED_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: '\'' }

export function decodeXml (text: string): string {
  return text.replace(/&(?:#(\d+)|#x([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));/g, (_match, decimal?: string, hex?: string, named?: string) => {
    if (decimal !== undefined) return String.fromCodePoint(Number(decimal))
    if (hex !== undefined) return String.fromCodePoint(Number.parseInt(hex, 16))
    return NAMED_ENTITIES[named ?? ''] ?? ''
  })
}

interface Geo { City: string, State: string, Zip: string, Country: string }
const CALLER_GEO: Geo = { City: 'SAN FRANCISCO', State: 'CA', Zip: '94103', Country: 'US' }
const CALLED_GEO: Geo = { City: 'OAKLAND', State: 'CA', Zip: '94612', Country: 'US' }

function geoFields (prefix: string, geo: Geo): Record<string, string> {
  return {
    [`${prefix}City`]: geo.City,
    [`${prefix}State`]: geo.State,
    [`${prefix}Zip`]: geo.Zip,
    [`${prefix}Country`]: geo.Country
  }
}

function randomSid (prefix: 'AC' | 'CA' | 'MZ'): string {
  return prefix + randomBytes(16).toString('hex')
}

/** A webhook request as Twilio's proxy sends it: fresh connection, form body, its headers. */
function sendHttp (url: URL, method: 'GET' | 'POST', body: string | null, signature: string | null): Promise<{ status: number, body: string }> {
  const headers: OutgoingHttpHeaders = {
    'User-Agent': 'TwilioProxy/1.1',
    Accept: '*/*',
    'I-Twilio-Idempotency-Token': randomUUID(),
    'X-Home-Region': 'us1'
  }
  if (body !== null) {
    headers['Content-Type'] = 'application/x-www-form-urlencoded; charset=UTF-8'
    headers['Content-Length'] = Buffer.byteLength(body)
  }
  if (signature !== null) headers['X-Twilio-Signature'] = signature
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const request = send(url, { method, headers, agent: false, timeout: HTTP_TIMEOUT_MS }, (response: IncomingMessage) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      response.on('error', reject)
    })
    request.on('timeout', () => request.destroy(new Error(`Twilio simulator: no answer from ${url.pathname} within ${HTTP_TIMEOUT_MS} ms`)))
    request.on('error', reject)
    request.end(body ?? undefined)
  })
}
