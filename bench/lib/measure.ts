/**
 * Measuring one phase of the benchmark from outside the process under test: CPU and RSS from /proc,
 * the service's own histograms and event-loop delay from its /metrics, the generator's send times and
 * the fake upstream's receipt times for the latency across the bridge.
 */
import type { ChildProcess } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { nextMessage, tell } from './children.ts'
import type { LoadPlan, LoadReport, UpstreamSessionReport, ViewerStats } from './ipc.ts'
import type { BenchOptions, Outbox } from './options.ts'
import { bucketMaxBound, bucketQuantile, bucketQuantileBound, histogramBetween, scrape } from './prometheus.ts'
import type { Scrape } from './prometheus.ts'
import { cpuSeconds, cpuTimes, clockMs, machineJiffies, rssKb, treeCpuSeconds } from './proc.ts'
import { distribution } from './stats.ts'
import type { Distribution } from './stats.ts'

const SOAK_WINDOW_MS = 30_000
/** Calls play this long past the window, so its last frames are measured in steady state. */
const TAIL_MS = 1000
/**
 * prom-client samples the event loop with monitorEventLoopDelay({ resolution: 10 }), whose values
 * are whole timer intervals (an idle loop reads ≈ 10 ms); the delay is what exceeds it.
 */
const EVENT_LOOP_RESOLUTION_MS = 10
/**
 * The histogram of how long publishing one event holds the service's event loop (the outbox write),
 * `medstream_webhook_publish_seconds`; matched by pattern so an older build without it reads as
 * "not exposed".
 */
const PUBLISH_HISTOGRAM = /^(medstream_webhook_publish_seconds)_bucket\{le="/

export interface Sample {
  at: number
  /** CLOCK_MONOTONIC, µs: the clock of --cpu-prof timestamps. */
  monotonicUs: number
  cpuSeconds: number
  systemCpuSeconds: number
  generatorCpuSeconds: number
  upstreamCpuSeconds: number
  viewersCpuSeconds: number
  /** The PostgreSQL server's, its backends included; 0 without one. */
  databaseCpuSeconds: number
  machine: { busy: number, total: number }
  metrics: Scrape | null
}

export interface WindowResult {
  fromS: number
  toS: number
  rssMeanKb: number
  rssMaxKb: number
  cpuPerCallMinute: number
  eventLoopP99Ms: number | null
  /** The service's V8 heap and external memory at the window's end, MiB. */
  heapUsedMb: number | null
  heapTotalMb: number | null
  externalMb: number | null
}

export interface PhaseResult {
  target: 'service' | 'floor'
  /** The service's outbox; null for the file sink and the floor. */
  outbox: Outbox | null
  windowS: number
  cpuSeconds: number
  cpuPerCallMinute: number
  /** Of one core. */
  cpuPercent: number
  /** The kernel's share of cpuSeconds (socket and file syscalls), %. */
  systemCpuShare: number
  generatorCpuPercent: number
  upstreamCpuPercent: number | null
  /** bench/viewers.ts's CPU, % of a core; null without viewers. */
  viewersCpuPercent: number | null
  /** Live-view event streams per call during the run (`--viewers`); 0 for the floors. */
  viewers: number
  /** What the viewers received, the whole run; null without viewers. */
  viewerStats: ViewerStats | null
  /** The PostgreSQL server's CPU (all its processes) per call-minute; null without one. */
  databaseCpuPerCallMinute: number | null
  /** Of the whole machine (every core), everything on it included. */
  machineBusyPercent: number
  idleCpuPercent: number
  rssIdleKb: number
  rssPeakKb: number
  rssPerCallKb: number
  callsFailed: number
  callsActiveAtWindowStart: number
  framesSent: number
  framesReceived: number
  framesLost: number
  upstreamAudioMissingMs: number | null
  /** Final turns the service received from the fake upstream (the whole run). */
  turns: number | null
  timerLatenessMs: Distribution
  outsideLatencyMs: Distribution | null
  /**
   * From the service's histogram (buckets 1, 2.5, 5, 10, 25, 50, 100 ms): p50Ms and p99Ms are
   * histogram_quantile-style interpolations, the *BoundMs fields the bucket bounds they lie under.
   */
  insideLatencyMs: { count: number, meanMs: number, p50Ms: number, p99Ms: number, p50BoundMs: number, p99BoundMs: number, maxBoundMs: number } | null
  /**
   * The service's garbage-collection pauses over the window (prom-client's nodejs_gc_duration_seconds,
   * all kinds) per call-minute, and how many: less noisy than CPU on a shared machine when weighing GC
   * settings. Null for the floors.
   */
  gcSecondsPerCallMinute: number | null
  gcPauses: number | null
  /** Beyond prom-client's 10 ms sampling interval; the worst 30 s window's in a soak. */
  eventLoopP99Ms: number | null
  eventLoopMaxMs: number | null
  /** Webhook events delivered per second over the window (an outbox run only). */
  eventsPerSecond: number | null
  /** p99 of the service's publish histogram over the window, ms, when it exposes one. */
  publishP99Ms: number | null
  publishMetric: string | null
  /** Distinct events the receiver got, the whole run (an outbox run only). */
  webhookEventsReceived: number | null
  /** medstream_events_lost_total at the end, all reasons; null when the service has no such metric. */
  eventsLost: number | null
  unmatchedCalls: number
  windows: WindowResult[]
  rssSeries: Array<[number, number]>
}

export interface Phase {
  target: 'service' | 'floor'
  outbox: Outbox | null
  pid: number
  generator: ChildProcess
  upstreamPid: number | null
  /** bench/viewers.ts, when the run has live-view viewers. */
  viewersPid: number | null
  /** Event streams per call the viewers open; 0 without. */
  viewers: number
  /** The PostgreSQL server (postmaster) of a postgres outbox run. */
  databasePid: number | null
  metricsUrl: string | null
  rssIdleKb: number
  idleCpuPercent: number
  plan: LoadPlan
  /** Calls the target counts as live: from /metrics or the floor's own count. */
  liveCalls: () => Promise<number>
}

/** The process at rest before any call: median RSS, and CPU % of a core over the same 3 s. */
export async function idle (pid: number): Promise<{ rssKb: number, cpuPercent: number }> {
  await sleep(1000)
  const from = { at: clockMs(), cpu: cpuSeconds(pid) }
  await sleep(1000)
  const readings: number[] = []
  for (let i = 0; i < 5; i++) {
    readings.push(rssKb(pid))
    await sleep(200)
  }
  readings.sort((a, b) => a - b)
  return { rssKb: readings[2] as number, cpuPercent: 100 * (cpuSeconds(pid) - from.cpu) / ((clockMs() - from.at) / 1000) }
}

export function makePlan (target: LoadPlan['target'], options: BenchOptions): LoadPlan {
  const { calls, seconds, warmupSeconds, staggerSeconds, chunkMs } = options
  const startAt = clockMs() + 500
  const windowStartAt = startAt + staggerSeconds * 1000 + warmupSeconds * 1000
  const windowEndAt = windowStartAt + seconds * 1000
  return { target, calls, startAt, staggerMs: staggerSeconds * 1000, windowStartAt, windowEndAt, endAt: windowEndAt + TAIL_MS, chunkMs }
}

async function takeSample (phase: Phase): Promise<Sample> {
  const at = clockMs()
  const times = cpuTimes(phase.pid)
  return {
    at,
    monotonicUs: Number(process.hrtime.bigint() / 1000n),
    cpuSeconds: times.user + times.system,
    systemCpuSeconds: times.system,
    generatorCpuSeconds: phase.generator.pid === undefined ? 0 : cpuSeconds(phase.generator.pid),
    upstreamCpuSeconds: phase.upstreamPid === null ? 0 : cpuSeconds(phase.upstreamPid),
    viewersCpuSeconds: phase.viewersPid === null ? 0 : cpuSeconds(phase.viewersPid),
    databaseCpuSeconds: phase.databasePid === null ? 0 : treeCpuSeconds(phase.databasePid),
    machine: machineJiffies(),
    // A scrape resets prom-client's event-loop delay histogram: each window's p99 is its own.
    metrics: phase.metricsUrl === null ? null : await scrape(phase.metricsUrl)
  }
}

export async function sleepUntil (at: number): Promise<void> {
  const wait = at - clockMs()
  if (wait > 0) await sleep(wait)
}

/** Runs the plan against the phase's target and measures it; returns with the generator's report. */
export async function measure (phase: Phase, options: BenchOptions): Promise<{ result: Omit<PhaseResult, 'framesReceived' | 'framesLost' | 'upstreamAudioMissingMs' | 'outsideLatencyMs' | 'unmatchedCalls' | 'turns' | 'webhookEventsReceived' | 'eventsLost'>, report: LoadReport, samples: Sample[] }> {
  const { plan } = phase
  const { calls } = options
  const reportPromise = nextMessage(phase.generator, 'report', plan.endAt - clockMs() + 60_000)
  tell(phase.generator, { type: 'plan', plan })
  const rssSeries: Array<[number, number]> = []
  const rssTimer = setInterval(() => {
    try {
      rssSeries.push([clockMs(), rssKb(phase.pid)])
    } catch {
      // the process is gone; the phase will fail on its own
    }
  }, 1000)
  const samples: Sample[] = []
  let callsActiveAtWindowStart: number
  try {
    await sleepUntil(plan.windowStartAt)
    samples.push(await takeSample(phase))
    callsActiveAtWindowStart = await phase.liveCalls()
    const step = options.soak ? SOAK_WINDOW_MS : plan.windowEndAt - plan.windowStartAt
    for (let at = plan.windowStartAt + step; at < plan.windowEndAt - 1000; at += step) {
      await sleepUntil(at)
      samples.push(await takeSample(phase))
    }
    await sleepUntil(plan.windowEndAt)
    samples.push(await takeSample(phase))
  } finally {
    clearInterval(rssTimer)
  }
  const report = await reportPromise

  const first = samples[0] as Sample
  const last = samples[samples.length - 1] as Sample
  const windowS = (last.at - first.at) / 1000
  const cpu = last.cpuSeconds - first.cpuSeconds
  const perCallMinute = (from: Sample, to: Sample): number => (to.cpuSeconds - from.cpuSeconds) / (calls * (to.at - from.at) / 60_000)
  const inWindow = rssSeries.filter(([at]) => at >= plan.startAt && at <= plan.windowEndAt)
  const rssPeakKb = Math.max(phase.rssIdleKb, ...inWindow.map(([, kb]) => kb))
  const windows: WindowResult[] = []
  for (let i = 1; i < samples.length; i++) {
    const from = samples[i - 1] as Sample
    const to = samples[i] as Sample
    const rss = rssSeries.filter(([at]) => at >= from.at && at <= to.at).map(([, kb]) => kb)
    windows.push({
      fromS: Math.round((from.at - first.at) / 1000),
      toS: Math.round((to.at - first.at) / 1000),
      rssMeanKb: Math.round(rss.reduce((sum, kb) => sum + kb, 0) / Math.max(1, rss.length)),
      rssMaxKb: Math.max(0, ...rss),
      cpuPerCallMinute: perCallMinute(from, to),
      eventLoopP99Ms: to.metrics === null ? null : 1000 * (to.metrics.get('nodejs_eventloop_lag_p99_seconds') ?? Number.NaN) - EVENT_LOOP_RESOLUTION_MS,
      heapUsedMb: mib(to.metrics, 'nodejs_heap_size_used_bytes'),
      heapTotalMb: mib(to.metrics, 'nodejs_heap_size_total_bytes'),
      externalMb: mib(to.metrics, 'nodejs_external_memory_bytes')
    })
  }
  const lateness = concat(report.calls.map((call) => call.chunkLatenessMs))
  let insideLatencyMs: PhaseResult['insideLatencyMs'] = null
  let eventLoopP99Ms: number | null = null
  let eventLoopMaxMs: number | null = null
  let gcSecondsPerCallMinute: number | null = null
  let gcPauses: number | null = null
  if (first.metrics !== null && last.metrics !== null) {
    const gc = (metrics: Scrape, suffix: string): number => [...metrics].filter(([series]) => series.startsWith(`nodejs_gc_duration_seconds_${suffix}{`)).reduce((sum, [, value]) => sum + value, 0)
    gcSecondsPerCallMinute = (gc(last.metrics, 'sum') - gc(first.metrics, 'sum')) / (calls * windowS / 60)
    gcPauses = gc(last.metrics, 'count') - gc(first.metrics, 'count')
    const histogram = histogramBetween(first.metrics, last.metrics, 'medstream_bridge_latency_seconds')
    insideLatencyMs = {
      count: histogram.count,
      meanMs: 1000 * histogram.sumSeconds / Math.max(1, histogram.count),
      p50Ms: 1000 * bucketQuantile(histogram, 0.5),
      p99Ms: 1000 * bucketQuantile(histogram, 0.99),
      p50BoundMs: 1000 * bucketQuantileBound(histogram, 0.5),
      p99BoundMs: 1000 * bucketQuantileBound(histogram, 0.99),
      maxBoundMs: 1000 * bucketMaxBound(histogram)
    }
    // Over the whole window when it is one scrape interval; the worst 30 s window's in a soak.
    eventLoopP99Ms = Math.max(...windows.map((window) => window.eventLoopP99Ms ?? Number.NaN))
    eventLoopMaxMs = Math.max(...samples.slice(1).map((sample) => 1000 * (sample.metrics?.get('nodejs_eventloop_lag_max_seconds') ?? Number.NaN))) - EVENT_LOOP_RESOLUTION_MS
  }
  let eventsPerSecond: number | null = null
  let publishP99Ms: number | null = null
  let publishMetric: string | null = null
  if (phase.outbox !== null && first.metrics !== null && last.metrics !== null) {
    const delivered = (last.metrics.get('medstream_webhook_deliveries_total{result="success"}') ?? 0) - (first.metrics.get('medstream_webhook_deliveries_total{result="success"}') ?? 0)
    eventsPerSecond = delivered / windowS
    for (const series of last.metrics.keys()) {
      const match = PUBLISH_HISTOGRAM.exec(series)
      if (match === null) continue
      publishMetric = match[1] as string
      publishP99Ms = 1000 * bucketQuantile(histogramBetween(first.metrics, last.metrics, publishMetric), 0.99)
      break
    }
  }
  const jiffies = (last.machine.busy - first.machine.busy) / Math.max(1, last.machine.total - first.machine.total)
  return {
    report,
    samples,
    result: {
      target: phase.target,
      viewers: phase.viewers,
      viewerStats: null,
      outbox: phase.outbox,
      windowS,
      cpuSeconds: cpu,
      cpuPerCallMinute: perCallMinute(first, last),
      cpuPercent: 100 * cpu / windowS,
      systemCpuShare: 100 * (last.systemCpuSeconds - first.systemCpuSeconds) / Math.max(cpu, 1e-9),
      generatorCpuPercent: 100 * (last.generatorCpuSeconds - first.generatorCpuSeconds) / windowS,
      upstreamCpuPercent: phase.upstreamPid === null ? null : 100 * (last.upstreamCpuSeconds - first.upstreamCpuSeconds) / windowS,
      viewersCpuPercent: phase.viewersPid === null ? null : 100 * (last.viewersCpuSeconds - first.viewersCpuSeconds) / windowS,
      databaseCpuPerCallMinute: phase.databasePid === null ? null : (last.databaseCpuSeconds - first.databaseCpuSeconds) / (calls * windowS / 60),
      machineBusyPercent: 100 * jiffies,
      idleCpuPercent: phase.idleCpuPercent,
      rssIdleKb: phase.rssIdleKb,
      rssPeakKb,
      rssPerCallKb: (rssPeakKb - phase.rssIdleKb) / calls,
      callsFailed: report.calls.filter((call) => call.error !== null || call.closeCode !== 1000).length,
      callsActiveAtWindowStart,
      framesSent: report.calls.reduce((sum, call) => sum + call.framesSent, 0),
      timerLatenessMs: distribution(lateness),
      insideLatencyMs,
      gcSecondsPerCallMinute,
      gcPauses,
      eventLoopP99Ms,
      eventLoopMaxMs,
      eventsPerSecond,
      publishP99Ms,
      publishMetric,
      windows,
      rssSeries: rssSeries.map(([at, kb]) => [Math.round(at - plan.startAt), kb])
    }
  }
}

function mib (metrics: Scrape | null, name: string): number | null {
  const bytes = metrics?.get(name)
  return bytes === undefined ? null : bytes / 2 ** 20
}

function concat (arrays: Float64Array[]): Float64Array {
  const out = new Float64Array(arrays.reduce((sum, array) => sum + array.length, 0))
  let offset = 0
  for (const array of arrays) {
    out.set(array, offset)
    offset += array.length
  }
  return out
}

/** Generator send → upstream receipt of the frame that completed each chunk, joined by call key. */
export function outsideLatency (report: LoadReport, sessions: UpstreamSessionReport[], chunkMs: number): { latency: Float64Array, unmatched: number, missingMs: number } {
  const byKey = new Map<string, UpstreamSessionReport[]>()
  for (const session of sessions) {
    if (session.key === null) continue
    byKey.set(session.key, [...(byKey.get(session.key) ?? []), session])
  }
  const latencies: number[] = []
  let unmatched = 0
  let missingMs = 0
  for (const call of report.calls) {
    const found = byKey.get(call.key) ?? []
    // A reconnect replays audio to a second session: chunk numbering no longer maps one to one.
    const session = found.length === 1 ? found[0] : undefined
    if (session === undefined) {
      unmatched++
      continue
    }
    // Whole chunks, then the tail the chunker flushes at stop: padded to 50 ms, not to a chunk.
    const chunkBytes = chunkMs * 16
    const audioBytes = call.ticks * 160 * 2
    const tailBytes = audioBytes % chunkBytes
    const expectedBytes = audioBytes - tailBytes + (tailBytes === 0 ? 0 : Math.max(tailBytes, 800))
    missingMs += Math.max(0, expectedBytes - session.bytes) / 16
    for (let j = 0; j < call.chunkIndex.length; j++) {
      const arrival = session.arrivals[(call.chunkIndex[j] as number) - session.firstIndex]
      if (arrival !== undefined) latencies.push(arrival - (call.chunkSentAt[j] as number))
    }
  }
  return { latency: Float64Array.from(latencies), unmatched, missingMs }
}
