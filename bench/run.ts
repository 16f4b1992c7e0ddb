/**
 * `npm run bench`: medstream under N concurrent real-time calls, measured from outside.
 *
 * Starts the real service (`src/server.ts`, production config, file sink), the fake AssemblyAI
 * (bench/fake-upstream.ts) and the load generator (bench/load.ts) as separate processes on loopback,
 * plays N two-track calls of the sample speech for a warm-up plus S measured seconds, and reports the
 * service's CPU per call-minute (/proc), its RSS per call above idle, bridge latency inside (the
 * service's histogram) and outside (generator send → fake upstream receipt of each chunk's completing
 * frame), frames lost and event-loop delay. Then the same load against the floors gives the ratios:
 * receive (bench/floor-server.ts: JSON.parse + base64 decode only) and bridge (bench/bridge-floor.ts:
 * the cheapest correct bridge, with its own upstream sessions). `--repeat N` alternates N rounds.
 *
 * With `--tls` the fake upstream serves wss (bench/lib/tls.ts). With `--outbox sqlite,postgres` the
 * service runs once per backend, webhooking its events to bench/webhook-receiver.ts; PostgreSQL is a
 * throwaway cluster (test/helpers/postgres.ts). `--help` lists every option (bench/lib/options.ts);
 * measuring is bench/lib/measure.ts, the report bench/lib/report.ts: this file runs the phases.
 */
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, waitForOk } from '../test/helpers/net.ts'
import { startPostgres } from '../test/helpers/postgres.ts'
import type { PostgresCluster } from '../test/helpers/postgres.ts'
import { ask, forkChild, nextMessage, stopAllChildren, stopChild, tell, track } from './lib/children.ts'
import { summarizeCpuProfile } from './lib/cpu-profile.ts'
import type { ProfileSummary } from './lib/cpu-profile.ts'
import { idle, makePlan, measure, outsideLatency } from './lib/measure.ts'
import type { Phase, PhaseResult } from './lib/measure.ts'
import { fail, parseBenchOptions } from './lib/options.ts'
import type { BenchOptions, Floor, Outbox } from './lib/options.ts'
import { scrape, total } from './lib/prometheus.ts'
import { describeMachine, findProcess, pinToCpu, withChildren } from './lib/proc.ts'
import { distribution } from './lib/stats.ts'
import { log, printReport, printRounds, writeResults } from './lib/report.ts'
import type { FloorProfiles, Floors, Round, ServiceRun } from './lib/report.ts'
import { makeSelfSignedCertificate } from './lib/tls.ts'
import type { SelfSignedCertificate } from './lib/tls.ts'

const ROOT = new URL('../', import.meta.url).pathname
const RESULTS_DIR = join(ROOT, 'bench/results')
const PROFILE_DIR = join(RESULTS_DIR, 'prof')
const API_KEY = 'bench-upstream-key'

const options = parseBenchOptions()
/** With --pin: where the measured process runs, and where everything else of the benchmark does. */
const MEASURED_CPU = 0
const OTHERS_CPU = 1

/** What a service run needs besides the options: the upstream's certificate, the outbox's database. */
interface ServiceSetup {
  outbox: Outbox | null
  certificate: SelfSignedCertificate | null
  postgres: PostgresCluster | null
  /** Live-view event streams per call (bench/viewers.ts); 0: none. */
  viewers: number
}

function waitForHealth (url: string, service: ChildProcess): Promise<void> {
  return waitForOk(url, 20000, () => service.exitCode === null)
}

async function runService (setup: ServiceSetup): Promise<ServiceRun> {
  const { calls, seconds, chunkMs, staggerSeconds, warmupSeconds } = options
  const { outbox, certificate } = setup
  const fake = forkChild('fake-upstream.ts', certificate === null ? [API_KEY] : [API_KEY, certificate.certFile, certificate.keyFile], upstreamEnv())
  const receiver = outbox === null ? null : forkChild('webhook-receiver.ts')
  const upstreamUrl = (await nextMessage(fake, 'ready', 20_000)).url
  const webhookUrl = receiver === null ? null : (await nextMessage(receiver, 'ready', 20_000)).url
  if (options.pin) pinToCpu([fake.pid, receiver?.pid], OTHERS_CPU)
  const port = await freePort()
  const metricsPort = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-bench-'))
  const authToken = randomBytes(16).toString('hex')
  const serviceUrl = `http://127.0.0.1:${port}`
  // Production settings but for loopback URLs and the file sink (no WEBHOOK_URL) unless an outbox
  // is measured. Only what the service needs is passed: nothing from this shell's environment (or a
  // .env: cwd is the data dir).
  const env: Record<string, string> = {
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
  // Both runs of a --viewers comparison have the live view configured alike; only the watching differs.
  const liveViewSecret = randomBytes(32).toString('base64url')
  if (options.viewers > 0) env.LIVE_VIEW_SECRET = liveViewSecret
  // Trusted as a private CA would be: the service verifies the upstream's certificate as in production.
  if (certificate !== null) env.NODE_EXTRA_CA_CERTS = certificate.certFile
  if (webhookUrl !== null) {
    env.WEBHOOK_URL = webhookUrl
    env.WEBHOOK_SECRET = `whsec_${randomBytes(32).toString('base64')}`
  }
  if (outbox === 'postgres') {
    if (setup.postgres === null) throw new Error('a postgres outbox run needs the PostgreSQL cluster')
    env.DATABASE_URL = await setup.postgres.createDatabase('medstream_bench')
    // No Twilio to hand calls to: a run's end drains in place.
    env.HANDOFF_ON_DRAIN = 'false'
  }
  const profileStartedAt = Date.now()
  // Production config: the node flags `npm start` (and the image's CMD) use, e.g. the young
  // generation cap that sets RSS per call.
  let startFlags = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ').filter((word) => word.startsWith('--'))
  if (options.semiSpaceMib !== null) startFlags = [...startFlags.filter((flag) => !flag.startsWith('--max-semi-space-size')), `--max-semi-space-size=${options.semiSpaceMib}`]
  const nodeArgs = [...startFlags, ...profileFlags()]
  const logFile = join(dataDir, 'service.log')
  const logFd = openSync(logFile, 'a')
  const service = spawn(process.execPath, [...nodeArgs, join(ROOT, 'src/server.ts')], { cwd: dataDir, env, stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  track(service)
  let viewers: ChildProcess | null = null
  try {
    if (options.pin) pinToCpu([service.pid], MEASURED_CPU)
    await waitForHealth(`${serviceUrl}/healthz`, service)
    if (setup.viewers > 0) {
      viewers = forkChild('viewers.ts', [serviceUrl, liveViewSecret, String(setup.viewers)])
      await nextMessage(viewers, 'ready', 20_000)
      if (options.pin) pinToCpu([viewers.pid], OTHERS_CPU)
    }
    const pid = service.pid as number
    const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`
    const rest = await idle(pid)
    const generator = forkChild('load.ts')
    if (options.pin) pinToCpu([generator.pid], OTHERS_CPU)
    const phase: Phase = {
      target: 'service',
      outbox,
      pid,
      generator,
      upstreamPid: fake.pid ?? null,
      viewersPid: viewers?.pid ?? null,
      viewers: setup.viewers,
      databasePid: outbox === 'postgres' ? findProcess(['-p', String(setup.postgres!.port)]) : null,
      metricsUrl,
      rssIdleKb: rest.rssKb,
      idleCpuPercent: rest.cpuPercent,
      plan: makePlan({ kind: 'service', serviceUrl, authToken }, options),
      liveCalls: async () => (await scrape(metricsUrl)).get('medstream_calls_active') ?? 0
    }
    const how = [outbox === null ? 'file sink' : `${outbox} outbox`, certificate === null ? 'ws upstream' : 'wss upstream', ...(options.viewers > 0 ? [`live-view viewers per call: ${setup.viewers}`] : []), ...startFlags].join(', ')
    log(`service (${how}): ${calls} calls, placing over ${staggerSeconds} s, warm-up ${warmupSeconds} s, measuring ${seconds} s…`)
    const { result, report, samples } = await measure(phase, options)
    const profileRange = { fromUs: samples[0]!.monotonicUs, toUs: samples[samples.length - 1]!.monotonicUs }
    // Every call's counters are final once it has ended (call.ended flushes them).
    for (let i = 0; i < 150 && (await phase.liveCalls()) > 0; i++) await sleep(200)
    const final = await scrape(metricsUrl)
    const framesReceived = final.get('medstream_twilio_messages_total{event="media"}') ?? 0
    tell(fake, { type: 'collect', fromAt: phase.plan.windowStartAt - 2000 })
    const { sessions } = await nextMessage(fake, 'sessions', 60_000)
    const outside = outsideLatency(report, sessions, chunkMs)
    // The last calls' events may still be on their way: the receiver is asked once the outbox is empty.
    for (let i = 0; i < 50 && receiver !== null && ((await scrape(metricsUrl)).get('medstream_webhook_outbox_events{state="pending"}') ?? 0) > 0; i++) await sleep(200)
    const received = receiver === null ? null : await ask(receiver, { type: 'receiver-stats' }, 'receiver-stats')
    if (received !== null) log(`${String(outbox)} outbox: the receiver got ${received.events} events in ${received.requests} requests`)
    // Each stream ends after its call's call.ended; a few seconds for the last ones to arrive.
    let viewerStats = viewers === null ? null : (await ask(viewers, { type: 'viewer-stats' }, 'viewer-stats')).stats
    for (let i = 0; i < 25 && viewers !== null && viewerStats !== null && viewerStats.streamsOpen > 0; i++) {
      await sleep(200)
      viewerStats = (await ask(viewers, { type: 'viewer-stats' }, 'viewer-stats')).stats
    }
    if (viewerStats !== null) log(`viewers: ${viewerStats.streamsOpened} streams for ${viewerStats.calls} calls, ${viewerStats.events['turn.partial']} partials, ${viewerStats.events['transcript.turn']} finals, ${viewerStats.events['call.ended']} call.ended, ${viewerStats.refused} refused, ${viewerStats.errors} errors`)
    await stopChild(service)
    const profile = options.cpuProf ? newestProfile(profileStartedAt, profileRange) : null
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
        webhookEventsReceived: received?.events ?? null,
        eventsLost: [...final.keys()].some((series) => series.startsWith('medstream_events_lost_total')) ? total(final, 'medstream_events_lost_total') : null,
        callsFailed: result.callsFailed + (total(final, 'medstream_calls_total') - (final.get('medstream_calls_total{outcome="completed"}') ?? 0)),
        viewerStats
      }
    }
  } catch (error) {
    process.stderr.write(`service log (${logFile}):\n${readFileSync(logFile, 'utf8').slice(-4000)}\n`)
    throw error
  } finally {
    if (viewers !== null) await stopChild(viewers)
    await stopChild(service)
    await stopChild(fake)
    if (receiver !== null) await stopChild(receiver)
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/** One floor under the same load: the receive-only server, or the bridge with its own fake upstream. */
async function runFloor (kind: Floor, certificate: SelfSignedCertificate | null): Promise<{ result: PhaseResult, profile: ProfileSummary | null }> {
  let fake: ChildProcess | null = null
  let floor: ChildProcess
  // Profiled like the service, so the two profiles can be set side by side.
  const profileStartedAt = Date.now()
  const profileArgs = profileFlags()
  let profileRange: { fromUs: number, toUs: number } | undefined
  let result: PhaseResult
  if (kind === 'bridge') {
    fake = forkChild('fake-upstream.ts', certificate === null ? [API_KEY] : [API_KEY, certificate.certFile, certificate.keyFile], upstreamEnv())
    const upstreamUrl = (await nextMessage(fake, 'ready', 20_000)).url
    // Trusted as the service trusts it: a private CA through NODE_EXTRA_CA_CERTS.
    floor = forkChild('bridge-floor.ts', [upstreamUrl, API_KEY], certificate === null ? {} : { NODE_EXTRA_CA_CERTS: certificate.certFile }, profileArgs)
  } else {
    floor = forkChild('floor-server.ts', [], {}, profileArgs)
  }
  try {
    const wsUrl = (await nextMessage(floor, 'ready', 20_000)).url
    const pid = floor.pid as number
    const generator = forkChild('load.ts')
    if (options.pin) {
      pinToCpu([pid], MEASURED_CPU)
      pinToCpu([fake?.pid, generator.pid], OTHERS_CPU)
    }
    const rest = await idle(pid)
    const phase: Phase = {
      target: 'floor',
      outbox: null,
      pid,
      generator,
      upstreamPid: fake?.pid ?? null,
      viewersPid: null,
      viewers: 0,
      databasePid: null,
      metricsUrl: null,
      rssIdleKb: rest.rssKb,
      idleCpuPercent: rest.cpuPercent,
      plan: makePlan({ kind: 'floor', wsUrl }, options),
      liveCalls: async () => (await ask(floor, { type: 'floor-stats' }, 'floor-stats')).connections
    }
    log(kind === 'bridge'
      ? `bridge floor: the same ${options.calls} calls against the cheapest correct bridge (${certificate === null ? 'ws' : 'wss'} upstream)…`
      : `receive floor: the same ${options.calls} calls against a bare ws server (JSON.parse + base64 only)…`)
    const measured = await measure(phase, options)
    const samples = measured.samples
    profileRange = { fromUs: samples[0]!.monotonicUs, toUs: samples[samples.length - 1]!.monotonicUs }
    const { frames } = await ask(floor, { type: 'floor-stats' }, 'floor-stats')
    result = { ...measured.result, framesReceived: frames, framesLost: Math.max(0, measured.result.framesSent - frames), upstreamAudioMissingMs: null, turns: null, outsideLatencyMs: null, unmatchedCalls: 0, webhookEventsReceived: null, eventsLost: null }
  } finally {
    await stopChild(floor)
    if (fake !== null) await stopChild(fake)
  }
  // The profile is written as the floor exits.
  const profile = options.cpuProf && profileRange !== undefined ? newestProfile(profileStartedAt, profileRange) : null
  return { result, profile }
}

/** The fake upstream's environment: partials every 500 ms of speech when viewers are weighed, for every phase alike. */
function upstreamEnv (): Record<string, string> {
  return options.viewers > 0 ? { BENCH_PARTIALS_PER_TURN: '20' } : {}
}

/** The node flags that make a process write its CPU profile into PROFILE_DIR at exit; none without --cpu-prof. */
function profileFlags (): string[] {
  if (!options.cpuProf) return []
  mkdirSync(PROFILE_DIR, { recursive: true })
  return ['--cpu-prof', '--cpu-prof-dir', PROFILE_DIR]
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

/** Made once for the whole invocation, removed by cleanup(). */
let certificate: SelfSignedCertificate | null = null
let postgres: PostgresCluster | null = null

async function main (opts: BenchOptions): Promise<void> {
  const machine = describeMachine()
  const startedAt = new Date()
  if (opts.tls) certificate = makeSelfSignedCertificate()
  if (opts.pin) {
    if (cpus().length < 2) fail('--pin needs at least 2 CPUs')
    // This process too: it scrapes and samples while the calls run.
    pinToCpu([process.pid], OTHERS_CPU)
  }
  if (opts.outboxes.includes('postgres')) {
    log('starting a throwaway PostgreSQL cluster for the postgres outbox…')
    postgres = await startPostgres()
    // Backends the server forks later inherit the binding of its postmaster.
    const postmaster = findProcess(['-p', String(postgres.port)])
    if (opts.pin && postmaster !== null) pinToCpu(withChildren(postmaster), OTHERS_CPU)
  }
  const rounds: Round[] = []
  for (let round = 1; round <= opts.repeat; round++) {
    if (opts.repeat > 1) log(`round ${round} of ${opts.repeat}`)
    const runs: ServiceRun[] = []
    // Without and with viewers, the first of the two alternating by round so drift favours neither.
    const viewerCounts = opts.viewers === 0 ? [0] : round % 2 === 1 ? [0, opts.viewers] : [opts.viewers, 0]
    // Several sinks run in the given order in odd rounds and the reverse in even ones, so drift
    // favours none; the report keeps the given order.
    const sinks = opts.outboxes.length === 0 ? ['file' as const] : opts.outboxes
    const bySink = new Map<string, ServiceRun[]>()
    for (const sink of round % 2 === 1 ? sinks : [...sinks].reverse()) {
      const outbox = sink === 'file' ? null : sink
      const measured: ServiceRun[] = []
      for (const viewers of viewerCounts) measured.push(await runService({ outbox, certificate, postgres, viewers }))
      bySink.set(sink, measured.sort((a, b) => a.result.viewers - b.result.viewers))
    }
    for (const sink of sinks) runs.push(...(bySink.get(sink) ?? []))
    const floors: Floors = {}
    const floorProfiles: FloorProfiles = {}
    for (const kind of opts.floors) ({ result: floors[kind], profile: floorProfiles[kind] } = await runFloor(kind, certificate))
    printReport(runs, floors, opts, machine, floorProfiles)
    rounds.push({ runs, floors, floorProfiles })
  }
  if (rounds.length > 1) printRounds(rounds, opts.calls)
  console.log(`\nresults: ${writeResults(RESULTS_DIR, startedAt, rounds, opts, machine)}`)
}

let stopping = false
async function cleanup (): Promise<void> {
  if (stopping) return
  stopping = true
  await stopAllChildren()
  await postgres?.destroy()
  certificate?.remove()
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })

main(options).then(() => cleanup()).catch(async (error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  await cleanup()
  process.exit(1)
})
