import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { parseWebhookSecrets } from '../../../src/config.ts'
import { createMetrics } from '../../../src/core/metrics.ts'
import { Outbox } from '../../../src/core/webhooks/outbox.ts'
import { RETRY_DEFAULTS, backoffDelayMs, nextDelayMs, parseRetryAfterMs } from '../../../src/core/webhooks/retry-policy.ts'
import { WebhookSender } from '../../../src/core/webhooks/sender.ts'
import { BACKENDS, Receiver, SECRET_NEW, SECRET_OLD, counterValue, newLocation, startSink, streamSid, testEvent } from './receiver.ts'
import type { Backend } from './receiver.ts'

const HOUR = 3_600_000

test('backoff starts at about one second and doubles when attempts fail', () => {
  const middle = (): number => 0.5
  assert.deepEqual([1, 2, 3, 4, 5].map((attempts) => backoffDelayMs(attempts, RETRY_DEFAULTS, middle)), [1000, 2000, 4000, 8000, 16000])
})

test('backoff caps each wait at five minutes when attempts keep failing', () => {
  assert.equal(backoffDelayMs(9, RETRY_DEFAULTS, () => 0.5), 256_000)
  assert.equal(backoffDelayMs(10, RETRY_DEFAULTS, () => 0.5), 300_000)
  assert.equal(backoffDelayMs(10, RETRY_DEFAULTS, () => 0.999999), 300_000)
  assert.equal(backoffDelayMs(200, RETRY_DEFAULTS, () => 0), 240_000, 'jitter still spreads streams at the cap')
  assert.equal(backoffDelayMs(5000, RETRY_DEFAULTS, () => 0.999999), 300_000, 'no overflow to NaN or Infinity')
})

test('backoff stays within the jitter bounds when random varies', () => {
  for (let attempts = 1; attempts <= 8; attempts++) {
    const base = 1000 * 2 ** (attempts - 1)
    assert.equal(backoffDelayMs(attempts, RETRY_DEFAULTS, () => 0), Math.round(base * 0.8))
    assert.equal(backoffDelayMs(attempts, RETRY_DEFAULTS, () => 0.999999), Math.round(base * (0.8 + 0.4 * 0.999999)))
  }
  const noJitter = { ...RETRY_DEFAULTS, jitter: 0 }
  assert.equal(backoffDelayMs(3, noJitter, Math.random), 4000)
})

test('backoff schedule reaches the 24 hour limit in a few hundred attempts when the endpoint stays down', () => {
  let elapsed = 0
  let attempts = 0
  while (elapsed < RETRY_DEFAULTS.maxAgeMs) {
    attempts++
    elapsed += backoffDelayMs(attempts, RETRY_DEFAULTS, Math.random)
  }
  assert.equal(RETRY_DEFAULTS.maxAgeMs, 24 * HOUR)
  assert.ok(attempts > 250 && attempts < 400, `${attempts} attempts`)
})

test('retry-after is read as delta-seconds or an HTTP-date when present', () => {
  const now = Date.parse('Wed, 21 Oct 2026 07:28:00 GMT')
  assert.equal(parseRetryAfterMs('120', now), 120_000)
  assert.equal(parseRetryAfterMs(' 0 ', now), 0)
  assert.equal(parseRetryAfterMs('Wed, 21 Oct 2026 07:28:30 GMT', now), 30_000)
  assert.equal(parseRetryAfterMs('Wed, 21 Oct 2026 07:00:00 GMT', now), 0, 'a date in the past means now')
  assert.equal(parseRetryAfterMs('soon', now), null)
  assert.equal(parseRetryAfterMs('-5', now), null)
  assert.equal(parseRetryAfterMs(null, now), null)
})

test('retry-after is capped and never shortens the backoff when computing the next wait', () => {
  const middle = (): number => 0.5
  assert.equal(nextDelayMs(1, 30_000, RETRY_DEFAULTS, middle), 30_000)
  assert.equal(nextDelayMs(1, 3_600_000, RETRY_DEFAULTS, middle), 600_000, 'capped at 10 minutes')
  assert.equal(nextDelayMs(5, 0, RETRY_DEFAULTS, middle), 16_000, 'Retry-After: 0 does not make a tight loop')
  assert.equal(nextDelayMs(2, null, RETRY_DEFAULTS, middle), 2000)
})

test('webhook secrets are split on spaces when several are configured', () => {
  assert.deepEqual(parseWebhookSecrets(` ${SECRET_OLD}  ${SECRET_NEW} `), [SECRET_OLD, SECRET_NEW])
})

test('webhook sender relies on the configuration for secrets when constructed', () => {
  // The one parser, in config.ts, refuses what the sender could not sign with.
  assert.throws(() => parseWebhookSecrets('not-a-secret-value'), (err: unknown) => err instanceof Error && !err.message.includes('not-a-secret-value'))
  assert.throws(() => parseWebhookSecrets('whsec_c2hvcnQ='), /at least 16 bytes/)
})

test('webhook sender refuses options that cannot work when constructed', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'medstream-sender-'))
  const outbox = new Outbox(Outbox.pathIn(dir))
  t.after(() => { outbox.close(); rmSync(dir, { recursive: true, force: true }) })
  const base = { url: 'https://hooks.example.org/x', secrets: [SECRET_OLD], outbox, metrics: createMetrics(new Registry(), 't'), logger: pino({ level: 'silent' }) }
  assert.throws(() => new WebhookSender({ ...base, secrets: [] }), TypeError)
  assert.throws(() => new WebhookSender({ ...base, url: 'ftp://hooks.example.org' }), TypeError)
  assert.throws(() => new WebhookSender({ ...base, url: 'nope' }), TypeError)
  assert.throws(() => new WebhookSender({ ...base, timeoutMs: 0 }), RangeError)
  assert.throws(() => new WebhookSender({ ...base, retry: { jitter: 2 } }), RangeError)
  assert.ok(new WebhookSender(base))
})

function deadLetters (backend: Backend): void {
  test('webhook sender dead-letters an event after 24 hours and delivers the rest of its stream when the receiver keeps refusing it', async (t) => {
    // The sender's clock jumps a day ahead, so its timestamps would fail the receiver's 5 min
    // tolerance: this receiver skips verification, the must-show tests elsewhere verify every attempt.
    const receiver = await new Receiver([SECRET_OLD], { verify: false }).listen()
    t.after(() => receiver.close())
    const poison = `${streamSid(1)}-1`
    receiver.reply = (attempt) => ({ status: attempt.id === poison ? 500 : 200 })
    let offset = 0
    const { sink, metrics } = await startSink(t, receiver.url, await newLocation(t, backend), { now: () => Date.now() + offset, random: () => 0, retry: { ...RETRY_DEFAULTS } })
    const t0 = Date.now()
    // Call 2 first: a success right after a failure would retry the failed event at once (recovery).
    sink.publish(testEvent(2, 1))
    await receiver.waitFor(async () => await counterValue(metrics, 'success') === 1)
    sink.publish(testEvent(1, 1))
    sink.publish(testEvent(1, 2))

    await receiver.waitFor(() => receiver.attemptsFor(poison).length === 1)
    // The failure is recorded once the answer is back (a round trip later with PostgreSQL).
    await receiver.waitFor(async () => (await sink.outbox.list({ callSid: testEvent(1, 1).callSid }))[0]?.attempts === 1)
    const [head] = await sink.outbox.list({ callSid: testEvent(1, 1).callSid })
    assert.equal(head?.attempts, 1)
    assert.equal(head?.lastStatus, 500)
    const wait = (head?.nextAttemptAt ?? 0) - (head?.lastAttemptAt ?? 0)
    assert.ok(wait >= 800 && wait <= 1200, `first retry after ${wait} ms`)
    assert.deepEqual(receiver.sequencesOf(testEvent(1, 1).callSid), [], 'event 2 waits behind event 1')

    offset = 24 * HOUR + 1
    await receiver.waitFor(() => receiver.sequencesOf(testEvent(1, 1).callSid).length === 1, 5000)
    assert.deepEqual(receiver.sequencesOf(testEvent(1, 1).callSid), [2])
    const dead = await sink.outbox.list({ state: 'dead' })
    assert.deepEqual(dead.map((row) => [row.id, row.attempts, row.lastStatus]), [[poison, 2, 500]])
    assert.ok((dead[0]?.createdAt ?? 0) >= t0)
    while ((await sink.outbox.counts()).pending > 0) await new Promise((resolve) => setTimeout(resolve, 10))
    assert.equal(await counterValue(metrics, 'dead'), 1)
    assert.equal(await counterValue(metrics, 'success'), 2)
  })
}

for (const backend of BACKENDS) describe(`${backend} outbox`, () => { deadLetters(backend) })
