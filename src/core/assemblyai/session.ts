import WebSocket from 'ws'
import type { CoreLogger } from '../log.ts'
import { UpstreamError } from '../errors.ts'
import { buildSessionUrl, classifyClose, isPartialTurnFrame, parseServerMessage } from './protocol.ts'
import type { Begin, ClientMessage, SessionOptions, SpeakerRevision, SpeechStarted, Termination, Turn, Warning } from './protocol.ts'

function zeroMask (mask: Buffer): void {
  mask.fill(0)
}

export interface SessionClosed {
  /** WebSocket close code; 1006 when the socket ended without a close frame (either side). */
  code: number
  /** Null after a requested end (`terminate`, `close`); otherwise why the session ended. */
  error: UpstreamError | null
  /** Present when the server confirmed a `Terminate`. */
  termination: Termination | null
}

export interface SessionEvents {
  begin: [Begin]
  speechStarted: [SpeechStarted]
  /** A non-final Turn: it replaces whatever the previous one of its `turn_order` said. */
  partial: [Turn]
  /** A final Turn (`end_of_turn === true`, non-empty transcript), exactly once per `turn_order`. */
  turn: [Turn]
  speakerRevision: [SpeakerRevision]
  warning: [Warning]
  /** Exactly once per session whose `connect()` was called, failed connects included. */
  closed: [SessionClosed]
}

type Listener<E extends keyof SessionEvents> = (...args: SessionEvents[E]) => void
type AnyListener = (...args: unknown[]) => void

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000
// A server that sends an Error frame is expected to close at once; this bounds waiting for it.
const ERROR_CLOSE_GRACE_MS = 2_000
// Non-final Turns are most of what the upstream sends. While nobody listens for them (no live viewer
// of the call) a cheap test skips them before JSON.parse. Inside a JSON string a quote is escaped, so
// this cannot match transcript text.
const NON_FINAL_TURN = /"end_of_turn"\s*:\s*false/
// SpeakerRevision at the end of a long call lists many turns; far above that, a frame is a fault.
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024

/**
 * One AssemblyAI v3 streaming session over `ws`. It does not reconnect: the owner decides from the
 * `closed` event's error (`retryable`) whether to open a new session.
 */
export class AssemblyAiSession {
  readonly #options: SessionOptions
  readonly #logger: CoreLogger | null
  readonly #listeners = new Map<keyof SessionEvents, Array<{ fn: AnyListener, once: boolean }>>()
  readonly #finalized = new Set<number>()
  #ws: WebSocket | null = null
  #begin: Begin | null = null
  #connecting: { resolve: (begin: Begin) => void, reject: (error: UpstreamError) => void } | null = null
  #connectTimer: NodeJS.Timeout | null = null
  #errorTimer: NodeJS.Timeout | null = null
  #terminateTimer: NodeJS.Timeout | null = null
  #terminating: Promise<Termination | null> | null = null
  #frameError: UpstreamError | null = null
  #httpStatus: number | null = null
  #socketError: Error | null = null
  #termination: Termination | null = null
  #requestedEnd = false
  #started = false
  #closed = false

  /**
   * @param logger receives listener exceptions, the Terminate-timeout warning and lifecycle debug
   *   lines (ids and codes only).
   */
  constructor (options: SessionOptions, logger: CoreLogger | null = null) {
    this.#options = options
    this.#logger = logger
  }

  get id (): string | null {
    return this.#begin?.id ?? null
  }

  /** Unix seconds from `Begin.expires_at`: the server ends the session with 3008 then. */
  get expiresAt (): number | null {
    return this.#begin?.expires_at ?? null
  }

  /** Bytes queued in the socket and not yet written: the backpressure signal. */
  get bufferedAmount (): number {
    return this.#ws?.bufferedAmount ?? 0
  }

  /** Resolves on `Begin`; rejects with a classified UpstreamError. Audio may flow before it resolves. */
  connect (): Promise<Begin> {
    if (this.#started || this.#closed) return Promise.reject(new UpstreamError({ closeCode: 'network' }, 'AssemblyAI session: connect() may be called once per session, before close(); create a new session', false))
    this.#started = true
    return new Promise<Begin>((resolve, reject) => {
      this.#connecting = { resolve, reject }
      let ws: WebSocket
      try {
        ws = new WebSocket(buildSessionUrl(this.#options), {
          headers: { Authorization: this.#options.apiKey },
          perMessageDeflate: false,
          maxPayload: MAX_MESSAGE_BYTES,
          // RFC 6455 masking protects browser-side intermediaries from script-chosen bytes; between
          // two servers it only costs a copy of every audio frame. ws skips the XOR for a zero key.
          generateMask: zeroMask
        })
      } catch (err) {
        this.#finish(1006, new UpstreamError({ closeCode: 'network' }, 'AssemblyAI session: cannot open the WebSocket; check ASSEMBLYAI_URL', false, err))
        return
      }
      this.#ws = ws
      const timeoutMs = this.#options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS
      this.#connectTimer = setTimeout(() => {
        this.#connectTimer = null
        this.#frameError ??= new UpstreamError({ closeCode: 'network' }, `AssemblyAI session: no Begin within ${timeoutMs} ms`, true)
        this.#rejectConnect(this.#frameError)
        ws.terminate()
      }, timeoutMs)
      ws.on('unexpected-response', (_req, res) => {
        // The reference documents no HTTP rejections (failures come after 101), so any non-101 is
        // judged by its status: throttling and server errors may pass, the rest will not.
        this.#httpStatus = res.statusCode ?? 0
        res.resume()
        ws.terminate()
      })
      ws.on('error', (err) => { this.#socketError ??= err })
      ws.on('message', (data, isBinary) => {
        if (isBinary) return
        // Partials are most of what the server sends; unless someone listens for them they are
        // dropped before any UTF-8 decoding or JSON.parse.
        if (Buffer.isBuffer(data) && !this.#hasListeners('partial') && isPartialTurnFrame(data)) return
        this.#onText(String(data))
      })
      ws.on('close', (code, reason) => { this.#onClose(code, reason.toString('utf8')) })
    })
  }

  /** Sends one binary frame (50–1000 ms of audio). False, and nothing sent, unless the socket is open. */
  sendAudio (chunk: Buffer): boolean {
    const ws = this.#ws
    if (ws === null || ws.readyState !== WebSocket.OPEN || this.#terminating !== null) return false
    ws.send(chunk)
    return true
  }

  /** Ends the current turn now; its final Turn follows. False unless the socket is open. */
  forceEndpoint (): boolean {
    return this.#sendJson({ type: 'ForceEndpoint' })
  }

  /**
   * Graceful end: the server flushes the last Turns and a SpeakerRevision, sends Termination and
   * closes with 1000. After `timeoutMs` the socket is destroyed. Resolves with the Termination, or
   * null when there was none.
   */
  terminate (timeoutMs: number): Promise<Termination | null> {
    if (this.#terminating !== null) return this.#terminating
    this.#terminating = new Promise<Termination | null>((resolve) => {
      if (this.#closed || this.#ws === null) {
        resolve(this.#termination)
        return
      }
      this.once('closed', ({ termination }) => { resolve(termination) })
      this.#requestedEnd = true
      if (!this.#sendJson({ type: 'Terminate' })) {
        this.close()
        return
      }
      this.#terminateTimer = setTimeout(() => {
        this.#terminateTimer = null
        this.#logger?.warn({ upstreamSessionId: this.id, timeoutMs }, 'AssemblyAI session did not end after Terminate; closing it')
        this.close()
      }, timeoutMs)
    })
    return this.#terminating
  }

  /** Abrupt and idempotent: destroys the socket; `closed` is emitted before this returns. */
  close (): void {
    if (this.#closed) return
    this.#requestedEnd = true
    const ws = this.#ws
    if (ws === null) {
      if (this.#started) this.#finish(1006, null)
      else this.#closed = true
      return
    }
    ws.terminate()
    this.#finish(1006, null)
  }

  on<E extends keyof SessionEvents> (event: E, listener: Listener<E>): this {
    return this.#add(event, listener, false)
  }

  once<E extends keyof SessionEvents> (event: E, listener: Listener<E>): this {
    return this.#add(event, listener, true)
  }

  off<E extends keyof SessionEvents> (event: E, listener: Listener<E>): this {
    const list = this.#listeners.get(event)
    if (list !== undefined) {
      const index = list.findIndex((entry) => entry.fn === (listener as unknown))
      if (index !== -1) list.splice(index, 1)
    }
    return this
  }

  #add<E extends keyof SessionEvents> (event: E, listener: Listener<E>, once: boolean): this {
    let list = this.#listeners.get(event)
    if (list === undefined) {
      list = []
      this.#listeners.set(event, list)
    }
    list.push({ fn: listener as unknown as AnyListener, once })
    return this
  }

  #hasListeners (event: keyof SessionEvents): boolean {
    const list = this.#listeners.get(event)
    return list !== undefined && list.length > 0
  }

  #emit<E extends keyof SessionEvents> (event: E, ...args: SessionEvents[E]): void {
    const list = this.#listeners.get(event)
    if (list === undefined || list.length === 0) return
    for (const entry of [...list]) {
      if (entry.once) {
        const index = list.indexOf(entry)
        if (index !== -1) list.splice(index, 1)
      }
      try {
        entry.fn(...args)
      } catch (err) {
        // A consumer's bug must not tear down the transcription of a live call.
        this.#logger?.error({ err, event, upstreamSessionId: this.id }, 'AssemblyAI session listener threw')
      }
    }
  }

  #sendJson (message: ClientMessage): boolean {
    const ws = this.#ws
    if (ws === null || ws.readyState !== WebSocket.OPEN) return false
    ws.send(JSON.stringify(message))
    return true
  }

  #onText (text: string): void {
    if (this.#closed) return
    if (!this.#hasListeners('partial') && NON_FINAL_TURN.test(text)) return
    const message = parseServerMessage(text)
    switch (message.type) {
      case 'Begin':
        if (this.#begin !== null) return
        this.#begin = message
        this.#clearConnectTimer()
        this.#logger?.debug({ upstreamSessionId: message.id, expiresAt: message.expires_at, model: message.configuration?.model, domain: message.configuration?.domain }, 'AssemblyAI session began')
        this.#connecting?.resolve(message)
        this.#connecting = null
        this.#emit('begin', message)
        return
      case 'SpeechStarted':
        this.#emit('speechStarted', message)
        return
      case 'Turn':
        this.#onTurn(message)
        return
      case 'SpeakerRevision':
        this.#emit('speakerRevision', message)
        return
      case 'Termination':
        this.#termination = message
        return
      case 'Warning':
        this.#emit('warning', message)
        return
      case 'Error': {
        const code = message.error_code ?? 1011
        const { retryable } = classifyClose(code, message.error)
        this.#frameError = new UpstreamError({ closeCode: code }, `AssemblyAI error ${code}: ${message.error}`, retryable)
        this.#rejectConnect(this.#frameError)
        this.#errorTimer ??= setTimeout(() => {
          this.#errorTimer = null
          this.#ws?.terminate()
        }, ERROR_CLOSE_GRACE_MS)
        return
      }
      case 'Unknown':
        this.#logger?.debug({ upstreamSessionId: this.id, messageType: message.messageType }, 'AssemblyAI message ignored')
    }
  }

  #onTurn (turn: Turn): void {
    if (this.#finalized.has(turn.turn_order)) return
    if (!turn.end_of_turn) {
      this.#emit('partial', turn)
      return
    }
    // Universal-Streaming sends an empty final on Terminate; it is not a turn.
    if (turn.transcript.trim() === '') return
    this.#finalized.add(turn.turn_order)
    this.#emit('turn', turn)
  }

  #onClose (code: number, reason: string): void {
    if (this.#closed) return
    let error = this.#frameError
    // Termination is only ever sent in answer to a Terminate, so a close after it is the normal end.
    const ended = this.#requestedEnd || (code === 1000 && this.#termination !== null)
    if (error === null && !ended) {
      if (this.#httpStatus !== null) {
        const status = this.#httpStatus
        const retryable = status === 408 || status === 429 || status >= 500
        error = new UpstreamError({ httpStatus: status }, `AssemblyAI refused the WebSocket upgrade with HTTP ${status}`, retryable, this.#socketError ?? undefined)
      } else if (code === 1005 || code === 1006) {
        error = new UpstreamError({ closeCode: 'network' }, `AssemblyAI connection lost (close ${code})`, true, this.#socketError ?? undefined)
      } else {
        const { retryable } = classifyClose(code, null)
        // Without an Error frame the reason is the only text there is; it is a fixed server string.
        error = new UpstreamError({ closeCode: code }, `AssemblyAI closed the session with ${code}${reason === '' ? '' : `: ${reason}`}`, retryable)
      }
    }
    this.#finish(code, error)
  }

  #finish (code: number, error: UpstreamError | null): void {
    if (this.#closed) return
    this.#closed = true
    this.#clearConnectTimer()
    if (this.#errorTimer !== null) clearTimeout(this.#errorTimer)
    if (this.#terminateTimer !== null) clearTimeout(this.#terminateTimer)
    this.#errorTimer = null
    this.#terminateTimer = null
    this.#rejectConnect(error ?? new UpstreamError({ closeCode: 'network' }, 'AssemblyAI session closed before Begin', false))
    this.#logger?.debug({ upstreamSessionId: this.id, code, errorCode: error?.closeCode, httpStatus: error?.httpStatus, retryable: error?.retryable }, 'AssemblyAI session closed')
    this.#emit('closed', { code, error, termination: this.#termination })
  }

  #rejectConnect (error: UpstreamError): void {
    this.#clearConnectTimer()
    const connecting = this.#connecting
    this.#connecting = null
    connecting?.reject(error)
  }

  #clearConnectTimer (): void {
    if (this.#connectTimer !== null) clearTimeout(this.#connectTimer)
    this.#connectTimer = null
  }
}

export type { Begin, SpeakerRevision, SpeechStarted, Termination, Turn, Warning } from './protocol.ts'
