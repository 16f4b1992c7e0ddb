import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import { Outbox } from '../../../src/core/webhooks/outbox.ts'
import { callSid, streamSid, testEvent } from './receiver.ts'

function openOutbox (t: { after: (fn: () => void) => void }): { outbox: Outbox, path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-outbox-'))
  const outbox = new Outbox(Outbox.pathIn(dir))
  t.after(() => {
    outbox.close()
    rmSync(dir, { recursive: true, force: true })
  })
  return { outbox, path: outbox.path }
}

const failure = (at: number) => ({ at, status: 503, reason: 'status' })

test('outbox keeps one due head per stream when events are queued', (t) => {
  const { outbox } = openOutbox(t)
  const t0 = 1_000_000
  for (let sequence = 1; sequence <= 3; sequence++) assert.equal(outbox.insert(testEvent(1, sequence), t0), true)
  outbox.insert(testEvent(2, 1), t0 + 5)

  assert.deepEqual([...outbox.due(t0 + 10)].map((event) => event.id), [`${streamSid(1)}-1`, `${streamSid(2)}-1`])
  assert.deepEqual([...outbox.due(t0 + 2)].map((event) => event.id), [`${streamSid(1)}-1`])
  assert.equal(outbox.nextDueAt(t0 + 2), t0 + 5)
  assert.deepEqual(outbox.counts(), { pending: 4, dead: 0 })
  assert.equal(outbox.oldestPendingCreatedAt(), t0)
})

test('outbox ignores an event whose webhook-id it already holds when inserting', (t) => {
  const { outbox } = openOutbox(t)
  assert.equal(outbox.insert(testEvent(1, 1)), true)
  assert.equal(outbox.insert(testEvent(1, 1)), false)
  assert.equal(outbox.counts().pending, 1)
})

test('outbox makes the next event of the stream due when the head is delivered or dead', (t) => {
  const { outbox } = openOutbox(t)
  const t0 = 1_000_000
  for (let sequence = 1; sequence <= 3; sequence++) outbox.insert(testEvent(1, sequence), t0)

  outbox.markFailed(`${streamSid(1)}-1`, failure(t0), t0 + 1000)
  assert.deepEqual([...outbox.due(t0 + 500)], [], 'a backing-off head holds its stream')
  assert.equal(outbox.nextDueAt(t0 + 500), t0 + 1000)

  outbox.markDelivered(`${streamSid(1)}-1`, streamSid(1), t0 + 1000)
  assert.deepEqual([...outbox.due(t0 + 1000)].map((event) => event.sequence), [2])

  outbox.markDead(`${streamSid(1)}-2`, streamSid(1), failure(t0 + 2000))
  assert.deepEqual([...outbox.due(t0 + 2000)].map((event) => event.sequence), [3])
  const dead = outbox.list({ state: 'dead' })
  assert.equal(dead.length, 1)
  assert.equal(dead[0]?.attempts, 1)
  assert.equal(dead[0]?.lastStatus, 503)
  assert.equal(dead[0]?.nextAttemptAt, null)
  assert.deepEqual(outbox.counts(), { pending: 1, dead: 1 })
})

test('outbox puts a replayed dead letter at the head of its stream with a fresh window when replaying', (t) => {
  const { outbox } = openOutbox(t)
  const t0 = 1_000_000
  for (let sequence = 1; sequence <= 3; sequence++) outbox.insert(testEvent(1, sequence), t0)
  outbox.insert(testEvent(2, 1), t0)
  outbox.markDead(`${streamSid(1)}-1`, streamSid(1), failure(t0))
  outbox.markDead(`${streamSid(2)}-1`, streamSid(2), failure(t0))

  assert.equal(outbox.replayDead({ callSid: callSid(1) }, t0 + 50), 1)
  const due = [...outbox.due(t0 + 50)]
  assert.deepEqual(due.map((event) => event.id), [`${streamSid(1)}-1`])
  assert.equal(due[0]?.attempts, 0)
  assert.equal(due[0]?.queuedAt, t0 + 50)
  assert.equal(outbox.list({ callSid: callSid(1) }).filter((row) => row.nextAttemptAt !== null).length, 1, 'one head per stream')

  assert.equal(outbox.replayDead({}, t0 + 60), 1)
  assert.deepEqual(outbox.counts(), { pending: 4, dead: 0 })
})

test('outbox deletes only dead letters older than the cutoff when purging', (t) => {
  const { outbox } = openOutbox(t)
  const day = 86_400_000
  outbox.insert(testEvent(1, 1), 0)
  outbox.insert(testEvent(2, 1), 9 * day)
  outbox.insert(testEvent(3, 1), 9 * day)
  outbox.markDead(`${streamSid(1)}-1`, streamSid(1), failure(day))
  outbox.markDead(`${streamSid(2)}-1`, streamSid(2), failure(10 * day))

  assert.equal(outbox.purgeDead({ olderThanMs: 7 * day }, 10 * day), 1)
  assert.deepEqual(outbox.counts(), { pending: 1, dead: 1 })
  assert.equal(outbox.purgeDead({}, 10 * day), 1)
  assert.deepEqual(outbox.counts(), { pending: 1, dead: 0 })
})

test('outbox shares the pause flag with another process when paused and resumed', (t) => {
  const { outbox, path } = openOutbox(t)
  const operator = new Outbox(path)
  t.after(() => operator.close())
  assert.equal(outbox.pauseState(), null)
  outbox.pause(410, 1234)
  assert.deepEqual(operator.pauseState(), { since: 1234, status: 410 })
  assert.equal(operator.resume(), true)
  assert.equal(outbox.pauseState(), null)
  assert.equal(operator.resume(), false)
})

test('outbox makes every waiting head due when retrying all now', (t) => {
  const { outbox } = openOutbox(t)
  outbox.insert(testEvent(1, 1), 0)
  outbox.insert(testEvent(2, 1), 0)
  outbox.markFailed(`${streamSid(1)}-1`, failure(0), 60_000)
  outbox.markFailed(`${streamSid(2)}-1`, failure(0), 90_000)
  assert.equal(outbox.retryAllNow(10), 2)
  assert.equal([...outbox.due(10)].length, 2)
})

test('outbox keeps committed events when reopened and closes idempotently', (t) => {
  const { outbox, path } = openOutbox(t)
  outbox.insert(testEvent(1, 1))
  outbox.close()
  outbox.close()
  assert.equal(outbox.closed, true)
  const reopened = new Outbox(path)
  t.after(() => reopened.close())
  assert.deepEqual(reopened.list().map((row) => row.id), [`${streamSid(1)}-1`])
})

test('outbox runs in WAL mode with synchronous=NORMAL when opened, as docs/architecture.md says', (t) => {
  const { outbox, path } = openOutbox(t)
  outbox.insert(testEvent(1, 1))
  // A second connection reads the file's settings back: journal_mode is stored in the file; the
  // rest are per connection, so they are read from the outbox's own handle through its pragmas.
  const reader = new DatabaseSync(path, { readOnly: true })
  t.after(() => reader.close())
  assert.equal(reader.prepare('PRAGMA journal_mode').get()?.journal_mode, 'wal')
  assert.equal(reader.prepare('PRAGMA user_version').get()?.user_version, 1)
  const pragmas = outbox.pragmas()
  assert.deepEqual(pragmas, { journalMode: 'wal', synchronous: 'NORMAL', busyTimeoutMs: 5000, userVersion: 1 })

  // The architecture note must say the same; it once claimed synchronous=FULL and an fsynced JSONL line.
  const doc = readFileSync(new URL('../../../docs/architecture.md', import.meta.url), 'utf8')
  assert.match(doc, /synchronous=NORMAL/)
  assert.doesNotMatch(doc, /synchronous=FULL(?! would)/)
})

test('outbox makes the next event due at once and writes a delivery with the next commit when delivered', (t) => {
  const { outbox, path } = openOutbox(t)
  const t0 = 1_000_000
  outbox.insert(testEvent(1, 1), t0)
  outbox.insert(testEvent(1, 2), t0)
  const reader = new DatabaseSync(path, { readOnly: true })
  t.after(() => reader.close())
  const inFile = (): string[] => reader.prepare('SELECT id FROM events ORDER BY id').all().map((row) => row.id as string)

  outbox.markDelivered(`${streamSid(1)}-1`, streamSid(1), t0 + 10)
  assert.deepEqual(outbox.claimDue(t0 + 10, 10, new Set()).map((event) => event.id), [`${streamSid(1)}-2`], 'the next event is due at once')
  assert.deepEqual(inFile(), [`${streamSid(1)}-1`, `${streamSid(1)}-2`], 'the delete waits for the next commit')

  outbox.insert(testEvent(2, 1), t0 + 20)
  assert.deepEqual(inFile(), [`${streamSid(1)}-2`, `${streamSid(2)}-1`], 'the insert\'s commit carried the delivery')
  const heads = reader.prepare('SELECT id FROM events WHERE next_attempt_at IS NOT NULL ORDER BY id').all().map((row) => row.id as string)
  assert.deepEqual(heads, [`${streamSid(1)}-2`, `${streamSid(2)}-1`], 'the file holds one head per stream')
})

test('outbox writes a delivery within its flush interval when no other commit comes', async (t) => {
  const { outbox, path } = openOutbox(t)
  outbox.insert(testEvent(1, 1))
  outbox.markDelivered(`${streamSid(1)}-1`, streamSid(1))
  const reader = new DatabaseSync(path, { readOnly: true })
  t.after(() => reader.close())
  const count = (): number => reader.prepare('SELECT COUNT(*) AS n FROM events').get()?.n as number
  assert.equal(count(), 1)
  for (let i = 0; i < 50 && count() > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal(count(), 0)
})

test('outbox keeps a delivery written when closed right after it, so a restart does not send it again', (t) => {
  const { outbox, path } = openOutbox(t)
  outbox.insert(testEvent(1, 1))
  outbox.insert(testEvent(1, 2))
  outbox.markDelivered(`${streamSid(1)}-1`, streamSid(1))
  outbox.close()
  const reopened = new Outbox(path)
  t.after(() => reopened.close())
  assert.deepEqual(reopened.claimDue(Date.now(), 10, new Set()).map((event) => event.id), [`${streamSid(1)}-2`])
})

test('outbox follows another process\'s replay when the heads it holds are stale', async (t) => {
  const { outbox, path } = openOutbox(t)
  const operator = new Outbox(path)
  t.after(() => operator.close())
  const t0 = 1_000_000
  for (let sequence = 1; sequence <= 3; sequence++) outbox.insert(testEvent(1, sequence), t0)
  outbox.markDead(`${streamSid(1)}-1`, streamSid(1), failure(t0))
  // Event 2 is delivered; the delete is still in memory when the operator replays event 1.
  outbox.markDelivered(`${streamSid(1)}-2`, streamSid(1), t0 + 10)
  assert.equal(operator.replayDead({}, t0 + 20), 1)
  // A claim asks SQLite whether another process committed at most every 100 ms.
  await new Promise((resolve) => setTimeout(resolve, 150))

  assert.deepEqual(outbox.claimDue(t0 + 30, 10, new Set()).map((event) => event.id), [`${streamSid(1)}-1`], 'the replayed event goes first')
  assert.deepEqual(operator.list().filter((row) => row.nextAttemptAt !== null).map((row) => row.id), [`${streamSid(1)}-1`], 'one head per stream in the file')
  assert.deepEqual(operator.list().map((row) => row.id), [`${streamSid(1)}-1`, `${streamSid(1)}-3`], 'the delivery was written')
  outbox.markDelivered(`${streamSid(1)}-1`, streamSid(1), t0 + 40)
  assert.deepEqual(outbox.claimDue(t0 + 40, 10, new Set()).map((event) => event.id), [`${streamSid(1)}-3`])
})

test('outbox finds the next event of a stream it did not write when a reopened file\'s head is delivered', (t) => {
  const { outbox, path } = openOutbox(t)
  for (let sequence = 1; sequence <= 3; sequence++) outbox.insert(testEvent(1, sequence))
  outbox.close()
  const reopened = new Outbox(path)
  t.after(() => reopened.close())
  const order: number[] = []
  for (let round = 0; round < 4; round++) {
    const [due] = reopened.claimDue(Date.now(), 10, new Set())
    if (due === undefined) break
    order.push(due.sequence)
    reopened.markDelivered(due.id, due.streamSid)
  }
  assert.deepEqual(order, [1, 2, 3])
  reopened.insert(testEvent(1, 4))
  assert.deepEqual(reopened.claimDue(Date.now(), 10, new Set()).map((event) => event.sequence), [4], 'a new event of the emptied stream is its head')
})

test('outbox refuses to record a delivery after it is closed', (t) => {
  const { outbox } = openOutbox(t)
  outbox.insert(testEvent(1, 1))
  outbox.close()
  assert.throws(() => outbox.markDelivered(`${streamSid(1)}-1`, streamSid(1)))
})
