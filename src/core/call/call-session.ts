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

export type EndReason = 'completed' | 'stream_error' | 'transcription_failed' | 'shutdown'

/** What the Twilio `start` message established about this stream. */
export interface CallIdentity {
  callSid: string
  streamSid: string
  accountSid: string
  tracks: Track[]
  /** `<Parameter>`s of the stream without the token and the keyterms: PHI-grade, never logged. */
  customParameters: Record<string, string>
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
      onMixed: (samples, length) => this.#chunker.push(samples, length)
    })
    this.#turns = new TurnAssembler(this.#aligner.energy)
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

  /** Publishes `call.started` and opens the upstream session. */
  start (): void {
    const { identity, upstream } = this.#options
    this.#publish(serializeEvent('call.started', {
      ...this.#nextIds(),
      account_sid: identity.accountSid,
      started_at: this.startedAt.toISOString(),
      tracks: identity.tracks,
      custom_parameters: identity.customParameters,
      transcription: { speech_model: upstream.speechModel, domain: upstream.domain, speaker_labels: upstream.speakerLabels, sample_rate: upstream.sampleRate }
    }))
    this.#link.start()
  }

  /**
   * Hot path, ~100 times a second: one validated media frame. Returns the aligner's verdict so the
   * caller can count invalid timestamps.
   */
  handleMedia (track: Track, timestampMs: number, payload: Uint8Array): PushResult {
    if (this.#ended !== null) return 'ok'
    this.#mediaMessages++
    this.#frameReceivedAt = performance.now()
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
    this.#ended ??= this.#finish(reason)
    return this.#ended
  }

  async #finish (reason: EndReason): Promise<void> {
    this.#endReason = reason
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
    this.#publish(serializeEvent('call.ended', {
      ...this.#nextIds(),
      reason,
      started_at: this.startedAt.toISOString(),
      ended_at: endedAt.toISOString(),
      audio_ms: Math.round(samplesToMs(this.#aligner.endSample)),
      turn_count: this.#turns.count,
      transcript: this.#turns.transcript,
      upstream_sessions: this.#link.sessions
    }))
    this.flushMetrics()
    const durationSeconds = (endedAt.getTime() - this.startedAt.getTime()) / 1000
    this.#metrics.callsTotal.inc({ outcome: reason })
    this.#metrics.callDuration.observe(durationSeconds)
    this.#logger.info({ reason, turns: this.#turns.count, audioMs: Math.round(samplesToMs(this.#aligner.endSample)), durationMs: Math.round(durationSeconds * 1000), droppedUpstreamSamples: this.#link.droppedSamples }, 'call ended')
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
    if (this.#endReason === 'transcription_failed') return
    // One upstream turn can become several published turns, one per role run of its words.
    const parts = this.#turns.accept(turn, sessionId, offsetSamples)
    if (parts.length === 0) return
    const endMs = parts.reduce((end, data) => Math.max(end, data.end_ms), 0)
    this.#link.markFinal(msToSamples(endMs))
    this.#observeLag(msToSamples(endMs))
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
