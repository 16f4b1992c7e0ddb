/**
 * The benchmark's report: a table on stdout (one column per service run, then the floor, then the
 * target), the soak windows and the CPU profile when asked, and the same figures as a JSON file.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ProfileSummary, SelfTimeRow } from './cpu-profile.ts'
import type { PhaseResult } from './measure.ts'
import type { BenchOptions, Floor } from './options.ts'
import { slope } from './stats.ts'
import type { Distribution } from './stats.ts'

/** cpuRatio: to the receive floor; bridgeCpuRatio: to the bridge floor. */
export const TARGETS = { cpuRatio: 1.5, bridgeCpuRatio: 1.2, insideP99Ms: 5, outsideP99Ms: 20, rssPerCallKb: 400, viewersCpuRatio: 1.15 }

export interface ServiceRun {
  result: PhaseResult
  profile: ProfileSummary | null
}

export type Floors = Partial<Record<Floor, PhaseResult>>
/** With --cpu-prof: each floor's profile, to set beside the service's. */
export type FloorProfiles = Partial<Record<Floor, ProfileSummary | null>>

/** One round: the service run(s), then the floors under the same load. */
export interface Round {
  runs: ServiceRun[]
  floors: Floors
  floorProfiles?: FloorProfiles
}

const FLOOR_TARGET: Record<Floor, number> = { receive: TARGETS.cpuRatio, bridge: TARGETS.bridgeCpuRatio }

export function log (line: string): void {
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

/** `service` alone; `service, sqlite outbox`, `service, 1 viewer per call` … when the runs differ. */
function columnName (phase: PhaseResult): string {
  const parts = ['service']
  parts.push(phase.outbox === null ? 'file sink' : `${phase.outbox} outbox`)
  if (phase.viewers > 0) parts.push(`${phase.viewers} viewer${phase.viewers === 1 ? '' : 's'} per call`)
  return parts.join(', ')
}

/** The run of the same outbox without viewers, which a run with viewers is weighed against. */
function withoutViewers (runs: PhaseResult[], run: PhaseResult): PhaseResult | null {
  if (run.viewers === 0) return null
  return runs.find((other) => other.viewers === 0 && other.outbox === run.outbox) ?? null
}

export function printReport (runs: ServiceRun[], floors: Floors, options: BenchOptions, machine: string, floorProfiles: FloorProfiles = {}): void {
  const services = runs.map((run) => run.result)
  const floorKinds = Object.keys(floors) as Floor[]
  const perService = (cell: (service: PhaseResult) => string): string[] => services.map(cell)
  /** The target column: met only when every service run meets it. */
  const target = (label: string, ok: (service: PhaseResult) => boolean | null): string => {
    const results = services.map(ok)
    if (results.some((result) => result === null)) return ''
    return `${label} ${verdict(results.every(Boolean))}`
  }
  /** One cell per floor measured. */
  const floorCell = (cell: (phase: PhaseResult) => string): string[] => floorKinds.map((kind) => cell(floors[kind]!))
  const noFloor = floorKinds.map(() => '')
  const ratioRows = floorKinds.map((kind) => {
    const ratioOf = (service: PhaseResult): number => service.cpuPerCallMinute / floors[kind]!.cpuPerCallMinute
    return [`  service ÷ ${kind} floor`, ...perService((s) => `${fixed(ratioOf(s))}×`), ...noFloor, target(`≤ ${FLOOR_TARGET[kind]}×`, (s) => ratioOf(s) <= FLOOR_TARGET[kind])]
  })
  const insideCell = (service: PhaseResult): string => {
    const inside = service.insideLatencyMs
    return inside === null ? 'n/a' : `≤ ${fixed(inside.p50BoundMs, 1)} / ≤ ${fixed(inside.p99BoundMs, 1)} / ≤ ${fixed(inside.maxBoundMs, 1)}`
  }
  const rows: string[][] = [
    ['', ...services.map(columnName), ...floorKinds.map((kind) => `${kind} floor`), 'target'],
    ['CPU s per call-minute', ...perService((s) => fixed(s.cpuPerCallMinute, 4)), ...floorCell((f) => fixed(f.cpuPerCallMinute, 4)), ''],
    ...ratioRows,
    ['CPU, % of one core', ...perService((s) => fixed(s.cpuPercent, 1)), ...floorCell((f) => fixed(f.cpuPercent, 1)), ''],
    ['  idle, before calls, % of one core', ...perService((s) => fixed(s.idleCpuPercent, 1)), ...floorCell((f) => fixed(f.idleCpuPercent, 1)), ''],
    ['  of which kernel (syscalls), %', ...perService((s) => fixed(s.systemCpuShare, 0)), ...floorCell((f) => fixed(f.systemCpuShare, 0)), ''],
    ['  of which GC pauses (prom-client), s per call-minute / pauses', ...perService((s) => `${fixed(s.gcSecondsPerCallMinute, 4)} / ${s.gcPauses ?? 'n/a'}`), ...noFloor, ''],
    ['  calls per core at 70 % CPU', ...perService((s) => fixed(0.7 * 60 / s.cpuPerCallMinute, 0)), ...floorCell((f) => fixed(0.7 * 60 / f.cpuPerCallMinute, 0)), ''],
    ['RSS idle / peak, MiB', ...perService((s) => `${fixed(s.rssIdleKb / 1024, 1)} / ${fixed(s.rssPeakKb / 1024, 1)}`), ...floorCell((f) => `${fixed(f.rssIdleKb / 1024, 1)} / ${fixed(f.rssPeakKb / 1024, 1)}`), ''],
    ['  V8 heap used / total, external at end, MiB', ...perService(heapAtEnd), ...noFloor, ''],
    ['  per call above idle, KiB', ...perService((s) => fixed(s.rssPerCallKb, 0)), ...floorCell((f) => fixed(f.rssPerCallKb, 0)), target(`≤ ${TARGETS.rssPerCallKb}`, (s) => s.rssPerCallKb <= TARGETS.rssPerCallKb)],
    ['bridge latency inside p50/p99/max, ms (≤ bucket)', ...perService(insideCell), ...noFloor, target(`p99 ≤ ${TARGETS.insideP99Ms}`, (s) => s.insideLatencyMs === null ? null : s.insideLatencyMs.p99BoundMs <= TARGETS.insideP99Ms)],
    ['  mean (histogram sum/count), ms', ...perService((s) => s.insideLatencyMs === null ? 'n/a' : fixed(s.insideLatencyMs.meanMs, 3)), ...noFloor, ''],
    ['bridge latency outside p50/p99/max, ms', ...perService((s) => triple(s.outsideLatencyMs)), ...noFloor, target(`p99 ≤ ${TARGETS.outsideP99Ms}`, (s) => s.outsideLatencyMs === null ? null : s.outsideLatencyMs.p99 <= TARGETS.outsideP99Ms)],
    ['generator timer lateness p50/p99/max, ms', ...perService((s) => triple(s.timerLatenessMs)), ...floorCell((f) => triple(f.timerLatenessMs)), ''],
    ['frames sent / lost', ...perService((s) => `${s.framesSent} / ${s.framesLost}`), ...floorCell((f) => `${f.framesSent} / ${f.framesLost}`), target('0 lost', (s) => s.framesLost === 0)],
    ['  upstream audio missing, ms', ...perService((s) => fixed(s.upstreamAudioMissingMs, 0)), ...noFloor, ''],
    ['final turns received from upstream', ...perService((s) => String(s.turns ?? 'n/a')), ...noFloor, ''],
    ['calls live at window start / failed', ...perService((s) => `${s.callsActiveAtWindowStart} / ${s.callsFailed}`), ...floorCell((f) => `${f.callsActiveAtWindowStart} / ${f.callsFailed}`), ''],
    ['event-loop delay p99 / max (beyond 10 ms tick), ms', ...perService((s) => `${fixed(s.eventLoopP99Ms)} / ${fixed(s.eventLoopMaxMs)}`), ...noFloor, '']
  ]
  if (services.some((service) => service.viewers > 0)) {
    const viewerRatio = (s: PhaseResult): number | null => {
      const base = withoutViewers(services, s)
      return base === null ? null : s.cpuPerCallMinute / base.cpuPerCallMinute
    }
    const stats = (s: PhaseResult, cell: (v: NonNullable<PhaseResult['viewerStats']>) => string): string => s.viewerStats === null ? '' : cell(s.viewerStats)
    rows.push(
      ['with viewers ÷ without (CPU per call-minute)', ...perService((s) => viewerRatio(s) === null ? '' : `${fixed(viewerRatio(s))}×`), ...noFloor, `≤ ${TARGETS.viewersCpuRatio}× ${verdict(services.every((s) => { const r = viewerRatio(s); return r === null || r <= TARGETS.viewersCpuRatio }))}`],
      ['  viewer streams opened / for calls / refused / errors', ...perService((s) => stats(s, (v) => `${v.streamsOpened} / ${v.calls} / ${v.refused} / ${v.errors}`)), ...noFloor, ''],
      ['  events to viewers: partials / finals / call.ended', ...perService((s) => stats(s, (v) => `${v.events['turn.partial']} / ${v.events['transcript.turn']} / ${v.events['call.ended']}`)), ...noFloor, ''],
      ['  viewers process CPU, % of a core', ...perService((s) => s.viewersCpuPercent === null ? '' : fixed(s.viewersCpuPercent, 1)), ...noFloor, '']
    )
  }
  if (services.some((service) => service.outbox !== null)) {
    rows.push(
      ['webhook events delivered per second', ...perService((s) => fixed(s.eventsPerSecond, 1)), ...noFloor, ''],
      ['  received (whole run) / lost', ...perService((s) => `${s.webhookEventsReceived ?? 'n/a'} / ${s.eventsLost ?? 'n/a'}`), ...noFloor, target('0 lost', (s) => s.eventsLost === null ? null : s.eventsLost === 0)],
      ['PostgreSQL server CPU s per call-minute', ...perService((s) => s.databaseCpuPerCallMinute === null ? 'n/a' : fixed(s.databaseCpuPerCallMinute, 4)), ...noFloor, ''],
      ['publish p99 on the event loop, ms', ...perService((s) => s.publishMetric === null ? 'not exposed' : fixed(s.publishP99Ms, 3)), ...noFloor, '']
    )
  }
  rows.push(
    ['generator / fake upstream CPU, % of a core', ...perService((s) => `${fixed(s.generatorCpuPercent, 1)} / ${fixed(s.upstreamCpuPercent, 1)}`), ...floorCell((f) => `${fixed(f.generatorCpuPercent, 1)} / ${fixed(f.upstreamCpuPercent, 1)}`), ''],
    ['machine busy (all cores, everything), %', ...perService((s) => fixed(s.machineBusyPercent, 1)), ...floorCell((f) => fixed(f.machineBusyPercent, 1)), '']
  )
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  const { calls, seconds, warmupSeconds, staggerSeconds } = options
  console.log(`\nmedstream bench: ${calls} calls × ${seconds} s measured (warm-up ${warmupSeconds} s, placed over ${staggerSeconds} s)${options.tls ? ', upstream over wss' : ''}${options.pin ? ', measured process on CPU 0 and the rest on CPU 1' : ''}`)
  console.log(`machine: ${machine}${options.cpuProf ? '\nservice and floors ran with --cpu-prof: their CPU figures include the profiler\'s overhead' : ''}\n`)
  for (const row of rows) console.log(row.map((cell, column) => column === 0 ? cell.padEnd(widths[0]!) : cell.padStart(widths[column]!)).join('  '))
  for (const run of runs) {
    const service = run.result
    const which = runs.length === 1 ? '' : ` (${columnName(service)})`
    if (options.soak) {
      console.log(`\nsoak${which}, per window:   from–to s   RSS mean / max MiB   heap used / total MiB   event-loop p99 ms   CPU s per call-minute`)
      for (const window of service.windows) {
        console.log(`                    ${`${window.fromS}–${window.toS}`.padStart(9)}   ${`${fixed(window.rssMeanKb / 1024, 1)} / ${fixed(window.rssMaxKb / 1024, 1)}`.padStart(18)}   ${`${fixed(window.heapUsedMb, 1)} / ${fixed(window.heapTotalMb, 1)}`.padStart(21)}   ${fixed(window.eventLoopP99Ms).padStart(17)}   ${fixed(window.cpuPerCallMinute, 4).padStart(21)}`)
      }
      const steady = service.rssSeries.filter(([at]) => at >= (staggerSeconds + warmupSeconds) * 1000)
      const half = steady.slice(Math.floor(steady.length / 2))
      const perMinute = (series: Array<[number, number]>): string => fixed(slope(series.map(([at]) => at / 60_000), series.map(([, kb]) => kb)), 0)
      console.log(`RSS slope: ${perMinute(steady)} KiB per minute over the window, ${perMinute(half)} over its second half`)
    }
    if (run.profile !== null) printProfile(`service CPU profile${which}`, run.profile)
  }
  for (const kind of floorKinds) {
    const profile = floorProfiles[kind]
    if (profile != null) printProfile(`${kind} floor CPU profile`, profile)
  }
}

/** Self time per function and per area, as % of busy and as ms, so two profiles of one run compare in ms. */
function printProfile (title: string, profile: ProfileSummary): void {
  console.log(`\n${title}, measured window only (${profile.file}): ${profile.busyMs} ms busy of ${profile.durationMs} ms; self time, % of busy and ms, ← main caller`)
  const line = (row: SelfTimeRow): string => `  ${fixed(row.busyPercent, 1).padStart(5)} %  ${String(Math.round(row.selfMs)).padStart(6)} ms  ${row.function}`
  for (const row of profile.top) console.log(`${line(row)}${row.topCaller === undefined ? '' : `  ← ${row.topCaller}`}`)
  console.log('by area:')
  for (const row of profile.byArea) console.log(line(row))
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/**
 * Whether every phase of a round ran the whole load: all calls live when its window opened. On a
 * saturated machine the generator falls behind (placing calls late, sending frames seconds late),
 * and a phase then measures less work than it should: its ratio means nothing.
 */
function complete (round: Round, calls: number): boolean {
  return [...round.runs.map((run) => run.result), ...Object.values(round.floors)].every((phase) => phase.callsActiveAtWindowStart >= calls)
}

/** Per round, each service run's and each floor's CPU per call-minute and ratio; then the medians over the complete rounds. */
function roundFigures (rounds: Round[], calls: number): { perRound: Array<Record<string, number>>, medians: Record<string, number>, counted: number } {
  const perRound = rounds.map(({ runs, floors }) => {
    const row: Record<string, number> = {}
    for (const run of runs) {
      const name = columnName(run.result)
      row[name] = run.result.cpuPerCallMinute
      for (const [kind, floor] of Object.entries(floors)) row[`${name} ÷ ${kind} floor`] = run.result.cpuPerCallMinute / floor.cpuPerCallMinute
      const base = withoutViewers(runs.map((other) => other.result), run.result)
      if (base !== null) row[`${name} ÷ without viewers`] = run.result.cpuPerCallMinute / base.cpuPerCallMinute
    }
    for (const [kind, floor] of Object.entries(floors)) row[`${kind} floor`] = floor.cpuPerCallMinute
    return row
  })
  const counted = perRound.filter((_, i) => complete(rounds[i]!, calls))
  const medians: Record<string, number> = {}
  for (const key of Object.keys(perRound[0] ?? {})) medians[key] = counted.length === 0 ? Number.NaN : median(counted.map((row) => row[key]!))
  return { perRound, medians, counted: counted.length }
}

/** The rounds of `--repeat`: CPU s per call-minute and the ratios, each round and the median. */
export function printRounds (rounds: Round[], calls: number): void {
  const { perRound, medians, counted } = roundFigures(rounds, calls)
  const keys = Object.keys(medians)
  const cell = (key: string, value: number): string => key.includes('÷') ? `${fixed(value)}×` : fixed(value, 4)
  const label = (i: number): string => `round ${i + 1}${complete(rounds[i]!, calls) ? '' : ' (incomplete load: not counted)'}`
  const rows = [['', ...keys], ...perRound.map((row, i) => [label(i), ...keys.map((key) => cell(key, row[key]!))]), [`median of ${counted}`, ...keys.map((key) => cell(key, medians[key]!))]]
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)))
  console.log(`\n${rounds.length} alternating rounds, CPU s per call-minute and ratios:`)
  for (const row of rows) console.log(row.map((value, column) => column === 0 ? value.padEnd(widths[0]!) : value.padStart(widths[column]!)).join('  '))
}

/**
 * The run as JSON under resultsDir; returns the file. `service`, `floors` and `profile` are the last
 * round's first service run's, as in earlier results; with several runs (one per outbox) `services`
 * holds them all; with `--repeat`, `rounds` holds every round and `medians` the medians over the
 * rounds whose every phase had all calls live (`roundsCounted` of them).
 */
export function writeResults (resultsDir: string, startedAt: Date, rounds: Round[], options: BenchOptions, machine: string): string {
  mkdirSync(resultsDir, { recursive: true })
  const { calls, seconds } = options
  const suffix = `${options.outboxes.length === 0 ? '' : `-${options.outboxes.join('-')}`}${options.viewers > 0 ? `-viewers${options.viewers}` : ''}`
  const file = join(resultsDir, `${startedAt.toISOString().replace(/[:.]/g, '-')}-${calls}c-${seconds}s${options.tls ? '-tls' : ''}${suffix}.json`)
  const { runs, floors, floorProfiles } = rounds[rounds.length - 1]!
  const first = runs[0]!
  const ratio = (service: PhaseResult, kind: Floor): number | null => floors[kind] === undefined ? null : service.cpuPerCallMinute / floors[kind].cpuPerCallMinute
  const figures = roundFigures(rounds, calls)
  writeFileSync(file, JSON.stringify({
    startedAt: startedAt.toISOString(),
    machine,
    options: { calls, seconds, warmupSeconds: options.warmupSeconds, staggerSeconds: options.staggerSeconds, floors: options.floors, repeat: options.repeat, cpuProf: options.cpuProf, soak: options.soak, tls: options.tls, outboxes: options.outboxes, viewers: options.viewers, pin: options.pin },
    derived: { cpuRatioToFloor: ratio(first.result, 'receive'), cpuRatioToBridgeFloor: ratio(first.result, 'bridge'), callsPerCoreAt70Percent: 0.7 * 60 / first.result.cpuPerCallMinute },
    targets: TARGETS,
    service: first.result,
    floor: floors.receive ?? null,
    floors,
    profile: first.profile,
    ...(floorProfiles === undefined || Object.keys(floorProfiles).length === 0 ? {} : { floorProfiles }),
    ...(runs.length === 1 ? {} : { services: runs.map((run) => ({ outbox: run.result.outbox, viewers: run.result.viewers, cpuRatioToFloor: ratio(run.result, 'receive'), cpuRatioToBridgeFloor: ratio(run.result, 'bridge'), service: run.result, profile: run.profile })) }),
    ...(rounds.length === 1 ? {} : { rounds: figures.perRound, medians: figures.medians, roundsCounted: figures.counted })
  }, null, 2) + '\n')
  return file
}
