import alawmulaw from 'alawmulaw'

/**
 * G.711 μ-law byte → linear PCM16, for all 256 codes. Built once from alawmulaw's reference decoder so
 * the hot path is one table lookup per sample instead of the library's per-sample bit arithmetic.
 * Both silence codes Twilio sends (0xFF and 0x7F) decode to 0.
 */
export const MULAW_TO_PCM16: Int16Array = buildTable()

function buildTable (): Int16Array {
  const table = new Int16Array(256)
  for (let code = 0; code < 256; code++) table[code] = alawmulaw.mulaw.decodeSample(code)
  return table
}

/**
 * Decodes `src[srcStart..srcEnd)` into `dst` starting at `dstOffset`.
 * Throws a RangeError when `dst` is too small rather than letting typed-array writes vanish silently.
 */
export function decodeMulaw (src: Uint8Array, dst: Int16Array, dstOffset = 0, srcStart = 0, srcEnd = src.length): void {
  const count = srcEnd - srcStart
  if (srcStart < 0 || count < 0 || srcEnd > src.length || dstOffset < 0 || dstOffset + count > dst.length) {
    throw new RangeError(`decodeMulaw: ${count} samples from offset ${srcStart} do not fit a ${dst.length}-sample destination at ${dstOffset}`)
  }
  const table = MULAW_TO_PCM16
  for (let i = 0; i < count; i++) dst[dstOffset + i] = table[src[srcStart + i]!]!
}
