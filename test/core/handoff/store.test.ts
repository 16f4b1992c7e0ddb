import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { HandoffStore, createHandoffPool } from '../../../src/core/handoff/store.ts'
import type { Acceptance } from '../../../src/core/handoff/store.ts'
import { startPostgres } from '../../helpers/postgres.ts'
import type { PostgresCluster } from '../../helpers/postgres.ts'

let cluster: PostgresCluster
let databases = 0

before(async () => { cluster = await startPostgres() })
after(async () => { await cluster?.destroy() })

async function store (t: { after: (fn: () => Promise<void> | void) => void }): Promise<HandoffStore> {
  const pool = createHandoffPool(await cluster.createDatabase(`handoff_store_${++databases}`))
  const handoffs = new HandoffStore(pool)
  await handoffs.ensureSchema()
  await handoffs.ensureSchema()
  t.after(async () => { handoffs.close(); await pool.end() })
  return handoffs
}

const acceptance = (overrides: Partial<Acceptance> = {}): Acceptance => ({
  callSid: 'CA' + '1'.repeat(32),
  segment: 2,
  previousStreamSid: 'MZ' + '1'.repeat(32),
  streamSid: 'MZ' + '2'.repeat(32),
  offsetMs: 61_240,
  firstAudioMs: 61_300,
  ...overrides
})

test('HandoffStore accepts a segment once and refuses another stream for the same segment', { timeout: 30_000 }, async (t) => {
  const handoffs = await store(t)
  assert.equal(await handoffs.accept(acceptance()), true)
  assert.equal(await handoffs.accept(acceptance()), true, 'the same stream again (a retried insert) is still its own')
  assert.equal(await handoffs.accept(acceptance({ streamSid: 'MZ' + '3'.repeat(32) })), false)
  assert.equal(await handoffs.accept(acceptance({ segment: 3, streamSid: 'MZ' + '3'.repeat(32) })), true)
})

test('HandoffStore resolves the old side\'s wait when the acceptance lands, and null for another stream or on timeout', { timeout: 30_000 }, async (t) => {
  const handoffs = await store(t)
  const { callSid, segment, streamSid } = acceptance()
  const waiting = handoffs.waitForAcceptance(callSid, segment, streamSid, 5000)
  const wrong = handoffs.waitForAcceptance(callSid, segment, 'MZ' + '4'.repeat(32), 1000)
  const nothing = handoffs.waitForAcceptance('CA' + '5'.repeat(32), 2, streamSid, 500)
  await new Promise((resolve) => setTimeout(resolve, 300))
  await handoffs.accept(acceptance())
  assert.deepEqual(await waiting, { firstAudioMs: 61_300 })
  assert.equal(await wrong, null)
  assert.equal(await nothing, null)
})

test('HandoffStore records the cut once, for the accepted stream only, and the new side\'s wait gets it', { timeout: 30_000 }, async (t) => {
  const handoffs = await store(t)
  const { callSid, segment, streamSid } = acceptance()
  await handoffs.accept(acceptance())
  const cut = handoffs.waitForCut(callSid, segment, 5000)
  assert.equal(await handoffs.recordCut(callSid, segment, 'MZ' + '4'.repeat(32), 62_000), false)
  assert.equal(await handoffs.recordCut(callSid, segment, streamSid, 62_000), true)
  assert.equal(await handoffs.recordCut(callSid, segment, streamSid, 63_000), false, 'a cut never moves')
  assert.equal(await cut, 62_000)
})

test('HandoffStore answers many waiters from one poll and ends every wait as timed out when closed', { timeout: 30_000 }, async (t) => {
  const handoffs = await store(t)
  const calls = Array.from({ length: 50 }, (_, i) => 'CA' + String(i).padStart(32, '0'))
  const waits = calls.map((callSid) => handoffs.waitForAcceptance(callSid, 2, 'MZ' + '2'.repeat(32), 10_000))
  await Promise.all(calls.map((callSid) => handoffs.accept(acceptance({ callSid }))))
  assert.deepEqual(await Promise.all(waits), calls.map(() => ({ firstAudioMs: 61_300 })))
  const pending = handoffs.waitForCut(calls[0]!, 2, 60_000)
  handoffs.close()
  assert.equal(await pending, null)
  assert.equal(await handoffs.waitForCut(calls[1]!, 2, 60_000), null, 'a closed store answers at once')
})
