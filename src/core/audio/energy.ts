import type { Role } from '../call/types.ts'

export interface TrackEnergyOptions {
  /** Resolution of the energy record, in ms of timeline; 1..1000, default 50. Queries are rounded out to whole blocks. */
  blockMs?: number
  /** How far back the record reaches, in ms of timeline behind the newest sample; ≥ blockMs, default 120000 (2 min: longer than any turn worth attributing). */
  windowMs?: number
  /** Samples per second of the timeline; default 8000. */
  sampleRate?: number
}

const DEFAULTS = { blockMs: 50, windowMs: 120_000, sampleRate: 8000 }

/**
 * Mean square of one track's PCM16 samples per block of the call timeline, over a sliding window, so a
 * finished turn's role can be decided from the audio of its time range long after the audio was sent.
 * Memory is fixed: 16 bytes per block (2400 blocks, 38 KB, with the defaults).
 */
export class TrackEnergy {
  readonly blockMs: number
  readonly windowMs: number
  readonly sampleRate: number
  readonly #blockSamples: number
  readonly #blockCount: number
  /** Timeline block number held by each slot (-1: none); int32 reaches 3 years of 50 ms blocks. */
  readonly #ids: Int32Array
  // Float32 sums (24-bit mantissa: far finer than the 6 dB role margin) and 16-bit counts (a block
  // holds at most 1000 ms of samples) keep two tracks' two-minute record near 50 KB per call.
  readonly #sums: Float32Array
  readonly #counts: Uint16Array
  #newest = -1

  constructor (options: TrackEnergyOptions = {}) {
    const blockMs = options.blockMs ?? DEFAULTS.blockMs
    const windowMs = options.windowMs ?? DEFAULTS.windowMs
    const sampleRate = options.sampleRate ?? DEFAULTS.sampleRate
    if (!Number.isInteger(sampleRate) || sampleRate < 1000 || sampleRate > 48000) {
      throw new RangeError(`TrackEnergy: sampleRate must be an integer from 1000 to 48000, got ${sampleRate}`)
    }
    const blockSamples = blockMs * sampleRate / 1000
    if (!Number.isInteger(blockSamples) || blockMs < 1 || blockMs > 1000) {
      throw new RangeError(`TrackEnergy: blockMs must be from 1 to 1000 and a whole number of samples, got ${blockMs}`)
    }
    if (!Number.isFinite(windowMs) || windowMs < blockMs || windowMs > 3_600_000) {
      throw new RangeError(`TrackEnergy: windowMs must be from blockMs (${blockMs}) to 3600000, got ${windowMs}`)
    }
    this.blockMs = blockMs
    this.windowMs = windowMs
    this.sampleRate = sampleRate
    this.#blockSamples = blockSamples
    this.#blockCount = Math.ceil(windowMs / blockMs)
    this.#ids = new Int32Array(this.#blockCount).fill(-1)
    this.#sums = new Float32Array(this.#blockCount)
    this.#counts = new Uint16Array(this.#blockCount)
  }

  /** Samples per block of the record (blockMs of timeline). */
  get blockSamples (): number {
    return this.#blockSamples
  }

  /**
   * Records `samples[0..length)` as the track's audio at timeline positions `[startSample, startSample + length)`.
   * Positions are expected once each, in rising order; audio older than the window is ignored.
   */
  add (samples: Int16Array, length: number, startSample: number): void {
    if (!(startSample >= 0) || length > samples.length) {
      throw new RangeError(`TrackEnergy.add: invalid range of ${length} samples at ${startSample}`)
    }
    const blockSamples = this.#blockSamples
    let pos = startSample
    let i = 0
    while (i < length) {
      const n = Math.min(length - i, blockSamples - pos % blockSamples)
      let sum = 0
      for (let end = i + n; i < end; i++) {
        const s = samples[i]!
        sum += s * s
      }
      this.addBlock(pos, n, sum)
      pos += n
    }
  }

  /**
   * Records `count` samples at timeline positions `[startSample, startSample + count)`, all in one
   * block, whose squares sum to `sumOfSquares`: for a caller that already reads the samples (the
   * aligner, while it mixes) and so need not read them twice.
   */
  addBlock (startSample: number, count: number, sumOfSquares: number): void {
    const block = Math.floor(startSample / this.#blockSamples)
    if (!(startSample >= 0) || count < 0 || startSample + count > (block + 1) * this.#blockSamples) {
      throw new RangeError(`TrackEnergy.addBlock: ${count} samples at ${startSample} are not within one block`)
    }
    const slot = block % this.#blockCount
    const held = this.#ids[slot]!
    if (held !== block) {
      // Older than what the slot holds, or than the window: ignored.
      if (held > block || block <= this.#newest - this.#blockCount) return
      this.#ids[slot] = block
      this.#sums[slot] = 0
      this.#counts[slot] = 0
    }
    this.#sums[slot]! += sumOfSquares
    this.#counts[slot]! += count
    if (block > this.#newest) this.#newest = block
  }

  /**
   * Mean square (0..2^30) of the samples recorded in the blocks overlapping `[fromMs, toMs)` of the
   * timeline; an empty or inverted range means the block holding `fromMs`. The part of the range that
   * left the window is not counted; null when nothing of the range is left or it holds no audio.
   */
  meanSquare (fromMs: number, toMs: number): number | null {
    if (!Number.isFinite(fromMs) || !Number.isFinite(toMs) || this.#newest < 0) return null
    const samplesPerMs = this.sampleRate / 1000
    const fromBlock = Math.floor(Math.max(0, fromMs) * samplesPerMs / this.#blockSamples)
    const toBlock = toMs > fromMs ? Math.ceil(toMs * samplesPerMs / this.#blockSamples) - 1 : fromBlock
    const lo = Math.max(fromBlock, this.#newest - this.#blockCount + 1)
    const hi = Math.min(toBlock, this.#newest)
    let sum = 0
    let count = 0
    for (let block = lo; block <= hi; block++) {
      const slot = block % this.#blockCount
      if (this.#ids[slot] !== block) continue
      sum += this.#sums[slot]!
      count += this.#counts[slot]!
    }
    return count === 0 ? null : sum / count
  }

  /**
   * Like meanSquare, but the blocks at either edge count only for the part of them inside
   * `[fromMs, toMs)`, as if their energy were spread evenly: a window shorter than a few blocks (one
   * word) then measures its own span rather than up to a block more on each side.
   */
  meanSquareWithin (fromMs: number, toMs: number): number | null {
    if (!Number.isFinite(fromMs) || !Number.isFinite(toMs) || !(toMs > fromMs) || this.#newest < 0) return this.meanSquare(fromMs, toMs)
    const blockMs = this.blockMs
    const from = Math.max(0, fromMs)
    const fromBlock = Math.floor(from / blockMs)
    const toBlock = Math.ceil(toMs / blockMs) - 1
    const lo = Math.max(fromBlock, this.#newest - this.#blockCount + 1)
    const hi = Math.min(toBlock, this.#newest)
    let sum = 0
    let count = 0
    for (let block = lo; block <= hi; block++) {
      const slot = block % this.#blockCount
      if (this.#ids[slot] !== block) continue
      const start = block * blockMs
      const weight = (Math.min(toMs, start + blockMs) - Math.max(from, start)) / blockMs
      if (!(weight > 0)) continue
      sum += this.#sums[slot]! * weight
      count += this.#counts[slot]! * weight
    }
    return count === 0 ? null : sum / count
  }
}

/**
 * Who spoke, from the mean square of each track over a turn: the track at least `marginDb` louder
 * (default 6 dB, 4× the power) names the role. Twilio's inbound track is the caller (customer) and the
 * outbound track the agent. A silent track (0) loses to any sound on the other; two silent tracks, a
 * missing measurement or a margin not reached give 'unknown'.
 */
export function roleFromEnergy (inbound: number | null, outbound: number | null, marginDb = 6): Role {
  if (!(marginDb >= 0) || !Number.isFinite(marginDb)) {
    throw new RangeError(`roleFromEnergy: marginDb must be a finite number ≥ 0, got ${marginDb}`)
  }
  if (inbound === null || outbound === null) return 'unknown'
  // Compared as power ratios rather than in dB so that digital silence (0) needs no log(0) special case.
  const ratio = 10 ** (marginDb / 10)
  if (inbound > 0 && inbound >= outbound * ratio) return 'customer'
  if (outbound > 0 && outbound >= inbound * ratio) return 'agent'
  return 'unknown'
}
