/** A scrape: each sample line's series (`name{labels}` as printed) to its value. */
export type Scrape = Map<string, number>

export function parseScrape (text: string): Scrape {
  const samples: Scrape = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const space = line.lastIndexOf(' ')
    samples.set(line.slice(0, space), Number(line.slice(space + 1)))
  }
  return samples
}

export async function scrape (url: string): Promise<Scrape> {
  const response = await fetch(url)
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`)
  return parseScrape(await response.text())
}

/** Sum over every series of a metric (all label values). */
export function total (samples: Scrape, name: string): number {
  let sum = 0
  for (const [series, value] of samples) {
    if (series === name || series.startsWith(`${name}{`)) sum += value
  }
  return sum
}

export interface HistogramWindow {
  /** Upper bounds in seconds, +Infinity last, with the cumulative count observed in the window. */
  buckets: Array<{ le: number, count: number }>
  count: number
  sumSeconds: number
}

/** What a label-less histogram observed between two scrapes. */
export function histogramBetween (before: Scrape, after: Scrape, name: string): HistogramWindow {
  const buckets: Array<{ le: number, count: number }> = []
  for (const [series, value] of after) {
    const match = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}$`).exec(series)
    if (match === null) continue
    const le = match[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(match[1])
    buckets.push({ le, count: value - (before.get(series) ?? 0) })
  }
  buckets.sort((a, b) => a.le - b.le)
  return {
    buckets,
    count: (after.get(`${name}_count`) ?? 0) - (before.get(`${name}_count`) ?? 0),
    sumSeconds: (after.get(`${name}_sum`) ?? 0) - (before.get(`${name}_sum`) ?? 0)
  }
}

/** histogram_quantile's linear interpolation inside the bucket holding rank q × count. */
export function bucketQuantile (histogram: HistogramWindow, q: number): number {
  const rank = q * histogram.count
  let lowerLe = 0
  let lowerCount = 0
  for (const { le, count } of histogram.buckets) {
    if (count >= rank && count > 0) {
      if (!Number.isFinite(le)) return lowerLe
      return lowerLe + (le - lowerLe) * (rank - lowerCount) / Math.max(1, count - lowerCount)
    }
    lowerLe = le
    lowerCount = count
  }
  return Number.NaN
}

/** The upper bound of the highest bucket anything fell into: what a histogram can say of the max. */
export function bucketMaxBound (histogram: HistogramWindow): number {
  for (const { le, count } of histogram.buckets) {
    if (count >= histogram.count && histogram.count > 0) return le
  }
  return Number.NaN
}

/** The upper bound of the bucket holding rank q × count: all a coarse histogram can promise. */
export function bucketQuantileBound (histogram: HistogramWindow, q: number): number {
  const rank = q * histogram.count
  for (const { le, count } of histogram.buckets) {
    if (count >= rank && count > 0) return le
  }
  return Number.NaN
}
