import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { OBSERVABILITY_DIR } from './prometheus.ts'

/** The parts of Grafana's dashboard JSON model that the tests read. */
export interface DashboardTarget { refId: string, expr: string, datasource?: { type: string, uid: string } }
export interface DashboardPanel {
  id: number
  type: string
  title: string
  gridPos: { h: number, w: number, x: number, y: number }
  datasource?: { type: string, uid: string }
  targets?: DashboardTarget[]
}
export interface Dashboard {
  uid: string
  title: string
  panels: DashboardPanel[]
  templating: { list: Array<{ name: string, type: string, query: string, datasource?: { type: string, uid: string }, current?: { value: string }, includeAll?: boolean, allValue?: string }> }
}

export function loadDashboard (): Dashboard {
  return JSON.parse(readFileSync(join(OBSERVABILITY_DIR, 'grafana/dashboards/medstream.json'), 'utf8')) as Dashboard
}

/** The dashboard's panels grouped under the row that precedes them. */
export function panelsByRow (dashboard: Dashboard): Map<string, DashboardPanel[]> {
  const rows = new Map<string, DashboardPanel[]>()
  let current: DashboardPanel[] | null = null
  for (const panel of dashboard.panels) {
    if (panel.type === 'row') {
      current = []
      rows.set(panel.title, current)
    } else {
      if (current === null) throw new Error(`panel "${panel.title}" sits above the first row`)
      current.push(panel)
    }
  }
  return rows
}

export interface GrafanaVariables {
  /** Value of `$__rate_interval` and `$__interval` and `$__range`, as PromQL durations. */
  rateInterval: string
  interval: string
  range: string
  /** Dashboard template variables by name, already in PromQL form (e.g. `.*` for All). */
  templates: Record<string, string>
}

/**
 * Turns a Grafana panel query into the PromQL Grafana would send: its macros and the dashboard's
 * template variables (`$name`, `${name}`, `[[name]]`) substituted. Throws when a `$` is left over,
 * so an unknown macro or variable cannot reach Prometheus by accident.
 */
export function grafanaToPromQL (expr: string, variables: GrafanaVariables): string {
  const seconds = (duration: string): number => {
    const match = /^(\d+)(ms|s|m|h|d)$/.exec(duration)
    if (match === null) throw new Error(`not a simple duration: ${duration}`)
    const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd']
    return Number(match[1]) * unit
  }
  const macros: Record<string, string> = {
    __rate_interval: variables.rateInterval,
    __interval_ms: String(seconds(variables.interval) * 1000),
    __interval: variables.interval,
    __range_ms: String(seconds(variables.range) * 1000),
    __range_s: String(seconds(variables.range)),
    __range: variables.range
  }
  const values: Record<string, string> = { ...macros, ...variables.templates }
  const substituted = expr.replace(/\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (whole, braced?: string, bracketed?: string, bare?: string) => {
    const name = braced ?? bracketed ?? bare ?? ''
    const value = values[name]
    if (value === undefined) throw new Error(`unknown Grafana variable ${whole} in ${expr}`)
    return value
  })
  if (substituted.includes('$')) throw new Error(`unsubstituted variable in ${substituted}`)
  return substituted
}
