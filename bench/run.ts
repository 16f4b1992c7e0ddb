/**
 * `npm run bench`: medstream under N concurrent real-time calls, measured from outside.
 *
 * Starts the real service (`src/server.ts`, production config, file sink), the fake AssemblyAI
 * (bench/fake-upstream.ts) and the load generator (bench/load.ts) as separate processes on loopback,
 * plays N two-track calls of the sample speech for a warm-up plus S measured seconds, and reports the
 * service's CPU per call-minute (/proc), its RSS per call above idle, bridge latency inside (the
 * service's histogram) and outside (generator send → fake upstream receipt of each chunk's completing
 * frame), frames lost and event-loop delay. Then the same load against the floor
 * (bench/floor-server.ts: JSON.parse + base64 decode only) gives the ratio.
 *
 * Options: --calls N (50) --seconds S (60) --warmup S (10) --stagger S (calls/50, 1..6)
 *          --no-floor --cpu-prof --soak (30 s windows of RSS, event-loop delay, CPU)
 *          --chunk-ms N (the service's AUDIO_CHUNK_MS, default 50)
 */
import { fork, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { freePort, waitForOk } from '../test/helpers/net.ts'
import { summarizeCpuProfile } from './lib/cpu-profile.ts'
import type { ProfileSummary } from './lib/cpu-profile.ts'
import type { ChildMessage, LoadPlan, LoadReport, ParentMessage, UpstreamSessionReport } from './lib/ipc.ts'
import { bucketMaxBound, bucketQuantile, bucketQuantileBound, histogramBetween, scrape, total } from './lib/prometheus.ts'
import type { Scrape } from './lib/prometheus.ts'
import { cpuSeconds, cpuTimes, describeMachine, epochMs, machineJiffies, rssKb } from './lib/proc.ts'
import { distribution, slope } from './lib/stats.ts'
import type { Distribution } from './lib/stats.ts'

const ROOT = new URL('../', import.meta.url).pathname
const RESULTS_DIR = join(ROOT, 'bench/results')
const PROFILE_DIR = join(RESULTS_DIR, 'prof')
const API_KEY = 'bench-upstream-key'
const SOAK_WINDOW_MS = 30_000
/** Calls play this long past the window, so its last frames are measured in steady state. */
const TAIL_MS = 1000
/**
 * prom-client samples the event loop with monitorEventLoopDelay({ resolution: 10 }), whose values
 * are whole timer intervals (an idle loop reads ≈ 10 ms); the delay is what exceeds it.
 */
const EVENT_LOOP_RESOLUTION_MS = 10
const TARGETS = { cpuRatio: 1.5, insideP99Ms: 5, outsideP99Ms: 20, rssPerCallKb: 400 }

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '60' },
    warmup: { type: 'string', default: '10' },
    stagger: { type: 'string' },
    'no-floor': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'chunk-ms': { type: 'string', default: '50' },
    soak: { type: 'boolean', default: false }
  }
})
const calls = positiveInteger('calls', values.calls)
const seconds = positiveInteger('seconds', values.seconds)
/** AUDIO_CHUNK_MS for the service; the default (50) unless the run compares another. */
const chunkMs = positiveInteger('chunk-ms', values['chunk-ms'])
const warmupSeconds = Number(values.warmup)
const staggerSeconds = values.stagger === undefined ? Math.min(6, Math.max(1, calls / 50)) : Number(values.stagger)
if (!(warmupSeconds >= 0) || !(staggerSeconds >= 0)) fail('--warmup and --stagger take seconds ≥ 0')

function positiveInteger (name: string, raw: string | undefined): number {
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) fail(`--${name} must be a positive integer, got ${String(raw)}`)
  return value
}

function fail (message: string): never {
  process.stderr.write(`bench: ${message}\n`)
  process.exit(2)
}

// ---------------------------------------------------------------------------------------------
// Child processes

const children = new Set<ChildProcess>()

function forkChild (script: string, args: string[] = []): ChildProcess {
  const child = fork(join(ROOT, 'bench', script), args, { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

function nextMessage<T extends ChildMessage['type']> (child: ChildProcess, type: T, timeoutMs: number): Promise<Extract<ChildMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no '${type}' message from a child within ${timeoutMs} ms`)) }, timeoutMs)
    const onMessage = (message: ChildMessage): void => {
      if (message.type !== type) return
      cleanup()
      resolve(message as Extract<ChildMessage, { type: T }>)
    }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`child exited (${String(code)}) before its '${type}' message`)) }
    const cleanup = (): void => {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

function tell (child: ChildProcess, message: ParentMessage): void {
  child.send(message)
}

async function stopChild (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 20_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  if (child.connected) child.disconnect()
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  await exited
  clearTimeout(timer)
}

function waitForHealth (url: string, service: ChildProcess): Promise<void> {
  return waitForOk(url, 20000, () => service.exitCode === null)
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Sample {
  at: number
  /** CLOCK_MONOTONIC, µs: the clock of --cpu-prof timestamps. */
  monotonicUs: number
  cpuSeconds: number
  systemCpuSeconds: number
  generatorCpuSeconds: number
  upstreamCpuSeconds: number
  machine: { busy: number, total: number }
  metrics: Scrape | null
}

interface WindowResult {
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

interface PhaseResult {
  target: 'service' | 'floor'
  windowS: number
  cpuSeconds: number
  cpuPerCallMinute: number
  /** Of one core. */
  cpuPercent: number
  /** The kernel's share of cpuSeconds (socket and file syscalls), %. */
  systemCpuShare: number
  generatorCpuPercent: number
  upstreamCpuPercent: number | null
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
  /** Beyond prom-client's 10 ms sampling interval; the worst 30 s window's in a soak. */
  eventLoopP99Ms: number | null
  eventLoopMaxMs: number | null
  unmatchedCalls: number
  windows: WindowResult[]
  rssSeries: Array<[number, number]>
}

interface Phase {
  target: 'service' | 'floor'
  pid: number
  generator: ChildProcess
  upstreamPid: number | null
  metricsUrl: string | null
  rssIdleKb: number
  idleCpuPercent: number
  plan: LoadPlan
  /** Calls the target counts as live: from /metrics or the floor's own count. */
  liveCalls: () => Promise<number>
}

/** The process at rest before any call: median RSS, and CPU % of a core over the same 3 s. */
async function idle (pid: number): Promise<{ rssKb: number, cpuPercent: number }> {
  await sleep(1000)
  const from = { at: epochMs(), cpu: cpuSeconds(pid) }
  await sleep(1000)
  const readings: number[] = []
  for (let i = 0; i < 5; i++) {
    readings.push(rssKb(pid))
    await sleep(200)
  }
  readings.sort((a, b) => a - b)
  return { rssKb: readings[2] as number, cpuPercent: 100 * (cpuSeconds(pid) - from.cpu) / ((epochMs() - from.at) / 1000) }
}

function makePlan (target: LoadPlan['target']): LoadPlan {
  const startAt = epochMs() + 500
  const windowStartAt = startAt + staggerSeconds * 1000 + warmupSeconds * 1000
  const windowEndAt = windowStartAt + seconds * 1000
  return { target, calls, startAt, staggerMs: staggerSeconds * 1000, windowStartAt, windowEndAt, endAt: windowEndAt + TAIL_MS, chunkMs }
}

async function takeSample (phase: Phase): Promise<Sample> {
  const at = epochMs()
  const times = cpuTimes(phase.pid)
  return {
    at,
    monotonicUs: Number(process.hrtime.bigint() / 1000n),
    cpuSeconds: times.user + times.system,
    systemCpuSeconds: times.system,
    generatorCpuSeconds: phase.generator.pid === undefined ? 0 : cpuSeconds(phase.generator.pid),
    upstreamCpuSeconds: phase.upstreamPid === null ? 0 : cpuSeconds(phase.upstreamPid),
    machine: machineJiffies(),
    // A scrape resets prom-client's event-loop delay histogram: each window's p99 is its own.
    metrics: phase.metricsUrl === null ? null : await scrape(phase.metricsUrl)
  }
}

async function sleepUntil (at: number): Promise<void> {
  const wait = at - epochMs()
  if (wait > 0) await sleep(wait)
}

/** Runs the plan against the phase's target and measures it; returns with the generator's report. */
async function measure (phase: Phase): Promise<{ result: Omit<PhaseResult, 'framesReceived' | 'framesLost' | 'upstreamAudioMissingMs' | 'outsideLatencyMs' | 'unmatchedCalls' | 'turns'>, report: LoadReport, samples: Sample[] }> {
  const { plan } = phase
  const reportPromise = nextMessage(phase.generator, 'report', plan.endAt - epochMs() + 60_000)
  tell(phase.generator, { type: 'plan', plan })
  const rssSeries: Array<[number, number]> = []
  const rssTimer = setInterval(() => {
    try {
      rssSeries.push([epochMs(), rssKb(phase.pid)])
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
    const step = values.soak ? SOAK_WINDOW_MS : plan.windowEndAt - plan.windowStartAt
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
  if (first.metrics !== null && last.metrics !== null) {
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
  const jiffies = (last.machine.busy - first.machine.busy) / Math.max(1, last.machine.total - first.machine.total)
  return {
    report,
    samples,
    result: {
      target: phase.target,
      windowS,
      cpuSeconds: cpu,
      cpuPerCallMinute: perCallMinute(first, last),
      cpuPercent: 100 * cpu / windowS,
      systemCpuShare: 100 * (last.systemCpuSeconds - first.systemCpuSeconds) / Math.max(cpu, 1e-9),
      generatorCpuPercent: 100 * (last.generatorCpuSeconds - first.generatorCpuSeconds) / windowS,
      upstreamCpuPercent: phase.upstreamPid === null ? null : 100 * (last.upstreamCpuSeconds - first.upstreamCpuSeconds) / windowS,
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
      eventLoopP99Ms,
      eventLoopMaxMs,
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
function outsideLatency (report: LoadReport, sessions: UpstreamSessionReport[]): { latency: Float64Array, unmatched: number, missingMs: number } {
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

// ---------------------------------------------------------------------------------------------
// Phases

async function runService (): Promise<{ result: PhaseResult, profile: ProfileSummary | null }> {
  const fake = forkChild('fake-upstream.ts', [API_KEY])
  const upstreamUrl = (await nextMessage(fake, 'ready', 20_000)).url
  const port = await freePort()
  const metricsPort = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-bench-'))
  const authToken = randomBytes(16).toString('hex')
  const serviceUrl = `http://127.0.0.1:${port}`
  // Production settings but for the file sink (no WEBHOOK_URL) and loopback URLs. Only what the
  // service needs is passed: nothing from this shell's environment (or a .env: cwd is the data dir).
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    PORT: String(port),
    HOST: '127.0.0.1',
    METRICS_PORT: String(metricsPort),
    PUBLIC_URL: serviceUrl,
    TWILIO_AUTH_TOKEN: authToken,
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: API_KEY,
    ASSEMBLYAI_URL: upstreamUrl,
    ASSEMBLYAI_KEYTERMS: 'metoprolol,lisinopril',
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    MAX_CALLS: String(Math.max(1000, calls * 2)),
    DRAIN_TIMEOUT_MS: '15000',
    AUDIO_CHUNK_MS: String(chunkMs)
  }
  const profileStartedAt = Date.now()
  if (values['cpu-prof']) mkdirSync(PROFILE_DIR, { recursive: true })
  // Production config: the node flags `npm start` (and the image's CMD) use, e.g. the young
  // generation cap that sets RSS per call.
  const startFlags = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ').filter((word) => word.startsWith('--'))
  const nodeArgs = [...startFlags, ...(values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR] : [])]
  const logFile = join(dataDir, 'service.log')
  const logFd = openSync(logFile, 'a')
  const service = spawn(process.execPath, [...nodeArgs, join(ROOT, 'src/server.ts')], { cwd: dataDir, env, stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  children.add(service)
  try {
    await waitForHealth(`${serviceUrl}/healthz`, service)
    const pid = service.pid as number
    const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`
    const rest = await idle(pid)
    const generator = forkChild('load.ts')
    const phase: Phase = {
      target: 'service',
      pid,
      generator,
      upstreamPid: fake.pid ?? null,
      metricsUrl,
      rssIdleKb: rest.rssKb,
      idleCpuPercent: rest.cpuPercent,
      plan: makePlan({ kind: 'service', serviceUrl, authToken }),
      liveCalls: async () => (await scrape(metricsUrl)).get('medstream_calls_active') ?? 0
    }
    log(`service: ${calls} calls, placing over ${staggerSeconds} s, warm-up ${warmupSeconds} s, measuring ${seconds} s…`)
    const { result, report, samples } = await measure(phase)
    const profileRange = { fromUs: samples[0]!.monotonicUs, toUs: samples[samples.length - 1]!.monotonicUs }
    // Every call's counters are final once it has ended (call.ended flushes them).
    for (let i = 0; i < 150 && (await phase.liveCalls()) > 0; i++) await sleep(200)
    const final = await scrape(metricsUrl)
    const framesReceived = final.get('medstream_twilio_messages_total{event="media"}') ?? 0
    tell(fake, { type: 'collect', fromAt: phase.plan.windowStartAt - 2000 })
    const { sessions } = await nextMessage(fake, 'sessions', 60_000)
    const outside = outsideLatency(report, sessions)
    await stopChild(service)
    const profile = values['cpu-prof'] ? newestProfile(profileStartedAt, profileRange) : null
    return {
      profile,
      result: {
        ...result,
        framesReceived,
        framesLost: Math.max(0, result.framesSent - framesReceived),
        upstreamAudioMissingMs: outside.missingMs + outside.unmatched * seconds * 1000,
        outsideLatencyMs: distribution(outside.latency),
        unmatchedCalls: outside.unmatched,
        turns: total(final, 'medstream_turns_total'),
        callsFailed: result.callsFailed + (total(final, 'medstream_calls_total') - (final.get('medstream_calls_total{outcome="completed"}') ?? 0))
      }
    }
  } catch (error) {
    process.stderr.write(`service log (${logFile}):\n${readFileSync(logFile, 'utf8').slice(-4000)}\n`)
    throw error
  } finally {
    await stopChild(service)
    await stopChild(fake)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

async function runFloor (): Promise<PhaseResult> {
  const floor = forkChild('floor-server.ts')
  try {
    const wsUrl = (await nextMessage(floor, 'ready', 20_000)).url
    const pid = floor.pid as number
    const floorStats = async (): Promise<Extract<ChildMessage, { type: 'floor-stats' }>> => {
      const reply = nextMessage(floor, 'floor-stats', 10_000)
      tell(floor, { type: 'floor-stats' })
      return await reply
    }
    const rest = await idle(pid)
    const phase: Phase = {
      target: 'floor',
      pid,
      generator: forkChild('load.ts'),
      upstreamPid: null,
      metricsUrl: null,
      rssIdleKb: rest.rssKb,
      idleCpuPercent: rest.cpuPercent,
      plan: makePlan({ kind: 'floor', wsUrl }),
      liveCalls: async () => (await floorStats()).connections
    }
    log(`floor: the same ${calls} calls against a bare ws server (JSON.parse + base64 only)…`)
    const { result } = await measure(phase)
    const { frames } = await floorStats()
    return { ...result, framesReceived: frames, framesLost: Math.max(0, result.framesSent - frames), upstreamAudioMissingMs: null, turns: null, outsideLatencyMs: null, unmatchedCalls: 0 }
  } finally {
    await stopChild(floor)
  }
}

function newestProfile (since: number, range: { fromUs: number, toUs: number }): ProfileSummary | null {
  const files = readdirSync(PROFILE_DIR)
    .filter((name) => name.endsWith('.cpuprofile'))
    .map((name) => ({ path: join(PROFILE_DIR, name), mtime: statSync(join(PROFILE_DIR, name)).mtimeMs }))
    .filter((file) => file.mtime >= since)
    .sort((a, b) => b.mtime - a.mtime)
  const newest = files[0]
  return newest === undefined ? null : summarizeCpuProfile(newest.path, range)
}

// ---------------------------------------------------------------------------------------------
// Report

function log (line: string): void {
  process.stderr.write(`bench: ${line}\n`)
}

const fixed = (value: number | null | undefined, digits = 2): string => value == null || Number.isNaN(value) ? 'n/a' : value.toFixed(digits)
const triple = (d: Distribution | null): string => d === null || d.count === 0 ? 'n/a' : `${fixed(d.p50)} / ${fixed(d.p99)} / ${fixed(d.max)}`
const verdict = (ok: boolean): string => ok ? 'ok' : 'MISSED'

function heapAtEnd (phase: PhaseResult): string {
  const last = phase.windows[phase.windows.length - 1]
  if (last === undefined || last.heapUsedMb === null) return 'n/a'
  return `${fixed(last.heapUsedMb, 1)} / ${fixed(last.heapTotalMb, 1)}, ${fixed(last.externalMb, 1)}`
}

function printReport (service: PhaseResult, floor: PhaseResult | null, profile: ProfileSummary | null, machine: string): void {
  const ratio = floor === null ? null : service.cpuPerCallMinute / floor.cpuPerCallMinute
  const callsPerCore = 0.7 * 60 / service.cpuPerCallMinute
  const inside = service.insideLatencyMs
  const rows: Array<[string, string, string, string]> = [
    ['', 'service', 'floor', 'target'],
    ['CPU s per call-minute', fixed(service.cpuPerCallMinute, 4), floor === null ? 'n/a' : fixed(floor.cpuPerCallMinute, 4), ''],
    ['  service ÷ floor', ratio === null ? 'n/a' : `${fixed(ratio)}×`, '', ratio === null ? '' : `≤ ${TARGETS.cpuRatio}× ${verdict(ratio <= TARGETS.cpuRatio)}`],
    ['CPU, % of one core', fixed(service.cpuPercent, 1), floor === null ? 'n/a' : fixed(floor.cpuPercent, 1), ''],
    ['  idle, before calls, % of one core', fixed(service.idleCpuPercent, 1), floor === null ? 'n/a' : fixed(floor.idleCpuPercent, 1), ''],
    ['  of which kernel (syscalls), %', fixed(service.systemCpuShare, 0), floor === null ? 'n/a' : fixed(floor.systemCpuShare, 0), ''],
    ['  calls per core at 70 % CPU', fixed(callsPerCore, 0), floor === null ? 'n/a' : fixed(0.7 * 60 / floor.cpuPerCallMinute, 0), ''],
    ['RSS idle / peak, MiB', `${fixed(service.rssIdleKb / 1024, 1)} / ${fixed(service.rssPeakKb / 1024, 1)}`, floor === null ? 'n/a' : `${fixed(floor.rssIdleKb / 1024, 1)} / ${fixed(floor.rssPeakKb / 1024, 1)}`, ''],
    ['  V8 heap used / total, external at end, MiB', heapAtEnd(service), '', ''],
    ['  per call above idle, KiB', fixed(service.rssPerCallKb, 0), floor === null ? 'n/a' : fixed(floor.rssPerCallKb, 0), `≤ ${TARGETS.rssPerCallKb} ${verdict(service.rssPerCallKb <= TARGETS.rssPerCallKb)}`],
    ['bridge latency inside p50/p99/max, ms (≤ bucket)', inside === null ? 'n/a' : `≤ ${fixed(inside.p50BoundMs, 1)} / ≤ ${fixed(inside.p99BoundMs, 1)} / ≤ ${fixed(inside.maxBoundMs, 1)}`, '', inside === null ? '' : `p99 ≤ ${TARGETS.insideP99Ms} ${verdict(inside.p99BoundMs <= TARGETS.insideP99Ms)}`],
    ['  mean (histogram sum/count), ms', inside === null ? 'n/a' : fixed(inside.meanMs, 3), '', ''],
    ['bridge latency outside p50/p99/max, ms', triple(service.outsideLatencyMs), '', service.outsideLatencyMs === null ? '' : `p99 ≤ ${TARGETS.outsideP99Ms} ${verdict(service.outsideLatencyMs.p99 <= TARGETS.outsideP99Ms)}`],
    ['generator timer lateness p50/p99/max, ms', triple(service.timerLatenessMs), floor === null ? 'n/a' : triple(floor.timerLatenessMs), ''],
    ['frames sent / lost', `${service.framesSent} / ${service.framesLost}`, floor === null ? 'n/a' : `${floor.framesSent} / ${floor.framesLost}`, `0 lost ${verdict(service.framesLost === 0)}`],
    ['  upstream audio missing, ms', fixed(service.upstreamAudioMissingMs, 0), '', ''],
    ['final turns received from upstream', String(service.turns ?? 'n/a'), '', ''],
    ['calls live at window start / failed', `${service.callsActiveAtWindowStart} / ${service.callsFailed}`, floor === null ? 'n/a' : `${floor.callsActiveAtWindowStart} / ${floor.callsFailed}`, ''],
    ['event-loop delay p99 / max (beyond 10 ms tick), ms', `${fixed(service.eventLoopP99Ms)} / ${fixed(service.eventLoopMaxMs)}`, '', ''],
    ['generator / fake upstream CPU, % of a core', `${fixed(service.generatorCpuPercent, 1)} / ${fixed(service.upstreamCpuPercent, 1)}`, floor === null ? 'n/a' : fixed(floor.generatorCpuPercent, 1), ''],
    ['machine busy (all cores, everything), %', fixed(service.machineBusyPercent, 1), floor === null ? 'n/a' : fixed(floor.machineBusyPercent, 1), '']
  ]
  const widths = [0, 1, 2, 3].map((column) => Math.max(...rows.map((row) => row[column]!.length)))
  console.log(`\nmedstream bench: ${calls} calls × ${seconds} s measured (warm-up ${warmupSeconds} s, placed over ${staggerSeconds} s)`)
  console.log(`machine: ${machine}${values['cpu-prof'] ? '\nservice ran with --cpu-prof: its CPU figures include the profiler\'s overhead' : ''}\n`)
  for (const row of rows) console.log(row.map((cell, column) => column === 0 ? cell.padEnd(widths[0]!) : cell.padStart(widths[column]!)).join('  '))
  if (values.soak) {
    console.log('\nsoak, per window:   from–to s   RSS mean / max MiB   heap used / total MiB   event-loop p99 ms   CPU s per call-minute')
    for (const window of service.windows) {
      console.log(`                    ${`${window.fromS}–${window.toS}`.padStart(9)}   ${`${fixed(window.rssMeanKb / 1024, 1)} / ${fixed(window.rssMaxKb / 1024, 1)}`.padStart(18)}   ${`${fixed(window.heapUsedMb, 1)} / ${fixed(window.heapTotalMb, 1)}`.padStart(21)}   ${fixed(window.eventLoopP99Ms).padStart(17)}   ${fixed(window.cpuPerCallMinute, 4).padStart(21)}`)
    }
    const steady = service.rssSeries.filter(([at]) => at >= (staggerSeconds + warmupSeconds) * 1000)
    const half = steady.slice(Math.floor(steady.length / 2))
    const perMinute = (series: Array<[number, number]>): string => fixed(slope(series.map(([at]) => at / 60_000), series.map(([, kb]) => kb)), 0)
    console.log(`RSS slope: ${perMinute(steady)} KiB per minute over the window, ${perMinute(half)} over its second half`)
  }
  if (profile !== null) {
    console.log(`\nservice CPU profile, measured window only (${profile.file}): ${profile.busyMs} ms busy of ${profile.durationMs} ms; self time, % of busy, ← main caller`)
    for (const row of profile.top) console.log(`  ${fixed(row.busyPercent, 1).padStart(5)} %  ${row.function}${row.topCaller === undefined ? '' : `  ← ${row.topCaller}`}`)
    console.log('by area:')
    for (const row of profile.byArea) console.log(`  ${fixed(row.busyPercent, 1).padStart(5)} %  ${row.function}`)
  }
}

async function main (): Promise<void> {
  const machine = describeMachine()
  const startedAt = new Date()
  const { result: service, profile } = await runService()
  const floor = values['no-floor'] ? null : await runFloor()
  printReport(service, floor, profile, machine)
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = join(RESULTS_DIR, `${startedAt.toISOString().replace(/[:.]/g, '-')}-${calls}c-${seconds}s.json`)
  const ratio = floor === null ? null : service.cpuPerCallMinute / floor.cpuPerCallMinute
  writeFileSync(file, JSON.stringify({
    startedAt: startedAt.toISOString(),
    machine,
    options: { calls, seconds, warmupSeconds, staggerSeconds, floor: floor !== null, cpuProf: values['cpu-prof'], soak: values.soak },
    derived: { cpuRatioToFloor: ratio, callsPerCoreAt70Percent: 0.7 * 60 / service.cpuPerCallMinute },
    targets: TARGETS,
    service,
    floor,
    profile
  }, null, 2) + '\n')
  console.log(`\nresults: ${file}`)
}

let stopping = false
async function cleanup (): Promise<void> {
  if (stopping) return
  stopping = true
  await Promise.all([...children].map((child) => stopChild(child, 'SIGTERM', 5000)))
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })

main().then(() => cleanup()).catch(async (error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  await cleanup()
  process.exit(1)
})
