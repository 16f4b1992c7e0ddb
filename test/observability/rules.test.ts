import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { parse } from 'yaml'
import { OBSERVABILITY_DIR, promtool } from '../helpers/prometheus.ts'

const PROMETHEUS_DIR = join(OBSERVABILITY_DIR, 'prometheus')
const ROOT = new URL('../../', import.meta.url).pathname

/** Alert names in alerts.yml, in file order. The file is ours and keeps `- alert: Name` on one line. */
function alertNames (): string[] {
  const text = readFileSync(join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8')
  return [...text.matchAll(/^\s*- alert: (\w+)\s*$/gm)].map((match) => match[1] as string)
}

/**
 * Every `alertname:` case in alerts.test.yml with whether it expects the alert to fire: a case is
 * silent when its `exp_alerts` is `[]`.
 */
function unitTestCases (): Array<{ alertname: string, fires: boolean }> {
  const lines = readFileSync(join(PROMETHEUS_DIR, 'alerts.test.yml'), 'utf8').split('\n')
  const cases: Array<{ alertname: string, fires: boolean }> = []
  lines.forEach((line, index) => {
    const match = /^\s*alertname: (\w+)\s*$/.exec(line)
    if (match === null) return
    const expected = lines.slice(index + 1).find((next) => /^\s*exp_alerts:/.test(next))
    assert.ok(expected !== undefined, `alertname ${match[1]} on line ${index + 1} has no exp_alerts`)
    cases.push({ alertname: match[1] as string, fires: !/exp_alerts:\s*\[\]/.test(expected) })
  })
  return cases
}

type Scope = 'per replica' | 'fleet-wide'

/** What each alert's README runbook paragraph opens with: `**Name** (severity, per replica|fleet-wide)`. */
function runbookHeadings (): Map<string, { severity: string, scope: Scope }> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const headings = new Map<string, { severity: string, scope: Scope }>()
  for (const match of readme.matchAll(/^\*\*(Medstream\w+)\*\* \((critical|warning), (per replica|fleet-wide)\)/gm)) {
    headings.set(match[1] as string, { severity: match[2] as string, scope: match[3] as Scope })
  }
  return headings
}

interface RuleTestFile {
  tests: Array<{ alert_rule_test?: Array<{ alertname: string, exp_alerts: Array<{ exp_labels: Record<string, string> }> }> }>
}

/** The labels of every alert that a case in alerts.test.yml expects to fire, by alert name. */
function firingLabels (): Map<string, Array<Record<string, string>>> {
  const file = parse(readFileSync(join(PROMETHEUS_DIR, 'alerts.test.yml'), 'utf8')) as RuleTestFile
  const labels = new Map<string, Array<Record<string, string>>>()
  for (const group of file.tests) {
    for (const c of group.alert_rule_test ?? []) {
      labels.set(c.alertname, [...(labels.get(c.alertname) ?? []), ...c.exp_alerts.map((alert) => alert.exp_labels)])
    }
  }
  return labels
}

test('promtool check config accepts prometheus.yml and the rule file it loads when run on the repository files', async () => {
  const result = await promtool(['check', 'config', 'prometheus/prometheus.yml'])
  assert.equal(result.code, 0, result.stdout + result.stderr)
  assert.match(result.stdout, /SUCCESS: 1 rule files found/)
  assert.match(result.stdout, new RegExp(`SUCCESS: ${alertNames().length} rules found`))
})

test('promtool check rules passes when run on alerts.yml', async () => {
  const result = await promtool(['check', 'rules', 'prometheus/alerts.yml'])
  assert.equal(result.code, 0, result.stdout + result.stderr)
})

test('every alert an operator relies on exists with a severity, a summary and a runbook pointer', () => {
  const text = readFileSync(join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8')
  const names = alertNames()
  for (const required of [
    'MedstreamDown', 'MedstreamAbsent', 'MedstreamUpstreamErrorRateHigh', 'MedstreamTranscriptionFailing',
    'MedstreamWebhookOutboxGrowing', 'MedstreamWebhookOutboxStale', 'MedstreamWebhookDeadLetters',
    'MedstreamEventLoopDelayHigh', 'MedstreamUpstreamAudioDropped', 'MedstreamCapacityRejections', 'MedstreamEventsLost',
    'MedstreamHandoffsFailing'
  ]) assert.ok(names.includes(required), `alert ${required} is missing`)
  const blocks = text.split(/^\s*- alert: /m).slice(1)
  assert.equal(blocks.length, names.length)
  for (const block of blocks) {
    const name = block.split('\n')[0]?.trim()
    assert.match(block, /\n\s+severity: (critical|warning)\n/, `${name} has a severity`)
    assert.match(block, /\n\s+summary: "[^"]+"/, `${name} has a summary`)
    assert.match(block, new RegExp(`\\n\\s+runbook: "README\\.md, Operations, Alerts and runbooks: ${name}"`), `${name} points at its runbook`)
  }
})

test('the README has a runbook paragraph for every alert when the operations section is read', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const operations = readme.slice(readme.indexOf('## Operations'))
  const runbooks = operations.slice(operations.indexOf('### Alerts and runbooks'))
  assert.ok(operations.includes('### Alerts and runbooks'), 'README.md has an "Alerts and runbooks" subsection under Operations')
  for (const name of alertNames()) {
    assert.match(runbooks, new RegExp(`^\\*\\*${name}\\*\\*`, 'm'), `README.md has a runbook paragraph starting with **${name}**`)
  }
})

test('each runbook heading gives its alert\'s severity and says whether it is per replica or fleet-wide', () => {
  const headings = runbookHeadings()
  const text = readFileSync(join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8')
  for (const block of text.split(/^\s*- alert: /m).slice(1)) {
    const name = block.split('\n')[0]?.trim() as string
    const heading = headings.get(name)
    assert.ok(heading !== undefined, `README.md opens the ${name} runbook with "**${name}** (severity, per replica|fleet-wide)"`)
    assert.equal(heading.severity, /\n\s+severity: (\w+)\n/.exec(block)?.[1], `${name}: README and alerts.yml agree on the severity`)
  }
  assert.deepEqual([...headings.keys()].sort(), alertNames().sort(), 'no runbook heading for an alert that does not exist')
  // Absence of every target can only be said of the fleet; the outbox alerts are about the receiver
  // every replica shares (and, in fleet mode, the outbox they share); a draining pod whose handoffs
  // fail is gone minutes later, so handoff failures are judged over the fleet.
  for (const name of ['MedstreamAbsent', 'MedstreamHandoffsFailing', 'MedstreamWebhookOutboxGrowing', 'MedstreamWebhookOutboxStale', 'MedstreamWebhookDeadLetters', 'MedstreamWebhookEndpointPaused']) {
    assert.equal(headings.get(name)?.scope, 'fleet-wide', name)
  }
})

test('promtool unit tests expect every per-replica alert to name its pod and namespace, and fleet-wide ones not to, when they fire', () => {
  const firing = firingLabels()
  for (const [name, { scope }] of runbookHeadings()) {
    const alerts = firing.get(name) ?? []
    assert.ok(alerts.length > 0, `${name} has a case where it fires`)
    for (const labels of alerts) {
      if (scope === 'per replica') {
        assert.ok(labels.pod !== undefined && labels.namespace !== undefined && labels.instance !== undefined, `${name} (per replica) fires with pod, namespace and instance: ${JSON.stringify(labels)}`)
      } else {
        assert.ok(labels.pod === undefined && labels.instance === undefined, `${name} (fleet-wide) fires once for the fleet, without pod or instance: ${JSON.stringify(labels)}`)
      }
    }
  }
  // promtool compares exp_labels exactly, so 'promtool test rules passes' below is what shows the
  // rules really keep these labels.
})

test('promtool unit tests cover every alert firing and staying silent', () => {
  const cases = unitTestCases()
  for (const name of alertNames()) {
    assert.ok(cases.some((c) => c.alertname === name && c.fires), `${name} has a case where it fires`)
    assert.ok(cases.some((c) => c.alertname === name && !c.fires), `${name} has a case where it stays silent`)
  }
  const unknown = cases.filter((c) => !alertNames().includes(c.alertname))
  assert.deepEqual(unknown, [], 'every case names an alert that exists')
})

test('promtool test rules passes when run on alerts.test.yml', async () => {
  const result = await promtool(['test', 'rules', 'prometheus/alerts.test.yml'])
  assert.equal(result.code, 0, result.stdout + result.stderr)
  assert.match(result.stdout, /SUCCESS/)
})

test('compose runs the Prometheus release whose promtool checks the rules when the two versions are compared', async () => {
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: { prometheus: { image: string } } }
  const pinned = /^prom\/prometheus:v(\d+\.\d+)\.\d+$/.exec(compose.services.prometheus.image)
  assert.ok(pinned !== null, `compose pins an exact prom/prometheus release, not ${compose.services.prometheus.image}`)
  const result = await promtool(['--version'])
  const local = /version (\d+\.\d+)\./.exec(result.stdout + result.stderr)
  assert.ok(local !== null, result.stdout + result.stderr)
  assert.equal(pinned[1], local[1], 'the compose Prometheus and the promtool that tests the rules are the same minor release')
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  assert.ok(readme.includes(`\`${compose.services.prometheus.image}\``), 'README names the pinned image')
})

test('promtool check metrics rejects a badly named metric when given one, so a clean result means something', async () => {
  const exposition = '# HELP demo_active_total A gauge named like a counter.\n# TYPE demo_active_total gauge\ndemo_active_total 3\n'
  const result = await promtool(['check', 'metrics'], { stdin: exposition })
  assert.notEqual(result.code, 0)
  assert.match(result.stdout + result.stderr, /demo_active_total/)
})
