import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MULAW_TO_PCM16, decodeMulaw } from '../../../src/core/audio/mulaw.ts'

const soxMissing = spawnSync('sox', ['--version']).error !== undefined

/** G.711 μ-law expansion written from the ITU formula, independent of alawmulaw. */
function referenceDecode (code: number): number {
  const u = ~code & 0xff
  const magnitude = ((((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4)) - 0x84
  return (u & 0x80) !== 0 ? (0 - magnitude) | 0 : magnitude
}

test('MULAW_TO_PCM16 equals sox\'s decoding when all 256 codes are decoded', { skip: soxMissing ? 'sox is not installed (apt-get install sox); cannot compare with it' : false }, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-mulaw-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const input = join(dir, 'in.raw')
  const output = join(dir, 'out.raw')
  writeFileSync(input, Uint8Array.from({ length: 256 }, (_, code) => code))
  const run = spawnSync('sox', ['-t', 'ul', '-r', '8000', '-c', '1', input, '-t', 'raw', '-e', 'signed-integer', '-b', '16', '-L', output])
  assert.equal(run.status, 0, run.stderr.toString())
  const pcm = readFileSync(output)
  assert.equal(pcm.length, 512)
  for (let code = 0; code < 256; code++) {
    assert.equal(MULAW_TO_PCM16[code], pcm.readInt16LE(code * 2), `code 0x${code.toString(16)}`)
  }
})

test('MULAW_TO_PCM16 equals the G.711 formula when all 256 codes are decoded', () => {
  assert.equal(MULAW_TO_PCM16.length, 256)
  for (let code = 0; code < 256; code++) assert.equal(MULAW_TO_PCM16[code], referenceDecode(code), `code 0x${code.toString(16)}`)
  assert.equal(MULAW_TO_PCM16[0xff], 0)
  assert.equal(MULAW_TO_PCM16[0x7f], 0)
  assert.equal(MULAW_TO_PCM16[0x80], 32124)
  assert.equal(MULAW_TO_PCM16[0x00], -32124)
})

test('decodeMulaw writes each byte\'s sample at the offset when given a source range', () => {
  const src = Uint8Array.from({ length: 300 }, (_, i) => (i * 37) & 0xff)
  const dst = new Int16Array(400).fill(7)
  decodeMulaw(src, dst, 50, 20, 220)
  for (let i = 0; i < 400; i++) {
    const expected = i >= 50 && i < 250 ? referenceDecode(src[i - 30]!) : 7
    assert.equal(dst[i], expected, `index ${i}`)
  }
  const whole = new Int16Array(300)
  decodeMulaw(src, whole)
  assert.deepEqual(Array.from(whole), Array.from(src, referenceDecode))
})

test('decodeMulaw throws a RangeError when the destination is too small', () => {
  assert.throws(() => decodeMulaw(new Uint8Array(160), new Int16Array(160), 1), RangeError)
  assert.throws(() => decodeMulaw(new Uint8Array(10), new Int16Array(160), 0, 5, 11), RangeError)
})
