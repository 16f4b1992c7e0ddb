import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { CallRegistry } from '../../../src/core/call/call-registry.ts'
import { CallSession } from '../../../src/core/call/call-session.ts'
import type { EndReason } from '../../../src/core/call/call-session.ts'
import type { Metrics } from '../../../src/core/metrics.ts'
import { ACCOUNT_SID, counter, recordingLogger, recordingSink, testMetrics, upstreamOptions } from './fixtures.ts'

function registry (t: TestContext, maxCalls = 2, metrics: Metrics = testMetrics()): CallRegistry {
  const calls = new CallRegistry({ maxCalls, metrics, metricsFlushMs: 20 })
  t.after(() => calls.close())
  return calls
}

/** A call that is never started: no upstream session is opened, so it ends at once. */
function call (n: number, options: { metrics?: Metrics, onEnded?: (session: CallSession, reason: EndReason) => void } = {}): CallSession {
  return new CallSession({
    identity: { callSid: `CA${String(n).repeat(32).slice(0, 32)}`, streamSid: `MZ${String(n).repeat(32).slice(0, 32)}`, accountSid: ACCOUNT_SID, tracks: ['inbound'], customParameters: {} },
    upstream: upstreamOptions('ws://127.0.0.1:9/unused'),
    chunkMs: 100,
    sink: recordingSink(),
    metrics: options.metrics ?? testMetrics(),
    logger: recordingLogger(),
    terminateTimeoutMs: 0,
    onEnded: options.onEnded ?? (() => {})
  })
}

test('CallRegistry counts reservations and live calls against MAX_CALLS when sockets wait for start', (t) => {
  const calls = registry(t, 2)
  assert.deepEqual([calls.atCapacity, calls.ready], [false, true])
  calls.reserve()
  calls.add(call(1))
  assert.deepEqual([calls.size, calls.atCapacity, calls.ready], [1, true, false])
  calls.release()
  assert.deepEqual([calls.atCapacity, calls.ready], [false, true])
  calls.release()
  calls.reserve()
  assert.equal(calls.atCapacity, true, 'a release without a reservation does not go below zero')
})

test('CallRegistry reports not ready but keeps capacity when draining', (t) => {
  const calls = registry(t, 2)
  calls.startDraining()
  assert.deepEqual([calls.draining, calls.atCapacity, calls.ready], [true, false, false])
})

test('CallRegistry finds a call by CallSid and StreamSid and sets the active gauge when calls come and go', async (t) => {
  const metrics = testMetrics()
  const calls = registry(t, 5, metrics)
  const first = call(1)
  const second = call(2)
  calls.add(first)
  calls.add(second)
  assert.equal(await counter(metrics.callsActive), 2)
  assert.equal(calls.has(first.identity.callSid), true)
  assert.equal(calls.byStreamSid(second.identity.streamSid), second)
  calls.remove(first)
  assert.equal(calls.has(first.identity.callSid), false)
  assert.equal(calls.byStreamSid(first.identity.streamSid), undefined)
  assert.deepEqual([calls.size, await counter(metrics.callsActive)], [1, 1])
})

test('CallRegistry keeps the newer session when a stale one of the same call is removed', (t) => {
  const calls = registry(t)
  const stale = call(1)
  const current = call(1)
  calls.add(stale)
  calls.add(current)
  calls.remove(stale)
  assert.equal(calls.byStreamSid(current.identity.streamSid), current)
  assert.equal(calls.size, 1)
})

test('CallRegistry waitUntilEmpty resolves true when the last call leaves and false at the deadline', async (t) => {
  const calls = registry(t)
  assert.equal(await calls.waitUntilEmpty(Date.now()), true, 'already empty')
  const session = call(1)
  calls.add(session)
  assert.equal(await calls.waitUntilEmpty(Date.now() + 30), false)
  const waiting = calls.waitUntilEmpty(Date.now() + 5000)
  setTimeout(() => calls.remove(session), 10)
  assert.equal(await waiting, true)
})

test('CallRegistry endAll ends every live call with the reason and waits for each call.ended when the app shuts down', async (t) => {
  const calls = registry(t, 5)
  const reasons: EndReason[] = []
  const onEnded = (session: CallSession, reason: EndReason): void => { reasons.push(reason); calls.remove(session) }
  calls.add(call(1, { onEnded }))
  calls.add(call(2, { onEnded }))
  await calls.endAll('shutdown')
  assert.deepEqual(reasons, ['shutdown', 'shutdown'])
  assert.equal(calls.size, 0)
})

test('CallRegistry moves each call\'s batched counters to prom-client on its timer until it is closed, even when closed twice', async (t) => {
  const metrics = testMetrics()
  const calls = registry(t, 2, metrics)
  const session = call(1, { metrics })
  calls.add(session)
  session.handleMedia('inbound', 0, Buffer.alloc(160, 0xff))
  session.handleMedia('inbound', 20, Buffer.alloc(160, 0xff))
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(await counter(metrics.twilioMessages, { event: 'media' }), 2)
  calls.close()
  calls.close()
  session.handleMedia('inbound', 40, Buffer.alloc(160, 0xff))
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(await counter(metrics.twilioMessages, { event: 'media' }), 2, 'no flush after close')
})
