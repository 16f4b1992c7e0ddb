import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mixSaturating } from '../../../src/core/audio/mixer.ts'

function randomInt16 (length: number): Int16Array {
  return Int16Array.from({ length }, () => Math.floor(Math.random() * 65536) - 32768)
}

test('mixSaturating adds and clamps to int16 when random samples are mixed', () => {
  const a = randomInt16(5000)
  const b = randomInt16(5000)
  const out = new Int16Array(5000)
  mixSaturating(a, b, out, 5000)
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
  mixSaturating(Int16Array.of(32767, -32768, 32767, 20000), Int16Array.of(1, -1, 32767, -30000), out, 4)
  assert.deepEqual(Array.from(out), [32767, -32768, 32767, -10000])
})

test('mixSaturating mixes in place and leaves the rest alone when length is shorter', () => {
  const a = Int16Array.of(1, 2, 3, 4)
  mixSaturating(a, Int16Array.of(10, 20, 30, 40), a, 3)
  assert.deepEqual(Array.from(a), [11, 22, 33, 4])
})

test('mixSaturating throws a RangeError when length exceeds an array', () => {
  assert.throws(() => mixSaturating(new Int16Array(4), new Int16Array(3), new Int16Array(4), 4), RangeError)
})
