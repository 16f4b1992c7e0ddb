import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { connect, createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { createMetrics } from '../../../src/core/metrics.ts'
import { PostgresOutbox } from '../../../src/core/webhooks/postgres-outbox.ts'
import { WriteQueue, bufferedBytes } from '../../../src/core/webhooks/write-queue.ts'
import { freePort } from '../../helpers/net.ts'
import { Receiver, callSid, lostValue, newLocation, openStore, startSink, streamSid, testEvent } from './receiver.ts'

const silent = pino({ level: 'silent' })

async function twoReplicas (t: { after: (fn: () => Promise<void> | void) => void }, leaseMs = 10_000): Promise<[PostgresOutbox, PostgresOutbox]> {
  const { databaseUrl } = await newLocation(t, 'postgres')
  const a = new PostgresOutbox({ url: databaseUrl ?? '', logger: silent, leaseMs })
  const b = new PostgresOutbox({ url: databaseUrl ?? '', logger: silent, leaseMs })
  t.after(async () => { await a.close(); await b.close() })
  await Promise.all([a.migrate(), b.migrate()])
  return [a, b]
}

test('postgres outbox leases each stream to one replica at a time when both claim at once', async (t) => {
  const [a, b] = await twoReplicas(t)
  const now = Date.now()
  await a.insertMany([testEvent(1, 1), testEvent(1, 2), testEvent(2, 1)], now)
  const claims = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).claimDue(now, 10, new Set())))
  // A replica may claim its own stream again (its sender skips streams in flight); two never share one.
  const byA = new Set(claims.filter((_, i) => i % 2 === 0).flat().map((event) => event.id))
  const byB = new Set(claims.filter((_, i) => i % 2 === 1).flat().map((event) => event.id))
  assert.deepEqual([...byA].filter((id) => byB.has(id)), [], 'no head claimed by both replicas')
  assert.deepEqual([...new Set([...byA, ...byB])].sort(), [`${streamSid(1)}-1`, `${streamSid(2)}-1`])

  const holder = byA.has(`${streamSid(1)}-1`) ? a : b
  const other = holder === a ? b : a
  assert.ok(!(await other.claimDue(now, 10, new Set())).some((event) => event.streamSid === streamSid(1)), 'a held stream stays with its holder')
  await holder.markDelivered(`${streamSid(1)}-1`, streamSid(1), now)
  await holder.release(streamSid(1))
  assert.ok((await other.claimDue(now, 10, new Set())).some((event) => event.id === `${streamSid(1)}-2`), 'once released, the next event goes to whichever replica asks')
})

test('postgres outbox hands a stream to another replica when the holder\'s lease expires', async (t) => {
  const [a] = await twoReplicas(t)
  const now = Date.now()
  await a.insertMany([testEvent(1, 1)], now)
  // A replica that died holding the stream: its lease row stays until it expires.
  await a.pool.query(`INSERT INTO outbox_leases (stream_sid, owner, expires_at)
    VALUES ($1, 'dead-replica', (extract(epoch from clock_timestamp()) * 1000)::bigint + 400)`, [streamSid(1)])
  assert.deepEqual(await a.claimDue(now, 10, new Set()), [])
  await new Promise((resolve) => setTimeout(resolve, 500))
  assert.deepEqual((await a.claimDue(now, 10, new Set())).map((event) => event.id), [`${streamSid(1)}-1`])
})

test('postgres outbox aborts a stream\'s lease signal when a renewal finds the lease taken', async (t) => {
  const [a] = await twoReplicas(t, 6000)
  const now = Date.now()
  await a.insertMany([testEvent(1, 1)], now)
  const [due] = await a.claimDue(now, 10, new Set())
  assert.ok(due?.lease !== undefined && !due.lease.aborted, 'a claimed head carries a live lease signal')
  // The row is no longer this replica's (as after its lease expired and another replica claimed it).
  await a.pool.query("UPDATE outbox_leases SET owner = 'other-replica' WHERE stream_sid = $1", [streamSid(1)])
  // The next renewal (every 2 s with a 6 s lease) finds that out and aborts at once, well before the
  // signal's own deadline (4.8 s after the claim).
  await once(due.lease, 'abort', { signal: AbortSignal.timeout(3500) })
  assert.equal(due.lease.aborted, true)
})

/**
 * A TCP relay to PostgreSQL on 127.0.0.1 whose `cut` makes the network a black hole for one replica:
 * open connections stop carrying bytes and new ones are accepted but never reach the server, so
 * queries neither succeed nor fail until the client's own timeouts. `close` ends every connection.
 */
async function cuttableLink (t: { after: (fn: () => Promise<void> | void) => void }, databaseUrl: string): Promise<{ url: string, cut: () => void, close: () => void }> {
  const target = new URL(databaseUrl)
  const sockets = new Set<Socket>()
  let cut = false
  const server = createServer((client) => {
    sockets.add(client)
    client.on('close', () => sockets.delete(client))
    client.on('error', () => {})
    if (cut) return
    const upstream = connect(Number(target.port), '127.0.0.1')
    sockets.add(upstream)
    upstream.on('close', () => sockets.delete(upstream))
    upstream.on('error', () => client.destroy())
    client.on('data', (chunk) => { if (!cut) upstream.write(chunk) })
    upstream.on('data', (chunk) => { if (!cut) client.write(chunk) })
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  }).listen(0, '127.0.0.1')
  await once(server, 'listening')
  const close = (): void => {
    server.close()
    for (const socket of sockets) socket.destroy()
  }
  t.after(close)
  const url = new URL(databaseUrl)
  url.port = String((server.address() as AddressInfo).port)
  return { url: url.href, cut: () => { cut = true }, close }
}

test('postgres outbox cuts off an attempt before its lease could pass to another replica when the holder loses the database', async (t) => {
  const location = await newLocation(t, 'postgres')
  const link = await cuttableLink(t, location.databaseUrl ?? '')
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  // The first attempt gets no answer at all (a receiver far slower than the lease); later ones get 200.
  let first = true
  receiver.reply = () => {
    if (!first) return { status: 200 }
    first = false
    return { status: 'hang' }
  }
  const store = await openStore(t, location)
  await store.insertMany([testEvent(1, 1), testEvent(1, 2), testEvent(1, 3)])

  // Replica A reaches the database through the link; its attempts may last a minute (WEBHOOK_TIMEOUT_MS
  // allows two), far longer than the 3 s lease, and its queries time out only after 10 s.
  const leaseMs = 3000
  await startSink(t, receiver.url, { ...location, databaseUrl: link.url }, { timeoutMs: 60_000, postgres: { leaseMs } })
  await receiver.waitFor(() => receiver.concurrent === 1)
  link.cut()

  // Replica B, with a working connection, takes the stream once A's lease has expired.
  await startSink(t, receiver.url, location, { timeoutMs: 60_000, postgres: { leaseMs } })
  await receiver.waitFor(() => receiver.delivered.length === 3, 20_000)
  const id = `${streamSid(1)}-1`
  assert.equal(receiver.attemptsFor(id).length, 2, 'the first event was attempted by A, then by B')
  assert.equal(receiver.maxConcurrent, 1, 'the receiver never had two requests of the stream open at once')
  assert.deepEqual(receiver.sequencesOf(callSid(1)), [1, 2, 3])
  link.close()
})

test('postgres outbox keeps one head per stream when one replica inserts while another delivers', async (t) => {
  const [a, b] = await twoReplicas(t)
  const now = Date.now()
  await a.insertMany([testEvent(1, 1)], now)
  // Interleave inserts of later events (replica A's live call) with deliveries (replica B).
  for (let sequence = 2; sequence <= 30; sequence++) {
    const [due] = await b.claimDue(now, 1, new Set())
    await Promise.all([
      a.insertMany([testEvent(1, sequence)], now),
      due === undefined ? Promise.resolve() : b.markDelivered(due.id, due.streamSid, now).then(() => b.release(due.streamSid))
    ])
    const heads = (await a.list()).filter((row) => row.nextAttemptAt !== null)
    assert.equal(heads.length, 1, `after event ${sequence}: exactly one head`)
    assert.equal(heads[0]?.sequence, Math.min(...(await a.list()).map((row) => row.sequence)), 'the head is the lowest pending sequence')
  }
})

test('write queue counts events past its bound as buffer_full and unwritten ones as shutdown when the database is unreachable', async (t) => {
  const port = await freePort()
  const store = new PostgresOutbox({ url: `postgres://postgres@127.0.0.1:${port}/none`, logger: silent, connectTimeoutMs: 500 })
  t.after(() => store.close())
  const metrics = createMetrics(new Registry(), 'test')
  const lines: string[] = []
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } }))
  const events = [1, 2, 3, 4, 5].map((sequence) => testEvent(1, sequence))
  const queue = new WriteQueue({ store, maxBytes: bufferedBytes(events[0]!) * 3 + 10, metrics, logger, retryInitialMs: 50, onWritten: () => {} })
  queue.start()
  for (const event of events) queue.push(event)

  assert.equal(queue.length, 3)
  assert.equal(queue.aboveHighWater, true)
  assert.equal(await lostValue(metrics, 'buffer_full'), 2)
  await new Promise((resolve) => setTimeout(resolve, 600))
  assert.equal(queue.failing, true, 'the refused connection was noticed')
  await queue.drain(Date.now() + 200)
  assert.equal(await lostValue(metrics, 'shutdown'), 3)
  assert.equal(queue.length, 0)
  const lost = lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.webhookId !== undefined)
  assert.deepEqual(lost.map((line) => [line.reason, line.sequence]), [['buffer_full', 4], ['buffer_full', 5], ['shutdown', 1], ['shutdown', 2], ['shutdown', 3]])
  assert.doesNotMatch(lines.join(''), /metoprolol/, 'never a body')
})
