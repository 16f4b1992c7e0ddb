import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { LiveHub } from '../../../src/core/live/hub.ts'
import type { LiveEvent, PartialSource } from '../../../src/core/live/hub.ts'
import type { PartialTurn } from '../../../src/core/live/partials.ts'
import { serializeEvent } from '../../../src/core/webhooks/events.ts'
import type { EventData } from '../../../src/core/webhooks/events.ts'

const CALL = 'CA00000000000000000000000000000001'
const STREAM = 'MZ00000000000000000000000000000001'

/** A call's partial source that records whether the hub is watching it. */
class Source implements PartialSource {
  listener: ((partial: PartialTurn) => void) | null = null
  changes = 0
  watchPartials (listener: ((partial: PartialTurn) => void) | null): void {
    this.listener = listener
    this.changes++
  }

  emit (turnOrder: number, text: string): void {
    this.listener?.({ role: 'agent', speaker: null, start_ms: 100, end_ms: 200, text, turn_order: turnOrder })
  }
}

function setup (t: TestContext, options: { graceMs?: number } = {}) {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 })
  const source = new Source()
  const counts = { viewers: 0, sent: new Map<string, number>() }
  const hub = new LiveHub({
    sourceOf: (streamSid) => (streamSid === STREAM ? source : undefined),
    now: () => Date.now(),
    onViewerCount: (delta) => { counts.viewers += delta },
    onSent: (type) => counts.sent.set(type, (counts.sent.get(type) ?? 0) + 1),
    ...options
  })
  t.after(() => hub.close())
  let sequence = 0
  const publish = (type: 'call.started' | 'transcript.turn' | 'call.ended', fields: Record<string, unknown> = {}): void => {
    // Only the fields the hub reads: the webhook payload types ask for far more.
    hub.publishFinal(serializeEvent(type, { call_sid: CALL, stream_sid: STREAM, sequence: ++sequence, ...fields } as unknown as EventData<typeof type>))
  }
  return { hub, source, counts, publish }
}

function viewer () {
  const events: LiveEvent[] = []
  let ended = 0
  return { events, get ended () { return ended }, send: (event: LiveEvent) => { events.push(event) }, end: () => { ended++ } }
}

test('hub forwards at most one partial per interval and only the newest when partials come faster', (t) => {
  const { hub, source, publish } = setup(t)
  publish('call.started', { started_at: new Date(0).toISOString() })
  const v = viewer()
  hub.subscribe(CALL, undefined, v)
  for (let i = 1; i <= 50; i++) {
    source.emit(0, `w${i}`)
    t.mock.timers.tick(20)
  }
  t.mock.timers.tick(1000)
  const partials = v.events.filter((event) => event.type === 'turn.partial').map((event) => JSON.parse(event.data) as { text: string })
  // 50 partials over 1000 ms: the first at once, then one per 200 ms.
  assert.equal(partials.length, 6)
  assert.equal(partials[0]?.text, 'w1')
  assert.equal(partials.at(-1)?.text, 'w50', 'the last partial is never lost to the cap')
})

test('hub drops a partial held by the cap when the final of its turn arrives first', (t) => {
  const { hub, source, publish } = setup(t)
  publish('call.started')
  const v = viewer()
  hub.subscribe(CALL, undefined, v)
  source.emit(0, 'Hel')
  source.emit(0, 'Hello the')
  publish('transcript.turn', { text: 'Hello there.', role: 'agent', upstream: { session_id: 's', turn_order: 0 } })
  t.mock.timers.tick(1000)
  assert.deepEqual(v.events.map((event) => event.type), ['turn.partial', 'transcript.turn'])
})

test('hub watches partials only while a call has a viewer', (t) => {
  const { hub, source, publish } = setup(t)
  publish('call.started')
  assert.equal(source.listener, null, 'nobody watches: the call parses no partials')
  const first = hub.subscribe(CALL, undefined, viewer())
  const second = hub.subscribe(CALL, undefined, viewer())
  assert.notEqual(source.listener, null)
  first?.close()
  assert.notEqual(source.listener, null)
  second?.close()
  second?.close()
  assert.equal(source.listener, null)
  assert.equal(hub.viewerCount, 0)
})

test('hub resumes after Last-Event-ID with the missed finals only, and replays everything without one', (t) => {
  const { hub, publish } = setup(t)
  publish('call.started')
  for (let i = 0; i < 4; i++) publish('transcript.turn', { text: `turn ${i}`, role: 'customer', upstream: { session_id: 's', turn_order: i } })
  const all = viewer()
  hub.subscribe(CALL, undefined, all)
  assert.deepEqual(all.events.map((event) => event.id), ['1-2', '1-3', '1-4', '1-5'])
  const resumed = viewer()
  hub.subscribe(CALL, '1-3', resumed)
  assert.deepEqual(resumed.events.map((event) => event.id), ['1-4', '1-5'])
  publish('transcript.turn', { text: 'turn 4', role: 'agent', upstream: { session_id: 's', turn_order: 4 } })
  assert.deepEqual(resumed.events.map((event) => event.id), ['1-4', '1-5', '1-6'])
  assert.equal(JSON.parse(resumed.events[2]!.data).text, 'turn 4', 'a final carries the webhook data')
})

test('hub ends viewers after call.ended, keeps the call for a grace, then forgets it', (t) => {
  const { hub, publish, counts } = setup(t, { graceMs: 5000 })
  publish('call.started')
  publish('transcript.turn', { role: 'agent', upstream: { turn_order: 0 } })
  const v = viewer()
  hub.subscribe(CALL, undefined, v)
  assert.equal(counts.viewers, 1)
  assert.equal(hub.list().length, 1)
  publish('call.ended', { reason: 'completed' })
  assert.equal(v.ended, 1)
  assert.equal(counts.viewers, 0)
  assert.deepEqual(hub.list(), [], 'an ended call is not listed')
  const late = viewer()
  assert.notEqual(hub.subscribe(CALL, '1-2', late), null)
  assert.deepEqual(late.events.map((event) => event.type), ['call.ended'])
  assert.equal(late.ended, 1)
  t.mock.timers.tick(5000)
  assert.equal(hub.subscribe(CALL, undefined, viewer()), null)
})

test('hub keeps viewers across a handed_off call.ended and numbers the next segment', (t) => {
  const { hub, publish } = setup(t)
  publish('call.started')
  const v = viewer()
  hub.subscribe(CALL, undefined, v)
  publish('call.ended', { reason: 'handed_off' })
  assert.equal(v.ended, 0)
  const next = (type: 'call.started' | 'transcript.turn', fields: Record<string, unknown>) => {
    hub.publishFinal(serializeEvent(type, { call_sid: CALL, stream_sid: 'MZ2', ...fields } as unknown as EventData<typeof type>))
  }
  next('call.started', { sequence: 1, segment: 2 })
  next('transcript.turn', { sequence: 2, role: 'agent', upstream: { turn_order: 0 } })
  assert.deepEqual(v.events.map((event) => event.id), ['1-2', '2-2'])
  assert.equal(hub.list()[0]?.segment, 2)
})

test('hub holds a next segment that starts before the current one has ended, then gives both in order', (t) => {
  const { hub, publish } = setup(t)
  publish('call.started')
  publish('transcript.turn', { role: 'agent', upstream: { turn_order: 0 } })
  const v = viewer()
  hub.subscribe(CALL, undefined, v)
  const next = (type: 'call.started' | 'transcript.turn' | 'call.ended', fields: Record<string, unknown>) => {
    hub.publishFinal(serializeEvent(type, { call_sid: CALL, stream_sid: 'MZ2', ...fields } as unknown as EventData<typeof type>))
  }
  // The new replica learns the cut and starts while the old one still collects its last turns.
  next('call.started', { sequence: 1, segment: 2 })
  next('transcript.turn', { sequence: 2, role: 'customer', upstream: { turn_order: 0 } })
  next('transcript.turn', { sequence: 2, role: 'customer', upstream: { turn_order: 0 } })
  assert.deepEqual(v.events.map((event) => event.id), ['1-2'], 'segment 2 waits for segment 1 to end')
  assert.equal(hub.list()[0]?.segment, 1)
  publish('transcript.turn', { role: 'agent', upstream: { turn_order: 1 } })
  publish('call.ended', { reason: 'handed_off' })
  assert.deepEqual(v.events.map((event) => `${event.id} ${event.type}`), ['1-2 transcript.turn', '1-3 transcript.turn', '1-4 call.ended', '2-2 transcript.turn'])
  assert.deepEqual(hub.lastFinal(CALL), { segment: 2, sequence: 2 })
  // The old replica's events seen again (from PostgreSQL) are not taken twice.
  publish('transcript.turn', { sequence: 3, role: 'agent', upstream: { turn_order: 1 } })
  next('call.ended', { sequence: 3, reason: 'completed' })
  assert.deepEqual(v.events.map((event) => event.id), ['1-2', '1-3', '1-4', '2-2', '2-3'])
  assert.equal(v.ended, 1)
  const resumed = viewer()
  hub.subscribe(CALL, '1-3', resumed)
  assert.deepEqual(resumed.events.map((event) => event.id), ['1-4', '2-2', '2-3'])
})

test('hub moves viewers on to the next segment when the current one never ends', (t) => {
  const { hub, publish } = setup(t)
  publish('call.started')
  const v = viewer()
  hub.subscribe(CALL, undefined, v)
  const next = (type: 'call.started' | 'transcript.turn', fields: Record<string, unknown>) => {
    hub.publishFinal(serializeEvent(type, { call_sid: CALL, stream_sid: 'MZ2', ...fields } as unknown as EventData<typeof type>))
  }
  next('call.started', { sequence: 1, segment: 2 })
  next('transcript.turn', { sequence: 2, role: 'customer', upstream: { turn_order: 0 } })
  t.mock.timers.tick(29_999)
  assert.equal(v.events.length, 0, 'segment 2 waits')
  t.mock.timers.tick(1)
  assert.deepEqual(v.events.map((event) => event.id), ['2-2'], 'the old replica died after the cut: the call goes on without its last turns')
  publish('transcript.turn', { role: 'agent', upstream: { turn_order: 1 } })
  assert.deepEqual(v.events.map((event) => event.id), ['2-2'], 'an earlier segment\'s final after viewers moved on is not sent')
})

test('hub forgets a call it knows from a later segment only, and one with viewers never', (t) => {
  const { hub } = setup(t)
  hub.publishFinal(serializeEvent('call.started', { call_sid: CALL, stream_sid: 'MZ2', sequence: 1, segment: 2 } as unknown as EventData<'call.started'>))
  assert.equal(hub.forgetIfPartial(CALL), true)
  assert.equal(hub.has(CALL), false)
  hub.publishFinal(serializeEvent('call.started', { call_sid: CALL, stream_sid: STREAM, sequence: 1, segment: 1 } as unknown as EventData<'call.started'>))
  assert.equal(hub.forgetIfPartial(CALL), false, 'known from its first segment')
  assert.equal(hub.has(CALL), true)
})

test('hub lists a live call with its turn count, last role and duration', (t) => {
  const { hub, publish } = setup(t)
  publish('call.started', { started_at: new Date(0).toISOString() })
  publish('transcript.turn', { role: 'agent', upstream: { turn_order: 0 } })
  publish('transcript.turn', { role: 'customer', upstream: { turn_order: 1 } })
  assert.deepEqual(hub.list(12_345), [{ call_sid: CALL, stream_sid: STREAM, segment: 1, started_at: '1970-01-01T00:00:00.000Z', duration_ms: 12_345, turn_count: 2, last_role: 'customer' }])
})
