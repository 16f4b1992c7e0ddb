import { execFileSync, spawnSync } from 'node:child_process'
import { cpus, totalmem } from 'node:os'
import { readdirSync, readFileSync } from 'node:fs'

/** Clock ticks per second of /proc's utime and stime; 100 on every mainstream Linux. */
export const CLOCK_TICKS_PER_SECOND = readClockTicks()

function readClockTicks (): number {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isInteger(ticks) && ticks > 0 ? ticks : 100
  } catch {
    return 100
  }
}

/**
 * Milliseconds on the machine's monotonic clock (`process.hrtime`, CLOCK_MONOTONIC), with
 * sub-millisecond precision and the same in every process: the benchmark's processes compare their
 * times. `performance.timeOrigin + performance.now()` is not comparable across processes: Node reads
 * the wall clock and the monotonic clock one after the other at start, and a process descheduled
 * in between carries the gap for its whole life (4.5 ms measured here with both cores busy).
 */
export function clockMs (): number {
  return Number(process.hrtime.bigint()) / 1e6
}

/** User + system CPU seconds the process has used (its threads included: GC, libuv pool). */
export function cpuSeconds (pid: number): number {
  const { user, system } = cpuTimes(pid)
  return user + system
}

/** CPU seconds in user and in kernel mode (socket and file syscalls are the kernel's). */
export function cpuTimes (pid: number): { user: number, system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may contain spaces and parentheses; fields are counted after its ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { user: Number(fields[11]) / CLOCK_TICKS_PER_SECOND, system: Number(fields[12]) / CLOCK_TICKS_PER_SECOND }
}

/**
 * CPU seconds of a process and its children, the exited ones included (the kernel adds a reaped
 * child's time to its parent's cutime and cstime): a PostgreSQL server, whose backends come and go.
 */
export function treeCpuSeconds (pid: number): number {
  let sum = 0
  for (const process of processStats()) {
    if (process.pid !== pid && process.ppid !== pid) continue
    // utime, stime, cutime, cstime: fields 14–17 of the line, 12–15 after the command name.
    const fields = process.fields
    sum += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS_PER_SECOND
  }
  return sum
}

/** Every process's /proc/<pid>/stat, split after the command name (so fields[1] is the parent pid). */
function * processStats (): Generator<{ pid: number, ppid: number, fields: string[] }> {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue // exited meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    yield { pid: Number(entry), ppid: Number(fields[1]), fields }
  }
}

/** The pid of the process whose command line holds `args` in a row (e.g. a server's `-p 5432`). */
export function findProcess (args: string[]): number | null {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let argv: string[]
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
    } catch {
      continue
    }
    for (let i = 0; i + args.length <= argv.length; i++) {
      if (args.every((arg, j) => argv[i + j] === arg)) return Number(entry)
    }
  }
  return null
}

/** Resident set size in KiB (VmRSS). */
export function rssKb (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status)
  return match === null ? 0 : Number(match[1])
}

/** Whole-machine jiffies, busy and total, from the first line of /proc/stat. */
export function machineJiffies (): { busy: number, total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
  const values = line.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest time is already inside user and nice)
  const total = values.slice(0, 8).reduce((sum, value) => sum + value, 0)
  const idle = (values[3] ?? 0) + (values[4] ?? 0)
  return { busy: total - idle, total }
}

export function describeMachine (): string {
  const list = cpus()
  const model = list[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown CPU'
  return `${list.length} × ${model}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM, Linux, Node ${process.version}`
}

/** The pid and its direct children (a PostgreSQL server's postmaster and its backends). */
export function withChildren (pid: number): number[] {
  const pids = [pid]
  for (const process of processStats()) if (process.ppid === pid) pids.push(process.pid)
  return pids
}

/**
 * Binds each process (every thread of it) to one CPU with util-linux's `taskset`; a process it
 * forks later inherits the binding. Throws when taskset fails, so `--pin` never measures unpinned.
 */
export function pinToCpu (pids: Array<number | undefined>, cpu: number): void {
  for (const pid of pids) {
    if (pid === undefined) continue
    const result = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { encoding: 'utf8' })
    if (result.status !== 0) throw new Error(`taskset could not pin process ${pid} to CPU ${cpu}: ${result.error?.message ?? result.stderr.trim()}`)
  }
}
