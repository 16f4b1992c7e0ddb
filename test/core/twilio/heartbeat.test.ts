import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Heartbeat } from '../../../src/core/twilio/heartbeat.ts'
import { until } from '../../helpers/until.ts'

function socket () {
  return { pings: 0, terminated: 0, ping () { this.pings++ }, terminate () { this.terminated++ } }
}

const wait = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

test('Heartbeat pings every socket and terminates the one that did not answer the previous ping', async (t) => {
  const heartbeat = new Heartbeat(20)
  t.after(() => heartbeat.close())
  // A live peer answers each ping (here at once); a dead one never does.
  const answering = { ...socket(), ping () { this.pings++; heartbeat.pong(this) } }
  const silent = socket()
  heartbeat.add(answering)
  heartbeat.add(silent)
  await until(() => answering.pings >= 4)
  assert.ok(answering.pings >= 3)
  assert.equal(answering.terminated, 0)
  assert.equal(silent.pings, 1, 'pinged once, then found dead at the next beat')
  assert.equal(silent.terminated, 1, 'terminated once, not on every beat')
  assert.equal(heartbeat.size, 1)
})

test('Heartbeat stops pinging when a socket is deleted or the heartbeat is closed, once or twice', async () => {
  const heartbeat = new Heartbeat(10)
  const gone = socket()
  const kept = socket()
  heartbeat.add(gone)
  heartbeat.add(kept)
  heartbeat.delete(gone)
  heartbeat.pong(gone)
  await wait(15)
  assert.equal(gone.pings, 0)
  heartbeat.close()
  heartbeat.close()
  const pings = kept.pings
  heartbeat.add(kept)
  await wait(40)
  assert.equal(kept.pings, pings)
  assert.equal(heartbeat.size, 0)
})
