import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
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

test('every alert the issue asks for exists with a severity, a summary and a runbook pointer', () => {
  const text = readFileSync(join(PROMETHEUS_DIR, 'alerts.yml'), 'utf8')
  const names = alertNames()
  for (const required of [
    'MedstreamDown', 'MedstreamAbsent', 'MedstreamUpstreamErrorRateHigh', 'MedstreamTranscriptionFailing',
    'MedstreamWebhookOutboxGrowing', 'MedstreamWebhookOutboxStale', 'MedstreamWebhookDeadLetters',
    'MedstreamEventLoopDelayHigh'
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

test('promtool check metrics rejects a badly named metric when given one, so a clean result means something', async () => {
  const exposition = '# HELP demo_active_total A gauge named like a counter.\n# TYPE demo_active_total gauge\ndemo_active_total 3\n'
  const result = await promtool(['check', 'metrics'], { stdin: exposition })
  assert.notEqual(result.code, 0)
  assert.match(result.stdout + result.stderr, /demo_active_total/)
})
