import { performance } from 'node:perf_hooks'
import type { CoreLogger } from '../log.ts'
import type { SessionOptions } from '../assemblyai/protocol.ts'
import { TrackAligner } from '../audio/aligner.ts'
import type { PushResult } from '../audio/aligner.ts'
import type { Track } from './types.ts'
import { Chunker, sharedChunkPool } from '../audio/chunker.ts'
import { TWILIO_SAMPLE_RATE, msToSamples, pcm16BytesToSamples, samplesToMs, samplesToSeconds } from '../audio/sample-rate.ts'
import type { UpstreamError } from '../errors.ts'
import { mapPartial } from '../live/partials.ts'
import type { PartialTurn } from '../live/partials.ts'
import type { Metrics } from '../metrics.ts'
import { serializeEvent } from '../webhooks/events.ts'
import type { EventIds, EventSink, OutgoingEvent } from '../webhooks/events.ts'
import { TurnAssembler } from './turns.ts'
import { UpstreamLink } from './upstream-link.ts'
import type { ReconnectPolicy } from './upstream-link.ts'
import { WordRoles } from './word-roles.ts'

export type EndReason = 'completed' | 'stream_error' | 'transcription_failed' | 'shutdown' | 'handed_off'

/** Which part of a call a stream carries: segment 1 from the TwiML, 2, 3, … after each handoff. */
export interface Segment {
  number: number
  previousStreamSid: string | null
  /** Where the stream's media.timestamp 0 lies on the call timeline, ms. */
  offsetMs: number
}

const FIRST_SEGMENT: Segment = { number: 1, previousStreamSid: null, offsetMs: 0 }

/**
 * Both tracks count as quiet below this mean square (RMS 300 of int16, about −41 dBFS): far under
 * speech, above the line noise of a quiet phone line.
 */
const QUIET_MEAN_SQUARE = 300 * 300

/** What the Twilio `start` message established about this stream. */
export interface CallIdentity {
  callSid: string
  streamSid: string
  accountSid: string
  tracks: Track[]
  /** `<Parameter>`s of the stream without the token and the keyterms: PHI-grade, never logged. */
  customParameters: Record<string, string>
  /** The stream's own `keyterms` `<Parameter>` as received (a handoff passes it on), or null. */
  keyterms?: string | null | undefined
}

export interface CallSessionOptions {
  identity: CallIdentity
  /** AssemblyAI session settings for this call (keyterms already merged and bounded). */
  upstream: SessionOptions
  /** 50–1000 ms of audio per upstream frame. */
  chunkMs: number
  sink: EventSink
  metrics: Metrics
  /** The call's child logger (callSid, streamSid bound). */
  logger: CoreLogger
  /** How long the upstream may take to return its last turns after `Terminate`, ms. Default 10000. */
  terminateTimeoutMs?: number | undefined
  reconnect?: ReconnectPolicy | undefined
  /**
   * The stream's segment (default: segment 1 at offset 0). A later segment holds its events until
   * `releaseFrom(cutMs)` says where the previous stream stopped publishing.
   */
  segment?: Segment | undefined
  /** Called once when the call has ended and its `call.ended` is durable. */
  onEnded: (session: CallSession, reason: EndReason) => void
}

const LAG_RING = 512

/**
 * One Twilio media stream, from `start` to `call.ended`: decodes and aligns the two tracks, sends the
 * mix upstream in exact chunks, turns final Turns into events, and ends exactly once.
 */
export class CallSession {
  readonly identity: CallIdentity
  readonly startedAt: Date
  readonly #options: CallSessionOptions
  readonly #metrics: Metrics
  readonly #logger: CoreLogger
  readonly #aligner: TrackAligner
  readonly #chunker: Chunker
  readonly #link: UpstreamLink
  readonly #turns: TurnAssembler
  #sequence = 0
  #ended: Promise<void> | null = null
  #endReason: EndReason | null = null
  readonly segment: Segment
  /** A later segment's events while the cut is unknown; null once released (and always for segment 1). */
  #held: Array<() => void> | null = null
  /** Words kept: B from the cut on, A up to it. */
  #keep: ((startMs: number, endMs: number) => boolean) | undefined = undefined
  #nextStreamSid: string | null = null
  /** Stream-clock end of the newest media frame, ms, and when it arrived (performance.now()). */
  #lastMediaEndMs = 0
  /**
   * The smallest (arrival − frame end) seen, ms: performance.now() at this stream's media.timestamp 0
   * plus the fastest delivery. Frames can arrive late (a busy event loop, a congested path), never
   * early, so the minimum is the best mapping of the stream's clock onto this process's.
   */
  #clockSkewMs = Number.POSITIVE_INFINITY
  /** Call-timeline ms of the first media frame; null if the stream ends without one. */
  readonly firstAudioMs: Promise<number | null>
  #resolveFirstAudio: ((ms: number | null) => void) | null = null

  /** performance.now() of the frame being handled, for bridge latency and transcript lag. */
  #frameReceivedAt = 0
  #sendingFromFrame = false
  /** Ring of (chunk end sample, receipt time of the frame that completed it), for transcript lag. */
  readonly #lagEnd = new Float64Array(LAG_RING)
  readonly #lagAt = new Float64Array(LAG_RING)
  #lagNext = 0

  // Counters batched off the hot path; flushMetrics() moves them to prom-client.
  #mediaMessages = 0
  readonly #flushed = { inboundReceived: 0, outboundReceived: 0, inboundGap: 0, outboundGap: 0 }

  constructor (options: CallSessionOptions) {
    this.#options = options
    this.identity = options.identity
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.startedAt = new Date()
    // Chunk buffers are reused across calls: the link hands each back once no replay or socket needs it.
    const chunkPool = Number.isInteger(options.chunkMs) && options.chunkMs > 0 ? sharedChunkPool(msToSamples(options.chunkMs) * 2) : undefined
    this.#chunker = new Chunker(options.chunkMs, (chunk, startSample) => this.#onChunk(chunk, startSample), TWILIO_SAMPLE_RATE, chunkPool ?? null)
    this.#aligner = new TrackAligner({
      tracks: options.identity.tracks,
      sampleRate: TWILIO_SAMPLE_RATE,
      // The mix is written straight into the chunk being filled: no scratch array and no copy.
      output: this.#chunker
    })
    this.segment = options.segment ?? FIRST_SEGMENT
    this.firstAudioMs = new Promise((resolve) => { this.#resolveFirstAudio = resolve })
    if (this.segment.number > 1) this.#held = []
    this.#turns = new TurnAssembler(this.#aligner.energy, {}, this.segment.offsetMs)
    this.#link = new UpstreamLink({
      session: options.upstream,
      metrics: options.metrics,
      logger: options.logger,
      reconnect: options.reconnect,
      onTurn: (turn, sessionId, offsetSamples) => this.#onTurn(turn, sessionId, offsetSamples),
      onRevision: (revision, sessionId) => this.#turns.applyRevision(revision, sessionId),
      onFailed: (error) => this.#onUpstreamFailed(error),
      chunkPool
    })
  }

  get ended (): boolean { return this.#ended !== null }

  /** Whether a later segment still waits for its cut (its events held back). */
  get holding (): boolean { return this.#held !== null }

  /**
   * The call-timeline position of the audio arriving now, ms: the newest frame's end plus the time
   * since it came (bounded, so a stalled stream does not run ahead).
   */
  get timelineNowMs (): number {
    // Never behind what has arrived; otherwise the stream's clock read off this process's clock,
    // which a backlog of late frames does not hold back.
    const streamNowMs = this.#clockSkewMs === Number.POSITIVE_INFINITY ? this.#lastMediaEndMs : Math.max(this.#lastMediaEndMs, performance.now() - this.#clockSkewMs)
    return Math.round(this.segment.offsetMs + streamNowMs)
  }

  /**
   * Where both tracks have been quiet for the last `windowMs` of mixed audio: that moment on the call
   * timeline, ms; null while someone speaks (or before there is enough audio).
   */
  quietMomentMs (windowMs: number): number | null {
    const endMs = samplesToMs(this.#aligner.endSample)
    const startMs = samplesToMs(this.#aligner.startSample ?? this.#aligner.endSample)
    if (endMs - startMs < windowMs) return null
    for (const track of ['inbound', 'outbound'] as const) {
      if (!this.identity.tracks.includes(track)) continue
      const meanSquare = this.#aligner.energy[track].meanSquare(endMs - windowMs, endMs)
      if (meanSquare === null || meanSquare >= QUIET_MEAN_SQUARE) return null
    }
    return Math.round(this.segment.offsetMs + endMs)
  }

  /**
   * A later segment learns the cut: publishes its held `call.started`, then only words that start at
   * or after `cutMs` (call timeline).
   */
  releaseFrom (cutMs: number): void {
    const held = this.#held
    if (held === null) return
    this.#held = null
    this.#keep = (startMs) => startMs >= cutMs
    for (const publish of held) publish()
  }

  /**
   * The old side of a handoff: publishes only words that end at or before `cutMs`, then ends the
   * stream with reason `handed_off` and the stream the call continues on.
   */
  handOff (cutMs: number, nextStreamSid: string): Promise<void> {
    this.markHandOff(cutMs, nextStreamSid)
    return this.end('handed_off')
  }

  /**
   * Sets the cut and the next stream without ending yet: Twilio's `stop` (or the stream-stopped
   * callback) that follows stopping this stream then ends it as `handed_off`, whichever comes first.
   */
  markHandOff (cutMs: number, nextStreamSid: string): void {
    this.#keep = (_startMs, endMs) => endMs <= cutMs
    this.#nextStreamSid = nextStreamSid
  }

  /** Publishes `call.started` and opens the upstream session. */
  start (): void {
    const { identity, upstream } = this.#options
    const segment = this.segment
    this.#later(() => this.#publish(serializeEvent('call.started', {
      ...this.#nextIds(),
      account_sid: identity.accountSid,
      started_at: this.startedAt.toISOString(),
      tracks: identity.tracks,
      custom_parameters: identity.customParameters,
      segment: segment.number,
      previous_stream_sid: segment.previousStreamSid,
      offset_ms: segment.offsetMs,
      transcription: { speech_model: upstream.speechModel, domain: upstream.domain, speaker_labels: upstream.speakerLabels, sample_rate: upstream.sampleRate }
    })))
    this.#link.start()
  }

  /** Runs `publish` now, or once the cut is known while a later segment holds its events. */
  #later (publish: () => void): void {
    if (this.#held === null) publish()
    else this.#held.push(publish)
  }

  /**
   * Hot path, ~100 times a second: one validated media frame. Returns the aligner's verdict so the
   * caller can count invalid timestamps.
   */
  handleMedia (track: Track, timestampMs: number, payload: Uint8Array): PushResult {
    if (this.#ended !== null) return 'ok'
    this.#mediaMessages++
    this.#frameReceivedAt = performance.now()
    const frameEndMs = timestampMs + samplesToMs(payload.length)
    if (frameEndMs > this.#lastMediaEndMs) this.#lastMediaEndMs = frameEndMs
    const skewMs = this.#frameReceivedAt - frameEndMs
    if (skewMs < this.#clockSkewMs) this.#clockSkewMs = skewMs
    if (this.#resolveFirstAudio !== null) {
      this.#resolveFirstAudio(Math.round(this.segment.offsetMs + timestampMs))
      this.#resolveFirstAudio = null
    }
    this.#sendingFromFrame = true
    const result = this.#aligner.push(track, timestampMs, payload)
    this.#sendingFromFrame = false
    return result
  }

  /**
   * Ends the call once, whatever asks first (`stop`, a socket close, a status callback, the drain, a
   * failed upstream): flushes the audio, collects the last turns, publishes `call.ended`.
   */
  end (reason: EndReason): Promise<void> {
    // Twilio's `stop` (or stream-stopped) after a handoff's cut is the end of a handed-off stream.
    if (reason === 'completed' && this.#nextStreamSid !== null) reason = 'handed_off'
    this.#ended ??= this.#finish(reason)
    return this.#ended
  }

  async #finish (reason: EndReason): Promise<void> {
    this.#endReason = reason
    this.#resolveFirstAudio?.(null)
    this.#resolveFirstAudio = null
    try {
      if (reason !== 'transcription_failed') {
        this.#aligner.flush()
        this.#chunker.flush(50)
        await this.#link.finish(this.#options.terminateTimeoutMs ?? 10000)
      }
    } catch (error) {
      this.#logger.error({ err: error }, 'upstream did not finish cleanly')
    } finally {
      this.#link.close()
    }
    const endedAt = new Date()
    if (this.#held !== null) {
      // A later segment that never learned its cut: the handoff did not happen, and the call's
      // words are the previous stream's to publish. Nothing of this stream is.
      this.#held = null
      this.flushMetrics()
      this.#logger.warn({ reason, segment: this.segment.number }, 'handoff abandoned: this stream ended before its cut was known; nothing published')
      this.#options.onEnded(this, reason)
      return
    }
    const audioMs = Math.round(this.segment.offsetMs + samplesToMs(this.#aligner.endSample))
    this.#publish(serializeEvent('call.ended', {
      ...this.#nextIds(),
      reason,
      next_stream_sid: this.#nextStreamSid,
      started_at: this.startedAt.toISOString(),
      ended_at: endedAt.toISOString(),
      audio_ms: audioMs,
      turn_count: this.#turns.count,
      transcript: this.#turns.transcript,
      upstream_sessions: this.#link.sessions
    }))
    this.flushMetrics()
    const durationSeconds = (endedAt.getTime() - this.startedAt.getTime()) / 1000
    this.#metrics.callsTotal.inc({ outcome: reason })
    // A handed-off stream is part of a call, not a call: its length is not a call's duration.
    if (reason !== 'handed_off') this.#metrics.callDuration.observe(durationSeconds)
    this.#logger.info({ reason, segment: this.segment.number, turns: this.#turns.count, audioMs, durationMs: Math.round(durationSeconds * 1000), droppedUpstreamSamples: this.#link.droppedSamples }, 'call ended')
    this.#options.onEnded(this, reason)
  }

  /**
   * Live view: this call's partial turns, on the call timeline with a role, go to `listener` while
   * it is set; null stops them (and their parsing). Partials never reach the sink or a log line.
   */
  watchPartials (listener: ((partial: PartialTurn) => void) | null): void {
    if (listener === null) {
      this.#link.setPartialListener(null)
      return
    }
    const roles = new WordRoles(this.#aligner.energy)
    this.#link.setPartialListener((turn, offsetSamples) => {
      if (this.#ended !== null) return
      const partial = mapPartial(turn, offsetSamples, roles)
      if (partial !== null) listener(partial)
    })
  }

  /** Moves the batched counters to prom-client; called periodically and at the end. */
  flushMetrics (): void {
    this.#link.flushMetrics()
    const metrics = this.#metrics
    if (this.#mediaMessages > 0) {
      metrics.twilioMessages.inc({ event: 'media' }, this.#mediaMessages)
      this.#mediaMessages = 0
    }
    const stats = this.#aligner.stats
    const flushed = this.#flushed
    const inboundReceived = stats.inbound.receivedSamples - flushed.inboundReceived
    const outboundReceived = stats.outbound.receivedSamples - flushed.outboundReceived
    const inboundGap = stats.inbound.gapSamples - flushed.inboundGap
    const outboundGap = stats.outbound.gapSamples - flushed.outboundGap
    if (inboundReceived > 0) metrics.audioReceived.inc({ track: 'inbound' }, samplesToSeconds(inboundReceived))
    if (outboundReceived > 0) metrics.audioReceived.inc({ track: 'outbound' }, samplesToSeconds(outboundReceived))
    if (inboundGap > 0) metrics.audioGap.inc({ track: 'inbound' }, samplesToSeconds(inboundGap))
    if (outboundGap > 0) metrics.audioGap.inc({ track: 'outbound' }, samplesToSeconds(outboundGap))
    flushed.inboundReceived = stats.inbound.receivedSamples
    flushed.outboundReceived = stats.outbound.receivedSamples
    flushed.inboundGap = stats.inbound.gapSamples
    flushed.outboundGap = stats.outbound.gapSamples
  }

  #onChunk (chunk: Buffer, outputSample: number): void {
    // The chunker counts from its first sample; the call timeline starts at stream start, and the
    // mix begins where the first frame's media.timestamp puts it.
    const startSample = outputSample + (this.#aligner.startSample ?? 0)
    const endSample = startSample + pcm16BytesToSamples(chunk.length)
    const receivedAt = this.#sendingFromFrame ? this.#frameReceivedAt : performance.now()
    const slot = this.#lagNext++ % LAG_RING
    this.#lagEnd[slot] = endSample
    this.#lagAt[slot] = receivedAt
    const sent = this.#link.send(chunk, startSample)
    if (sent && this.#sendingFromFrame) {
      this.#metrics.bridgeLatency.observe((performance.now() - this.#frameReceivedAt) / 1000)
    }
  }

  #onTurn (turn: Parameters<TurnAssembler['accept']>[0], sessionId: string, offsetSamples: number): void {
    if (this.#held !== null) {
      this.#held.push(() => this.#onTurn(turn, sessionId, offsetSamples))
      return
    }
    if (this.#endReason === 'transcription_failed') return
    // One upstream turn can become several published turns, one per role run of its words; a
    // handoff's cut keeps only the words on this stream's side of it.
    const parts = this.#turns.accept(turn, sessionId, offsetSamples, this.#keep)
    if (parts.length === 0) return
    const endMs = parts.reduce((end, data) => Math.max(end, data.end_ms), 0)
    const ownEndSample = msToSamples(endMs - this.segment.offsetMs)
    this.#link.markFinal(ownEndSample)
    this.#observeLag(ownEndSample)
    for (const data of parts) {
      this.#metrics.turnsTotal.inc({ role: data.role })
      this.#publish(serializeEvent('transcript.turn', { ...this.#nextIds(), ...data }))
      this.#logger.debug({ turnIndex: data.turn_index, role: data.role, part: data.upstream.part, words: data.words.length, startMs: data.start_ms, endMs: data.end_ms, pii: { text: data.text } }, 'turn')
    }
  }

  #observeLag (endSample: number): void {
    const newest = this.#lagNext - 1
    for (let i = Math.max(0, this.#lagNext - LAG_RING); i <= newest; i++) {
      const slot = i % LAG_RING
      if ((this.#lagEnd[slot] as number) >= endSample) {
        this.#metrics.transcriptLag.observe((performance.now() - (this.#lagAt[slot] as number)) / 1000)
        return
      }
    }
  }

  #onUpstreamFailed (error: UpstreamError): void {
    this.#logger.error({ code: error.closeCode, httpStatus: error.httpStatus }, 'transcription failed for this call')
    void this.end('transcription_failed')
  }

  /** The ids that start the next event's data; each call takes the next sequence number. */
  #nextIds (): EventIds {
    const { identity } = this.#options
    this.#sequence++
    return { call_sid: identity.callSid, stream_sid: identity.streamSid, sequence: this.#sequence }
  }

  #publish (event: OutgoingEvent): void {
    try {
      this.#options.sink.publish(event)
    } catch (error) {
      // The outbox could not persist the event (disk full, database closed): nothing else can keep
      // it, so say so loudly with the ids an operator needs to find the call.
      this.#logger.error({ err: error, type: event.type, sequence: event.sequence }, 'event could not be stored')
    }
  }
}
