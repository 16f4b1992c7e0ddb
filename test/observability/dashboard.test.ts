import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { loadDashboard, panelsByRow } from '../helpers/grafana.ts'
import { OBSERVABILITY_DIR } from '../helpers/prometheus.ts'

const datasourceUid = /\n\s+uid: (\S+)\n/.exec(readFileSync(join(OBSERVABILITY_DIR, 'grafana/provisioning/datasources/prometheus.yml'), 'utf8'))?.[1]

test('the dashboard has a stable uid and the rows Traffic, Transcription, Webhooks and Saturation when loaded', () => {
  const dashboard = loadDashboard()
  assert.equal(dashboard.uid, 'medstream-overview')
  assert.deepEqual([...panelsByRow(dashboard).keys()], ['Traffic', 'Transcription', 'Webhooks', 'Saturation'])
})

test('every panel and query variable takes its datasource from the datasource variable, which defaults to the provisioned uid', () => {
  const dashboard = loadDashboard()
  assert.equal(datasourceUid, 'medstream-prometheus')
  // A datasource variable, not a fixed uid: the dashboard imports into a Grafana whose Prometheus has another uid.
  const variable = dashboard.templating.list.find((v) => v.name === 'datasource')
  assert.equal(variable?.type, 'datasource')
  assert.equal(variable.query, 'prometheus')
  assert.equal(variable.current?.value, datasourceUid, 'compose opens the dashboard on the provisioned datasource')
  const selected = { type: 'prometheus', uid: '${datasource}' }
  for (const panel of dashboard.panels.filter((p) => p.type !== 'row')) {
    assert.deepEqual(panel.datasource, selected, `panel "${panel.title}"`)
    assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has a query`)
    for (const target of panel.targets ?? []) {
      assert.deepEqual(target.datasource, selected, `panel "${panel.title}" target ${target.refId}`)
      assert.ok(target.expr.trim() !== '', `panel "${panel.title}" target ${target.refId} has an expression`)
    }
  }
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) assert.deepEqual(v.datasource, selected, `variable ${v.name}`)
  assert.ok(!JSON.stringify(dashboard).includes(`"uid":"${datasourceUid}"`), 'no fixed datasource uid is left anywhere in the dashboard')
})

test('each row shows the metrics its alerts and runbooks refer to when its queries are read', () => {
  const rows = panelsByRow(loadDashboard())
  const exprs = (row: string): string => (rows.get(row) ?? []).flatMap((panel) => (panel.targets ?? []).map((target) => target.expr)).join('\n')
  const expected: Record<string, RegExp[]> = {
    Traffic: [/medstream_calls_active/, /medstream_calls_total/, /medstream_stream_rejections_total/, /reason="capacity"/, /medstream_audio_received_seconds_total/, /medstream_upgrade_signatures_total/],
    Transcription: [/medstream_transcript_lag_seconds_bucket/, /medstream_upstream_errors_total/, /medstream_upstream_reconnects_total/, /sum by \(role\) \(rate\(medstream_turns_total/, /medstream_upstream_audio_dropped_seconds_total/, /medstream_upstream_connect_seconds_count/],
    Webhooks: [/medstream_webhook_deliveries_total/, /medstream_webhook_outbox_events/, /medstream_webhook_outbox_oldest_age_seconds/, /state="dead"/, /medstream_webhook_endpoint_paused/, /medstream_events_lost_total/],
    Saturation: [/process_cpu_seconds_total/, /process_resident_memory_bytes/, /nodejs_eventloop_lag_p99_seconds/, /medstream_bridge_latency_seconds_bucket/]
  }
  for (const [row, patterns] of Object.entries(expected)) {
    for (const pattern of patterns) assert.match(exprs(row), pattern, `row ${row}`)
  }
})

test('panels have unique ids and do not overlap on the 24-column grid', () => {
  const panels = loadDashboard().panels
  assert.equal(new Set(panels.map((panel) => panel.id)).size, panels.length, 'panel ids are unique')
  for (const [index, a] of panels.entries()) {
    assert.ok(a.gridPos.x >= 0 && a.gridPos.x + a.gridPos.w <= 24, `panel "${a.title}" fits the grid`)
    for (const b of panels.slice(index + 1)) {
      const overlap = a.gridPos.x < b.gridPos.x + b.gridPos.w && b.gridPos.x < a.gridPos.x + a.gridPos.w &&
        a.gridPos.y < b.gridPos.y + b.gridPos.h && b.gridPos.y < a.gridPos.y + a.gridPos.h
      assert.ok(!overlap, `panels "${a.title}" and "${b.title}" overlap`)
    }
  }
})

test('the dashboard provisioning file points at the directory the dashboards are mounted in', () => {
  const provisioning = readFileSync(join(OBSERVABILITY_DIR, 'grafana/provisioning/dashboards/medstream.yml'), 'utf8')
  assert.match(provisioning, /^\s+path: \/var\/lib\/grafana\/dashboards$/m)
  assert.match(provisioning, /^\s+type: file$/m)
})
