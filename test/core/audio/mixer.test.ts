import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mixSaturating } from '../../../src/core/audio/mixer.ts'

function randomInt16 (length: number): Int16Array {
  return Int16Array.from({ length }, () => Math.floor(Math.random() * 65536) - 32768)
}

const squaresOf = (samples: Int16Array): number => samples.reduce((sum, s) => sum + s * s, 0)

test('mixSaturating adds and clamps to int16 when random samples are mixed', () => {
  const a = randomInt16(5000)
  const b = randomInt16(5000)
  const out = new Int16Array(5000)
  mixSaturating(a, b, out, 0, 5000, new Float64Array(2))
  let clamped = 0
  for (let i = 0; i < 5000; i++) {
    const sum = a[i]! + b[i]!
    if (sum > 32767 || sum < -32768) clamped++
    assert.equal(out[i], Math.max(-32768, Math.min(32767, sum)), `index ${i}`)
  }
  assert.ok(clamped > 100, 'the random input should exercise clamping')
})

test('mixSaturating saturates instead of wrapping when both inputs are at full scale', () => {
  const out = new Int16Array(4)
  mixSaturating(Int16Array.of(32767, -32768, 32767, 20000), Int16Array.of(1, -1, 32767, -30000), out, 0, 4, new Float64Array(2))
  assert.deepEqual(Array.from(out), [32767, -32768, 32767, -10000])
})

test('mixSaturating mixes in place and leaves the rest alone when given a range', () => {
  const a = Int16Array.of(1, 2, 3, 4, 5)
  mixSaturating(a, Int16Array.of(10, 20, 30, 40, 50), a, 1, 4, new Float64Array(2))
  assert.deepEqual(Array.from(a), [1, 22, 33, 44, 5])
})

test('mixSaturating writes the mix from outStart when the output is another array at another offset', () => {
  const out = new Int16Array(8).fill(-7)
  mixSaturating(Int16Array.of(1, 2, 3, 4, 5), Int16Array.of(10, 20, 30, 40, 32767), out, 2, 5, new Float64Array(2), 4)
  assert.deepEqual(Array.from(out), [-7, -7, -7, -7, 33, 44, 32767, -7])
})

test('mixSaturating adds each input\'s sum of squares over the range to what squares holds when mixing', () => {
  const a = randomInt16(1000)
  const b = randomInt16(1000)
  const squares = Float64Array.of(7, 11)
  mixSaturating(a, b, new Int16Array(1000), 100, 900, squares)
  assert.equal(squares[0], 7 + squaresOf(a.subarray(100, 900)))
  assert.equal(squares[1], 11 + squaresOf(b.subarray(100, 900)))
})

test('mixSaturating throws a RangeError when the range exceeds an array', () => {
  assert.throws(() => mixSaturating(new Int16Array(4), new Int16Array(3), new Int16Array(4), 0, 4, new Float64Array(2)), RangeError)
  assert.throws(() => mixSaturating(new Int16Array(4), new Int16Array(4), new Int16Array(4), -1, 4, new Float64Array(2)), RangeError)
  assert.throws(() => mixSaturating(new Int16Array(4), new Int16Array(4), new Int16Array(6), 0, 4, new Float64Array(2), 3), RangeError)
})
