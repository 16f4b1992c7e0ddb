// The Dockerfile, checked by reading it and by running its runtime steps outside Docker: a clean
// copy of exactly what the image copies, installed with the Dockerfile's own `npm ci --omit=dev`,
// started with the image's exact CMD by a Node 24 binary (the image brings its own), must answer
// /healthz and pass the image's HEALTHCHECK. So no runtime dependency can hide in devDependencies.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { freePort, waitForOk } from '../helpers/net.ts'
import { readRepoFile, ROOT } from './manifests.ts'

interface Instruction { keyword: string, args: string }
interface Stage { from: string, name: string | undefined, instructions: Instruction[] }

/** Dockerfile → stages of instructions (continuations joined, comments dropped). */
function parseDockerfile (text: string): Stage[] {
  const logical: string[] = []
  let pending = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (pending === '' && (line === '' || line.startsWith('#'))) continue
    if (line.endsWith('\\')) { pending += `${line.slice(0, -1)} `; continue }
    logical.push(pending + line)
    pending = ''
  }
  const stages: Stage[] = []
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? []
    if (keyword.toUpperCase() === 'FROM') {
      const [from = '', as, name] = args.split(/\s+/)
      stages.push({ from, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] })
    } else {
      const stage = stages.at(-1)
      assert.ok(stage !== undefined, `${keyword} before FROM`)
      stage.instructions.push({ keyword: keyword.toUpperCase(), args })
    }
  }
  return stages
}

function all (stage: Stage, keyword: string): string[] {
  return stage.instructions.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.args)
}

function only (stage: Stage, keyword: string): string {
  const found = all(stage, keyword)
  assert.equal(found.length, 1, `expected one ${keyword} in stage ${stage.name ?? stage.from}`)
  return found[0] as string
}

/** `KEY=value KEY2=value2` (ENV) → a record. */
function parseEnvInstruction (args: string): Record<string, string> {
  return Object.fromEntries(args.split(/\s+/).filter((part) => part !== '').map((part) => {
    const index = part.indexOf('=')
    return [part.slice(0, index), part.slice(index + 1).replace(/^"(.*)"$/, '$1')]
  }))
}

/** COPY arguments → flags, sources, destination. */
function parseCopy (args: string): { from: string | undefined, sources: string[], destination: string } {
  const words = args.split(/\s+/)
  const from = words.find((word) => word.startsWith('--from='))?.slice('--from='.length)
  const paths = words.filter((word) => !word.startsWith('--'))
  const destination = paths.pop() as string
  return { from, sources: paths, destination }
}

const stages = parseDockerfile(readRepoFile('Dockerfile'))
const runtime = stages.at(-1) as Stage
const deps = stages.find((stage) => stage.name !== undefined && all(runtime, 'COPY').some((copy) => parseCopy(copy).from === stage.name))
const cmd = JSON.parse(only(runtime, 'CMD')) as string[]
const healthcheck = only(runtime, 'HEALTHCHECK')
const healthcheckCmd = JSON.parse(healthcheck.slice(healthcheck.indexOf('CMD ') + 4)) as string[]
const imageEnv = Object.assign({}, ...all(runtime, 'ENV').map(parseEnvInstruction)) as Record<string, string>

function waitForHealthz (port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  return waitForOk(`http://127.0.0.1:${port}/healthz`, timeoutMs, () => child.exitCode === null)
}

test('Dockerfile builds on node:24-slim in two stages with a production-only install when read', () => {
  assert.ok(stages.length >= 2, 'multi-stage')
  for (const stage of stages) assert.equal(stage.from, 'node:24-slim')
  assert.ok(deps !== undefined, 'the runtime stage copies node_modules from an install stage')
  const install = all(deps, 'RUN').join(' && ')
  assert.match(install, /npm ci --omit=dev/)
  assert.doesNotMatch(all(runtime, 'RUN').join(' '), /npm (ci|install)/, 'the runtime stage installs nothing itself')
})

test('Dockerfile runs node directly as a non-root user with a health check and DATA_DIR on a volume when read', () => {
  assert.equal(cmd[0], 'node', 'CMD starts node itself (exec form), not npm, so SIGTERM reaches it')
  assert.deepEqual(cmd, ['node', ...JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.start.split(' ').slice(1)], 'CMD runs what npm start runs')
  assert.deepEqual(all(runtime, 'ENTRYPOINT'), [])
  const user = only(runtime, 'USER')
  assert.match(user, /^[1-9]\d*(:[1-9]\d*)?$/, 'a numeric non-root USER, so Kubernetes runAsNonRoot can verify it')
  assert.equal(healthcheckCmd[0], 'node')
  assert.ok(existsSync(join(ROOT, healthcheckCmd[1] as string)), `${healthcheckCmd[1]} does not exist`)
  assert.match(healthcheck, /--timeout=\d+s/)
  assert.deepEqual(JSON.parse(only(runtime, 'VOLUME')), [imageEnv.DATA_DIR])
  assert.equal(only(runtime, 'STOPSIGNAL'), 'SIGTERM')
  assert.equal(imageEnv.PORT, '8080')
  assert.equal(imageEnv.METRICS_PORT, '9464')
})

test('.dockerignore keeps out everything but what the Dockerfile copies when read', () => {
  const patterns = readRepoFile('.dockerignore').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'))
  assert.equal(patterns[0], '*', 'exclude everything, then re-include what the image needs (keeps .env and data/ out)')
  const included = patterns.filter((pattern) => pattern.startsWith('!')).map((pattern) => pattern.slice(1).replace(/\/$/, ''))
  for (const stage of stages) {
    for (const copy of all(stage, 'COPY').map(parseCopy).filter((parsed) => parsed.from === undefined)) {
      for (const source of copy.sources) {
        const path = source.replace(/^\.\//, '').replace(/\/$/, '')
        assert.ok(included.some((entry) => path === entry || path.startsWith(`${entry}/`)), `COPY ${source} is excluded by .dockerignore`)
      }
    }
  }
})

/**
 * What a build host needs to reach the registry: its proxy and the CA that proxy presents. Nothing
 * else of this process's environment (npm_config_* of the running `npm test`, say) leaks into the
 * install, which must work as `docker build` runs it.
 */
function registryAccess (): Record<string, string> {
  const passed: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && /^(NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|https?_proxy|no_proxy)$/i.test(name)) passed[name] = value
  }
  return passed
}

test('image runtime steps start the service with the exact CMD and pass the HEALTHCHECK when installed with npm ci --omit=dev', { timeout: 400_000 }, async (t) => {
  assert.equal(process.versions.node.split('.')[0], '24', 'run this test with the Node 24 binary (node_modules/.bin/node), like the image')
  assert.ok(deps !== undefined)
  const work = mkdtempSync(join(tmpdir(), 'medstream-image-'))
  t.after(() => rmSync(work, { recursive: true, force: true }))
  const app = join(work, 'app')
  mkdirSync(app)

  // The install stage: its COPYs, then its `npm ci …` exactly as written (up to the next `&&`).
  for (const copy of all(deps, 'COPY').map(parseCopy)) {
    for (const source of copy.sources) cpSync(join(ROOT, source), join(app, source), { recursive: true })
  }
  const npmCi = (/npm ci[^&]*/.exec(all(deps, 'RUN').join(' && '))?.[0] ?? '').trim().split(/\s+/)
  const install = spawnSync('npm', npmCi.slice(1), { cwd: app, encoding: 'utf8', timeout: 300_000, env: { ...registryAccess(), PATH: process.env.PATH, HOME: process.env.HOME, npm_config_update_notifier: 'false' } })
  assert.equal(install.status, 0, `npm ${npmCi.slice(1).join(' ')} failed: ${install.stderr}`)
  for (const dev of ['node', 'typescript', 'eslint', 'kubernetes-models']) {
    assert.ok(!existsSync(join(app, 'node_modules', dev)), `devDependency ${dev} was installed`)
  }
  // The runtime stage's own COPYs from the build context (the install stage's node_modules is there already).
  for (const copy of all(runtime, 'COPY').map(parseCopy).filter((parsed) => parsed.from === undefined)) {
    const single = copy.sources.length === 1 && !copy.destination.endsWith('/')
    for (const source of copy.sources) {
      const target = single ? join(app, copy.destination) : join(app, copy.destination, source.split('/').at(-1) as string)
      mkdirSync(dirname(target), { recursive: true })
      cpSync(join(ROOT, source), target, { recursive: true })
    }
  }

  const port = await freePort()
  const metricsPort = await freePort()
  const env = {
    PATH: process.env.PATH,
    ...imageEnv,
    // The image's /data is a volume; here a fresh directory stands in for it.
    DATA_DIR: join(work, 'data'),
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    HOST: '127.0.0.1',
    PUBLIC_URL: 'https://calls.example.org',
    TWILIO_AUTH_TOKEN: 'image-test-auth-token',
    FORWARD_TO: '+15550002222',
    ASSEMBLYAI_API_KEY: 'image-test-key',
    // Webhook mode, so the SQLite outbox is created in DATA_DIR (nothing is sent: there are no calls).
    WEBHOOK_URL: 'http://127.0.0.1:9/hooks',
    WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    LOG_LEVEL: 'warn'
  }
  mkdirSync(env.DATA_DIR)
  const runNode = (argv: string[]): ChildProcess => spawn(process.execPath, argv.slice(1), { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] })
  const checkHealth = async (): Promise<number | null> => {
    const check = runNode(healthcheckCmd)
    const [code] = await once(check, 'exit') as [number | null]
    return code
  }

  const service = runNode(cmd)
  let stderr = ''
  service.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
  t.after(() => { if (service.exitCode === null) service.kill('SIGKILL') })
  try {
    await waitForHealthz(port, service, 30_000)
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}; stderr: ${stderr}`, { cause: error })
  }
  assert.equal(await checkHealth(), 0, 'HEALTHCHECK must pass while the service runs')
  const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`)
  assert.equal(metrics.status, 200)
  assert.match(await metrics.text(), /medstream_build_info\{version="\d+\.\d+\.\d+/)

  service.kill('SIGTERM')
  const [code] = await once(service, 'exit', { signal: AbortSignal.timeout(20_000) }) as [number | null]
  assert.equal(code, 0, `SIGTERM with no calls must drain and exit 0; stderr: ${stderr}`)
  assert.equal(await checkHealth(), 1, 'HEALTHCHECK must fail once the service is gone')

  // The other scripts the image carries run from the same production-only install.
  const outbox = spawnSync(process.execPath, ['scripts/webhooks.ts', 'list'], { cwd: app, env, encoding: 'utf8', timeout: 20_000 })
  assert.equal(outbox.status, 0, `npm run webhooks -- list failed: ${outbox.stderr}`)
  assert.doesNotMatch(outbox.stdout, /No outbox/, 'the service should have left its outbox in DATA_DIR')
  const receiver = runNode(['node', 'scripts/webhook-receiver.ts', '--port', '0', '--host', '127.0.0.1'])
  t.after(() => { if (receiver.exitCode === null) receiver.kill('SIGKILL') })
  const [line] = await once(receiver.stdout as NodeJS.ReadableStream, 'data', { signal: AbortSignal.timeout(20_000) }) as [Buffer]
  assert.match(line.toString('utf8'), /^webhook-receiver: listening on /)
  receiver.kill('SIGTERM')
  const [receiverCode] = await once(receiver, 'exit', { signal: AbortSignal.timeout(20_000) }) as [number | null]
  assert.equal(receiverCode, 0)
})
