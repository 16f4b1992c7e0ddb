import { test } from 'node:test'
import assert from 'node:assert/strict'
import { TrackEnergy, roleFromEnergy } from '../../../src/core/audio/energy.ts'

function constant (value: number, length: number): Int16Array {
  return new Int16Array(length).fill(value)
}

test('TrackEnergy gives each block\'s mean square when the range covers whole blocks', () => {
  const energy = new TrackEnergy()
  // 150 ms of 100, then 100 ms of 1000, placed at 150 ms as a first Twilio frame would be.
  energy.add(constant(100, 1200), 1200, 1200)
  energy.add(constant(-1000, 800), 800, 2400)
  assert.equal(energy.meanSquare(150, 300), 10_000)
  assert.equal(energy.meanSquare(300, 400), 1_000_000)
  assert.equal(energy.meanSquare(150, 400), (1200 * 10_000 + 800 * 1_000_000) / 2000)
  assert.equal(energy.meanSquare(310, 320), 1_000_000, 'a range inside a block gives that block')
  assert.equal(energy.meanSquare(320, 320), 1_000_000, 'an empty range gives the block holding fromMs')
})

test('TrackEnergy weighs the edge blocks by their overlap when asked for the mean square within a range', () => {
  const energy = new TrackEnergy()
  // Blocks of 50 ms: 100, 1000, 100 (mean squares 10 000, 1 000 000, 10 000).
  energy.add(constant(100, 400), 400, 0)
  energy.add(constant(1000, 400), 400, 400)
  energy.add(constant(100, 400), 400, 800)
  assert.equal(energy.meanSquareWithin(50, 100), 1_000_000, 'whole blocks as meanSquare')
  assert.equal(energy.meanSquareWithin(60, 90), 1_000_000, 'inside one block: that block')
  // 25 ms of the first block and 50 ms of the second: (0.5 × 10 000 + 1 × 1 000 000) / 1.5.
  assert.ok(Math.abs(energy.meanSquareWithin(25, 100)! - (0.5 * 10_000 + 1_000_000) / 1.5) < 1e-6)
  assert.equal(energy.meanSquare(25, 100), (10_000 + 1_000_000) / 2, 'meanSquare rounds out to whole blocks')
  assert.equal(energy.meanSquareWithin(1000, 1100), null, 'beyond the audio')
  assert.equal(energy.meanSquareWithin(70, 70), energy.meanSquare(70, 70), 'an empty range as meanSquare')
})

test('TrackEnergy counts only recorded samples when the range reaches beyond the audio', () => {
  const energy = new TrackEnergy({ blockMs: 20 })
  energy.add(Int16Array.of(3, 4, 0, 0), 2, 1600)
  assert.equal(energy.meanSquare(0, 10_000), 12.5)
  assert.equal(energy.meanSquare(0, 150), null)
  assert.equal(energy.meanSquare(500, 600), null)
})

test('TrackEnergy returns null when the range fell out of the window', () => {
  const energy = new TrackEnergy({ blockMs: 50, windowMs: 1000 })
  const second = constant(500, 8000)
  for (let s = 0; s < 5; s++) energy.add(second, 8000, s * 8000)
  assert.equal(energy.meanSquare(0, 1000), null)
  assert.equal(energy.meanSquare(3900, 4000), null)
  assert.equal(energy.meanSquare(4000, 5000), 250_000)
  assert.equal(energy.meanSquare(3500, 4500), 250_000, 'the part still in the window counts')
})

test('TrackEnergy keeps the newer block when a slot is written out of order', () => {
  const energy = new TrackEnergy({ blockMs: 50, windowMs: 100 })
  energy.add(constant(10, 400), 400, 800)
  energy.add(constant(20, 400), 400, 0)
  assert.equal(energy.meanSquare(100, 150), 100)
  assert.equal(energy.meanSquare(0, 50), null)
})

test('TrackEnergy records a block sum as add records the samples when given their sum of squares', () => {
  const samples = Int16Array.from({ length: 1000 }, (_, i) => Math.round(3000 * Math.sin(i / 7)))
  const byAdd = new TrackEnergy()
  byAdd.add(samples, 1000, 300)
  const byBlock = new TrackEnergy()
  // [300, 1300) in the 400-sample blocks 0..3: pieces of 100, 400, 400 and 100.
  for (const [from, to] of [[0, 100], [100, 500], [500, 900], [900, 1000]] as const) {
    byBlock.addBlock(300 + from, to - from, samples.subarray(from, to).reduce((sum, s) => sum + s * s, 0))
  }
  for (const [fromMs, toMs] of [[0, 200], [37.5, 50], [50, 100], [100, 162.5], [40, 150]] as const) {
    assert.equal(byBlock.meanSquare(fromMs, toMs), byAdd.meanSquare(fromMs, toMs), `${fromMs}..${toMs} ms`)
  }
  assert.throws(() => byBlock.addBlock(1590, 20, 0), RangeError, 'a span across a block boundary is refused')
})

test('TrackEnergy refuses with a RangeError when options are out of range', () => {
  assert.throws(() => new TrackEnergy({ blockMs: 0 }), RangeError)
  assert.throws(() => new TrackEnergy({ blockMs: 50, windowMs: 10 }), RangeError)
  assert.throws(() => new TrackEnergy({ blockMs: 0.01 }), RangeError)
  assert.throws(() => new TrackEnergy().add(new Int16Array(4), 4, -1), RangeError)
})

test('roleFromEnergy names the louder track when it leads by at least the margin', () => {
  assert.equal(roleFromEnergy(4e6, 1e6), 'customer')
  assert.equal(roleFromEnergy(1e6, 4e6), 'agent')
  assert.equal(roleFromEnergy(3.9e6, 1e6), 'unknown', '5.9 dB is below 6 dB')
  assert.equal(roleFromEnergy(1e6, 3.9e6), 'unknown')
  assert.equal(roleFromEnergy(1e6, 1e6), 'unknown')
  assert.equal(roleFromEnergy(1.5e6, 1e6, 1), 'customer')
  assert.equal(roleFromEnergy(1.5e6, 1e6, 2), 'unknown')
})

test('roleFromEnergy handles digital silence when a track\'s energy is zero', () => {
  assert.equal(roleFromEnergy(250_000, 0), 'customer')
  assert.equal(roleFromEnergy(0, 250_000), 'agent')
  assert.equal(roleFromEnergy(1, 0), 'customer')
  assert.equal(roleFromEnergy(0, 0), 'unknown')
  assert.equal(roleFromEnergy(0, 0, 0), 'unknown')
})

test('roleFromEnergy returns unknown when a measurement is missing', () => {
  assert.equal(roleFromEnergy(null, 1e6), 'unknown')
  assert.equal(roleFromEnergy(1e6, null), 'unknown')
  assert.equal(roleFromEnergy(null, null), 'unknown')
  assert.throws(() => roleFromEnergy(1, 1, -1), RangeError)
})
