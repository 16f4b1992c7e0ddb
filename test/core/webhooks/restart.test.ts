import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Receiver, SECRET_OLD, callSid, startSink, streamSid } from './receiver.ts'

const FIXTURE = fileURLToPath(new URL('../../fixtures/webhook-publisher.ts', import.meta.url))

test('webhook sink delivers every event published before a SIGKILL when restarted on the same DATA_DIR', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'medstream-restart-'))
  t.after(() => rmSync(dataDir, { recursive: true, force: true }))
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  // Failing receiver: a few events get through, the rest are refused, so the kill finds events
  // pending, in backoff and in flight.
  receiver.reply = () => ({ status: receiver.delivered.length < 4 ? 200 : 503 })

  const child = spawn(process.execPath, [FIXTURE], {
    env: { ...process.env, DATA_DIR: dataDir, WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: SECRET_OLD, CALLS: '3', EVENTS_PER_CALL: '30' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.after(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const reported: string[] = []
  let buffered = ''
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fixture reported only ${reported.length} events`)), 20_000)
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop() ?? ''
      for (const line of lines) if (line.startsWith('published ')) reported.push(line.slice('published '.length))
      // Killed mid-stream: some calls are part-way through their events.
      if (reported.length >= 50) {
        clearTimeout(timer)
        resolve()
      }
    })
  })
  // Once the receiver has started refusing, so the kill finds events in backoff too (on a loaded
  // machine the first 50 may be published before the fifth attempt).
  await receiver.waitFor(() => receiver.attempts.some((attempt) => attempt.status === 503), 10_000)
  child.kill('SIGKILL')
  assert.equal(await exited, 'SIGKILL')
  assert.ok(receiver.attempts.some((attempt) => attempt.status === 503), 'the first process met a failing receiver')

  receiver.reply = () => ({ status: 200 })
  const { sink } = await startSink(t, receiver.url, { backend: 'sqlite', dataDir, databaseUrl: null })
  await receiver.waitFor(() => reported.every((id) => receiver.delivered.some((event) => event.id === id)), 15_000)
  await receiver.waitFor(async () => (await sink.outbox.counts()).pending === 0)

  const ids = new Set(receiver.delivered.map((event) => event.id))
  assert.equal(ids.size, receiver.delivered.length, 'each webhook-id accepted once by the de-duplicating receiver')
  for (let call = 1; call <= 3; call++) {
    const sequences = receiver.sequencesOf(callSid(call))
    assert.deepEqual(sequences, Array.from({ length: sequences.length }, (_, i) => i + 1), `call ${call} in order, no gaps`)
    const reportedOfCall = reported.filter((id) => id.startsWith(streamSid(call))).length
    assert.ok(sequences.length >= reportedOfCall, `call ${call}: ${sequences.length} delivered, ${reportedOfCall} reported published`)
  }
  assert.ok(receiver.attempts.every((attempt) => attempt.verified))
  assert.deepEqual(await sink.outbox.counts(), { pending: 0, dead: 0 })
})
