import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { TestContext } from 'node:test'
import { mintViewerToken } from '../../../src/core/live/viewer-token.ts'
import { loadSampleCall, startHarness } from '../../helpers/harness.ts'
import type { Harness } from '../../helpers/harness.ts'
import { startPostgres } from '../../helpers/postgres.ts'
import type { PostgresCluster } from '../../helpers/postgres.ts'
import { openSse } from '../../helpers/sse.ts'
import type { SseMessage } from '../../helpers/sse.ts'

const sample = loadSampleCall()
const script = sample.turns.map((turn) => ({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' }))
const data = (message: SseMessage): Record<string, unknown> => JSON.parse(message.data) as Record<string, unknown>

let cluster: PostgresCluster
before(async () => { cluster = await startPostgres() })
after(async () => { await cluster.destroy() })

async function replica (t: TestContext, databaseUrl: string): Promise<Harness> {
  const harness = await startHarness({ fake: { script, partialsPerTurn: 3 }, live: { databaseUrl } })
  t.after(() => harness.close())
  return harness
}

test('a viewer connected to replica B sees the partials and finals of a call handled by replica A', async (t) => {
  const databaseUrl = await cluster.createDatabase('live_fleet')
  const a = await replica(t, databaseUrl)
  const b = await replica(t, databaseUrl)
  const token = `Bearer ${mintViewerToken(b.config.liveViewKey, '*', Date.now(), 600)}`
  const call = await a.simulator.placeCall({ path: '/twilio/voice?clinic=north' })
  const stream = a.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 3 })
  t.after(() => stream.abort())
  await stream.opened

  // Replica B lists the call it does not handle.
  let listed: Array<Record<string, unknown>> = []
  const deadline = Date.now() + 10000
  while (listed.length === 0 && Date.now() < deadline) {
    const response = await fetch(`${b.serviceUrl}/live/calls`, { headers: { authorization: token } })
    // 503 until B has reached PostgreSQL (it connects in the background, as the outbox does).
    listed = response.status === 200 ? (await response.json() as { calls: Array<Record<string, unknown>> }).calls : []
    if (listed.length === 0) await new Promise((resolve) => setTimeout(resolve, 50))
  }
  assert.equal(listed[0]?.call_sid, call.callSid)
  assert.equal(b.app.calls.has(call.callSid), false, 'B does not handle the call')

  const sse = await openSse(`${b.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: token })
  assert.equal(sse.status, 200)
  await sse.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 60000)
  await sse.done
  const finals = sse.messages.filter((message) => message.event === 'transcript.turn')
  assert.deepEqual(finals.map((message) => data(message).text), sample.turns.map((turn) => turn.text), 'every final, in order, once')
  assert.deepEqual(finals.map((message) => message.id), sample.turns.map((_, index) => `1-${index + 2}`))
  const partials = sse.messages.filter((message) => message.event === 'turn.partial')
  assert.ok(partials.length > 0, 'partials cross replicas while B watches')
  for (const partial of partials) {
    const order = (data(partial).upstream as { turn_order: number }).turn_order
    const finalAt = sse.messages.findIndex((message) => message.event === 'transcript.turn' && (data(message).upstream as { turn_order: number }).turn_order === order)
    assert.ok(finalAt > sse.messages.indexOf(partial), `partial of turn ${order} before its final`)
  }

  // A late viewer on B resumes from PostgreSQL within the grace.
  const late = await openSse(`${b.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: token, 'last-event-id': '1-7' })
  await late.done
  assert.deepEqual(late.messages.map((message) => message.id), ['1-8', '1-9', '1-10'])
  assert.deepEqual((await (await fetch(`${b.serviceUrl}/live/calls`, { headers: { authorization: token } })).json() as { calls: unknown[] }).calls, [], 'an ended call leaves the list')
})

test('replicas keep fanning out live calls when PostgreSQL restarts between two calls', async (t) => {
  const databaseUrl = await cluster.createDatabase('live_restart')
  const a = await replica(t, databaseUrl)
  const b = await replica(t, databaseUrl)
  await cluster.stopServer()
  await cluster.startServer()
  // The listeners come back within a second or so; a call placed after that is seen on B.
  await new Promise((resolve) => setTimeout(resolve, 2500))
  const token = `Bearer ${mintViewerToken(b.config.liveViewKey, '*', Date.now(), 600)}`
  const call = await a.simulator.placeCall({ path: '/twilio/voice?clinic=north' })
  const stream = a.simulator.openStream(call, { inbound: sample.inbound, outbound: sample.outbound, speed: 6 })
  t.after(() => stream.abort())
  await stream.opened
  let status = 404
  const deadline = Date.now() + 10000
  let sse = null
  while (status !== 200 && Date.now() < deadline) {
    sse = await openSse(`${b.serviceUrl}/live/calls/${call.callSid}/events`, { authorization: token })
    status = sse.status
    if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  assert.ok(sse !== null && status === 200, 'B opens the call from PostgreSQL')
  await sse.waitFor((messages) => messages.some((message) => message.event === 'call.ended'), 60000)
  assert.equal(sse.messages.filter((message) => message.event === 'transcript.turn').length, sample.turns.length, 'every final reaches B after the restart')
})
