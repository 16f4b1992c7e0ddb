import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, statSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileSink } from '../../../src/core/webhooks/file-sink.ts'
import { MedstreamError } from '../../../src/core/errors.ts'
import { callSid, testEvent } from './receiver.ts'

function tempDir (t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-file-sink-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('file sink appends each body and a newline to the call file with mode 0600 when publishing', async (t) => {
  const dataDir = tempDir(t)
  const sink = new FileSink({ dataDir })
  const events = [testEvent(1, 1, 'call.started'), testEvent(1, 2), testEvent(2, 1, 'call.started')]
  for (const event of events) sink.publish(event)
  await sink.close(Date.now())

  const file = join(dataDir, 'transcripts', `${callSid(1)}.jsonl`)
  assert.equal(readFileSync(file, 'utf8'), `${events[0]?.body}\n${events[1]?.body}\n`)
  assert.equal(statSync(file).mode & 0o777, 0o600)
  assert.equal(statSync(join(dataDir, 'transcripts')).mode & 0o777, 0o700)
  assert.deepEqual(readdirSync(join(dataDir, 'transcripts')).sort(), [`${callSid(1)}.jsonl`, `${callSid(2)}.jsonl`].sort())
})

test('file sink refuses a call sid that could escape the directory when publishing', (t) => {
  const dataDir = tempDir(t)
  const sink = new FileSink({ dataDir })
  for (const bad of ['../../etc/passwd', 'CA' + '0'.repeat(31) + '/', '', 'CA' + 'g'.repeat(32), `${callSid(1)}.jsonl`]) {
    const event = { ...testEvent(1, 1), callSid: bad }
    assert.throws(() => sink.publish(event), (err: unknown) => err instanceof MedstreamError && err.code === 'MS_ERR_INVALID_CALL_SID' && !err.message.includes(bad === '' ? '\0' : bad))
  }
  assert.deepEqual(readdirSync(join(dataDir, 'transcripts')), [])
})

test('file sink refuses events when closed', async (t) => {
  const sink = new FileSink({ dataDir: tempDir(t) })
  await sink.close(Date.now())
  assert.throws(() => sink.publish(testEvent(1, 1)), { code: 'MS_ERR_SINK_CLOSED' })
})
