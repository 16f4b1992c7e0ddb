import { test } from 'node:test'
import assert from 'node:assert/strict'
import { TrackAligner } from '../../../src/core/audio/aligner.ts'
import type { AlignerOptions, MixOutput, PushResult } from '../../../src/core/audio/aligner.ts'
import { Chunker } from '../../../src/core/audio/chunker.ts'
import type { Track } from '../../../src/core/call/types.ts'
import { prng } from '../../helpers/prng.ts'

/** Most samples one onMixed call may carry with the default maxWait (60 ms) : 1024 + 480. */
const MAX_PIECE = 1504
const FRAME = 160

/** G.711 μ-law expansion from the ITU formula: the reference does not share the code under test. */
function referenceDecode (code: number): number {
  const u = ~code & 0xff
  const magnitude = ((((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4)) - 0x84
  return (u & 0x80) !== 0 ? (0 - magnitude) | 0 : magnitude
}

/** Compares sample arrays by first difference: a failing deepEqual on 10^5 samples would print for minutes. */
function assertSamplesEqual (actual: ArrayLike<number>, expected: ArrayLike<number>, what = 'samples'): void {
  assert.equal(actual.length, expected.length, `${what}: length`)
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) assert.fail(`${what} differ first at index ${i}: ${actual[i]} instead of ${expected[i]}`)
  }
}

function randomFrame (random: () => number, length = FRAME): Uint8Array {
  return Uint8Array.from({ length }, () => Math.floor(random() * 256))
}

interface Frame { track: Track, ms: number, bytes: Uint8Array }

/**
 * The straightforward reference: each track is a zero-filled array over [startMs, endMs) with every
 * frame decoded at the position the test says it belongs; the mix is their clamped sum.
 */
function referenceMix (startMs: number, endMs: number, placed: readonly Frame[], tracks: readonly Track[] = ['inbound', 'outbound']): { mix: Int16Array, inbound: Int16Array, outbound: Int16Array } {
  const length = (endMs - startMs) * 8
  const lanes = { inbound: new Int16Array(length), outbound: new Int16Array(length) }
  for (const frame of placed) {
    frame.bytes.forEach((code, i) => {
      const at = (frame.ms - startMs) * 8 + i
      if (at >= 0 && at < length) lanes[frame.track][at] = referenceDecode(code)
    })
  }
  const mix = new Int16Array(length)
  for (let i = 0; i < length; i++) {
    let sum = 0
    for (const track of tracks) sum += lanes[track][i]!
    mix[i] = Math.max(-32768, Math.min(32767, sum))
  }
  return { mix, ...lanes }
}

interface Run {
  aligner: TrackAligner
  output: number[]
  pieces: number[]
  results: PushResult[]
  push (frame: Frame): PushResult
}

/** An aligner whose output is checked to be contiguous and is copied out (the array is reused). */
function harness (options: Partial<AlignerOptions> = {}): Run {
  const output: number[] = []
  const pieces: number[] = []
  const results: PushResult[] = []
  const aligner = new TrackAligner({
    tracks: ['inbound', 'outbound'],
    ...options,
    onMixed (samples, length, startSample) {
      assert.equal(startSample, aligner.startSample! + output.length, 'mixed output is contiguous')
      assert.ok(length > 0 && length <= samples.length)
      for (let i = 0; i < length; i++) output.push(samples[i]!)
      pieces.push(length)
    }
  })
  return {
    aligner,
    output,
    pieces,
    results,
    push (frame) {
      const result = aligner.push(frame.track, frame.ms, frame.bytes)
      results.push(result)
      return result
    }
  }
}

function interleaved (random: () => number, ticks: number, firstMs = 150): Frame[] {
  const frames: Frame[] = []
  for (let k = 0; k < ticks; k++) {
    frames.push({ track: 'inbound', ms: firstMs + 20 * k, bytes: randomFrame(random) })
    frames.push({ track: 'outbound', ms: firstMs + 20 * k, bytes: randomFrame(random) })
  }
  return frames
}

test('TrackAligner mixes both tracks sample-exactly when frames interleave in order', () => {
  const frames = interleaved(prng(1), 250)
  const run = harness()
  for (const frame of frames) {
    const before = run.output.length
    run.push(frame)
    if (frame.track === 'inbound') {
      assert.equal(run.output.length, before, 'waits for the outbound frame of the same tick')
    } else {
      assert.equal(run.aligner.endSample, (frame.ms + 20) * 8, 'emits the tick once both tracks have it')
    }
  }
  assert.deepEqual(run.results, frames.map(() => 'ok'))
  assert.equal(run.aligner.startSample, 1200)
  assert.equal(run.aligner.endSample, 1200 + 250 * FRAME)
  assertSamplesEqual(run.output, referenceMix(150, 150 + 5000, frames).mix)
  for (const track of ['inbound', 'outbound'] as const) {
    assert.deepEqual(run.aligner.stats[track], { receivedSamples: 250 * FRAME, gapSamples: 0, lateSamples: 0, invalidFrames: 0 })
  }
})

test('TrackAligner feeds each track\'s energy when frames are mixed', () => {
  const frames = interleaved(prng(2), 100)
  const run = harness()
  for (const frame of frames) run.push(frame)
  const reference = referenceMix(150, 2150, frames)
  for (const track of ['inbound', 'outbound'] as const) {
    // Blocks are 50 ms of the timeline: [200, 1200) ms is blocks 4..23, samples 400..8400 of the reference.
    const lane = reference[track].subarray(400, 8400)
    const expected = lane.reduce((sum, s) => sum + s * s, 0) / lane.length
    // Kept as float32 sums: equal to a relative 1e-6, far finer than the 6 dB role margin.
    assert.ok(Math.abs(run.aligner.energy[track].meanSquare(200, 1200)! - expected) <= 1e-6 * expected)
  }
})

test('TrackAligner decodes and emits each frame at once when the stream has a single track', () => {
  const random = prng(3)
  const run = harness({ tracks: ['inbound'] })
  const frames: Frame[] = []
  for (let k = 0; k < 100; k++) {
    const frame: Frame = { track: 'inbound', ms: 171 + 20 * k, bytes: randomFrame(random) }
    frames.push(frame)
    run.push(frame)
    assert.equal(run.aligner.endSample, (frame.ms + 20) * 8)
  }
  assertSamplesEqual(run.output, referenceMix(171, 2171, frames, ['inbound']).mix)
  assert.deepEqual(run.pieces, frames.map(() => FRAME))
  assert.equal(run.aligner.energy.outbound.meanSquare(0, 10_000), null)
  assert.equal(run.push({ track: 'outbound', ms: 2171, bytes: randomFrame(random) }), 'jump', 'a track not in start.tracks is invalid')
  assert.equal(run.aligner.stats.outbound.invalidFrames, 1)
  assert.equal(run.aligner.endSample, 2171 * 8)
})

test('TrackAligner fills a track\'s missing frames with silence when the other track keeps going', () => {
  const frames = interleaved(prng(4), 120)
  const sent = frames.filter((f) => !(f.track === 'inbound' && f.ms >= 150 + 20 * 50 && f.ms < 150 + 20 * 60))
  const run = harness()
  for (const frame of sent) run.push(frame)
  assert.deepEqual(run.results, sent.map(() => 'ok'))
  assertSamplesEqual(run.output, referenceMix(150, 150 + 2400, sent).mix)
  assert.equal(run.aligner.stats.inbound.gapSamples, 10 * FRAME)
  assert.equal(run.aligner.stats.inbound.receivedSamples, 110 * FRAME)
  assert.equal(run.aligner.stats.outbound.gapSamples, 0)
  assert.ok(Math.max(...run.pieces) <= MAX_PIECE)
})

test('TrackAligner inserts the gap as silence in bounded pieces when both tracks\' timestamps jump', () => {
  const random = prng(5)
  const frames: Frame[] = []
  for (let k = 0; k < 100; k++) {
    // Twilio dropped 3 s of audio (warning 31930): the timestamps jump, the frames stay interleaved.
    const ms = 150 + 20 * k + (k >= 50 ? 3000 : 0)
    frames.push({ track: 'inbound', ms, bytes: randomFrame(random) }, { track: 'outbound', ms, bytes: randomFrame(random) })
  }
  const run = harness()
  for (const frame of frames) run.push(frame)
  assert.deepEqual(run.results, frames.map(() => 'ok'))
  assertSamplesEqual(run.output, referenceMix(150, 150 + 2000 + 3000, frames).mix)
  assert.equal(run.aligner.stats.inbound.gapSamples + run.aligner.stats.outbound.gapSamples, 2 * 24_000)
  assert.ok(Math.max(...run.pieces) <= MAX_PIECE, `pieces up to ${Math.max(...run.pieces)} samples`)
})

test('TrackAligner emits a long single-track gap in bounded pieces when it is within maxJumpMs', () => {
  const random = prng(6)
  const frames: Frame[] = [
    { track: 'outbound', ms: 150, bytes: randomFrame(random) },
    { track: 'outbound', ms: 170 + 9900, bytes: randomFrame(random) }
  ]
  const run = harness({ tracks: ['outbound'] })
  for (const frame of frames) run.push(frame)
  assert.deepEqual(run.results, ['ok', 'ok'])
  assert.equal(run.aligner.stats.outbound.gapSamples, 9900 * 8)
  assertSamplesEqual(run.output, referenceMix(150, 190 + 9900, frames, ['outbound']).mix)
  assert.ok(Math.max(...run.pieces) <= 1024)
})

test('TrackAligner drops the already mixed part of a lagging track\'s frames when they arrive late', () => {
  const frames = interleaved(prng(7), 20)
  const inbound = frames.filter((f) => f.track === 'inbound')
  const outbound = frames.filter((f) => f.track === 'outbound')
  // A burst: ten inbound frames before any outbound one. With maxWait 50 ms, the outbound track is
  // filled with silence up to 200 - 50 = 150 ms after the start, halfway through its frame 7.
  const order = [...inbound.slice(0, 10), ...outbound.slice(0, 10), ...frames.slice(20)]
  const run = harness({ maxWaitMs: 50 })
  for (const frame of order) run.push(frame)
  assert.deepEqual(run.results.slice(10, 20), ['late', 'late', 'late', 'late', 'late', 'late', 'late', 'late', 'ok', 'ok'])
  assert.deepEqual(run.aligner.stats.outbound, { receivedSamples: 20 * FRAME, gapSamples: 1200, lateSamples: 1200, invalidFrames: 0 })
  const reference = referenceMix(150, 550, frames)
  const expected = referenceMix(150, 550, [...inbound, ...outbound.slice(8), { track: 'outbound', ms: 150 + 150, bytes: outbound[7]!.bytes.subarray(80) }])
  assert.ok(expected.mix.some((s, i) => s !== reference.mix[i]), "the late frames matter to the mix")
  assertSamplesEqual(run.output, expected.mix)
})

test('TrackAligner places frames contiguously when timestamps jitter by up to 2 ms', () => {
  const random = prng(8)
  const frames = interleaved(random, 200)
  const run = harness()
  frames.forEach((frame, i) => {
    const jitter = i < 2 ? 0 : Math.floor(random() * 5) - 2
    run.push({ ...frame, ms: frame.ms + jitter })
  })
  assert.deepEqual(run.results, frames.map(() => 'ok'))
  assertSamplesEqual(run.output, referenceMix(150, 4150, frames).mix)
  assert.equal(run.aligner.stats.inbound.gapSamples + run.aligner.stats.outbound.gapSamples, 0)
})

test('TrackAligner treats a frame 3 ms off as a gap or as backwards when it is beyond the tolerance', () => {
  const random = prng(9)
  const run = harness({ tracks: ['inbound'] })
  const first = { track: 'inbound' as const, ms: 150, bytes: randomFrame(random) }
  const ahead = { track: 'inbound' as const, ms: 173, bytes: randomFrame(random) }
  const behind = { track: 'inbound' as const, ms: 190, bytes: randomFrame(random) }
  assert.deepEqual([run.push(first), run.push(ahead), run.push(behind)], ['ok', 'ok', 'backwards'])
  assert.equal(run.aligner.stats.inbound.gapSamples, 24)
  assert.equal(run.aligner.stats.inbound.invalidFrames, 1)
  assertSamplesEqual(run.output, referenceMix(150, 193, [first, ahead], ['inbound']).mix)
})

test('TrackAligner drops a frame as backwards when it repeats an earlier timestamp', () => {
  const frames = interleaved(prng(10), 30)
  const run = harness()
  for (const frame of frames.slice(0, 40)) run.push(frame)
  assert.equal(run.push({ ...frames[36]! }), 'backwards')
  assert.equal(run.push({ track: 'outbound', ms: 0, bytes: frames[1]!.bytes }), 'backwards')
  for (const frame of frames.slice(40)) run.push(frame)
  assert.equal(run.aligner.stats.inbound.invalidFrames + run.aligner.stats.outbound.invalidFrames, 2)
  assertSamplesEqual(run.output, referenceMix(150, 750, frames).mix)
})

test('TrackAligner drops a frame as a jump when it starts more than maxJumpMs ahead', () => {
  const frames = interleaved(prng(11), 40)
  const run = harness({ maxJumpMs: 1000 })
  for (const frame of frames.slice(0, 20)) run.push(frame)
  const endMs = 150 + 200
  assert.equal(run.push({ track: 'outbound', ms: endMs + 1001, bytes: frames[0]!.bytes }), 'jump')
  assert.equal(run.push({ track: 'inbound', ms: endMs + 50_000, bytes: frames[0]!.bytes }), 'jump')
  assert.equal(run.push({ track: 'inbound', ms: Number.NaN, bytes: frames[0]!.bytes }), 'jump')
  assert.equal(run.push({ track: 'inbound', ms: -20, bytes: frames[0]!.bytes }), 'jump')
  assert.equal(run.aligner.endSample, endMs * 8, 'a jump fills nothing')
  for (const frame of frames.slice(20)) run.push(frame)
  assert.equal(run.aligner.stats.inbound.invalidFrames + run.aligner.stats.outbound.invalidFrames, 4)
  assertSamplesEqual(run.output, referenceMix(150, 950, frames).mix)
  const edge = harness({ tracks: ['inbound'], maxJumpMs: 1000 })
  edge.push({ track: 'inbound', ms: 150, bytes: frames[0]!.bytes })
  assert.equal(edge.push({ track: 'inbound', ms: 170 + 1000, bytes: frames[0]!.bytes }), 'ok', 'exactly maxJumpMs ahead is a gap')
  assert.equal(edge.aligner.stats.inbound.gapSamples, 8000)
})

test('TrackAligner emits everything buffered when flushed after the other track never sent audio', () => {
  const random = prng(12)
  const run = harness()
  run.aligner.flush()
  assert.equal(run.aligner.startSample, null)
  const frames: Frame[] = []
  for (let k = 0; k < 30; k++) frames.push({ track: 'inbound', ms: 150 + 20 * k, bytes: randomFrame(random) })
  for (const frame of frames) run.push(frame)
  assert.equal(run.aligner.endSample, (750 - 60) * 8, 'the leader runs at most maxWaitMs ahead of the mix')
  run.aligner.flush()
  assert.equal(run.aligner.endSample, 750 * 8)
  run.aligner.flush()
  assert.equal(run.output.length, 600 * 8)
  assertSamplesEqual(run.output, referenceMix(150, 750, frames).mix)
  assert.equal(run.aligner.stats.outbound.gapSamples, 600 * 8)
  assert.equal(run.aligner.energy.outbound.meanSquare(150, 750), 0)
})

test('TrackAligner saturates the mix when both tracks are at full scale', () => {
  const run = harness()
  run.push({ track: 'inbound', ms: 150, bytes: new Uint8Array(FRAME).fill(0x80) })
  run.push({ track: 'outbound', ms: 150, bytes: Uint8Array.from({ length: FRAME }, (_, i) => (i % 2 === 0 ? 0x80 : 0x00)) })
  assert.equal(run.output.length, FRAME)
  assert.ok(run.output.every((s, i) => s === (i % 2 === 0 ? 32767 : 0)))
})

test('TrackAligner keeps every timeline position accounted for once per track when frames are dropped, delayed, jittered and repeated', () => {
  for (let seed = 100; seed < 120; seed++) {
    const random = prng(seed)
    const run = harness()
    const held: Frame[] = []
    let jumpFrames = 0
    let repeatFrames = 0
    for (let k = 0; k < 400; k++) {
      for (const track of ['inbound', 'outbound'] as const) {
        const roll = random()
        const frame: Frame = { track, ms: 150 + 20 * k + Math.floor(random() * 5) - 2, bytes: randomFrame(random, 80 + Math.floor(random() * 3) * 80) }
        if (roll < 0.05) continue
        if (track === 'outbound' && roll < 0.15) {
          held.push(frame)
          continue
        }
        if (roll > 0.99) {
          run.push({ ...frame, ms: frame.ms + 20_000 })
          jumpFrames++
        }
        run.push(frame)
        if (roll > 0.98 && roll <= 0.99) {
          run.push(frame)
          repeatFrames++
        }
      }
      if (held.length > 0 && random() < 0.3) for (const frame of held.splice(0)) run.push(frame)
    }
    run.aligner.flush()
    const { aligner } = run
    const span = aligner.endSample - aligner.startSample!
    assert.equal(run.output.length, span)
    for (const track of ['inbound', 'outbound'] as const) {
      const s = aligner.stats[track]
      assert.equal(s.receivedSamples - s.lateSamples + s.gapSamples, span, `seed ${seed} ${track}: received - late + gap = timeline`)
    }
    assert.ok(aligner.stats.inbound.invalidFrames + aligner.stats.outbound.invalidFrames >= jumpFrames + repeatFrames, `seed ${seed}`)
    assert.ok(Math.max(...run.pieces) <= MAX_PIECE)
  }
})

test('TrackAligner refuses with a clear error when options are invalid', () => {
  const onMixed = (): void => {}
  assert.throws(() => new TrackAligner({ tracks: [], onMixed }), /tracks must be/)
  assert.throws(() => new TrackAligner({ tracks: ['inbound', 'inbound'], onMixed }), /tracks must be/)
  assert.throws(() => new TrackAligner({ tracks: ['both' as Track], onMixed }), /tracks must be/)
  assert.throws(() => new TrackAligner({ tracks: ['inbound'], maxWaitMs: -1, onMixed }), /maxWaitMs/)
  assert.throws(() => new TrackAligner({ tracks: ['inbound'], maxWaitMs: 100, maxJumpMs: 50, onMixed }), /maxJumpMs/)
  assert.throws(() => new TrackAligner({ tracks: ['inbound'], sampleRate: 8001, onMixed }), /sampleRate/)
  assert.throws(() => new TrackAligner({ tracks: ['inbound'] }), { name: 'TypeError', message: /either onMixed .* or output/ })
  assert.throws(() => new TrackAligner({ tracks: ['inbound'], onMixed, output: new Chunker(50, () => {}) }), { name: 'TypeError', message: /either onMixed .* or output/ })
})

/** A MixOutput with an odd, small room per piece, so the mix is split at every kind of boundary. */
class PiecewiseOutput implements MixOutput {
  readonly samples: number[] = []
  readonly #piece: Int16Array
  filled = 0

  constructor (pieceSamples: number) {
    this.#piece = new Int16Array(pieceSamples)
  }

  get room (): number { return this.#piece.length - this.filled }

  target (): Int16Array {
    return this.#piece
  }

  commit (count: number): void {
    assert.ok(count >= 1 && count <= this.room, `commit(${count}) with ${this.room} of room`)
    this.filled += count
    if (this.filled === this.#piece.length) {
      for (const sample of this.#piece) this.samples.push(sample)
      this.filled = 0
    }
  }

  /** Everything written, the piece in progress included. */
  all (): number[] {
    return [...this.samples, ...this.#piece.subarray(0, this.filled)]
  }
}

test('TrackAligner writes the same mix and energy into an output as it hands to onMixed when frames are dropped, delayed and jittered', () => {
  for (const tracks of [['inbound', 'outbound'], ['outbound']] as Track[][]) {
    for (let seed = 200; seed < 206; seed++) {
      const random = prng(seed)
      const frames: Frame[] = []
      for (let k = 0; k < 300; k++) {
        for (const track of tracks) {
          if (random() < 0.05) continue
          frames.push({ track, ms: 150 + 20 * k + Math.floor(random() * 5) - 2, bytes: randomFrame(random, 80 + Math.floor(random() * 3) * 80) })
        }
        // Now and then a track's frames come a few ticks late, out of order with the other's.
        if (random() < 0.1 && frames.length > 4) frames.push(...frames.splice(frames.length - 4, 2))
      }
      const reference = harness({ tracks })
      const piecewise = new PiecewiseOutput(37)
      const chunks: Buffer[] = []
      const chunker = new Chunker(50, (chunk) => chunks.push(Buffer.from(chunk)))
      const intoPieces = new TrackAligner({ tracks, output: piecewise })
      const intoChunks = new TrackAligner({ tracks, output: chunker })
      for (const frame of frames) {
        const expected = reference.push(frame)
        assert.equal(intoPieces.push(frame.track, frame.ms, frame.bytes), expected)
        assert.equal(intoChunks.push(frame.track, frame.ms, frame.bytes), expected)
      }
      for (const aligner of [reference.aligner, intoPieces, intoChunks]) aligner.flush()
      chunker.flush(0)
      const what = `${tracks.join('+')} seed ${seed}`
      assert.ok(reference.output.length > 40_000, `${what}: the run mixes a lot of audio`)
      assertSamplesEqual(piecewise.all(), reference.output, `${what}: output in 37-sample pieces`)
      const chunked = Buffer.concat(chunks)
      assertSamplesEqual(new Int16Array(chunked.buffer, chunked.byteOffset, chunked.length / 2), reference.output, `${what}: chunks`)
      for (const aligner of [intoPieces, intoChunks]) {
        assert.deepEqual(aligner.stats, reference.aligner.stats, `${what}: stats`)
        assert.equal(aligner.endSample, reference.aligner.endSample)
        for (const track of tracks) {
          for (let fromMs = 150; fromMs < 6150; fromMs += 370) {
            // Float32 block sums: a block recorded in two pieces may round differently in the last bits.
            const actual = aligner.energy[track].meanSquare(fromMs, fromMs + 830)!
            const expected = reference.aligner.energy[track].meanSquare(fromMs, fromMs + 830)!
            assert.ok(expected > 0 && Math.abs(actual - expected) <= 1e-6 * expected, `${what}: ${track} energy at ${fromMs} ms: ${actual} instead of ${expected}`)
          }
        }
      }
    }
  }
})

test('TrackAligner resumes a track that stalled longer than maxJumpMs while the other went on', () => {
  const random = prng(21)
  const run = harness({ maxJumpMs: 1000 })
  // Both tracks for 200 ms, then only outbound for 2 s (the inbound track stalled), then both again.
  const frames = interleaved(random, 10)
  for (const frame of frames) run.push(frame)
  const outboundOnly: Frame[] = []
  for (let k = 10; k < 110; k++) outboundOnly.push({ track: 'outbound', ms: 150 + 20 * k, bytes: randomFrame(random) })
  for (const frame of outboundOnly) run.push(frame)
  const resumed = interleaved(random, 10, 150 + 20 * 110)
  const results = resumed.map((frame) => run.push(frame))
  assert.ok(results.every((result) => result === 'ok'), `the stalled track resumes where the mix stands: ${results.join(',')}`)
  assert.equal(run.aligner.stats.inbound.invalidFrames, 0)
  run.aligner.flush()
  assertSamplesEqual(run.output, referenceMix(150, 150 + 20 * 120, [...frames, ...outboundOnly, ...resumed]).mix)
})

test('TrackAligner accepts the frame after a lone jump when it continues it, so a real outage is survived', () => {
  const random = prng(22)
  const run = harness({ tracks: ['inbound'], maxJumpMs: 1000 })
  const before: Frame[] = []
  for (let k = 0; k < 10; k++) before.push({ track: 'inbound', ms: 150 + 20 * k, bytes: randomFrame(random) })
  for (const frame of before) run.push(frame)
  // Twilio discarded 5 s of audio: the next frames are 5 s ahead and continue each other.
  const outageEnd = 150 + 200 + 5000
  const after: Frame[] = []
  for (let k = 0; k < 10; k++) after.push({ track: 'inbound', ms: outageEnd + 20 * k, bytes: randomFrame(random) })
  assert.equal(run.push(after[0]!), 'jump', 'the first frame after the outage alone is not trusted')
  assert.equal(run.push(after[1]!), 'ok', 'the frame that continues it resyncs the track')
  for (const frame of after.slice(2)) assert.equal(run.push(frame), 'ok')
  assert.equal(run.aligner.stats.inbound.invalidFrames, 1)
  assert.equal(run.aligner.stats.inbound.gapSamples, (5000 + 20) * 8, 'the outage and the dropped frame became silence')
  assertSamplesEqual(run.output, referenceMix(150, outageEnd + 200, [...before, ...after.slice(1)], ['inbound']).mix)
})
