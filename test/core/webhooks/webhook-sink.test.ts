import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { createMetrics } from '../../../src/core/metrics.ts'
import { BACKENDS, Receiver, SECRET_NEW, SECRET_OLD, callSid, counterValue, lostValue, newLocation, openStore, startSink, streamSid, testEvent } from './receiver.ts'
import type { Backend, ReceivedAttempt } from './receiver.ts'
import type { OutgoingEvent } from '../../../src/core/webhooks/events.ts'
import pkg from '../../../package.json' with { type: 'json' }

function range (n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1)
}

/** Event N+1 of a call never reached the receiver before N had been answered 2xx. */
function assertSerialPerCall (attempts: ReceivedAttempt[], calls: number): void {
  for (let call = 1; call <= calls; call++) {
    const ofCall = attempts.filter((attempt) => attempt.id.startsWith(streamSid(call)))
    let acknowledged = 0
    for (const attempt of ofCall) {
      const sequence = Number(attempt.id.slice(attempt.id.lastIndexOf('-') + 1))
      assert.ok(sequence <= acknowledged + 1, `call ${call}: event ${sequence} sent before ${acknowledged + 1} was acknowledged`)
      if (typeof attempt.status === 'number' && attempt.status >= 200 && attempt.status < 300) acknowledged = Math.max(acknowledged, sequence)
    }
  }
}

/** Each call publishes on its own schedule, as concurrent calls do. Returns the bodies by webhook-id. */
async function publishConcurrently (sink: { publish: (event: OutgoingEvent) => void }, calls: number, perCall: number): Promise<Map<string, string>> {
  const bodies = new Map<string, string>()
  await Promise.all(range(calls).map(async (call) => {
    for (const sequence of range(perCall)) {
      const event = testEvent(call, sequence, sequence === 1 ? 'call.started' : sequence === perCall ? 'call.ended' : 'transcript.turn')
      sink.publish(event)
      bodies.set(event.id, event.body)
      await new Promise((resolve) => setTimeout(resolve, (call * 7 + sequence * 3) % 5))
    }
  }))
  return bodies
}

function contract (backend: Backend): void {
  test('webhook sink delivers every event of concurrent calls exactly once and in order when the receiver is healthy', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    const { sink, metrics } = await startSink(t, receiver.url, await newLocation(t, backend))
    const bodies = await publishConcurrently(sink, 6, 12)

    await receiver.waitFor(() => receiver.delivered.length === 72)
    for (let call = 1; call <= 6; call++) assert.deepEqual(receiver.sequencesOf(callSid(call)), range(12))
    assert.equal(receiver.attempts.length, 72, 'exactly one attempt each')
    assert.equal(receiver.duplicates, 0)
    assert.ok(receiver.attempts.every((attempt) => attempt.verified))
    assertSerialPerCall(receiver.attempts, 6)
    const first = receiver.attempts[0]
    assert.equal(first?.contentType, 'application/json')
    assert.equal(first?.userAgent, `medstream/${pkg.version}`)
    assert.equal(first?.path, '/hooks?tenant=t1')
    assert.ok(receiver.attempts.every((attempt) => attempt.body === bodies.get(attempt.id)), 'the published bytes, unchanged')
    await receiver.waitFor(async () => (await sink.outbox.counts()).pending === 0)
    assert.equal(await counterValue(metrics, 'success'), 72)
  })

  test('webhook sink delivers everything in order with stable ids and valid signatures when the receiver answers 503 for a while', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    let healthy = false
    receiver.reply = () => ({ status: healthy ? 200 : 503 })
    const { sink, metrics } = await startSink(t, receiver.url, await newLocation(t, backend), { retry: { initialMs: 50, maxDelayMs: 400 } })
    await publishConcurrently(sink, 4, 6)

    await receiver.waitFor(() => receiver.attempts.length >= 12)
    assert.equal(receiver.delivered.length, 0)
    const recoveredAt = performance.now()
    healthy = true
    await receiver.waitFor(() => receiver.delivered.length === 24)
    assert.ok(performance.now() - recoveredAt < 2000, 'recovers within the short backoff, not minutes')

    for (let call = 1; call <= 4; call++) assert.deepEqual(receiver.sequencesOf(callSid(call)), range(6))
    assert.ok(receiver.attempts.every((attempt) => attempt.verified), 'every attempt carries a valid signature')
    const firstId = `${streamSid(1)}-1`
    const retried = receiver.attemptsFor(firstId)
    assert.ok(retried.length >= 2, `${retried.length} attempts of the first event`)
    assert.ok(retried.every((attempt) => attempt.body === retried[0]?.body), 'a retry sends the same bytes under the same webhook-id')
    assert.equal(JSON.parse(retried[0]?.body ?? '{}').data.sequence, 1)
    assert.equal(receiver.duplicates, 0)
    assertSerialPerCall(receiver.attempts, 4)
    assert.ok(await counterValue(metrics, 'retry') >= 12)
  })

  test('webhook sink retries an attempt when the receiver hangs past the timeout', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    receiver.reply = (attempt) => ({ status: receiver.attemptsFor(attempt.id).length === 0 ? 'hang' : 200 })
    const { sink } = await startSink(t, receiver.url, await newLocation(t, backend), { timeoutMs: 150 })
    sink.publish(testEvent(1, 1))
    sink.publish(testEvent(1, 2))

    await receiver.waitFor(() => receiver.delivered.length === 2)
    assert.deepEqual(receiver.sequencesOf(callSid(1)), [1, 2])
    const [hung, retry] = receiver.attemptsFor(`${streamSid(1)}-1`)
    assert.equal(hung?.status, 'hang')
    assert.ok((retry?.at ?? 0) - (hung?.at ?? 0) >= 150, 'retried after the timeout')
    await receiver.waitFor(async () => (await sink.outbox.counts()).pending === 0)
    // The hung request was aborted: the receiver would otherwise hold it open forever.
    await receiver.waitFor(() => receiver.concurrent === 0, 2000)
  })

  test('webhook sink waits as long as Retry-After asks when the receiver sends it', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    receiver.reply = (attempt) => receiver.attemptsFor(attempt.id).length === 0
      ? { status: 503, headers: { 'retry-after': attempt.id.startsWith(streamSid(1)) ? '1' : '3600' } }
      : { status: 200 }
    // Backoff alone would retry after ~20 ms; the second stream's hour is capped at 1.5 s.
    const { sink } = await startSink(t, receiver.url, await newLocation(t, backend), { retry: { initialMs: 20, retryAfterCapMs: 1500, maxDelayMs: 5000 } })
    sink.publish(testEvent(1, 1))
    sink.publish(testEvent(2, 1))

    await receiver.waitFor(() => receiver.delivered.length === 2, 5000)
    const gap = (id: string): number => {
      const [first, second] = receiver.attemptsFor(id)
      return (second?.at ?? 0) - (first?.at ?? 0)
    }
    const secondsForm = gap(`${streamSid(1)}-1`)
    const capped = gap(`${streamSid(2)}-1`)
    assert.ok(secondsForm >= 950 && secondsForm < 1400, `Retry-After: 1 → waited ${secondsForm} ms`)
    assert.ok(capped >= 1450 && capped < 2500, `Retry-After: 3600 capped at 1.5 s → waited ${capped} ms`)
  })

  test('webhook sink pauses delivery and keeps the events when the receiver answers 410 Gone', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    let gone = true
    receiver.reply = () => ({ status: gone ? 410 : 200 })
    const paused: number[] = []
    const metrics = { ...createMetrics(new Registry(), 'test'), webhookEndpointPaused: { set: (value: number) => { paused.push(value) } } }
    const { sink, location } = await startSink(t, receiver.url, await newLocation(t, backend), { maxInFlight: 1, metrics })
    for (const call of [1, 2]) for (const sequence of [1, 2]) sink.publish(testEvent(call, sequence))

    await receiver.waitFor(() => receiver.attempts.length === 1)
    await new Promise((resolve) => setTimeout(resolve, 400))
    assert.equal(receiver.attempts.length, 1, 'no further attempt while paused, even across pollMs and backoff')
    assert.equal(sink.sender.paused, true)
    assert.deepEqual(await sink.outbox.counts(), { pending: 4, dead: 0 })
    assert.equal(paused.at(-1), 1)
    assert.equal((await sink.outbox.pauseState())?.status, 410)

    // The operator command resumes from another process: here, a second handle on the same file.
    gone = false
    const operator = await openStore(t, location)
    assert.equal(await operator.resume(), true)
    await receiver.waitFor(() => receiver.delivered.length === 4)
    assert.deepEqual(receiver.sequencesOf(callSid(1)), [1, 2])
    assert.deepEqual(receiver.sequencesOf(callSid(2)), [1, 2])
    assert.equal(sink.sender.paused, false)
    assert.equal(paused.at(-1), 0)
  })

  test('webhook sink clears a 410 pause when it starts again', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    receiver.reply = () => ({ status: 410 })
    const first = await startSink(t, receiver.url, await newLocation(t, backend))
    first.sink.publish(testEvent(1, 1))
    await receiver.waitFor(() => first.sink.sender.paused)
    await first.sink.close(Date.now())

    receiver.reply = () => ({ status: 200 })
    await startSink(t, receiver.url, first.location)
    await receiver.waitFor(() => receiver.delivered.length === 1)
  })

  test('webhook sink signs with every secret so a receiver that knows only the new one verifies when two are configured', async (t) => {
    const newOnly = await new Receiver([SECRET_NEW]).listen()
    t.after(() => newOnly.close())
    const { sink } = await startSink(t, newOnly.url, await newLocation(t, backend), { secrets: [SECRET_OLD, SECRET_NEW] })
    for (const sequence of range(5)) sink.publish(testEvent(1, sequence))
    await newOnly.waitFor(() => newOnly.delivered.length === 5)
    assert.equal(newOnly.attempts.length, 5)
    assert.ok(newOnly.attempts.every((attempt) => attempt.verified && attempt.signature.split(' ').length === 2))

    const oldOnly = await new Receiver([SECRET_OLD]).listen()
    t.after(() => oldOnly.close())
    const other = await startSink(t, oldOnly.url, await newLocation(t, backend), { secrets: [SECRET_OLD, SECRET_NEW] })
    other.sink.publish(testEvent(2, 1))
    await oldOnly.waitFor(() => oldOnly.delivered.length === 1)
    assert.ok(oldOnly.attempts.every((attempt) => attempt.verified))
  })

  test('webhook sink treats a redirect as a failure when the receiver answers 3xx', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    receiver.reply = (attempt) => receiver.attemptsFor(attempt.id).length === 0
      ? { status: 307, headers: { location: '/elsewhere' } }
      : { status: 200 }
    const { sink } = await startSink(t, receiver.url, await newLocation(t, backend))
    sink.publish(testEvent(1, 1))
    await receiver.waitFor(() => receiver.delivered.length === 1)
    assert.ok(receiver.attempts.every((attempt) => attempt.path === '/hooks?tenant=t1'), 'the Location was never followed')
    assert.equal(receiver.attempts.length, 2)
  })

  test('webhook sink keeps at most maxInFlight requests open when many calls have events', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    receiver.reply = () => ({ status: 200, delayMs: 30 })
    const { sink } = await startSink(t, receiver.url, await newLocation(t, backend), { maxInFlight: 3 })
    for (const call of range(10)) for (const sequence of range(3)) sink.publish(testEvent(call, sequence))
    await receiver.waitFor(() => receiver.delivered.length === 30)
    assert.equal(receiver.maxConcurrent, 3)
    for (const call of range(10)) assert.deepEqual(receiver.sequencesOf(callSid(call)), [1, 2, 3])
  })

  test('webhook sink makes one last pass and leaves the rest on disk when closed', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    let reply: 'fail' | 'ok' | 'hang' = 'fail'
    receiver.reply = () => ({ status: reply === 'ok' ? 200 : reply === 'hang' ? 'hang' : 503 })
    // A one-minute backoff: only the closing pass can deliver these in time.
    const { sink, location } = await startSink(t, receiver.url, await newLocation(t, backend), { retry: { initialMs: 60_000, maxDelayMs: 60_000 } })
    sink.publish(testEvent(1, 1))
    sink.publish(testEvent(1, 2))
    sink.publish(testEvent(2, 1))
    await receiver.waitFor(() => receiver.attempts.length === 2)

    reply = 'ok'
    const started = performance.now()
    await sink.close(Date.now() + 5000)
    assert.ok(performance.now() - started < 2000, 'the pass ends when the outbox is empty, not at the deadline')
    assert.equal(receiver.delivered.length, 3)
    assert.throws(() => sink.publish(testEvent(3, 1)), { code: 'MS_ERR_SINK_CLOSED' })

    reply = 'hang'
    const next = await startSink(t, receiver.url, location, { timeoutMs: 60_000 })
    next.sink.publish(testEvent(4, 1))
    await receiver.waitFor(() => receiver.attemptsFor(`${streamSid(4)}-1`).length === 1)
    const closing = performance.now()
    await next.sink.close(Date.now() + 200)
    assert.ok(performance.now() - closing < 1500, 'an attempt in flight is aborted at the deadline')
    const reopened = await openStore(t, location)
    assert.deepEqual((await reopened.list()).map((row) => [row.id, row.state]), [[`${streamSid(4)}-1`, 'pending']])
  })

  test('webhook sink retries waiting events at once when a delivery to the endpoint succeeds or the service starts', async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    let healthy = false
    receiver.reply = () => ({ status: healthy ? 200 : 503 })
    // A one-minute backoff: only the recovery rule can deliver within the test's bounds.
    const slow = { retry: { initialMs: 60_000, maxDelayMs: 60_000 } }
    const first = await startSink(t, receiver.url, await newLocation(t, backend), slow)
    first.sink.publish(testEvent(1, 1))
    await receiver.waitFor(() => receiver.attempts.length === 1)

    healthy = true
    first.sink.publish(testEvent(2, 1))
    await receiver.waitFor(() => receiver.delivered.length === 2, 3000)
    assert.deepEqual(receiver.delivered.map((event) => event.callSid), [callSid(2), callSid(1)])

    healthy = false
    first.sink.publish(testEvent(3, 1))
    await receiver.waitFor(() => receiver.attemptsFor(`${streamSid(3)}-1`).length === 1)
    await first.sink.close(Date.now())
    healthy = true
    await startSink(t, receiver.url, first.location, slow)
    await receiver.waitFor(() => receiver.delivered.length === 3, 3000)
  })
}

for (const backend of BACKENDS) describe(`${backend} outbox`, () => { contract(backend) })

for (const backend of BACKENDS) {
  test(`webhook sink times every publish on the event loop when events go to the ${backend} outbox`, async (t) => {
    const receiver = await new Receiver().listen()
    t.after(() => receiver.close())
    const { sink, metrics } = await startSink(t, receiver.url, await newLocation(t, backend))
    for (let sequence = 1; sequence <= 3; sequence++) sink.publish(testEvent(1, sequence))
    const { values } = await metrics.webhookPublish.get()
    const count = values.find((value) => value.metricName === 'medstream_webhook_publish_seconds_count')?.value
    const sum = values.find((value) => value.metricName === 'medstream_webhook_publish_seconds_sum')?.value ?? -1
    assert.equal(count, 3, 'one observation per published event')
    assert.ok(sum > 0 && sum < 1, `the three publishes took ${sum} s on the event loop`)
    await receiver.waitFor(() => receiver.delivered.length === 3)
  })
}

test('webhook sink counts and logs an event it cannot store when the SQLite outbox is closed under it', async (t) => {
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  const lines: string[] = []
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } }))
  const { sink, metrics } = await startSink(t, receiver.url, await newLocation(t, 'sqlite'), { logger })
  sink.publish(testEvent(1, 1))
  await receiver.waitFor(() => receiver.delivered.length === 1)
  // The database goes away as a full disk or a broken volume would make it: the write throws.
  await sink.outbox.close()
  const lost = testEvent(1, 2)
  assert.doesNotThrow(() => sink.publish(lost), 'a failed write does not break the call')

  assert.equal(await lostValue(metrics, 'store_failed'), 1)
  assert.equal(await lostValue(metrics, 'buffer_full'), 0)
  assert.equal(await lostValue(metrics, 'shutdown'), 0)
  const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.reason === 'store_failed')
  assert.equal(logged.length, 1)
  assert.deepEqual([logged[0]?.webhookId, logged[0]?.callSid, logged[0]?.streamSid, logged[0]?.sequence, logged[0]?.type], [lost.id, callSid(1), streamSid(1), 2, 'transcript.turn'])
  assert.doesNotMatch(lines.join(''), /metoprolol|milligrams/, 'never the body')
})

test('events lost counter has a series for every reason before anything is lost', async () => {
  const metrics = createMetrics(new Registry(), 'test')
  const { values } = await metrics.eventsLost.get()
  assert.deepEqual(values.map((value) => [value.labels.reason, value.value]).sort(), [['buffer_full', 0], ['shutdown', 0], ['store_failed', 0]])
})

test('two replicas on one PostgreSQL outbox never attempt one stream at once and deliver it in order', async (t) => {
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  receiver.reply = () => ({ status: 200, delayMs: 20 })
  const location = await newLocation(t, 'postgres')
  // A works two streams at a time, so six streams of ten 20 ms answers keep it busy for well over a
  // second; B polls every 100 ms. Without the limit A could drain everything before B looks.
  const a = await startSink(t, receiver.url, location, { maxInFlight: 2 })
  const b = await startSink(t, receiver.url, location)
  // Calls live on A; B has nothing of its own and takes whatever streams are free.
  const bodies = await publishConcurrently(a.sink, 6, 10)
  await receiver.waitFor(() => receiver.delivered.length === 60, 20_000)
  for (let call = 1; call <= 6; call++) assert.deepEqual(receiver.sequencesOf(callSid(call)), range(10))
  assertSerialPerCall(receiver.attempts, 6)
  assert.ok(receiver.attempts.every((attempt) => attempt.body === bodies.get(attempt.id)))
  // The receiver counts an event when it answers; the replica a moment later, when the answer arrives.
  await receiver.waitFor(async () => await counterValue(a.metrics, 'success') + await counterValue(b.metrics, 'success') === 60)
  const byA = await counterValue(a.metrics, 'success')
  const byB = await counterValue(b.metrics, 'success')
  assert.ok(byB > 0, `replica B delivered too (${byA} by A, ${byB} by B)`)
})

test('a 410 seen by one replica pauses delivery on every replica sharing the PostgreSQL outbox', async (t) => {
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  let gone = false
  receiver.reply = () => ({ status: gone ? 410 : 200 })
  const location = await newLocation(t, 'postgres')
  const a = await startSink(t, receiver.url, location)
  const b = await startSink(t, receiver.url, location)
  gone = true
  a.sink.publish(testEvent(1, 1))
  await receiver.waitFor(() => a.sink.sender.paused || b.sink.sender.paused)
  await receiver.waitFor(() => a.sink.sender.paused && b.sink.sender.paused, 3000)
  const attempts = receiver.attempts.length
  for (const call of [2, 3]) b.sink.publish(testEvent(call, 1))
  await new Promise((resolve) => setTimeout(resolve, 500))
  assert.equal(receiver.attempts.length, attempts, 'no replica attempts while the endpoint is paused')

  gone = false
  const operator = await openStore(t, location)
  assert.equal(await operator.resume(), true)
  await receiver.waitFor(() => receiver.delivered.length === 3, 5000)
  await receiver.waitFor(() => !a.sink.sender.paused && !b.sink.sender.paused, 3000)
})
