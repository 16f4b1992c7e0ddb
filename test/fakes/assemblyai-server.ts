import { createServer } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'

/**
 * A protocol-faithful stand-in for AssemblyAI Streaming v3, as docs/protocols.md describes it.
 * Transcription is simulated: an energy detector finds speech in the received PCM and each speech
 * segment becomes a turn with the next scripted text. Everything is paced by the audio received, never
 * by wall-clock time, so tests may stream faster than real time and stay deterministic.
 */

export interface FakeUtterance {
  text: string
  /** Diarization label for the turn ("A", "B", or a placeholder such as "UNKNOWN"). */
  speaker?: string
}

export interface FakeSpokenWord {
  text: string
  startMs: number
  endMs: number
  /** Diarization label of the word ("A", "B"). */
  speaker: string
}

/** Faults of one session (connection); "audio" times are milliseconds of audio received. */
export interface FaultPlan {
  /** Error frame + close before Begin (1011: a bare close 1011, no Error frame). */
  rejectWith?: { code: 1008 | 3009 | 1011 | 3006, error: string }
  /** Error frame + close with `code` once this much audio was received (e.g. 3005). */
  errorAfterAudioMs?: { atMs: number, code: number, error: string }
  /** Destroys the TCP socket without a close frame (the client sees 1006). */
  dropAfterAudioMs?: number
  /** 3008 "Session Expired: Maximum session duration exceeded" after this much audio (the 3 h cap). */
  sessionCapMs?: number
  /** Sends one Warning frame. */
  warningAfterAudioMs?: number
  /** Sends one frame of a message type the client does not know. */
  unknownMessageAfterAudioMs?: number
  /** Wall-clock milliseconds between the upgrade and Begin. Default 0. */
  beginDelayMs?: number
  /** Never answers Terminate (to exercise the client's bound). */
  ignoreTerminate?: boolean
}

export interface FakeAssemblyAiOptions {
  /** Accepted raw `Authorization` values (also accepted as a `token` query parameter). */
  apiKeys: string[]
  /**
   * Texts for the detected speech segments in order; beyond it "Utterance N." alternating A/B. A
   * function gives each session its own script (a replacement session after a reconnect starts in
   * the middle of the call), asked when the session's first segment opens.
   */
  script?: FakeUtterance[] | ((sessionIndex: number) => FakeUtterance[])
  /**
   * Instead of `script`: the words as they were spoken, times in ms of session audio. Each detected
   * turn carries the words whose midpoint lies in its speech, with their own times and speaker
   * labels, as an ASR aligns its words to the audio; words outside any detected speech are never
   * heard. Speakers who overlap end up in one turn, as with a real VAD, and the turn's
   * `speaker_label` is the one holding most of its words' duration.
   */
  spokenWords?: FakeSpokenWord[]
  faults?: (sessionIndex: number) => FaultPlan
  /** Partial Turns before each final. Default 1. */
  partialsPerTurn?: number
  /** On Terminate, one SpeakerRevision relabelling the first turn (with speaker_labels=true). */
  speakerRevision?: boolean
  /** RMS of int16 samples over a 20 ms block above which the block is speech. Default 400. */
  speechThreshold?: number
  /** Consecutive frames under 50 ms tolerated before 3007 (the live server judges over a window). Default 3. */
  shortFrameGrace?: number
  /** Turns longer than this many ms of audio are cut (the diarization profile's 10 s cap). Default 10000. */
  maxTurnMs?: number
  /** Keep every received byte in `FakeSession.audio`. Default true; the benchmark turns it off. */
  recordAudio?: boolean
  /** Serve wss with this PEM certificate and key (the benchmark's `--tls`). Default: plain ws. */
  tls?: { cert: string, key: string }
}

export interface FakeSession {
  index: number
  query: URLSearchParams
  headers: IncomingHttpHeaders
  /** Every audio byte received, concatenated (empty when `recordAudio` is false). */
  readonly audio: Buffer
  frameBytes: number[]
  /**
   * Arrival of each binary frame, ms on the machine's monotonic clock (`process.hrtime`), so another
   * process on the machine can compare it with its own (the benchmark's outside latency).
   */
  frameArrivals: number[]
  /** Client JSON messages, parsed (unparseable ones as their text). */
  messages: unknown[]
  /** Final Turns sent. */
  turnsSent: number
  closed: boolean
  closeCode: number | null
  id: string
}

export interface FakeAssemblyAi {
  /** ws://127.0.0.1:PORT/v3/ws (wss:// with `tls`) */
  url: string
  sessions: FakeSession[]
  close (): Promise<void>
}

export const ACCEPTED_SPEECH_MODELS = ['u3-rt-pro', 'universal-streaming-english', 'universal-streaming-multilingual', 'universal-3-5-pro', 'universal-3-6-pro']
const ACCEPTED_ENCODINGS = ['pcm_s16le', 'pcm_mulaw']
const CLOSE_REASON = 'See Error message for details'
const BLOCK_MS = 20
const PARTIAL_INTERVAL_MS = 500
const MAX_PROMPT_CHARS = 1750

class RecordedSession implements FakeSession {
  index: number
  query: URLSearchParams
  headers: IncomingHttpHeaders
  frameBytes: number[] = []
  frameArrivals: number[] = []
  messages: unknown[] = []
  turnsSent = 0
  closed = false
  closeCode: number | null = null
  id = randomUUID()
  readonly chunks: Buffer[] = []
  #audio: Buffer | null = null

  constructor (index: number, query: URLSearchParams, headers: IncomingHttpHeaders) {
    this.index = index
    this.query = query
    this.headers = headers
  }

  get audio (): Buffer {
    if (this.#audio === null || this.#audio.length !== this.chunks.reduce((sum, chunk) => sum + chunk.length, 0)) {
      this.#audio = Buffer.concat(this.chunks)
    }
    return this.#audio
  }
}

interface Config {
  speechModel: string
  sampleRate: number
  encoding: string
  speakerLabels: boolean
  domain: string | null
  minTurnSilenceMs: number
  maxTurnSilenceMs: number
}

class ValidationError extends Error {}

function parseBool (name: string, value: string | null): boolean {
  if (value === null) return false
  if (value === 'true' || value === 'True') return true
  if (value === 'false' || value === 'False') return false
  throw new ValidationError(`Invalid '${name}': Input should be a valid boolean`)
}

function parseInteger (name: string, value: string, min: number, max: number): number {
  const number = Number(value)
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(number)) throw new ValidationError(`Invalid '${name}': Input should be a valid integer`)
  if (number < min || number > max) throw new ValidationError(`Invalid '${name}': Input should be between ${min} and ${max}`)
  return number
}

function validate (query: URLSearchParams): Config {
  const speechModel = query.get('speech_model')
  if (speechModel === null || !ACCEPTED_SPEECH_MODELS.includes(speechModel)) {
    throw new ValidationError(`Invalid 'speech_model': Input should be ${ACCEPTED_SPEECH_MODELS.map((m) => `'${m}'`).join(', ')}`)
  }
  const rateText = query.get('sample_rate') ?? '16000'
  const sampleRate = Number(rateText)
  if (!/^\d+$/.test(rateText)) throw new ValidationError("Invalid 'sample_rate': Input should be a valid integer")
  if (sampleRate < 8000) throw new ValidationError('sample_rate must be at least 8,000 Hz')
  if (sampleRate > 96000) throw new ValidationError('sample_rate must be at most 96,000 Hz')
  const encoding = query.get('encoding') ?? 'pcm_s16le'
  if (!ACCEPTED_ENCODINGS.includes(encoding)) throw new ValidationError(`Invalid 'encoding': Input should be ${ACCEPTED_ENCODINGS.map((e) => `'${e}'`).join(', ')}`)
  const speakerLabels = parseBool('speaker_labels', query.get('speaker_labels'))
  const maxSpeakers = query.get('max_speakers')
  if (maxSpeakers !== null) parseInteger('max_speakers', maxSpeakers, 1, 10)
  const domain = query.get('domain')
  if (domain !== null && domain !== 'medical-v1') throw new ValidationError("Invalid 'domain': Input should be 'medical-v1'")
  const keyterms = query.get('keyterms_prompt')
  if (keyterms !== null) {
    let terms: unknown
    try {
      terms = JSON.parse(keyterms)
    } catch {
      throw new ValidationError("Invalid 'keyterms_prompt': Input should be a valid JSON array")
    }
    if (!Array.isArray(terms) || !terms.every((term) => typeof term === 'string')) throw new ValidationError("Invalid 'keyterms_prompt': Input should be a valid list of strings")
    if (terms.length > 100) throw new ValidationError("Invalid 'keyterms_prompt': List should have at most 100 items")
  }
  const clampSilence = (value: number): number => Math.min(10_000, Math.max(50, value))
  const minText = query.get('min_turn_silence')
  const maxText = query.get('max_turn_silence')
  return {
    speechModel,
    sampleRate,
    encoding,
    speakerLabels,
    domain,
    minTurnSilenceMs: minText === null ? 100 : clampSilence(parseInteger('min_turn_silence', minText, 0, 1_000_000)),
    maxTurnSilenceMs: maxText === null ? 1000 : parseInteger('max_turn_silence', maxText, 0, 1_000_000)
  }
}

function mulawToLinear (byte: number): number {
  const u = ~byte & 0xff
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4)
  return (u & 0x80) !== 0 ? 0x84 - t : t - 0x84
}

interface Segment {
  turnOrder: number
  text: string
  speaker: string
  startMs: number
  lastSpeechEndMs: number
  partialsSent: number
}

interface SentFinal {
  turnOrder: number
  speaker: string
  words: Array<Record<string, unknown>>
}

/** The speaker holding most of the words' duration. */
function dominantSpeaker (words: Array<Record<string, unknown>>): string | null {
  const totals = new Map<string, number>()
  for (const word of words) {
    if (typeof word.speaker !== 'string') continue
    totals.set(word.speaker, (totals.get(word.speaker) ?? 0) + (word.end as number) - (word.start as number))
  }
  let best: string | null = null
  for (const [speaker, ms] of totals) if (best === null || ms > totals.get(best)!) best = speaker
  return best
}

/** One connection's protocol state. */
class FakeConnection {
  readonly #ws: WebSocket
  readonly #session: RecordedSession
  readonly #options: FakeAssemblyAiOptions
  #script: FakeUtterance[] | null = null
  readonly #faults: FaultPlan
  readonly #config: Config
  readonly #startedAt = performance.now()
  readonly #samplesPerBlock: number
  readonly #bytesPerMs: number
  readonly #threshold: number
  #audioBytes = 0
  #blockSumSquares = 0
  #blockSamples = 0
  #blockIndex = 0
  #shortFrames = 0
  #segment: Segment | null = null
  #nextTurnOrder = 0
  /** `spokenWords` in order of their midpoints, and the first one no turn has taken yet. */
  readonly #spoken: FakeSpokenWord[] | null
  #nextSpoken = 0
  #firstFinal: SentFinal | null = null
  #ended = false
  readonly #firedFaults = new Set<string>()

  constructor (ws: WebSocket, session: RecordedSession, options: FakeAssemblyAiOptions, faults: FaultPlan, config: Config) {
    this.#ws = ws
    this.#session = session
    this.#options = options
    this.#faults = faults
    this.#config = config
    this.#samplesPerBlock = config.sampleRate * BLOCK_MS / 1000
    this.#bytesPerMs = config.sampleRate * (config.encoding === 'pcm_mulaw' ? 1 : 2) / 1000
    this.#threshold = options.speechThreshold ?? 400
    this.#spoken = options.spokenWords === undefined ? null : [...options.spokenWords].sort((a, b) => (a.startMs + a.endMs) - (b.startMs + b.endMs))
  }

  begin (): void {
    if (this.#ended) return
    this.#send({
      type: 'Begin',
      id: this.#session.id,
      expires_at: Math.floor(Date.now() / 1000) + 10_800,
      configuration: {
        model: this.#config.speechModel,
        mode: 'balanced',
        api_version: typeof this.#session.headers['assemblyai-version'] === 'string' ? this.#session.headers['assemblyai-version'] : '2025-05-12',
        speaker_labels: this.#config.speakerLabels,
        redact_pii: false,
        filter_profanity: false,
        domain: this.#config.domain,
        voice_focus: null
      }
    })
  }

  get #audioMs (): number {
    return this.#audioBytes / this.#bytesPerMs
  }

  onBinary (data: Buffer): void {
    if (this.#ended) return
    const session = this.#session
    session.frameBytes.push(data.length)
    session.frameArrivals.push(Number(process.hrtime.bigint()) / 1e6)
    if (this.#options.recordAudio !== false) session.chunks.push(data)
    const frameMs = data.length / this.#bytesPerMs
    if (frameMs > 1000 || (frameMs < 50 && ++this.#shortFrames > (this.#options.shortFrameGrace ?? 3))) {
      this.#fail(3007, `Input Duration Error: Input Duration Violation: ${frameMs.toFixed(1)} ms. Expected between 50 and 1000 ms`)
      return
    }
    if (frameMs >= 50) this.#shortFrames = 0
    this.#analyse(data)
    this.#audioBytes += data.length
    this.#checkFaults()
  }

  onText (text: string): void {
    if (this.#ended) return
    let message: unknown
    try {
      message = JSON.parse(text)
    } catch (err) {
      this.#session.messages.push(text)
      this.#fail(3006, `Invalid Message: Invalid JSON: ${(err as Error).message}`)
      return
    }
    this.#session.messages.push(message)
    const type = typeof message === 'object' && message !== null && !Array.isArray(message) ? (message as { type?: unknown }).type : undefined
    if (typeof type !== 'string') {
      this.#fail(3006, `Invalid Message: ${text.slice(0, 100)}`)
      return
    }
    const fields = message as Record<string, unknown>
    switch (type) {
      case 'Terminate':
        if (this.#faults.ignoreTerminate === true) return
        this.#terminate()
        return
      case 'ForceEndpoint':
        if (this.#segment !== null) this.#final(this.#segment, this.#segment.lastSpeechEndMs)
        return
      case 'KeepAlive':
        return
      case 'UpdateConfiguration':
        for (const name of ['prompt', 'agent_context']) {
          const value = fields[name]
          if (typeof value === 'string' && value.length > MAX_PROMPT_CHARS) {
            this.#fail(3006, `User Input Validation Error: Invalid '${name}': String should have at most ${MAX_PROMPT_CHARS} characters`)
            return
          }
        }
        if (typeof fields.min_turn_silence === 'number') this.#config.minTurnSilenceMs = Math.min(10_000, Math.max(50, fields.min_turn_silence))
        if (typeof fields.max_turn_silence === 'number') this.#config.maxTurnSilenceMs = fields.max_turn_silence
        return
      default:
        this.#fail(3006, `Invalid Message Type: ${type}`)
    }
  }

  onClose (code: number): void {
    this.#ended = true
    this.#session.closed = true
    this.#session.closeCode ??= code
  }

  #analyse (data: Buffer): void {
    const mulaw = this.#config.encoding === 'pcm_mulaw'
    const step = mulaw ? 1 : 2
    for (let offset = 0; offset + step <= data.length; offset += step) {
      const sample = mulaw ? mulawToLinear(data[offset] ?? 0xff) : data.readInt16LE(offset)
      this.#blockSumSquares += sample * sample
      if (++this.#blockSamples >= this.#samplesPerBlock) {
        const speech = Math.sqrt(this.#blockSumSquares / this.#blockSamples) >= this.#threshold
        this.#blockSumSquares = 0
        this.#blockSamples = 0
        this.#onBlock(this.#blockIndex * BLOCK_MS, speech)
        this.#blockIndex++
        if (this.#ended) return
      }
    }
  }

  #onBlock (startMs: number, speech: boolean): void {
    const endMs = startMs + BLOCK_MS
    let segment = this.#segment
    if (speech) {
      if (segment === null) {
        segment = this.#open(startMs)
        this.#segment = segment
      }
      segment.lastSpeechEndMs = endMs
      const partials = this.#options.partialsPerTurn ?? 1
      if (segment.partialsSent < partials && endMs - segment.startMs >= (segment.partialsSent + 1) * PARTIAL_INTERVAL_MS) this.#partial(segment)
      if (endMs - segment.startMs >= (this.#options.maxTurnMs ?? 10_000)) this.#final(segment, endMs)
      return
    }
    if (segment === null) return
    const silenceMs = endMs - segment.lastSpeechEndMs
    // Mar-2026 partials come in silences; whatever partials are still owed go out at the pause.
    while (segment.partialsSent < (this.#options.partialsPerTurn ?? 1)) this.#partial(segment)
    // u3-rt-pro ends a turn at min_turn_silence only when the text ends a sentence, else at max.
    const sentenceEnd = /[.?!]$/.test(this.#spoken === null ? segment.text.trim() : this.#heard(segment, segment.lastSpeechEndMs).map((word) => word.text).join(' '))
    if (silenceMs >= (sentenceEnd ? this.#config.minTurnSilenceMs : this.#config.maxTurnSilenceMs)) this.#final(segment, segment.lastSpeechEndMs)
  }

  #open (startMs: number): Segment {
    const turnOrder = this.#nextTurnOrder++
    const script = this.#options.script
    this.#script ??= typeof script === 'function' ? script(this.#session.index) : (script ?? [])
    const scripted = this.#script[turnOrder]
    return {
      turnOrder,
      text: scripted?.text ?? `Utterance ${turnOrder + 1}.`,
      speaker: scripted?.speaker ?? (turnOrder % 2 === 0 ? 'A' : 'B'),
      startMs,
      lastSpeechEndMs: startMs,
      partialsSent: 0
    }
  }

  /** In `spokenWords` mode: the words not yet in a turn whose midpoint lies in `[segment start, endMs]`. */
  #heard (segment: Segment, endMs: number): FakeSpokenWord[] {
    const spoken = this.#spoken ?? []
    while (this.#nextSpoken < spoken.length && (spoken[this.#nextSpoken]!.startMs + spoken[this.#nextSpoken]!.endMs) / 2 < segment.startMs) this.#nextSpoken++
    const heard: FakeSpokenWord[] = []
    for (let i = this.#nextSpoken; i < spoken.length && (spoken[i]!.startMs + spoken[i]!.endMs) / 2 <= endMs; i++) heard.push(spoken[i]!)
    return heard
  }

  #words (segment: Segment, endMs: number, count: number, final: boolean): Array<Record<string, unknown>> {
    if (this.#spoken !== null) {
      return this.#heard(segment, endMs).slice(0, count).map((spoken, i) => ({
        text: spoken.text,
        start: Math.round(spoken.startMs),
        end: Math.round(spoken.endMs),
        confidence: 0.85 + ((i * 7) % 15) / 100,
        word_is_final: final,
        ...(final && this.#config.speakerLabels ? { speaker: spoken.speaker, speaker_confidence: 0.9 } : {})
      }))
    }
    const texts = segment.text.trim().split(/\s+/).filter((word) => word !== '')
    const total = Math.max(texts.length, 1)
    const span = Math.max(endMs - segment.startMs, total)
    const words: Array<Record<string, unknown>> = []
    for (let i = 0; i < Math.min(count, texts.length); i++) {
      const word: Record<string, unknown> = {
        text: texts[i],
        start: Math.round(segment.startMs + span * i / total),
        end: Math.round(segment.startMs + span * (i + 1) / total),
        confidence: 0.85 + ((i * 7) % 15) / 100,
        word_is_final: final
      }
      if (final && this.#config.speakerLabels) {
        word.speaker = segment.speaker
        word.speaker_confidence = 0.9
      }
      words.push(word)
    }
    return words
  }

  #partial (segment: Segment): void {
    const partials = this.#options.partialsPerTurn ?? 1
    if (segment.partialsSent === 0) this.#send({ type: 'SpeechStarted', timestamp: segment.startMs, confidence: 0.98 })
    segment.partialsSent++
    const wordCount = segment.text.trim().split(/\s+/).length
    // Spoken words: a partial holds every word heard so far.
    const shown = this.#spoken !== null ? Number.MAX_SAFE_INTEGER : Math.max(1, Math.ceil(wordCount * segment.partialsSent / (partials + 1)))
    const words = this.#words(segment, segment.lastSpeechEndMs, shown, false)
    this.#send({
      type: 'Turn',
      turn_order: segment.turnOrder,
      turn_is_formatted: false,
      end_of_turn: false,
      transcript: words.map((word) => word.text).join(' '),
      utterance: '',
      end_of_turn_confidence: 0,
      words
    })
  }

  #final (segment: Segment, endMs: number): void {
    this.#segment = null
    if (segment.partialsSent === 0) this.#send({ type: 'SpeechStarted', timestamp: segment.startMs, confidence: 0.98 })
    const words = this.#words(segment, endMs, Number.MAX_SAFE_INTEGER, true)
    let text = segment.text.trim()
    if (this.#spoken !== null) {
      this.#nextSpoken += words.length
      text = words.map((word) => word.text).join(' ')
      segment.speaker = dominantSpeaker(words) ?? segment.speaker
    }
    const turn: Record<string, unknown> = {
      type: 'Turn',
      turn_order: segment.turnOrder,
      turn_is_formatted: true,
      end_of_turn: true,
      transcript: text,
      utterance: text,
      end_of_turn_confidence: 1,
      words
    }
    if (this.#config.speakerLabels) {
      turn.speaker_label = segment.speaker
      turn.speaker_confidence = 0.9
    }
    this.#send(turn)
    this.#session.turnsSent++
    this.#firstFinal ??= { turnOrder: segment.turnOrder, speaker: segment.speaker, words }
  }

  #terminate (): void {
    if (this.#segment !== null) this.#final(this.#segment, this.#segment.lastSpeechEndMs)
    const first = this.#firstFinal
    if (this.#options.speakerRevision === true && this.#config.speakerLabels && first !== null) {
      const label = first.speaker === 'A' ? 'B' : 'A'
      this.#send({
        type: 'SpeakerRevision',
        revisions: [{ turn_order: first.turnOrder, speaker_label: label, words: first.words.map((word) => ({ ...word, speaker: label })) }]
      })
    }
    this.#send({
      type: 'Termination',
      audio_duration_seconds: Math.round(this.#audioMs / 1000),
      session_duration_seconds: Math.round((performance.now() - this.#startedAt) / 1000)
    })
    this.#end(1000, 'Session Ended')
  }

  #checkFaults (): void {
    const faults = this.#faults
    const audioMs = this.#audioMs
    const due = (name: string, atMs: number | undefined): boolean => {
      if (atMs === undefined || audioMs < atMs || this.#firedFaults.has(name)) return false
      this.#firedFaults.add(name)
      return true
    }
    if (due('warning', faults.warningAfterAudioMs)) {
      this.#send({ type: 'Warning', warning_code: 1, warning: 'Skipped medical-v1 domain correction because the language is not supported' })
    }
    if (due('unknown', faults.unknownMessageAfterAudioMs)) {
      this.#send({ type: 'Heartbeat', total_audio_received_ms: Math.round(audioMs), total_duration_ms: Math.round(performance.now() - this.#startedAt), realtime_factor: 1 })
    }
    if (faults.errorAfterAudioMs !== undefined && due('error', faults.errorAfterAudioMs.atMs)) {
      this.#fail(faults.errorAfterAudioMs.code, faults.errorAfterAudioMs.error)
      return
    }
    if (due('cap', faults.sessionCapMs)) {
      this.#fail(3008, 'Session Expired: Maximum session duration exceeded')
      return
    }
    if (due('drop', faults.dropAfterAudioMs)) {
      this.#ended = true
      this.#ws.terminate()
    }
  }

  #fail (code: number, error: string): void {
    this.#send({ type: 'Error', error_code: code, error })
    this.#end(code, CLOSE_REASON)
  }

  #end (code: number, reason: string): void {
    this.#ended = true
    this.#session.closeCode = code
    this.#ws.close(code, reason)
  }

  #send (message: Record<string, unknown>): void {
    if (this.#ended) return
    this.#ws.send(JSON.stringify(message))
  }
}

export async function startFakeAssemblyAi (options: FakeAssemblyAiOptions): Promise<FakeAssemblyAi> {
  const sessions: RecordedSession[] = []
  const sockets = new Set<WebSocket>()
  const timers = new Set<NodeJS.Timeout>()
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
  const notFound = (_req: IncomingMessage, res: ServerResponse): void => { res.writeHead(404).end() }
  const server = options.tls === undefined ? createServer(notFound) : createTlsServer(options.tls, notFound)

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const requestUrl = new URL(req.url ?? '/', 'ws://127.0.0.1')
    if (requestUrl.pathname !== '/v3/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    // Always 101: the real server reports auth and validation failures after the upgrade.
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws)
      const session = new RecordedSession(sessions.length, requestUrl.searchParams, req.headers)
      sessions.push(session)
      accept(ws, session)
    })
  })

  function reject (ws: WebSocket, session: RecordedSession, code: number, error: string): void {
    ws.send(JSON.stringify({ type: 'Error', error_code: code, error }))
    session.closeCode = code
    ws.close(code, CLOSE_REASON)
  }

  function accept (ws: WebSocket, session: RecordedSession): void {
    ws.on('close', (code) => {
      sockets.delete(ws)
      session.closed = true
      session.closeCode ??= code
    })
    ws.on('error', () => { /* a client vanishing is normal here */ })
    const authorization = session.headers.authorization
    const token = session.query.get('token')
    if ((authorization === undefined || authorization === '') && token === null) {
      reject(ws, session, 1008, 'Unauthorized Connection: Missing Authorization header')
      return
    }
    const credential = authorization !== undefined && authorization !== '' ? authorization : token
    if (credential === null || credential.startsWith('Bearer ') || !options.apiKeys.includes(credential)) {
      reject(ws, session, 1008, 'Unauthorized Connection: Invalid API key')
      return
    }
    const faults = options.faults?.(session.index) ?? {}
    if (faults.rejectWith !== undefined) {
      if (faults.rejectWith.code === 1011) {
        session.closeCode = 1011
        ws.close(1011, faults.rejectWith.error.slice(0, 100))
      } else {
        reject(ws, session, faults.rejectWith.code, faults.rejectWith.error)
      }
      return
    }
    let config: Config
    try {
      config = validate(session.query)
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err
      reject(ws, session, 3006, `User Input Validation Error: ${err.message}`)
      return
    }
    const connection = new FakeConnection(ws, session, options, faults, config)
    ws.on('message', (data, isBinary) => {
      const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
      if (isBinary) connection.onBinary(buffer)
      else connection.onText(buffer.toString('utf8'))
    })
    ws.on('close', (code) => { connection.onClose(code) })
    const delayMs = faults.beginDelayMs ?? 0
    if (delayMs <= 0) {
      connection.begin()
      return
    }
    const timer = setTimeout(() => {
      timers.delete(timer)
      connection.begin()
    }, delayMs)
    timers.add(timer)
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => { resolve() })
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('fake AssemblyAI: no TCP address')

  return {
    url: `${options.tls === undefined ? 'ws' : 'wss'}://127.0.0.1:${address.port}/v3/ws`,
    sessions,
    async close () {
      for (const timer of timers) clearTimeout(timer)
      timers.clear()
      for (const ws of sockets) ws.terminate()
      wss.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
    }
  }
}

/** PCM16 LE mono audio the fake hears as speech: a 440 Hz tone (RMS ≈ 0.7 × amplitude). */
export function pcmTone (ms: number, sampleRate = 8000, amplitude = 3000): Buffer {
  const samples = Math.round(sampleRate * ms / 1000)
  const buffer = Buffer.alloc(samples * 2)
  for (let i = 0; i < samples; i++) buffer.writeInt16LE(Math.round(amplitude * Math.sin(2 * Math.PI * 440 * i / sampleRate)), i * 2)
  return buffer
}

/** PCM16 LE mono digital silence. */
export function pcmSilence (ms: number, sampleRate = 8000): Buffer {
  return Buffer.alloc(Math.round(sampleRate * ms / 1000) * 2)
}

/** Splits PCM16 audio into frames of `frameMs` (the last one may be shorter). */
export function pcmFrames (audio: Buffer, frameMs: number, sampleRate = 8000): Buffer[] {
  const size = Math.round(sampleRate * frameMs / 1000) * 2
  const frames: Buffer[] = []
  for (let offset = 0; offset < audio.length; offset += size) frames.push(audio.subarray(offset, offset + size))
  return frames
}
