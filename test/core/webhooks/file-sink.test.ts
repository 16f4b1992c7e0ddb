import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { createMetrics } from '../../../src/core/metrics.ts'
import { FileSink } from '../../../src/core/webhooks/file-sink.ts'
import { MedstreamError } from '../../../src/core/errors.ts'
import { callSid, lostValue, streamSid, testEvent } from './receiver.ts'

const quiet = { metrics: createMetrics(new Registry(), 'test'), logger: pino({ level: 'silent' }) }

function tempDir (t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-file-sink-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

test('file sink appends each body and a newline to the call file with mode 0600 when publishing', async (t) => {
  const dataDir = tempDir(t)
  const sink = new FileSink({ dataDir, ...quiet })
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
  const sink = new FileSink({ dataDir, ...quiet })
  for (const bad of ['../../etc/passwd', 'CA' + '0'.repeat(31) + '/', '', 'CA' + 'g'.repeat(32), `${callSid(1)}.jsonl`]) {
    const event = { ...testEvent(1, 1), callSid: bad }
    assert.throws(() => sink.publish(event), (err: unknown) => err instanceof MedstreamError && err.code === 'MS_ERR_INVALID_CALL_SID' && !err.message.includes(bad === '' ? '\0' : bad))
  }
  assert.deepEqual(readdirSync(join(dataDir, 'transcripts')), [])
})

test('file sink refuses events when closed', async (t) => {
  const sink = new FileSink({ dataDir: tempDir(t), ...quiet })
  await sink.close(Date.now())
  assert.throws(() => sink.publish(testEvent(1, 1)), { code: 'MS_ERR_SINK_CLOSED' })
})

test('file sink counts and logs an event it cannot write when the call file cannot be opened', async (t) => {
  const dataDir = tempDir(t)
  const lines: string[] = []
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } }))
  const metrics = createMetrics(new Registry(), 'test')
  const sink = new FileSink({ dataDir, metrics, logger })
  // A directory where the call's file should be: the open fails as it would on a full or broken disk
  // (and, unlike a read-only directory, also for root, which CI runs as).
  mkdirSync(join(dataDir, 'transcripts', `${callSid(1)}.jsonl`))
  const event = testEvent(1, 2)
  const other = testEvent(2, 1)
  sink.publish(event)
  sink.publish(other)
  await sink.close(Date.now())

  assert.equal(await lostValue(metrics, 'store_failed'), 1)
  assert.equal(await lostValue(metrics, 'buffer_full'), 0)
  const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>)
  assert.equal(logged.length, 1)
  assert.deepEqual([logged[0]?.webhookId, logged[0]?.callSid, logged[0]?.streamSid, logged[0]?.sequence, logged[0]?.reason], [event.id, callSid(1), streamSid(1), 2, 'store_failed'])
  assert.doesNotMatch(lines.join(''), /metoprolol/, 'never the body')
  assert.equal(readFileSync(join(dataDir, 'transcripts', `${callSid(2)}.jsonl`), 'utf8'), `${other.body}\n`, 'other calls go on')
})

test('file sink holds one descriptor per running call and closes it after call.ended when publishing', async (t) => {
  const dataDir = tempDir(t)
  const sink = new FileSink({ dataDir, ...quiet })
  const descriptors = (): number => readdirSync('/proc/self/fd').length
  const before = descriptors()
  const events = [testEvent(1, 1, 'call.started'), testEvent(2, 1, 'call.started'), testEvent(1, 2), testEvent(2, 2), testEvent(1, 3)]
  for (const event of events) sink.publish(event)
  assert.equal(sink.openFiles, 2)
  assert.equal(descriptors() - before, 2, 'one open file per call, not per event')
  const ended = testEvent(1, 4, 'call.ended')
  sink.publish(ended)
  assert.equal(sink.openFiles, 1)
  assert.equal(descriptors() - before, 1, 'the ended call\'s file is closed')
  await sink.close(Date.now())
  assert.equal(descriptors() - before, 0, 'close closes the rest')
  const read = (n: number): string => readFileSync(join(dataDir, 'transcripts', `${callSid(n)}.jsonl`), 'utf8')
  assert.equal(read(1), [events[0], events[2], events[4], ended].map((event) => `${event?.body}\n`).join(''))
  assert.equal(read(2), [events[1], events[3]].map((event) => `${event?.body}\n`).join(''))
})

test('file sink keeps at most 512 call files open and loses no line when more calls run', async (t) => {
  const dataDir = tempDir(t)
  const sink = new FileSink({ dataDir, ...quiet })
  const calls = 520
  const started = Array.from({ length: calls + 1 }, (_, n) => testEvent(n, 1, 'call.started'))
  const turns = Array.from({ length: calls + 1 }, (_, n) => testEvent(n, 2))
  for (let n = 1; n <= calls; n++) sink.publish(started[n]!)
  assert.equal(sink.openFiles, 512)
  // The first calls' files were closed to make room: their next lines reopen them.
  for (let n = 1; n <= calls; n++) sink.publish(turns[n]!)
  assert.equal(sink.openFiles, 512)
  await sink.close(Date.now())
  assert.equal(sink.openFiles, 0)
  for (const n of [1, 8, 9, 300, calls]) {
    const lines = readFileSync(join(dataDir, 'transcripts', `${callSid(n)}.jsonl`), 'utf8').trimEnd().split('\n')
    assert.deepEqual(lines, [started[n]!.body, turns[n]!.body], `call ${n}`)
  }
})
