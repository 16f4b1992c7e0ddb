const INT16_MAX = 32767
const INT16_MIN = -32768

/**
 * `out[outStart + k] = a[start + k] + b[start + k]` for the `end - start` samples of the range,
 * clamped to int16: two loud talkers overlapping clip instead of wrapping around, which would turn
 * into full-scale clicks. `out` may be `a` or `b` (in place, with `outStart` = `start`, the
 * default). In the same pass the squares of `a`'s samples are added to `squares[0]` and of `b`'s to
 * `squares[1]`, so a caller that records each track's energy reads every sample once.
 */
export function mixSaturating (a: Int16Array, b: Int16Array, out: Int16Array, start: number, end: number, squares: Float64Array, outStart: number = start): void {
  if (!(start >= 0) || end > a.length || end > b.length || !(outStart >= 0) || outStart + (end - start) > out.length || squares.length < 2) {
    throw new RangeError(`mixSaturating: [${start}, ${end}) at ${outStart} is outside an array (${a.length}, ${b.length}, ${out.length}) or squares has no room for two sums`)
  }
  const shift = outStart - start
  let sumA = squares[0]!
  let sumB = squares[1]!
  for (let i = start; i < end; i++) {
    const p = a[i]!
    const q = b[i]!
    sumA += p * p
    sumB += q * q
    const sum = p + q
    out[i + shift] = sum > INT16_MAX ? INT16_MAX : (sum < INT16_MIN ? INT16_MIN : sum)
  }
  squares[0] = sumA
  squares[1] = sumB
}

/**
 * A consumer that takes samples in place (the Chunker): a writer puts up to `room` samples into
 * `target()` from index `filled`, then `commit`s them. `target()` always has room for one sample.
 */
export interface MixOutput {
  target (): Int16Array
  readonly filled: number
  readonly room: number
  commit (count: number): void
}

/** `samples[0..length)` into `output`, in pieces that fit its room. */
export function copyInto (output: MixOutput, samples: Int16Array, length: number): void {
  let i = 0
  while (i < length) {
    const target = output.target()
    const n = Math.min(length - i, output.room)
    // A loop rather than set(subarray): a few hundred samples at a time, and no view object per piece.
    for (let end = i + n, to = output.filled; i < end; i++, to++) target[to] = samples[i]!
    output.commit(n)
  }
}
