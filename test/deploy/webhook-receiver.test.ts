// scripts/webhook-receiver.ts, the compose stack's demo receiver: verifies Standard Webhooks
// signatures, de-duplicates by webhook-id and prints ids, never transcript text unless asked.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { Webhook } from 'standardwebhooks'
import { createWebhookReceiver } from '../../scripts/webhook-receiver.ts'
import { ROOT } from './manifests.ts'

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const OLD_SECRET = 'whsec_dGhlLW9sZC1zZWNyZXQtYmVmb3JlLXJvdGF0aW9u'
const TURN = JSON.stringify({ type: 'transcript.turn', timestamp: '2026-11-24T15:02:19.870Z', data: { call_sid: 'CA5f00', stream_sid: 'MZ1800', sequence: 2, turn_index: 1, text: 'I take metoprolol twice a day.', speaker: 'A', role: 'customer' } })

function signed (secret: string, id: string, body: string, at = new Date()): Record<string, string> {
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body)
  }
}

async function start (t: TestContext, secrets: string[], printText = false) {
  const lines: string[] = []
  const warnings: string[] = []
  const server = createWebhookReceiver({ secrets, printText, write: (line) => lines.push(line), warn: (line) => warnings.push(line) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`
  const post = async (headers: Record<string, string>, body = TURN): Promise<number> => (await fetch(url, { method: 'POST', headers, body })).status
  return { lines, warnings, post }
}

test('webhook receiver prints a verified event once when the same webhook-id is delivered twice', async (t) => {
  const receiver = await start(t, [SECRET])
  assert.equal(await receiver.post(signed(SECRET, 'MZ1800-2', TURN)), 204)
  assert.equal(await receiver.post(signed(SECRET, 'MZ1800-2', TURN)), 204)
  assert.deepEqual(receiver.lines, ['transcript.turn seq=2 call=CA5f00 turn=1 role=customer speaker=A'])
  assert.ok(!receiver.lines.join('').includes('metoprolol'), 'transcript text is PHI: not printed by default')
})

test('webhook receiver rejects a delivery with 401 when the signature, secret or timestamp is wrong', async (t) => {
  const receiver = await start(t, [SECRET])
  assert.equal(await receiver.post(signed(OLD_SECRET, 'MZ1800-2', TURN)), 401)
  const tampered = signed(SECRET, 'MZ1800-3', TURN)
  assert.equal(await receiver.post(tampered, TURN.replace('twice', 'thrice')), 401)
  assert.equal(await receiver.post(signed(SECRET, 'MZ1800-4', TURN, new Date(Date.now() - 10 * 60_000))), 401)
  assert.equal(await receiver.post({ 'content-type': 'application/json' }), 401)
  assert.deepEqual(receiver.lines, [])
  assert.equal(receiver.warnings.length, 4)
  assert.ok(!receiver.warnings.join('').includes('metoprolol'))
})

test('webhook receiver accepts either secret when two are configured during rotation', async (t) => {
  const receiver = await start(t, [SECRET, OLD_SECRET])
  assert.equal(await receiver.post(signed(OLD_SECRET, 'MZ1800-2', TURN)), 204)
  const ended = JSON.stringify({ type: 'call.ended', timestamp: '2026-11-24T15:06:40.002Z', data: { call_sid: 'CA5f00', stream_sid: 'MZ1800', sequence: 3, reason: 'completed', turn_count: 1 } })
  assert.equal(await receiver.post(signed(SECRET, 'MZ1800-3', ended), ended), 204)
  assert.deepEqual(receiver.lines, ['transcript.turn seq=2 call=CA5f00 turn=1 role=customer speaker=A', 'call.ended seq=3 call=CA5f00 reason=completed turns=1'])
})

test('webhook receiver prints labelled transcript text when --print-text is on', async (t) => {
  const receiver = await start(t, [SECRET], true)
  assert.equal(await receiver.post(signed(SECRET, 'MZ1800-2', TURN)), 204)
  assert.deepEqual(receiver.lines, ['transcript.turn seq=2 call=CA5f00 turn=1 role=customer speaker=A text(PHI)="I take metoprolol twice a day."'])
})

test('webhook receiver script refuses to start when WEBHOOK_SECRET is missing', async () => {
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'webhook-receiver.ts'), '--port', '0'], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
  const [code] = await once(child, 'exit', { signal: AbortSignal.timeout(20_000) }) as [number | null]
  assert.equal(code, 1)
  assert.match(stderr, /WEBHOOK_SECRET is not set/)
})

test('webhook receiver script serves verified deliveries and exits 0 when started as compose does', async (t) => {
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'webhook-receiver.ts'), '--port', '0', '--host', '127.0.0.1'], { env: { PATH: process.env.PATH, WEBHOOK_SECRET: SECRET }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.after(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let stdout = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8') })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${stdout}`)), 20_000)
    child.stdout.on('data', () => { if (stdout.includes('listening')) { clearTimeout(timer); resolve() } })
  })
  const port = /listening on 127\.0\.0\.1:(\d+)/.exec(stdout)?.[1]
  assert.ok(port !== undefined, stdout)
  const response = await fetch(`http://127.0.0.1:${port}/hooks`, { method: 'POST', headers: signed(SECRET, 'MZ1800-2', TURN), body: TURN })
  assert.equal(response.status, 204)
  const bad = await fetch(`http://127.0.0.1:${port}/hooks`, { method: 'POST', headers: signed(OLD_SECRET, 'MZ1800-3', TURN), body: TURN })
  assert.equal(bad.status, 401)
  const printed = Date.now() + 5000
  while (!stdout.includes('transcript.turn') && Date.now() < printed) await new Promise((resolve) => setTimeout(resolve, 20))
  assert.match(stdout, /\ntranscript\.turn seq=2 call=CA5f00 turn=1 role=customer speaker=A\n/)
  assert.doesNotMatch(stdout, /seq=3/)
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit', { signal: AbortSignal.timeout(20_000) }) as [number | null]
  assert.equal(code, 0)
})

test('webhook receiver prints a handed-off call as one call when its second segment continues the first', async (t) => {
  const receiver = await start(t, [SECRET])
  const events = [
    { type: 'call.started', data: { call_sid: 'CA5f00', stream_sid: 'MZ1800', sequence: 1, segment: 1, previous_stream_sid: null, offset_ms: 0 } },
    { type: 'transcript.turn', data: { call_sid: 'CA5f00', stream_sid: 'MZ1800', sequence: 2, turn_index: 1, role: 'agent', speaker: 'A' } },
    { type: 'call.ended', data: { call_sid: 'CA5f00', stream_sid: 'MZ1800', sequence: 3, reason: 'handed_off', next_stream_sid: 'MZ7700', turn_count: 1 } },
    { type: 'call.started', data: { call_sid: 'CA5f00', stream_sid: 'MZ7700', sequence: 1, segment: 2, previous_stream_sid: 'MZ1800', offset_ms: 58212 } },
    { type: 'transcript.turn', data: { call_sid: 'CA5f00', stream_sid: 'MZ7700', sequence: 2, turn_index: 1, role: 'customer', speaker: 'B' } },
    { type: 'call.ended', data: { call_sid: 'CA5f00', stream_sid: 'MZ7700', sequence: 3, reason: 'completed', next_stream_sid: null, turn_count: 1 } }
  ]
  for (const event of events) {
    const body = JSON.stringify({ ...event, timestamp: '2026-11-24T15:06:40.002Z' })
    assert.equal(await receiver.post(signed(SECRET, `${event.data.stream_sid}-${event.data.sequence}`, body), body), 204)
  }
  assert.deepEqual(receiver.lines, [
    'call.started seq=1 call=CA5f00',
    'transcript.turn seq=2 call=CA5f00 turn=1 role=agent speaker=A',
    'call.ended seq=3 call=CA5f00 reason=handed_off turns=1 next=MZ7700 (the call continues on the next stream)',
    'call.started seq=1 call=CA5f00 segment=2 continues=MZ1800 offset_ms=58212',
    'transcript.turn seq=2 call=CA5f00 turn=2.1 role=customer speaker=B',
    'call.ended seq=3 call=CA5f00 reason=completed turns=1 call_segments=2 call_turns=2'
  ])
})
