import assert from 'node:assert/strict'
import type { Socket } from 'node:net'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { mintViewerToken } from '../../src/core/live/viewer-token.ts'
import { loadSampleCall, metricValue, startHarness } from '../helpers/harness.ts'
import type { Harness, HarnessOptions } from '../helpers/harness.ts'
import { openSse } from '../helpers/sse.ts'
import type { SseMessage } from '../helpers/sse.ts'
import { until } from '../helpers/until.ts'

const sample = loadSampleCall()
const script = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))

async function harnessFor (t: TestContext, options: HarnessOptions = {}): Promise<Harness> {
  const harness = await startHarness({ ...options, fake: { script, ...options.fake } })
  t.after(() => harness.close())
  return harness
}

function token (harness: Harness, scope: string, ttlSeconds = 600, nowMs = Date.now()): string {
  return mintViewerToken(harness.config.liveViewKey, scope, nowMs, ttlSeconds)
}

/** Places the sample call and waits until the live view knows it. */
async function liveCall (harness: Harness, speed: number) {
  const call = await harness.simulator.placeCall({ path: '/twilio/voice?clinic=north' })
  const stream = harness.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed })
  await stream.opened
  await until(() => harness.app.live.has(call.callSid), 10000)
  return { call, stream }
}

const finals = (messages: SseMessage[]): SseMessage[] => messages.filter((message) => message.event === 'transcript.turn')
const data = (message: SseMessage | undefined): Record<string, unknown> => JSON.parse(message?.data ?? 'null') as Record<string, unknown>

test('live routes answer 401 without a valid token and 403 outside its scope, with no call data in the answer', async (t) => {
  const harness = await harnessFor(t)
  const { call, stream } = await liveCall(harness, 4)
  t.after(() => stream.abort())
  const events = `${harness.serviceUrl}/live/calls/${call.callSid}/events`
  const list = `${harness.serviceUrl}/live/calls`
  const answers: Array<[string, Record<string, string>, number]> = [
    [events, {}, 401],
    [events, { authorization: `Basic ${token(harness, '*')}` }, 401],
    [events, { authorization: `Bearer ${token(harness, '*').slice(0, -2)}xx` }, 401],
    [events, { authorization: `Bearer ${token(harness, '*', 60, Date.now() - 120_000)}` }, 401],
    [events, { authorization: `Bearer ${mintViewerToken(Buffer.from('not the key of this service at all, really'), '*', Date.now())}` }, 401],
    [events, { authorization: `Bearer ${token(harness, 'CAsomeothercall')}` }, 403],
    [list, {}, 401],
    [list, { authorization: `Bearer ${token(harness, call.callSid)}` }, 403]
  ]
  for (const [url, headers, status] of answers) {
    const response = await fetch(url, { headers })
    const body = await response.text()
    assert.equal(response.status, status, `${url} ${JSON.stringify(headers)}`)
    assert.ok(!body.includes(call.callSid) && !body.includes('North Clinic'), 'the refusal names no call and no text')
    if (status === 401) assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer/)
  }
  const missing = await fetch(`${harness.serviceUrl}/live/calls/CAnotlive/events`, { headers: { authorization: `Bearer ${token(harness, '*')}` } })
  assert.equal(missing.status, 404)
  await missing.text()
})

test('live calls lists the call for a supervisor token while it is live', async (t) => {
  const harness = await harnessFor(t)
  const { call, stream } = await liveCall(harness, 4)
  t.after(() => stream.abort())
  const response = await fetch(`${harness.serviceUrl}/live/calls`, { headers: { authorization: `Bearer ${token(harness, '*')}` } })
  assert.equal(response.status, 200)
  assert.equal(response.headers.get('cache-control'), 'no-store')
  const body = await response.json() as { calls: Array<Record<string, unknown>> }
  assert.equal(body.calls.length, 1)
  const row = body.calls[0]!
  assert.deepEqual(Object.keys(row).sort(), ['call_sid', 'duration_ms', 'last_role', 'segment', 'started_at', 'stream_sid', 'turn_count'])
  assert.equal(row.call_sid, call.callSid)
  assert.equal(row.segment, 1)
  assert.equal(typeof row.duration_ms, 'number')
})

test('live events stream partials before their finals, every final in order with its role, then call.ended, and end', async (t) => {
  const harness = await harnessFor(t, { fake: { partialsPerTurn: 3 } })
  const { call, stream } = await liveCall(harness, 8)
  t.after(() => stream.abort())
  const sse = await openSse(`${harness.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: `Bearer ${token(harness, call.callSid)}` })
  assert.equal(sse.status, 200)
  await sse.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 60000)
  await sse.done
  const turns = finals(sse.messages)
  assert.deepEqual(turns.map((message) => data(message).text), sample.turns.map((turn) => turn.text))
  assert.deepEqual(turns.map((message) => data(message).role), sample.turns.map((turn) => (turn.track === 'inbound' ? 'customer' : 'agent')))
  assert.deepEqual(turns.map((message) => message.id), turns.map((_, index) => `1-${index + 2}`), 'id: <segment>-<sequence>')
  assert.equal(sse.messages.at(-1)?.event, 'call.ended')
  assert.equal(sse.messages.at(-1)?.id, '1-10')
  const partials = sse.messages.filter((message) => message.event === 'turn.partial')
  assert.ok(partials.length > 0, 'partials reach the viewer')
  for (const partial of partials) {
    const fields = data(partial)
    assert.deepEqual(Object.keys(fields).sort(), ['call_sid', 'end_ms', 'role', 'segment', 'speaker', 'start_ms', 'stream_sid', 'text', 'upstream'])
    assert.equal(partial.id, null, 'partials are not resumable')
    const order = (fields.upstream as { turn_order: number }).turn_order
    const finalIndex = sse.messages.findIndex((message) => message.event === 'transcript.turn' && (data(message).upstream as { turn_order: number }).turn_order === order)
    assert.ok(finalIndex > sse.messages.indexOf(partial), `the partial of turn ${order} comes before its final`)
    const final = data(sse.messages[finalIndex])
    assert.ok(String(final.text).startsWith(String(fields.text).replace(/[.,?!]$/, '')), 'a partial is the final so far')
    assert.equal(fields.role, final.role, 'the partial is placed on the call timeline with the final\'s role')
    assert.ok((fields.start_ms as number) >= (final.start_ms as number) - 1)
  }
  assert.ok(await metricValue(harness.app, 'medstream_live_events_total', { type: 'turn.partial' }) >= partials.length)
  assert.equal(await metricValue(harness.app, 'medstream_live_events_total', { type: 'transcript.turn' }), 8)
  await until(() => harness.logs.some((line) => line.msg === 'live view closed'), 10000)
  assert.equal(await metricValue(harness.app, 'medstream_live_viewers'), 0)
})

test('live events resume after Last-Event-ID with exactly the finals missed when the server drops the stream mid-call', async (t) => {
  const harness = await harnessFor(t)
  const sockets = new Set<Socket>()
  harness.app.server.on('request', (request) => { if (request.url?.endsWith('/events') === true) sockets.add(request.socket) })
  const { call, stream } = await liveCall(harness, 3)
  t.after(() => stream.abort())
  const url = `${harness.serviceUrl}/live/calls/${call.callSid}/events`
  const headers = { authorization: `Bearer ${token(harness, '*')}` }
  const first = await openSse(url, headers)
  await first.waitFor((messages) => finals(messages).length >= 2, 30000)
  assert.equal(await metricValue(harness.app, 'medstream_live_viewers'), 1)
  for (const socket of sockets) socket.destroy()
  await first.done
  const seen = finals(first.messages).length
  // Words keep coming while the viewer is away.
  await until(() => (harness.app.live.list()[0]?.turn_count ?? 0) >= seen + 1, 30000)
  const second = await openSse(url, { ...headers, 'last-event-id': first.lastEventId ?? '' })
  await second.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 60000)
  const ids = [...finals(first.messages), ...finals(second.messages)].map((message) => message.id)
  assert.deepEqual(ids, sample.turns.map((_, index) => `1-${index + 2}`), 'nothing missing, nothing twice')
  assert.ok(finals(second.messages).length < sample.turns.length, 'the reconnect did not start from the beginning')
})

test('live events send heartbeat comments while the call is quiet', async (t) => {
  const harness = await harnessFor(t, { live: { heartbeatMs: 50 } })
  const { call, stream } = await liveCall(harness, 1)
  t.after(() => stream.abort())
  const sse = await openSse(`${harness.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: `Bearer ${token(harness, '*')}` })
  await until(() => sse.comments.filter((comment) => comment === 'heartbeat').length >= 3, 10000)
  sse.abort()
})

test('live events hold partials to five a second per call when the upstream sends them faster', async (t) => {
  const harness = await harnessFor(t, { fake: { partialsPerTurn: 25 } })
  const { call, stream } = await liveCall(harness, 2)
  t.after(() => stream.abort())
  const sse = await openSse(`${harness.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: `Bearer ${token(harness, '*')}` })
  await sse.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 60000)
  const partials = sse.messages.filter((message) => message.event === 'turn.partial')
  assert.ok(partials.length > 0)
  // The fake sent 25 per turn, mostly in bursts; the service sends one per 200 ms at most. Receipt
  // times can only bunch up, never spread, so a second of slack keeps this from judging the network.
  const spanMs = (partials.at(-1)?.at ?? 0) - (partials[0]?.at ?? 0)
  assert.ok(partials.length <= Math.ceil((spanMs + 1000) / 200) + 1, `${partials.length} partials in ${spanMs} ms`)
  assert.ok(partials.length < 25 * sample.turns.length / 2, 'far fewer partials than the upstream sent')
})

test('a debug-level log of a viewed call holds no transcript text and no token', async (t) => {
  const harness = await harnessFor(t)
  const { call, stream } = await liveCall(harness, 8)
  t.after(() => stream.abort())
  const viewerToken = token(harness, call.callSid)
  const sse = await openSse(`${harness.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: `Bearer ${viewerToken}` })
  await sse.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 60000)
  await (await fetch(`${harness.serviceUrl}/live/calls`, { headers: { authorization: `Bearer ${token(harness, '*')}` } })).text()
  assert.ok(sse.messages.some((message) => message.event === 'turn.partial'), 'partials flowed while the log was written')
  const log = harness.logText()
  assert.ok(harness.logs.some((line) => line.msg === 'live view opened' && line.scope === call.callSid && typeof line.expiresAt === 'number'), 'the view is logged with scope and expiry')
  assert.ok(harness.logs.some((line) => line.level === 20), 'debug lines were written')
  assert.ok(!log.includes(viewerToken) && !log.includes(viewerToken.split('.')[3] ?? '-'), 'no token, nor its MAC')
  for (const turn of sample.turns) {
    for (const word of turn.text.split(' ').filter((word) => word.length > 6)) assert.ok(!log.includes(word.replace(/[.,?!]$/, '')), `"${word}" is not in the log`)
  }
})
