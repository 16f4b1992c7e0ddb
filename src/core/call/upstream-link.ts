import type { CoreLogger } from '../log.ts'
import { AssemblyAiSession } from '../assemblyai/session.ts'
import type { SessionOptions } from '../assemblyai/protocol.ts'
import type { SpeakerRevision, Termination, Turn } from '../assemblyai/protocol.ts'
import { classifyClose, upstreamErrorLabel } from '../assemblyai/protocol.ts'
import { UpstreamError } from '../errors.ts'
import type { Metrics } from '../metrics.ts'
import { msToSamples, pcm16BytesToSamples, samplesToSeconds } from '../audio/sample-rate.ts'
import type { ChunkPool } from '../audio/chunker.ts'

/** ~16 s of 8 kHz PCM16: far beyond a healthy socket, well within the replay bound. */
const HIGH_WATER_BYTES = 256 * 1024

export interface ReconnectPolicy {
  /** Attempts after a retryable failure before the call's transcription is given up. Default 8. */
  maxAttempts: number
  /** First wait before reopening, in ms; doubles per attempt, with ±25 % jitter. Default 250. */
  initialDelayMs: number
  /** Cap on one wait, in ms. Default 8000. */
  maxDelayMs: number
  /** Cap on the whole outage, in ms, after which transcription is given up. Default 60000. */
  maxOutageMs: number
}

const DEFAULT_RECONNECT: ReconnectPolicy = { maxAttempts: 8, initialDelayMs: 250, maxDelayMs: 8000, maxOutageMs: 60000 }

export interface UpstreamLinkOptions {
  session: SessionOptions
  metrics: Metrics
  logger: CoreLogger
  reconnect?: ReconnectPolicy | undefined
  /**
   * Audio kept since the end of the last final turn, in ms, so a replacement session can be sent the
   * words that were in flight when the previous one failed. Default 30000.
   */
  replayMs?: number
  /** A final turn; `offsetSamples` is where this session's audio began on the call timeline. */
  onTurn: (turn: Turn, sessionId: string, offsetSamples: number) => void
  onRevision: (revision: SpeakerRevision, sessionId: string) => void
  /** Transcription for this call is over for good: a non-retryable error, or retries exhausted. */
  onFailed: (error: UpstreamError) => void
  /**
   * Where chunks go once nothing can read them again (replay no longer needs them and no socket
   * still queues them); without it they are left to the GC.
   */
  chunkPool?: ChunkPool | undefined
}

/** What `call.ended.upstream_sessions` reports for each AssemblyAI session the call used. */
export interface UpstreamSessionSummary {
  id: string | null
  audio_seconds: number
  session_seconds: number
  /**
   * Why the session failed: `code` is the close code (or the Error frame's `error_code`), 'network'
   * for a socket lost without one, or the HTTP status of a refused upgrade.
   */
  error: { code: number | 'network', message: string } | null
}

interface PendingChunk { chunk: Buffer, startSample: number, endSample: number }

interface SessionState {
  session: AssemblyAiSession
  /** Forwards this session's partials with its offset; attached only while someone watches. */
  onPartial: (turn: Turn) => void
  openedAt: number
  offsetSamples: number | null
  audioSamples: number
  summary: UpstreamSessionSummary
}

/**
 * The call's connection to AssemblyAI: one session at a time, reopened on retryable failures and on
 * the 3-hour rollover, with the audio since the last final turn replayed to the new session so no
 * word in flight is lost. Audio that cannot be sent yet waits here, within the replay bound.
 */
export class UpstreamLink {
  readonly #options: UpstreamLinkOptions
  readonly #policy: ReconnectPolicy
  readonly #replayLimitSamples: number
  readonly #chunks: PendingChunk[] = []
  /** Index into #chunks of the next chunk the current session has not been sent. */
  #nextToSend = 0
  #current: SessionState | null = null
  #open = false
  readonly #sessions: SessionState[] = []
  #attempt = 0
  #outageStartedAt: number | null = null
  #retryTimer: NodeJS.Timeout | null = null
  #finalEndSample = 0
  #droppedSamples = 0
  #closed = false
  #finishing = false
  #failed = false
  /** Audio sent since the last flushMetrics(): the counter is batched like the media path's. */
  #unflushedSentSamples = 0
  #partialListener: ((turn: Turn, offsetSamples: number) => void) | null = null

  constructor (options: UpstreamLinkOptions) {
    this.#options = options
    this.#policy = options.reconnect ?? DEFAULT_RECONNECT
    this.#replayLimitSamples = msToSamples(options.replayMs ?? 30000)
  }

  /** Opens the first session. */
  start (): void {
    this.#connect()
  }

  /** Audio that could not be kept while no session was open (beyond the replay bound). */
  get droppedSamples (): number { return this.#droppedSamples }
  get sessions (): UpstreamSessionSummary[] { return this.#sessions.map((state) => state.summary) }

  /** Queues one chunk; returns true when it went out on the socket now. */
  send (chunk: Buffer, startSample: number): boolean {
    if (this.#closed || this.#failed) return false
    this.#chunks.push({ chunk, startSample, endSample: startSample + pcm16BytesToSamples(chunk.length) })
    // Backpressure: while the socket has more than HIGH_WATER_BYTES queued, audio waits here (within
    // the replay bound) instead of piling up in ws; it goes out with the next chunk after the drain.
    if (this.#open && (this.#current?.session.bufferedAmount ?? 0) <= HIGH_WATER_BYTES) this.#flushQueue()
    else this.#trim()
    return this.#nextToSend === this.#chunks.length
  }

  /** A final turn ended at `endSample`: audio before it will never need a replay. */
  markFinal (endSample: number): void {
    if (endSample > this.#finalEndSample) this.#finalEndSample = endSample
    this.#trim()
  }

  /**
   * End of the call's audio: sends what is queued, `Terminate`s the session and waits (bounded) for
   * its last turns. A session still reconnecting gets until the deadline to come back.
   */
  async finish (timeoutMs: number): Promise<void> {
    if (this.#closed || this.#finishing) return
    this.#finishing = true
    const deadline = Date.now() + timeoutMs
    while (!this.#open && !this.#failed && !this.#closed && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    const state = this.#current
    if (state !== null && this.#open) {
      this.#flushQueue()
      const termination = await state.session.terminate(Math.max(100, deadline - Date.now()))
      this.#recordTermination(state, termination)
    }
    this.close()
  }

  /**
   * Live view: non-final Turns go to `listener` (null stops them). Without a listener the session
   * is not subscribed to partials at all, and then does not parse them.
   */
  setPartialListener (listener: ((turn: Turn, offsetSamples: number) => void) | null): void {
    const had = this.#partialListener !== null
    this.#partialListener = listener
    const state = this.#current
    if (state === null || had === (listener !== null)) return
    if (listener !== null) state.session.on('partial', state.onPartial)
    else state.session.off('partial', state.onPartial)
  }

  /** Moves the batched audio-sent counter to prom-client (the call session's periodic flush). */
  flushMetrics (): void {
    if (this.#unflushedSentSamples === 0) return
    this.#options.metrics.upstreamAudioSent.inc(samplesToSeconds(this.#unflushedSentSamples))
    this.#unflushedSentSamples = 0
  }

  /** Abrupt and idempotent: cancels retries and closes the current session. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer)
    this.#retryTimer = null
    const state = this.#current
    this.#current = null
    if (state !== null) {
      this.#finalizeSummary(state)
      state.session.close()
    }
    // The socket is closed or destroyed: nothing it still queued will be written, so every chunk
    // can go back.
    const pool = this.#options.chunkPool
    if (pool !== undefined) for (const pending of this.#chunks) pool.release(pending.chunk)
    this.#chunks.length = 0
  }

  #connect (): void {
    const { metrics, logger } = this.#options
    const session = new AssemblyAiSession(this.#options.session, logger)
    const state: SessionState = {
      session,
      onPartial: (turn) => {
        if (state.offsetSamples !== null && this.#current === state) this.#partialListener?.(turn, state.offsetSamples)
      },
      openedAt: Date.now(),
      offsetSamples: null,
      audioSamples: 0,
      summary: { id: null, audio_seconds: 0, session_seconds: 0, error: null }
    }
    this.#current = state
    this.#open = false
    this.#nextToSend = 0
    this.#sessions.push(state)
    session.on('turn', (turn) => {
      if (state.offsetSamples === null || state.summary.id === null) return
      this.#options.onTurn(turn, state.summary.id, state.offsetSamples)
    })
    if (this.#partialListener !== null) session.on('partial', state.onPartial)
    session.on('speakerRevision', (revision) => {
      if (state.summary.id !== null) this.#options.onRevision(revision, state.summary.id)
    })
    session.on('warning', (warning) => {
      logger.warn({ sessionId: state.summary.id, warningCode: warning.warning_code }, 'upstream warning')
    })
    session.on('closed', ({ code, error }) => {
      if (this.#current === state) this.#onSessionClosed(state, code, error)
    })
    session.connect().then((begin) => {
      if (this.#current !== state || this.#closed) return
      metrics.upstreamConnect.observe((Date.now() - state.openedAt) / 1000)
      metrics.upstreamSessionsActive.inc()
      state.summary.id = begin.id
      this.#open = true
      this.#attempt = 0
      this.#outageStartedAt = null
      logger.info({ sessionId: begin.id, model: begin.configuration?.model ?? null, domain: begin.configuration?.domain ?? null, expiresAt: begin.expires_at }, 'upstream session began')
      this.#flushQueue()
    }, () => {
      // The 'closed' event carries the classified error; nothing more to do here.
    })
  }

  #sendNext (): boolean {
    const state = this.#current
    const pending = this.#chunks[this.#nextToSend]
    if (state === null || pending === undefined) return false
    if (!state.session.sendAudio(pending.chunk)) return false
    if (state.offsetSamples === null) state.offsetSamples = pending.startSample
    const samples = pcm16BytesToSamples(pending.chunk.length)
    state.audioSamples += samples
    this.#unflushedSentSamples += samples
    this.#nextToSend++
    return true
  }

  #flushQueue (): void {
    while (this.#open && this.#nextToSend < this.#chunks.length) {
      if (!this.#sendNext()) break
    }
    this.#trim()
  }

  /** Drops audio that no session can need any more, and bounds what is kept. */
  #trim (): void {
    let drop = 0
    const chunks = this.#chunks
    // Sent chunks wholly before the end of the last final turn are done.
    while (drop < this.#nextToSend && (chunks[drop] as PendingChunk).endSample <= this.#finalEndSample) drop++
    const last = chunks[chunks.length - 1]
    if (last !== undefined) {
      // Past the bound, the oldest audio goes first; unsent audio that goes is counted as lost.
      while (drop < chunks.length && last.endSample - (chunks[drop] as PendingChunk).startSample > this.#replayLimitSamples) {
        if (drop >= this.#nextToSend) {
          const samples = pcm16BytesToSamples((chunks[drop] as PendingChunk).chunk.length)
          this.#droppedSamples += samples
          this.#options.metrics.upstreamAudioDropped.inc(samplesToSeconds(samples))
        }
        drop++
      }
    }
    if (drop === 0) return
    const pool = this.#options.chunkPool
    if (pool !== undefined) {
      // A chunk sent to the current session may still wait in its socket's queue, which holds the
      // newest bufferedAmount bytes sent (a TLS write completes on the next tick): a sent chunk goes
      // back only when at least that many bytes of audio were sent after it. Unsent chunks, and
      // those sent to earlier sessions (whose sockets are closed), go back at once.
      const queued = this.#current?.session.bufferedAmount ?? 0
      let left = this.#nextToSend
      for (let after = 0; left > 0 && after < queued; after += (chunks[left] as PendingChunk).chunk.length) left--
      for (let i = 0; i < drop; i++) {
        if (i < left || i >= this.#nextToSend) pool.release((chunks[i] as PendingChunk).chunk)
      }
    }
    chunks.splice(0, drop)
    this.#nextToSend = Math.max(0, this.#nextToSend - drop)
  }

  #onSessionClosed (state: SessionState, code: number, error: UpstreamError | null): void {
    const { metrics, logger } = this.#options
    if (this.#open) metrics.upstreamSessionsActive.dec()
    this.#open = false
    this.#finalizeSummary(state)
    if (this.#closed) return
    if (error === null && this.#finishing) return
    const failure = error ?? new UpstreamError({ closeCode: code }, `upstream closed with ${code}`, classifyClose(code, null).retryable)
    metrics.upstreamErrors.inc({ code: upstreamErrorLabel(failure) })
    state.summary.error = { code: failure.closeCode ?? failure.httpStatus ?? 'network', message: failure.message }
    const now = Date.now()
    this.#outageStartedAt ??= now
    const outageMs = now - this.#outageStartedAt
    if (!failure.retryable || this.#attempt >= this.#policy.maxAttempts || outageMs >= this.#policy.maxOutageMs || this.#finishing) {
      logger.error({ sessionId: state.summary.id, code: failure.closeCode, httpStatus: failure.httpStatus, retryable: failure.retryable, attempts: this.#attempt }, 'upstream session failed; transcription for this call has ended')
      this.#failed = true
      this.#current = null
      this.#options.onFailed(failure)
      return
    }
    const delay = Math.min(this.#policy.maxDelayMs, this.#policy.initialDelayMs * 2 ** this.#attempt) * (0.75 + Math.random() * 0.5)
    this.#attempt++
    metrics.upstreamReconnects.inc()
    logger.warn({ sessionId: state.summary.id, code: failure.closeCode, httpStatus: failure.httpStatus, attempt: this.#attempt, delayMs: Math.round(delay) }, 'upstream session lost; reconnecting')
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null
      if (!this.#closed) this.#connect()
    }, delay)
  }

  #recordTermination (state: SessionState, termination: Termination | null): void {
    if (termination === null) return
    state.summary.audio_seconds = termination.audio_duration_seconds
    state.summary.session_seconds = termination.session_duration_seconds
  }

  #finalizeSummary (state: SessionState): void {
    if (state.summary.session_seconds === 0) {
      state.summary.session_seconds = Math.round((Date.now() - state.openedAt) / 1000)
    }
    if (state.summary.audio_seconds === 0) {
      state.summary.audio_seconds = Math.round(samplesToSeconds(state.audioSamples))
    }
  }
}
