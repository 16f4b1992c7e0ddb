/** The q-quantile (0..1) of the values, nearest rank; NaN when there are none. Sorts in place. */
export function quantile (sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.max(1, Math.ceil(q * sorted.length))
  return sorted[rank - 1] as number
}

export interface Distribution {
  count: number
  p50: number
  p99: number
  max: number
}

export function distribution (values: Float64Array): Distribution {
  const sorted = values.slice().sort()
  return { count: sorted.length, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted.length === 0 ? Number.NaN : sorted[sorted.length - 1] as number }
}

/** Least-squares slope of y over x. */
export function slope (xs: number[], ys: number[]): number {
  const n = xs.length
  if (n < 2) return 0
  const meanX = xs.reduce((sum, x) => sum + x, 0) / n
  const meanY = ys.reduce((sum, y) => sum + y, 0) / n
  let numerator = 0
  let denominator = 0
  for (let i = 0; i < n; i++) {
    numerator += ((xs[i] as number) - meanX) * ((ys[i] as number) - meanY)
    denominator += ((xs[i] as number) - meanX) ** 2
  }
  return denominator === 0 ? 0 : numerator / denominator
}
