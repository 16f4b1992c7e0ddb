const INT16_MAX = 32767
const INT16_MIN = -32768

/**
 * `out[i] = a[i] + b[i]` for `start <= i < end`, clamped to int16: two loud talkers overlapping clip
 * instead of wrapping around, which would turn into full-scale clicks. `out` may be `a` or `b` (in
 * place). In the same pass the squares of `a`'s samples are added to `squares[0]` and of `b`'s to
 * `squares[1]`, so a caller that records each track's energy reads every sample once.
 */
export function mixSaturating (a: Int16Array, b: Int16Array, out: Int16Array, start: number, end: number, squares: Float64Array): void {
  if (!(start >= 0) || end > a.length || end > b.length || end > out.length || squares.length < 2) {
    throw new RangeError(`mixSaturating: [${start}, ${end}) is outside an array (${a.length}, ${b.length}, ${out.length}) or squares has no room for two sums`)
  }
  let sumA = squares[0]!
  let sumB = squares[1]!
  for (let i = start; i < end; i++) {
    const p = a[i]!
    const q = b[i]!
    sumA += p * p
    sumB += q * q
    const sum = p + q
    out[i] = sum > INT16_MAX ? INT16_MAX : (sum < INT16_MIN ? INT16_MIN : sum)
  }
  squares[0] = sumA
  squares[1] = sumB
}
