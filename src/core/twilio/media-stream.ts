import type { SessionOptions } from '../assemblyai/protocol.ts'
import { normalizeKeyterms } from '../assemblyai/protocol.ts'
import type { CallRegistry } from '../call/call-registry.ts'
import { CallSession } from '../call/call-session.ts'
import type { EndReason } from '../call/call-session.ts'
import type { Track } from '../call/types.ts'
import type { ReconnectPolicy } from '../call/upstream-link.ts'
import { TWILIO_SAMPLE_RATE } from '../audio/sample-rate.ts'
import type { CoreLogger, ParentLogger } from '../log.ts'
import type { InvalidReason, Metrics } from '../metrics.ts'
import type { EventSink } from '../webhooks/events.ts'
import { equals, parseMediaFrame } from './media-fast-path.ts'
import { parseTwilioMessage } from './messages.ts'
import type { StartInfo } from './messages.ts'
import { verifyStreamToken } from './stream-token.ts'
import { HandoffAcceptor } from '../handoff/handoff.ts'
import { isHandoffParameter, verifyHandoffParameters } from './handoff-token.ts'
import type { HandoffClaim } from './handoff-token.ts'

/** Twilio closes: 1000 after stop, 1001 at the drain deadline, 1008 policy, 1009 too big, 1011 internal. */
const CLOSE_FOR_REASON: Record<EndReason, number> = { completed: 1000, handed_off: 1000, shutdown: 1001, stream_error: 1011, transcription_failed: 1011 }

/** Invalid frames can arrive as fast as good ones; they reach prom-client in batches of this many. */
const INVALID_BATCH = 100

/** What a media stream needs of its WebSocket (`ws`'s fits). */
export interface MediaSocket {
  close (code: number, reason: string): void
}

/** The settings every stream of the process shares. */
export interface MediaStreamSettings {
  /** Key of the per-call stream token. */
  streamTokenSecret: Buffer
  /** Every call's AssemblyAI settings; the call's own keyterms and the sample rate are added here. */
  assemblyai: Omit<SessionOptions, 'sampleRate' | 'connectTimeoutMs'>
  /** 50–1000 ms of audio per upstream frame. */
  audioChunkMs: number
  /** `start` must arrive within this many ms of the upgrade. */
  startTimeoutMs: number
  /** Tests shorten the upstream reconnect policy. */
  reconnect?: ReconnectPolicy | undefined
  /** How long an ending call may wait for its last upstream turns, ms. */
  terminateTimeoutMs?: number | undefined
  /** Takes up streams another replica hands over (fleet mode); null refuses them. */
  handoff?: HandoffAcceptor | null | undefined
}

export interface MediaStreamOptions {
  socket: MediaSocket
  settings: MediaStreamSettings
  /** The process's live calls: capacity, one stream per CallSid. */
  calls: CallRegistry
  /** Where the call's events go. */
  sink: EventSink
  metrics: Metrics
  /** The connection's logger; each call gets a child with its CallSid and StreamSid. */
  logger: ParentLogger
}

/**
 * One Twilio Media Streams WebSocket: before `start` a gatekeeper (start timeout, stream token, one
 * live stream per call), after it the owner of a CallSession. It holds a capacity reservation from
 * construction until `start` or the close. The caller forwards the socket's `message`, `close` and
 * `error` events; the listener must be attached before any await, as Twilio sends `connected` and
 * `start` at once.
 */
export class MediaStream {
  readonly #socket: MediaSocket
  readonly #settings: MediaStreamSettings
  readonly #calls: CallRegistry
  readonly #sink: EventSink
  readonly #metrics: Metrics
  readonly #logger: ParentLogger
  #session: CallSession | null = null
  /** The stream's StreamSid as bytes, for the media fast path's in-place comparison. */
  #streamSidBytes: Buffer = Buffer.alloc(0)
  #startTimer: NodeJS.Timeout | null
  #reserved = true
  #closed = false
  readonly #invalid: Record<InvalidReason, number> = { json: 0, schema: 0, size: 0, binary: 0, order: 0, timestamp: 0 }

  constructor (options: MediaStreamOptions) {
    this.#socket = options.socket
    this.#settings = options.settings
    this.#calls = options.calls
    this.#sink = options.sink
    this.#metrics = options.metrics
    this.#logger = options.logger
    this.#calls.reserve()
    this.#startTimer = setTimeout(() => {
      this.#startTimer = null
      this.#metrics.streamRejections.inc({ reason: 'start_timeout' })
      this.#logger.warn('media stream closed: no start message in time')
      this.#closeSocket(1008, 'start timeout')
    }, this.#settings.startTimeoutMs)
  }

  /** The socket's `message` event. Never throws: a bug in one call's handling ends that call only. */
  onMessage (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    try {
      if (isBinary) {
        this.#countInvalid('binary')
        return
      }
      const session = this.#session
      if (session !== null && Buffer.isBuffer(data)) {
        // The fast path: a plain media frame read in place, with no string and no JSON.parse.
        const frame = parseMediaFrame(data)
        if (frame !== null) {
          const ownStream = equals(data, frame.streamSidStart, frame.streamSidEnd, this.#streamSidBytes)
          this.#onMedia(session, ownStream, frame.track, frame.timestampMs, frame.payload)
          return
        }
      }
      const message = parseTwilioMessage(data.toString())
      switch (message.event) {
        case 'media':
          if (session === null) {
            this.#countInvalid('order')
            this.#closeSocket(1008, 'media before start')
            return
          }
          this.#onMedia(session, message.streamSid === session.identity.streamSid, message.track, message.timestampMs, message.payload)
          return
        case 'invalid':
          this.#countInvalid(message.reason)
          return
        case 'connected':
          this.#metrics.twilioMessages.inc({ event: 'connected' })
          return
        case 'start':
          this.#metrics.twilioMessages.inc({ event: 'start' })
          if (session !== null) {
            this.#countInvalid('order')
            return
          }
          this.#onStart(message.start)
          return
        case 'stop':
          this.#metrics.twilioMessages.inc({ event: 'stop' })
          if (session === null) {
            this.#closeSocket(1000, 'stopped')
            return
          }
          void session.end('completed')
          return
        case 'mark':
        case 'dtmf':
          this.#metrics.twilioMessages.inc({ event: message.event })
          return
        case 'unknown':
          this.#metrics.twilioMessages.inc({ event: 'unknown' })
      }
    } catch (error) {
      // A bug in one call's handling must not reach the socket's emitter (and the process).
      this.#logger.error({ err: error }, 'media message handling failed')
      this.#fail()
    }
  }

  /** The socket's `close` event: a call still live ends as `stream_error`. */
  onClose (code: number): void {
    this.#closed = true
    this.#clearStartTimer()
    this.#release()
    this.#flushInvalid()
    const session = this.#session
    if (session !== null && !session.ended) {
      this.#logger.warn({ code }, 'media stream closed without stop')
      void session.end('stream_error')
    }
  }

  /** The socket's `error` event; an oversized message is counted, the socket closes by itself. */
  onError (error: Error & { code?: string }): void {
    if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      this.#countInvalid('size')
      return
    }
    this.#logger.warn({ errCode: error.code ?? null }, 'media stream socket error')
  }

  /** Every media frame, from either parser: the stream must be this socket's, the timestamp sane. */
  #onMedia (session: CallSession, ownStream: boolean, track: Track, timestampMs: number, payload: Buffer): void {
    if (!ownStream) {
      this.#countInvalid('schema')
      return
    }
    const result = session.handleMedia(track, timestampMs, payload)
    if (result === 'backwards' || result === 'jump') this.#countInvalid('timestamp')
  }

  #onStart (start: StartInfo): void {
    const settings = this.#settings
    const calls = this.#calls
    const startWallMs = Date.now()
    // A handed-over stream carries the handoff token instead of the stream token.
    const handoff = verifyHandoffParameters(settings.streamTokenSecret, start.customParameters, start.callSid, start.accountSid, startWallMs)
    let claim: HandoffClaim | null = null
    if (handoff !== null) {
      if (handoff.check !== 'ok' || settings.handoff == null) {
        this.#metrics.streamRejections.inc({ reason: 'token' })
        this.#logger.warn({ callSid: start.callSid, check: handoff.check === 'ok' ? 'no_fleet' : handoff.check }, 'media stream refused: handoff token')
        this.#closeSocket(1008, 'invalid handoff token')
        return
      }
      claim = handoff.claim
    }
    const check = claim !== null ? 'ok' : verifyStreamToken(settings.streamTokenSecret, start.customParameters.token, start.callSid, start.accountSid, startWallMs)
    if (check !== 'ok') {
      this.#metrics.streamRejections.inc({ reason: 'token' })
      this.#logger.warn({ callSid: start.callSid, check }, 'media stream refused: stream token')
      this.#closeSocket(1008, 'invalid stream token')
      return
    }
    if (calls.has(start.callSid)) {
      this.#metrics.streamRejections.inc({ reason: 'duplicate' })
      this.#logger.warn({ callSid: start.callSid }, 'media stream refused: the call already has a live stream')
      this.#closeSocket(1008, 'duplicate stream')
      return
    }
    this.#clearStartTimer()
    const { token: _token, keyterms: callKeyterms, ...rest } = start.customParameters
    const customParameters: Record<string, string> = {}
    for (const [name, value] of Object.entries(rest)) {
      if (!isHandoffParameter(name)) Object.defineProperty(customParameters, name, { value, enumerable: true, writable: true, configurable: true })
    }
    const keyterms = normalizeKeyterms([...settings.assemblyai.keyterms, ...(callKeyterms ?? '').split(',')])
    const logger: CoreLogger = this.#logger.child({ callSid: start.callSid, streamSid: start.streamSid })
    if (keyterms.droppedTooLong + keyterms.droppedOverLimit > 0) {
      logger.warn({ droppedTooLong: keyterms.droppedTooLong, droppedOverLimit: keyterms.droppedOverLimit }, 'keyterms over AssemblyAI\'s limits were left out')
    }
    const session = new CallSession({
      identity: { callSid: start.callSid, streamSid: start.streamSid, accountSid: start.accountSid, tracks: start.tracks, customParameters, keyterms: callKeyterms ?? null },
      segment: claim === null ? undefined : { number: claim.segment, previousStreamSid: claim.previousStreamSid, offsetMs: HandoffAcceptor.offsetMs(claim, startWallMs) },
      upstream: { ...settings.assemblyai, keyterms: keyterms.terms, sampleRate: TWILIO_SAMPLE_RATE },
      chunkMs: settings.audioChunkMs,
      sink: this.#sink,
      metrics: this.#metrics,
      logger,
      reconnect: settings.reconnect,
      terminateTimeoutMs: settings.terminateTimeoutMs,
      onEnded: (ended, reason) => {
        calls.remove(ended)
        this.#closeSocket(CLOSE_FOR_REASON[reason], reason)
      }
    })
    this.#session = session
    this.#streamSidBytes = Buffer.from(start.streamSid)
    calls.add(session)
    this.#release()
    logger.info({ tracks: start.tracks, keyterms: keyterms.terms.length, segment: session.segment.number, offsetMs: session.segment.offsetMs }, 'call started')
    session.start()
    if (claim !== null) void settings.handoff?.adopt(session, claim)
  }

  #countInvalid (reason: InvalidReason): void {
    this.#invalid[reason]++
    if (this.#invalid[reason] >= INVALID_BATCH) this.#flushInvalid()
  }

  #flushInvalid (): void {
    for (const reason of Object.keys(this.#invalid) as InvalidReason[]) {
      const count = this.#invalid[reason]
      if (count > 0) {
        this.#metrics.twilioInvalidMessages.inc({ reason }, count)
        this.#invalid[reason] = 0
      }
    }
  }

  #fail (): void {
    const session = this.#session
    if (session !== null) void session.end('stream_error')
    else this.#closeSocket(1011, 'internal error')
  }

  #release (): void {
    if (this.#reserved) {
      this.#reserved = false
      this.#calls.release()
    }
  }

  #clearStartTimer (): void {
    if (this.#startTimer !== null) clearTimeout(this.#startTimer)
    this.#startTimer = null
  }

  #closeSocket (code: number, reason: string): void {
    this.#clearStartTimer()
    this.#flushInvalid()
    if (this.#closed) return
    this.#closed = true
    this.#socket.close(code, reason)
  }
}
