import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Chunker, ChunkPool } from '../../../src/core/audio/chunker.ts'

interface Emitted { chunk: Buffer, startSample: number }

function randomInt16 (length: number): Int16Array {
  return Int16Array.from({ length }, () => Math.floor(Math.random() * 65536) - 32768)
}

/** Compares sample arrays by first difference: a failing deepEqual on 10^5 samples would print for minutes. */
function assertSamplesEqual (actual: ArrayLike<number>, expected: ArrayLike<number>, what = 'samples'): void {
  assert.equal(actual.length, expected.length, `${what}: length`)
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) assert.fail(`${what} differ first at index ${i}: ${actual[i]} instead of ${expected[i]}`)
  }
}

function concatSamples (chunks: Emitted[]): Int16Array {
  const bytes = Buffer.concat(chunks.map((c) => c.chunk))
  return Int16Array.from({ length: bytes.length / 2 }, (_, i) => bytes.readInt16LE(i * 2))
}

for (const chunkMs of [50, 51, 100, 160, 333, 500, 999, 1000]) {
  test(`Chunker is sample-exact with ${chunkMs} ms chunks when pushes have random lengths`, () => {
    const chunkSamples = chunkMs * 8
    const input = randomInt16(8000 * 7 + 123)
    const emitted: Emitted[] = []
    const chunker = new Chunker(chunkMs, (chunk, startSample) => emitted.push({ chunk, startSample }))
    const scratch = new Int16Array(3000)
    for (let at = 0; at < input.length;) {
      const length = Math.min(input.length - at, Math.floor(Math.random() * 3000))
      // The same scratch array for every push, as the aligner does: chunks must not alias it.
      scratch.set(input.subarray(at, at + length))
      scratch.fill(0x5555, length)
      chunker.push(scratch, length)
      at += length
    }
    const full = Math.floor(input.length / chunkSamples)
    assert.equal(emitted.length, full)
    assert.equal(chunker.emittedSamples, full * chunkSamples)
    chunker.flush()
    const remainder = input.length - full * chunkSamples
    const tailSamples = remainder === 0 ? 0 : Math.max(remainder, 400)
    assert.equal(emitted.length, full + (remainder === 0 ? 0 : 1))
    emitted.forEach(({ chunk, startSample }, index) => {
      assert.equal(startSample, index * chunkSamples)
      assert.equal(chunk.length, index < full ? chunkSamples * 2 : tailSamples * 2, `chunk ${index}`)
    })
    assert.equal(chunker.emittedSamples, full * chunkSamples + tailSamples)
    const output = concatSamples(emitted)
    assertSamplesEqual(output.subarray(0, input.length), input)
    assert.ok(output.subarray(input.length).every((s) => s === 0), 'padding is silence')
  })
}

test('Chunker emits the same chunks when samples are written in place through target and commit as when pushed', () => {
  const input = randomInt16(8000 * 3 + 77)
  const pushed: Emitted[] = []
  const written: Emitted[] = []
  const byPush = new Chunker(50, (chunk, startSample) => pushed.push({ chunk, startSample }))
  const inPlace = new Chunker(50, (chunk, startSample) => written.push({ chunk, startSample }))
  for (let at = 0; at < input.length;) {
    const length = Math.min(input.length - at, 1 + Math.floor(Math.random() * 700))
    byPush.push(input.subarray(at, at + length), length)
    for (let end = at + length; at < end;) {
      const target = inPlace.target()
      const count = Math.min(end - at, inPlace.room)
      assert.ok(count >= 1, 'target() leaves room for at least one sample')
      target.set(input.subarray(at, at + count), inPlace.filled)
      inPlace.commit(count)
      at += count
    }
  }
  byPush.flush()
  inPlace.flush()
  assert.equal(written.length, pushed.length)
  written.forEach(({ chunk, startSample }, index) => {
    assert.equal(startSample, pushed[index]!.startSample)
    assert.ok(chunk.equals(pushed[index]!.chunk), `chunk ${index}`)
  })
  assertSamplesEqual(concatSamples(written).subarray(0, input.length), input)
})

test('Chunker refuses a commit with a RangeError when no chunk is held or it exceeds the room', () => {
  const chunker = new Chunker(50, () => {})
  assert.throws(() => chunker.commit(1), { name: 'RangeError', message: /none held/ })
  chunker.target()
  chunker.commit(390)
  assert.equal(chunker.room, 10)
  assert.throws(() => chunker.commit(11), { name: 'RangeError', message: /10 samples of room/ })
  assert.throws(() => chunker.commit(-1), RangeError)
})

test('Chunker pads the tail with silence to 50 ms when less is held at flush', () => {
  const emitted: Emitted[] = []
  const chunker = new Chunker(100, (chunk, startSample) => emitted.push({ chunk, startSample }))
  chunker.push(Int16Array.of(-2, 258, 32767, -32768), 4)
  chunker.flush()
  assert.equal(emitted.length, 1)
  assert.equal(emitted[0]!.startSample, 0)
  assert.equal(emitted[0]!.chunk.length, 800)
  assert.deepEqual([...emitted[0]!.chunk.subarray(0, 8)], [0xfe, 0xff, 0x02, 0x01, 0xff, 0x7f, 0x00, 0x80])
  assert.ok(emitted[0]!.chunk.subarray(8).every((b) => b === 0))
  assert.equal(chunker.emittedSamples, 400)
})

test('Chunker keeps a tail longer than minTailMs unpadded and continues after flush when pushed again', () => {
  const emitted: Emitted[] = []
  const chunker = new Chunker(200, (chunk, startSample) => emitted.push({ chunk, startSample }))
  chunker.push(new Int16Array(1000).fill(3), 1000)
  chunker.flush(50)
  assert.deepEqual(emitted.map((e) => e.chunk.length), [2000])
  chunker.push(new Int16Array(1600).fill(4), 1600)
  assert.deepEqual(emitted.map((e) => [e.chunk.length, e.startSample]), [[2000, 0], [3200, 1000]])
  chunker.push(new Int16Array(10), 10)
  chunker.flush(0)
  assert.deepEqual(emitted.map((e) => e.chunk.length), [2000, 3200, 20])
})

test('Chunker emits nothing when flushed empty', () => {
  const emitted: Emitted[] = []
  const chunker = new Chunker(50, (chunk, startSample) => emitted.push({ chunk, startSample }))
  chunker.flush()
  chunker.push(new Int16Array(400), 400)
  chunker.flush()
  chunker.push(new Int16Array(5), 0)
  chunker.flush()
  assert.equal(emitted.length, 1)
  assert.equal(chunker.emittedSamples, 400)
})

test('Chunker refuses with a RangeError naming the limits when chunkMs is outside 50..1000', () => {
  for (const chunkMs of [49, 1001, 50.5, Number.NaN, 0]) {
    assert.throws(() => new Chunker(chunkMs, () => {}), { name: 'RangeError', message: /chunkMs must be an integer from 50 to 1000/ })
  }
  const chunker = new Chunker(100, () => {})
  assert.throws(() => chunker.flush(101), RangeError)
  assert.throws(() => chunker.push(new Int16Array(4), 5), RangeError)
})

test('ChunkPool hands released whole chunks out again and leaves tails, strangers and the overflow to the GC when they come back', () => {
  const pool = new ChunkPool(800, 2)
  const a = pool.acquire()
  const b = pool.acquire()
  const c = pool.acquire()
  assert.equal(a.length, 800)
  assert.equal(a.byteOffset, 0)
  assert.notEqual(a.buffer, b.buffer, 'every chunk has an ArrayBuffer of its own')
  pool.release(a.subarray(0, 400))
  pool.release(Buffer.alloc(800, 0).subarray(0))
  pool.release(Buffer.from(new Uint8Array(1600).buffer, 0, 800))
  assert.equal(pool.size, 1, 'only the whole 800-byte buffer of its own was kept')
  pool.release(a)
  pool.release(b)
  assert.equal(pool.size, 2, 'the capacity bounds what is kept')
  pool.release(c)
  assert.equal(pool.size, 2)
  const again = new Set([pool.acquire(), pool.acquire()])
  assert.equal(pool.size, 0)
  assert.ok(again.has(b) || again.has(a), 'a released buffer is handed out again')
})

test('Chunker fills buffers from its pool when given one, with the same chunks as without', () => {
  const pool = new ChunkPool(800)
  const recycled = pool.acquire().fill(0x55)
  pool.release(recycled)
  const emitted: Emitted[] = []
  const chunker = new Chunker(50, (chunk, startSample) => emitted.push({ chunk, startSample }), 8000, pool)
  const input = randomInt16(1000)
  chunker.push(input, input.length)
  assert.equal(emitted.length, 2)
  assert.equal(emitted[0]!.chunk, recycled, 'the pooled buffer was used first')
  assertSamplesEqual(concatSamples(emitted), input.subarray(0, 800))
  assert.throws(() => new Chunker(100, () => {}, 8000, pool), /pool's buffers are 800 bytes, chunks 1600/)
})
