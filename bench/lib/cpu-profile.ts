import { readFileSync } from 'node:fs'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  /** Microseconds of CLOCK_MONOTONIC (V8's TimeTicks), the clock of process.hrtime(). */
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

export interface SelfTimeRow {
  /** `name (file:line)`, paths relative to the repository. */
  function: string
  selfMs: number
  /** Of all samples but `(idle)`: the share of the CPU the process used. */
  busyPercent: number
  /** The caller most of this self time came through (natives such as writeBuffer need it). */
  topCaller?: string
}

export interface ProfileSummary {
  file: string
  durationMs: number
  busyMs: number
  top: SelfTimeRow[]
  /** The same time grouped by where the code lives: src/…, node_modules/<package>, node:…, (gc)… */
  byArea: SelfTimeRow[]
}

const ROOT = new URL('../../', import.meta.url).href

/**
 * Self time per function (summed over the call sites V8 keeps apart) from a `--cpu-prof` file,
 * counting only samples taken in [fromUs, toUs) of CLOCK_MONOTONIC when given (the steady state,
 * without start-up and shutdown).
 */
export function summarizeCpuProfile (file: string, range: { fromUs: number, toUs: number } | null = null, limit = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const nodes = new Map<number, ProfileNode>()
  const parents = new Map<number, number>()
  for (const node of profile.nodes) {
    nodes.set(node.id, node)
    for (const child of node.children ?? []) parents.set(child, node.id)
  }
  const hitsByNode = new Map<number, number>()
  let at = profile.startTime
  let firstAt = Number.POSITIVE_INFINITY
  let lastAt = 0
  let samples = 0
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0
    if (range !== null && (at < range.fromUs || at >= range.toUs)) continue
    const id = profile.samples[i] as number
    hitsByNode.set(id, (hitsByNode.get(id) ?? 0) + 1)
    samples++
    firstAt = Math.min(firstAt, at)
    lastAt = Math.max(lastAt, at)
  }
  const durationMs = samples === 0 ? 0 : (lastAt - firstAt) / 1000
  const msPerSample = samples === 0 ? 0 : durationMs / samples
  const byFunction = new Map<string, number>()
  const callers = new Map<string, Map<string, number>>()
  const byArea = new Map<string, number>()
  let idle = 0
  for (const [id, hits] of hitsByNode) {
    const node = nodes.get(id)
    if (node === undefined) continue
    const { functionName, url } = node.callFrame
    if (functionName === '(idle)') {
      idle += hits
      continue
    }
    const name = nameOf(node)
    byFunction.set(name, (byFunction.get(name) ?? 0) + hits)
    const parent = nodes.get(parents.get(id) ?? -1)
    if (parent !== undefined) {
      const perCaller = callers.get(name) ?? new Map<string, number>()
      const caller = nameOf(parent)
      perCaller.set(caller, (perCaller.get(caller) ?? 0) + hits)
      callers.set(name, perCaller)
    }
    const area = areaOf(functionName, url)
    byArea.set(area, (byArea.get(area) ?? 0) + hits)
  }
  const busy = samples - idle
  const rows = (map: Map<string, number>, count: number, withCaller: boolean): SelfTimeRow[] => [...map]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, hits]) => {
      const row: SelfTimeRow = { function: name, selfMs: Math.round(hits * msPerSample), busyPercent: busy === 0 ? 0 : 100 * hits / busy }
      const perCaller = callers.get(name)
      if (withCaller && perCaller !== undefined) {
        const [caller, callerHits] = [...perCaller].sort((a, b) => b[1] - a[1])[0] as [string, number]
        row.topCaller = `${caller} (${Math.round(100 * callerHits / hits)} %)`
      }
      return row
    })
  return { file, durationMs: Math.round(durationMs), busyMs: Math.round(busy * msPerSample), top: rows(byFunction, limit, true), byArea: rows(byArea, 20, false) }
}

function nameOf (node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame
  const where = url === '' ? '' : ` (${shortUrl(url)}:${lineNumber + 1})`
  return `${functionName === '' ? '(anonymous)' : functionName}${where}`
}

function shortUrl (url: string): string {
  return url.startsWith(ROOT) ? url.slice(ROOT.length) : url.replace(/^file:\/\//, '')
}

function areaOf (functionName: string, url: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) return url
  const path = shortUrl(url)
  const modules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path)
  if (modules !== null) return `node_modules/${modules[1]}`
  return path
}
