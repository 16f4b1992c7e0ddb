export const INT16_MAX = 32767
export const INT16_MIN = -32768

/**
 * `out[i] = a[i] + b[i]` for `i < length`, clamped to int16: two loud talkers overlapping clip instead
 * of wrapping around, which would turn into full-scale clicks. `out` may be `a` or `b` (in place).
 */
export function mixSaturating (a: Int16Array, b: Int16Array, out: Int16Array, length: number): void {
  if (length > a.length || length > b.length || length > out.length) {
    throw new RangeError(`mixSaturating: length ${length} exceeds an array (${a.length}, ${b.length}, ${out.length})`)
  }
  for (let i = 0; i < length; i++) {
    const sum = a[i]! + b[i]!
    out[i] = sum > INT16_MAX ? INT16_MAX : (sum < INT16_MIN ? INT16_MIN : sum)
  }
}
