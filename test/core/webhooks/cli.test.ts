import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { OutboxStore } from '../../../src/core/webhooks/outbox-store.ts'
import { BACKENDS, callSid, newLocation, openStore, streamSid, testEvent } from './receiver.ts'
import type { Backend, Location } from './receiver.ts'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

function run (location: Location | string, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: '' }
  if (typeof location === 'string') env.DATA_DIR = location
  else Object.assign(env, { DATA_DIR: location.dataDir, DATABASE_URL: location.databaseUrl ?? '' })
  return new Promise((resolve) => {
    execFile(process.execPath, ['scripts/webhooks.ts', ...args], { cwd: ROOT, env, timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr })
    })
  })
}

async function seed (t: { after: (fn: () => Promise<void> | void) => void }, backend: Backend): Promise<{ location: Location, outbox: OutboxStore }> {
  const location = await newLocation(t, backend)
  const outbox = await openStore(t, location)
  const hourAgo = Date.now() - 3_600_000
  await outbox.insertMany([1, 2, 3].map((sequence) => testEvent(1, sequence)), hourAgo)
  await outbox.insertMany([testEvent(2, 1)], hourAgo + 60_000)
  await outbox.markDead(`${streamSid(1)}-1`, streamSid(1), { at: Date.now(), status: 500, reason: 'status' })
  await outbox.markFailed(`${streamSid(2)}-1`, { at: Date.now(), status: null, reason: 'timeout' }, Date.now() + 60_000)
  await outbox.pause(410)
  return { location, outbox }
}

function commands (backend: Backend): void {
  test('webhooks command lists pending and dead events by call without bodies when asked to list', async (t) => {
    const { location } = await seed(t, backend)
    const { code, stdout } = await run(location, 'list')
    assert.equal(code, 0)
    assert.match(stdout, /Delivery: PAUSED since .* \(receiver answered 410\)/)
    assert.match(stdout, /Outbox: 3 pending, 1 dead, oldest pending 1h00m/)
    assert.match(stdout, new RegExp(`${callSid(1)}\\s+2\\s+1\\s+1h00m`))
    assert.match(stdout, new RegExp(`${streamSid(1)}-1\\s+${callSid(1)}\\s+1\\s+transcript.turn\\s+dead\\s+1\\s+1h00m\\s+500`))
    assert.match(stdout, new RegExp(`${streamSid(2)}-1\\s+${callSid(2)}\\s+1\\s+transcript.turn\\s+pending\\s+1\\s+59m\\d\\ds\\s+timeout\\s+in (\\d+s|1m00s)`))
    assert.doesNotMatch(stdout, /metoprolol|milligrams/, 'never a body')

    const dead = await run(location, 'list', '--state', 'dead')
    assert.equal(dead.stdout.split('\n').filter((line) => line.startsWith('MZ')).length, 1)
  })

  test('webhooks command re-queues dead letters when asked to replay', async (t) => {
    const { location, outbox } = await seed(t, backend)
    const missing = await run(location, 'replay')
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /exactly one of --id ID, --call CA… or --all-dead/)

    const { code, stdout } = await run(location, 'replay', '--id', `${streamSid(1)}-1`)
    assert.equal(code, 0)
    assert.match(stdout, /1 dead letter re-queued/)
    assert.deepEqual(await outbox.counts(), { pending: 4, dead: 0 })
    assert.deepEqual((await outbox.claimDue(Date.now(), 10, new Set())).map((event) => event.id), [`${streamSid(1)}-1`])
  })

  test('webhooks command clears the pause flag when asked to resume', async (t) => {
    const { location, outbox } = await seed(t, backend)
    assert.match((await run(location, 'resume')).stdout, /Delivery resumed/)
    assert.equal(await outbox.pauseState(), null)
    assert.match((await run(location, 'resume')).stdout, /not paused/)
  })

  test('webhooks command deletes only dead letters when asked to purge', async (t) => {
    const { location, outbox } = await seed(t, backend)
    const refused = await run(location, 'purge')
    assert.equal(refused.code, 2)
    assert.match(refused.stderr, /dead letters only; say so with --dead/)
    assert.match((await run(location, 'purge', '--dead', '--older-than', '7d')).stdout, /0 dead letters purged/)
    assert.equal((await run(location, 'purge', '--dead', '--older-than', 'soon')).code, 2)
    assert.match((await run(location, 'purge', '--dead', '--older-than', '30m')).stdout, /1 dead letter purged/)
    assert.deepEqual(await outbox.counts(), { pending: 3, dead: 0 })
  })
}

for (const backend of BACKENDS) describe(`${backend} outbox`, () => { commands(backend) })

test('webhooks command says there is nothing queued when DATA_DIR has no outbox', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-cli-empty-'))
  t.after(() => rmSync(dataDir, { recursive: true, force: true }))
  const { code, stdout } = await run(dataDir, 'list')
  assert.equal(code, 0)
  assert.match(stdout, /No outbox at .*outbox\.db/)
  assert.equal((await run(dataDir, 'bogus')).code, 2)
})
