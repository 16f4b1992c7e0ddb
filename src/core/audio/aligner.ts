import { decodeMulaw } from './mulaw.ts'
import { copyInto, mixSaturating } from './mixer.ts'
import type { MixOutput } from './mixer.ts'
import { TrackEnergy } from './energy.ts'
import type { Track } from '../call/types.ts'

export type { MixOutput } from './mixer.ts'

/**
 * What became of a frame. 'ok': placed (a hole before it became silence). 'late': its place was
 * already mixed, partly or wholly; that part was dropped, the rest placed. 'backwards' (starts before
 * the track's last received audio, beyond the 2 ms jitter tolerance) and 'jump' (starts more than
 * maxJumpMs after where the track stands; also a negative or non-finite timestamp, or a track not in
 * `tracks`): invalid, dropped whole. A frame that exactly continues a dropped jump is accepted: after
 * a real outage longer than maxJumpMs the track resumes one frame later instead of being lost.
 */
export type PushResult = 'ok' | 'late' | 'backwards' | 'jump'

/** Counters that only grow; the caller reads and diffs them (metrics are batched, not per frame). */
export interface TrackStats {
  /** Samples of every frame that was not invalid, late parts included. */
  receivedSamples: number
  /** Silence inserted: holes between frames, a lagging track's fill, the tail at flush. */
  gapSamples: number
  /** Samples dropped because their place on the timeline was already mixed. */
  lateSamples: number
  /** Frames dropped whole: 'backwards', 'jump', a bad timestamp, or a track not in `tracks`. */
  invalidFrames: number
}

export interface AlignerOptions {
  /** The tracks of the stream (`start.tracks`): one or two, no repeats. */
  tracks: readonly Track[]
  /**
   * How far, in ms of timeline, the leading track may run ahead before a lagging or silent track is
   * filled with silence; 0..2000, default 60. Measured on the timeline, never on a clock.
   */
  maxWaitMs?: number
  /**
   * A frame starting more than this many ms after its track's last received audio is invalid
   * ('jump') and never filled; maxWaitMs..600000, default 10000. Bounds the silence one frame can cause.
   */
  maxJumpMs?: number
  /** Samples per second of the timeline and of the audio; default 8000 (Twilio's μ-law). */
  sampleRate?: number
  /**
   * Receives the mixed mono PCM16 in timeline order, `samples[0..length)` at timeline positions
   * `[startSample, startSample + length)`, at most maxWait + 128 ms per call. The array is reused once
   * the call returns: copy what must outlive it. Must not call back into the aligner. Give this or
   * `output`.
   */
  onMixed?: (samples: Int16Array, length: number, startSample: number) => void
  /**
   * Where the mix is written directly, in timeline order, instead of a scratch array handed to
   * `onMixed` (which the consumer would then copy): the Chunker. Its `commit` must not call back
   * into the aligner. Give this or `onMixed`.
   */
  output?: MixOutput
}

const DEFAULTS = { maxWaitMs: 60, maxJumpMs: 10_000, sampleRate: 8000 }

/** Twilio's integer-ms timestamps drift by 1–2 ms against the sample count; within this a frame is contiguous. */
const JITTER_TOLERANCE_MS = 2

/** Most samples written or filled before mixing again: bounds the buffers whatever a frame's or a gap's length. */
const PIECE_SAMPLES = 1024

interface Lane {
  /** Index 0 holds the sample at the aligner's mix position; `head - mixPos` samples are buffered. */
  readonly buf: Int16Array
  /** Timeline position just after the last sample placed, audio or silence. */
  head: number
  /** Timeline position just after the last received audio; -1 before the track's first frame. */
  lastEnd: number
  /** End of the last frame dropped as a 'jump', -1 if none: a frame starting exactly there resyncs. */
  jumpEnd: number
  readonly stats: TrackStats
  readonly energy: TrackEnergy
}

/**
 * Places the frames of one or two Twilio tracks on the call timeline (`media.timestamp` × 8 samples),
 * fills holes with silence and emits the tracks' mix in order. No timers: a track is waited for only
 * while the other is less than maxWaitMs ahead on the timeline, which keeps tests deterministic.
 * Memory: two lanes of (maxWait + 128 ms) of PCM16, 6 KB with the defaults (3 KB more for the scratch
 * mix when the mix goes to `onMixed`), plus the two TrackEnergy records (38 KB each).
 */
export class TrackAligner {
  readonly energy: { inbound: TrackEnergy, outbound: TrackEnergy }
  readonly stats: { inbound: TrackStats, outbound: TrackStats }
  readonly #output: MixOutput
  /** Set with `onMixed`: the mix goes to #scratch, and from there to onMixed. */
  readonly #onMixed: ((samples: Int16Array, length: number, startSample: number) => void) | null
  readonly #scratch: ScratchOutput | null
  readonly #inbound: Lane | null
  readonly #outbound: Lane | null
  /** Both lanes in two-track mode, else null: the single lane is emitted without mixing. */
  readonly #pair: readonly [Lane, Lane] | null
  readonly #single: Lane | null
  readonly #samplesPerMs: number
  readonly #maxWait: number
  readonly #maxJump: number
  readonly #tolerance: number
  readonly #capacity: number
  #start = -1
  #mixPos = 0

  constructor (options: AlignerOptions) {
    const tracks = options.tracks
    if (!Array.isArray(tracks) || tracks.length < 1 || tracks.length > 2 || new Set(tracks).size !== tracks.length ||
      !tracks.every((t) => t === 'inbound' || t === 'outbound')) {
      throw new RangeError(`TrackAligner: tracks must be 'inbound', 'outbound' or both (start.tracks), got ${JSON.stringify(tracks)}`)
    }
    const sampleRate = options.sampleRate ?? DEFAULTS.sampleRate
    if (!Number.isInteger(sampleRate) || sampleRate % 1000 !== 0 || sampleRate < 8000 || sampleRate > 48000) {
      throw new RangeError(`TrackAligner: sampleRate must be a multiple of 1000 from 8000 to 48000, got ${sampleRate}`)
    }
    const maxWaitMs = options.maxWaitMs ?? DEFAULTS.maxWaitMs
    if (!Number.isInteger(maxWaitMs) || maxWaitMs < 0 || maxWaitMs > 2000) {
      throw new RangeError(`TrackAligner: maxWaitMs must be an integer from 0 to 2000, got ${maxWaitMs}`)
    }
    const maxJumpMs = options.maxJumpMs ?? DEFAULTS.maxJumpMs
    if (!Number.isInteger(maxJumpMs) || maxJumpMs < maxWaitMs || maxJumpMs > 600_000) {
      throw new RangeError(`TrackAligner: maxJumpMs must be an integer from maxWaitMs (${maxWaitMs}) to 600000, got ${maxJumpMs}`)
    }
    const output = options.output ?? null
    const onMixed = options.onMixed ?? null
    if ((output === null) === (onMixed === null) || (onMixed !== null && typeof onMixed !== 'function') ||
      (output !== null && (typeof output.target !== 'function' || typeof output.commit !== 'function'))) {
      throw new TypeError('TrackAligner: give either onMixed (a function) or output (a MixOutput)')
    }

    this.#onMixed = onMixed
    this.#samplesPerMs = sampleRate / 1000
    this.#maxWait = maxWaitMs * this.#samplesPerMs
    this.#maxJump = maxJumpMs * this.#samplesPerMs
    this.#tolerance = JITTER_TOLERANCE_MS * this.#samplesPerMs
    // A single track is emitted as soon as it is written: only two tracks ever hold maxWait back.
    this.#capacity = (tracks.length === 2 ? this.#maxWait : 0) + PIECE_SAMPLES
    this.energy = { inbound: new TrackEnergy({ sampleRate }), outbound: new TrackEnergy({ sampleRate }) }
    this.stats = { inbound: newStats(), outbound: newStats() }
    this.#inbound = tracks.includes('inbound') ? this.#newLane('inbound') : null
    this.#outbound = tracks.includes('outbound') ? this.#newLane('outbound') : null
    if (this.#inbound !== null && this.#outbound !== null) {
      this.#pair = [this.#inbound, this.#outbound]
      this.#single = null
    } else {
      this.#pair = null
      this.#single = this.#inbound ?? this.#outbound
    }
    // With onMixed, a single track's lane is handed over as it stands; two tracks are mixed into a
    // scratch array first.
    this.#scratch = onMixed !== null && this.#pair !== null ? new ScratchOutput(this.#capacity) : null
    this.#output = output ?? this.#scratch ?? new ScratchOutput(0)
  }

  /** Timeline position (samples) of the first mixed sample: the first frame's timestamp × 8; null before it. */
  get startSample (): number | null {
    return this.#start < 0 ? null : this.#start
  }

  /** Timeline position just after the last mixed sample (= startSample until something is mixed; 0 before). */
  get endSample (): number {
    return this.#mixPos
  }

  /**
   * Decodes one μ-law frame, places it at `timestampMs` on its track and emits whatever both tracks
   * now cover. Never throws on timing: see PushResult. The frame's bytes are not kept.
   */
  push (track: Track, timestampMs: number, mulaw: Uint8Array): PushResult {
    const lane = track === 'inbound' ? this.#inbound : (track === 'outbound' ? this.#outbound : null)
    const pos = Math.round(timestampMs * this.#samplesPerMs)
    if (lane === null || !(pos >= 0) || !Number.isFinite(pos)) {
      if (track === 'inbound' || track === 'outbound') this.stats[track].invalidFrames++
      return 'jump'
    }
    const length = mulaw.length
    if (length === 0) return 'ok'
    if (this.#start < 0) {
      this.#start = pos
      this.#mixPos = pos
      if (this.#inbound !== null) this.#inbound.head = pos
      if (this.#outbound !== null) this.#outbound.head = pos
    }

    // A track that has not sent audio yet is expected where its lane stands: the stream start, or
    // as far as silence already filled it.
    const expected = lane.lastEnd >= 0 ? lane.lastEnd : lane.head
    if (pos < expected - this.#tolerance) {
      if (lane.lastEnd >= 0) {
        lane.stats.invalidFrames++
        return 'backwards'
      }
    } else if (pos > Math.max(expected, lane.head) + this.#maxJump && pos !== lane.jumpEnd) {
      // Measured from where the lane stands, silence included: a track that stalled while the other
      // went on resumes near the mix position and is no jump. A lone frame far ahead is dropped;
      // a second frame that continues it exactly shows the timeline really moved (Twilio discarded
      // audio), and is accepted, its hole becoming silence, so the track is never lost for good.
      lane.jumpEnd = pos + length
      lane.stats.invalidFrames++
      return 'jump'
    }
    lane.jumpEnd = -1
    const place = pos <= expected + this.#tolerance && pos >= expected - this.#tolerance ? expected : pos
    lane.stats.receivedSamples += length
    lane.lastEnd = place + length

    let from = 0
    let result: PushResult = 'ok'
    if (place < lane.head) {
      from = Math.min(length, lane.head - place)
      lane.stats.lateSamples += from
      result = 'late'
    } else if (place > lane.head) {
      this.#fill(lane, place)
    }
    while (from < length) {
      const count = Math.min(this.#room(lane), length - from)
      decodeMulaw(mulaw, lane.buf, lane.head - this.#mixPos, from, from + count)
      lane.head += count
      from += count
      this.#mix()
    }
    return result
  }

  /** End of stream: a lagging track is filled with silence up to the leader and everything is emitted. */
  flush (): void {
    const pair = this.#pair
    if (this.#start < 0 || pair === null) return
    const leader = Math.max(pair[0].head, pair[1].head)
    for (const lane of pair) this.#silence(lane, leader - lane.head)
    this.#mix()
  }

  #newLane (track: Track): Lane {
    return { buf: new Int16Array(this.#capacity), head: 0, lastEnd: -1, jumpEnd: -1, stats: this.stats[track], energy: this.energy[track] }
  }

  /** Silence in `lane` up to timeline position `to`, in pieces that fit its buffer, mixing after each. */
  #fill (lane: Lane, to: number): void {
    while (lane.head < to) {
      this.#silence(lane, Math.min(this.#room(lane), to - lane.head))
      this.#mix()
    }
  }

  /** Free samples in the lane's buffer; #mix keeps this ≥ PIECE_SAMPLES, so a broken invariant throws instead of spinning. */
  #room (lane: Lane): number {
    const room = this.#capacity - (lane.head - this.#mixPos)
    if (room <= 0) throw new Error('TrackAligner: lane buffer full; the mix invariant is broken (a bug)')
    return room
  }

  #silence (lane: Lane, count: number): void {
    if (count <= 0) return
    const at = lane.head - this.#mixPos
    lane.buf.fill(0, at, at + count)
    lane.head += count
    lane.stats.gapSamples += count
  }

  /**
   * Emits the span every track covers. Invariant on return: no lane holds more than maxWait buffered,
   * so the next write has at least PIECE_SAMPLES of room.
   */
  #mix (): void {
    const at = this.#mixPos
    const single = this.#single
    if (single !== null) {
      const length = single.head - at
      if (length <= 0) return
      single.energy.add(single.buf, length, at)
      this.#mixPos = single.head
      if (this.#onMixed !== null) this.#onMixed(single.buf, length, at)
      else copyInto(this.#output, single.buf, length)
      return
    }
    const pair = this.#pair!
    const a = pair[0]
    const b = pair[1]
    const limit = Math.max(a.head, b.head) - this.#maxWait
    this.#silence(a, limit - a.head)
    this.#silence(b, limit - b.head)
    const to = Math.min(a.head, b.head)
    const length = to - at
    if (length <= 0) return
    const scratch = this.#scratch
    if (scratch !== null) scratch.filled = 0
    mixInto(a, b, this.#output, length, at)
    // Whatever a lane holds beyond the mixed span moves to the front: at most maxWait, and in the
    // usual interleave (one frame per track per tick) nothing at all.
    if (a.head > to) a.buf.copyWithin(0, length, a.head - at)
    if (b.head > to) b.buf.copyWithin(0, length, b.head - at)
    this.#mixPos = to
    if (scratch !== null) this.#onMixed!(scratch.buf, length, at)
  }
}

/** The mix's destination when the consumer takes it through onMixed: an array refilled from 0 by each mix. */
class ScratchOutput implements MixOutput {
  readonly buf: Int16Array
  filled = 0

  constructor (samples: number) {
    this.buf = new Int16Array(samples)
  }

  get room (): number {
    return this.buf.length - this.filled
  }

  target (): Int16Array {
    return this.buf
  }

  commit (count: number): void {
    this.filled += count
  }
}

/** Two sums of squares, reused: the mix hands each lane's energy over per block without allocating. */
const SQUARES = new Float64Array(2)

/**
 * `a + b` saturated to int16, written straight into `output`, recording each lane's energy per
 * block of its record in the same pass: one read of each sample, and one write of each mixed
 * sample, on the path every frame takes. Split where an energy block or the output's room ends.
 */
function mixInto (a: Lane, b: Lane, output: MixOutput, length: number, at: number): void {
  const blockSamples = a.energy.blockSamples
  let i = 0
  while (i < length) {
    const pos = at + i
    const target = output.target()
    const n = Math.min(length - i, blockSamples - pos % blockSamples, output.room)
    SQUARES[0] = 0
    SQUARES[1] = 0
    mixSaturating(a.buf, b.buf, target, i, i + n, SQUARES, output.filled)
    a.energy.addBlock(pos, n, SQUARES[0])
    b.energy.addBlock(pos, n, SQUARES[1])
    output.commit(n)
    i += n
  }
}

function newStats (): TrackStats {
  return { receivedSamples: 0, gapSamples: 0, lateSamples: 0, invalidFrames: 0 }
}
