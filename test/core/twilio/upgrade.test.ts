import assert from 'node:assert/strict'
import { test } from 'node:test'
import twilio from 'twilio'
import { CallRegistry } from '../../../src/core/call/call-registry.ts'
import { TwilioSignatures } from '../../../src/core/twilio/signature.ts'
import { admitUpgrade } from '../../../src/core/twilio/upgrade.ts'
import { counter, testMetrics } from '../call/fixtures.ts'

const TOKEN = 'upgrade-test-token'
const signatures = new TwilioSignatures(TOKEN, new URL('https://calls.example.org'))
const signed = twilio.getExpectedTwilioSignature(TOKEN, 'wss://calls.example.org/twilio/media', {})

test('admitUpgrade refuses a bad signature with 403 before it looks at capacity', async (t) => {
  const metrics = testMetrics()
  const calls = new CallRegistry({ maxCalls: 1, metrics })
  t.after(() => calls.close())
  calls.startDraining()
  assert.deepEqual(admitUpgrade('AAAAAAAAAAAAAAAAAAAAAAAAAAA=', signatures, calls, metrics), { accept: false, status: 403, reason: 'signature' })
  assert.deepEqual([await counter(metrics.streamRejections, { reason: 'signature' }), await counter(metrics.streamRejections, { reason: 'draining' })], [1, 0])
})

test('admitUpgrade refuses with 503 and the reason when draining or at capacity, and counts the signature form', async (t) => {
  const metrics = testMetrics()
  const calls = new CallRegistry({ maxCalls: 1, metrics })
  t.after(() => calls.close())
  assert.deepEqual(admitUpgrade(signed, signatures, calls, metrics), { accept: true })
  calls.reserve()
  assert.deepEqual(admitUpgrade(signed, signatures, calls, metrics), { accept: false, status: 503, reason: 'capacity' })
  calls.startDraining()
  assert.deepEqual(admitUpgrade(signed, signatures, calls, metrics), { accept: false, status: 503, reason: 'draining' })
  assert.equal(await counter(metrics.upgradeSignatures, { form: 'wss' }), 3)
  assert.deepEqual([await counter(metrics.streamRejections, { reason: 'capacity' }), await counter(metrics.streamRejections, { reason: 'draining' })], [1, 1])
})

test('admitUpgrade accepts any header and counts no form when the signature check is off', async (t) => {
  const metrics = testMetrics()
  const calls = new CallRegistry({ maxCalls: 1, metrics })
  t.after(() => calls.close())
  assert.deepEqual(admitUpgrade(undefined, null, calls, metrics), { accept: true })
  for (const form of ['wss', 'wss_slash', 'https', 'https_slash']) assert.equal(await counter(metrics.upgradeSignatures, { form }), 0)
})

test('admitUpgrade refuses with 503 outbox_unavailable after capacity when the event sink takes no new calls', async (t) => {
  const metrics = testMetrics()
  const calls = new CallRegistry({ maxCalls: 1, metrics })
  t.after(() => calls.close())
  assert.deepEqual(admitUpgrade(signed, signatures, calls, metrics, { accepting: true }), { accept: true })
  assert.deepEqual(admitUpgrade(signed, signatures, calls, metrics, { accepting: false }), { accept: false, status: 503, reason: 'outbox_unavailable' })
  calls.reserve()
  assert.deepEqual(admitUpgrade(signed, signatures, calls, metrics, { accepting: false }), { accept: false, status: 503, reason: 'capacity' }, 'capacity is checked first')
  assert.deepEqual([await counter(metrics.streamRejections, { reason: 'outbox_unavailable' }), await counter(metrics.streamRejections, { reason: 'capacity' })], [1, 1])
})
