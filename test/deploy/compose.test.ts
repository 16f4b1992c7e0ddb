// docker-compose.yml: valid against the Compose Specification's JSON schema, and every service name,
// port and mounted path it relies on exists and agrees with the rest of the repository.
import assert from 'node:assert/strict'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, posix } from 'node:path'
import { test } from 'node:test'
import { parseEnv } from 'node:util'
import { Ajv } from 'ajv'
import { parse } from 'yaml'
import { loadConfig } from '../../src/config.ts'
import { configEnvNames, readRepoFile, readYaml, ROOT } from './manifests.ts'

/* eslint-disable @typescript-eslint/no-explicit-any */
const compose = readYaml('docker-compose.yml') as any
const services = compose.services
const medstream = services.medstream
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Compose interpolation as `docker compose` does it with nothing set: `${VAR:-default}` → default. */
function interpolate (value: string, env: Record<string, string> = {}): string {
  return value.replace(/\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (_match, name: string, fallback: string | undefined) => env[name] ?? fallback ?? '')
}

interface Mount { source: string, target: string, readOnly: boolean }

function mounts (service: { volumes?: string[] }): Mount[] {
  return (service.volumes ?? []).map((volume) => {
    const [source = '', target = '', mode] = volume.split(':')
    return { source, target, readOnly: mode === 'ro' }
  })
}

function bindMounts (service: { volumes?: string[] }): Mount[] {
  return mounts(service).filter((mount) => mount.source.startsWith('.'))
}

/** The repository file a container path comes from, through the service's bind mounts. */
function hostPathOf (service: { volumes?: string[] }, containerPath: string): string | undefined {
  for (const mount of bindMounts(service)) {
    if (containerPath === mount.target) return join(ROOT, mount.source)
    if (containerPath.startsWith(`${mount.target}/`)) return join(ROOT, mount.source, containerPath.slice(mount.target.length + 1))
  }
  return undefined
}

/** `[ip:]host:container` short syntax → its parts, after interpolation. */
function ports (service: { ports?: string[] }): Array<{ ip: string | undefined, host: string, container: string }> {
  return (service.ports ?? []).map((spec) => {
    const parts = interpolate(spec).split(':')
    const container = parts.pop() as string
    const host = parts.pop() as string
    return { ip: parts.pop(), host, container }
  })
}

test('docker-compose.yml validates against the Compose Specification JSON schema when parsed', () => {
  // dclint ships the current compose-spec schema; its package exports do not list the file, so it is
  // read from the package directory.
  const packageDir = dirname(createRequire(import.meta.url).resolve('dclint/package.json'))
  const schema = JSON.parse(readFileSync(join(packageDir, 'schemas', 'compose.schema.json'), 'utf8')) as Record<string, unknown>
  delete schema.$schema // draft-07 under an https URL that Ajv does not know by that name
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema)
  const valid = validate(compose)
  assert.ok(valid, `docker-compose.yml: ${JSON.stringify(validate.errors, null, 2)}`)
  // A schema that accepts anything would prove nothing.
  assert.equal(validate({ services: { medstream: { image: 'x', stop_grace: '330s' } } }), false)
})

test('compose runs medstream, the webhook receiver, Prometheus and Grafana when its services are read', () => {
  assert.deepEqual(Object.keys(services).sort(), ['grafana', 'medstream', 'prometheus', 'webhook-receiver'])
  assert.equal(medstream.build, '.')
  assert.ok(existsSync(join(ROOT, 'Dockerfile')))
  assert.equal(medstream.init, true, 'init: true so tini forwards SIGTERM and reaps children')
  // The receiver runs on the medstream image with a script the Dockerfile copies.
  const receiver = services['webhook-receiver']
  assert.equal(receiver.image, medstream.image)
  assert.equal(receiver.command[0], 'node')
  const script = receiver.command[1]
  assert.ok(existsSync(join(ROOT, script)), `${script} does not exist`)
  assert.match(readRepoFile('Dockerfile'), new RegExp(`COPY [^\\n]*${script.replace(/[.]/g, '\\.')}`), `the Dockerfile does not copy ${script}`)
  assert.match(receiver.environment.WEBHOOK_SECRET, /^\$\{WEBHOOK_SECRET:\?/, 'the receiver must refuse to start without the secret')
  const receiverPort = receiver.command[receiver.command.indexOf('--port') + 1]
  const webhookUrl = new URL(interpolate(medstream.environment.WEBHOOK_URL))
  assert.equal(webhookUrl.hostname, 'webhook-receiver')
  assert.equal(webhookUrl.port, receiverPort)
})

test('compose publishes only medstream\'s PORT and Grafana on loopback when ports are read', () => {
  const published = ports(medstream)
  assert.equal(published.length, 1, 'only PORT is published; metrics stay on the compose network')
  const port = String(loadConfig({ PUBLIC_URL: 'https://x.example', TWILIO_SIGNATURE_CHECK: 'false', FORWARD_TO: '+15550002222', ASSEMBLYAI_API_KEY: 'k', PORT: interpolate('${PORT:-8080}') }).port)
  assert.equal(published[0]?.container, port)
  assert.match(medstream.ports[0], /\$\{PORT:-8080\}$/, 'the container port follows PORT from .env')
  assert.notEqual(published[0]?.container, medstream.environment.METRICS_PORT)
  assert.deepEqual(ports(services.grafana), [{ ip: '127.0.0.1', host: '3000', container: '3000' }])
  assert.equal(services['webhook-receiver'].ports, undefined)
})

test('compose gives medstream a grace period that covers DRAIN_TIMEOUT_MS and the last webhook pass when read', () => {
  const match = /^(\d+)s$/.exec(medstream.stop_grace_period)
  assert.ok(match !== null, `stop_grace_period ${medstream.stop_grace_period} should be in seconds`)
  const envExample = parseEnv(readRepoFile('.env.example'))
  const drainS = Number(envExample.DRAIN_TIMEOUT_MS) / 1000
  assert.equal(drainS, 300)
  // Up to 10 s for the last turns and >= 5 s for the last webhook pass (server.ts), plus margin.
  assert.ok(Number(match[1]) >= drainS + 15 + 5, `stop_grace_period ${match[1]}s < ${drainS} + 20`)
})

test('compose mounts DATA_DIR on a volume and passes only config-schema variables when read', () => {
  const names = configEnvNames()
  for (const key of Object.keys(medstream.environment)) assert.ok(names.has(key), `${key} is not an environment variable of src/config.ts`)
  assert.equal(medstream.env_file, '.env')
  const data = mounts(medstream).find((mount) => mount.target === medstream.environment.DATA_DIR)
  assert.ok(data !== undefined, 'DATA_DIR must be on a volume')
  assert.ok(data.source in compose.volumes, `${data.source} must be a named volume`)
  assert.match(readRepoFile('Dockerfile'), new RegExp(`VOLUME \\["${medstream.environment.DATA_DIR}"\\]`))
})

test('compose Prometheus loads the project config and alert rules and scrapes medstream\'s metrics port', () => {
  const prometheus = services.prometheus
  for (const mount of bindMounts(prometheus)) {
    assert.ok(existsSync(join(ROOT, mount.source)), `${mount.source} does not exist in the repository`)
    assert.ok(mount.readOnly, `${mount.source} must be mounted read-only`)
  }
  const configFlag = (prometheus.command as string[]).find((arg) => arg.startsWith('--config.file='))?.slice('--config.file='.length) ?? '/etc/prometheus/prometheus.yml'
  const configPath = hostPathOf(prometheus, configFlag)
  assert.equal(configPath, join(ROOT, 'observability/prometheus/prometheus.yml'))
  const config = parse(readFileSync(configPath, 'utf8')) as { rule_files: string[], scrape_configs: Array<{ job_name: string, static_configs: Array<{ targets: string[] }> }> }
  for (const ruleFile of config.rule_files) {
    const inContainer = posix.resolve(posix.dirname(configFlag), ruleFile)
    const onHost = hostPathOf(prometheus, inContainer)
    assert.ok(onHost !== undefined && existsSync(onHost), `rule file ${inContainer} is not mounted from the repository`)
  }
  const job = config.scrape_configs.find((candidate) => candidate.job_name === 'medstream')
  assert.ok(job !== undefined, 'the alert rules select job="medstream"')
  assert.deepEqual(job.static_configs.flatMap((entry) => entry.targets), [`medstream:${medstream.environment.METRICS_PORT}`])
})

test('compose Grafana provisioning points at the mounted datasource and dashboard when read', () => {
  const grafana = services.grafana
  for (const mount of bindMounts(grafana)) {
    assert.ok(existsSync(join(ROOT, mount.source)), `${mount.source} does not exist in the repository`)
    assert.ok(mount.readOnly, `${mount.source} must be mounted read-only`)
  }
  const provisioning = hostPathOf(grafana, '/etc/grafana/provisioning')
  assert.equal(provisioning, join(ROOT, 'observability/grafana/provisioning'))
  assert.ok(statSync(join(provisioning, 'datasources')).isDirectory() && statSync(join(provisioning, 'dashboards')).isDirectory())

  const datasources = readYaml('observability/grafana/provisioning/datasources/prometheus.yml') as { datasources: Array<{ uid: string, url: string }> }
  const datasource = datasources.datasources[0]
  assert.ok(datasource !== undefined)
  const url = new URL(datasource.url)
  assert.equal(url.hostname, 'prometheus', 'the datasource must reach the compose service')
  assert.ok(ports(services.prometheus).some((port) => port.container === url.port), `prometheus does not listen on ${url.port}`)

  const dashboards = readYaml('observability/grafana/provisioning/dashboards/medstream.yml') as { providers: Array<{ options: { path: string } }> }
  const dashboardDir = dashboards.providers[0]?.options.path ?? ''
  const onHost = hostPathOf(grafana, dashboardDir)
  assert.equal(onHost, join(ROOT, 'observability/grafana/dashboards'), `the provisioning path ${dashboardDir} is not mounted from observability/grafana/dashboards`)
  const dashboard = JSON.parse(readFileSync(join(onHost, 'medstream.json'), 'utf8')) as unknown
  assert.ok(JSON.stringify(dashboard).includes(datasource.uid), 'the dashboard must use the provisioned datasource uid')
})
