import { test } from 'node:test'
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { DeliveryError } from '../../../src/core/errors.ts'
import { Webhook } from 'standardwebhooks'
import { HttpAttempt, LEASE_LOST, SHUTDOWN, signWebhook, webhookKey } from '../../../src/core/webhooks/http-attempt.ts'
import { freePort } from '../../helpers/net.ts'
import { Receiver, SECRET_NEW, SECRET_OLD } from './receiver.ts'

const event = { id: 'MZ00000000000000000000000000000001-1', body: '{"type":"call.started","timestamp":"2026-11-24T15:02:11.204Z","data":{}}' }

async function failure (attempt: HttpAttempt, signal: AbortSignal = new AbortController().signal): Promise<DeliveryError> {
  try {
    await attempt.send(event, Date.now(), signal)
  } catch (err) {
    assert.ok(err instanceof DeliveryError, `expected a DeliveryError, got ${String(err)}`)
    return err
  }
  assert.fail('expected the attempt to fail')
}

test('http attempt resolves with the status when the receiver answers 2xx', async (t) => {
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  const attempt = new HttpAttempt({ url: receiver.url, secrets: [SECRET_OLD], timeoutMs: 2000, userAgent: 'medstream/test' })
  assert.equal(await attempt.send(event, Date.now(), new AbortController().signal), 200)
  assert.equal(receiver.attempts[0]?.verified, true)
})

test('http attempt throws a DeliveryError saying whether a retry can help when the receiver refuses', async (t) => {
  const receiver = await new Receiver().listen()
  t.after(() => receiver.close())
  const attempt = new HttpAttempt({ url: receiver.url, secrets: [SECRET_OLD], timeoutMs: 2000, userAgent: 'medstream/test' })

  receiver.reply = () => ({ status: 503, headers: { 'retry-after': '2' } })
  const unavailable = await failure(attempt)
  assert.deepEqual([unavailable.code, unavailable.status, unavailable.reason, unavailable.retryAfterMs, unavailable.retryable], ['MS_ERR_DELIVERY', 503, 'status', 2000, true])

  receiver.reply = () => ({ status: 410 })
  const gone = await failure(attempt)
  assert.deepEqual([gone.status, gone.retryable], [410, false], '410 pauses rather than retries')

  receiver.reply = () => ({ status: 307, headers: { location: '/elsewhere' } })
  assert.equal((await failure(attempt)).reason, 'redirect')

  receiver.reply = () => ({ status: 'hang' })
  const slow = new HttpAttempt({ url: receiver.url, secrets: [SECRET_OLD], timeoutMs: 100, userAgent: 'medstream/test' })
  assert.deepEqual([(await failure(slow)).reason, (await failure(slow)).status], ['timeout', null])

  const controller = new AbortController()
  const cut = failure(attempt, controller.signal)
  setTimeout(() => controller.abort(SHUTDOWN), 50)
  assert.equal((await cut).reason, 'shutdown')

  const leased = new AbortController()
  const lost = failure(attempt, leased.signal)
  setTimeout(() => leased.abort(LEASE_LOST), 50)
  assert.equal((await lost).reason, 'lease')
})

test('http attempt names a network failure by its code, never the URL, when nothing listens', async () => {
  const port = await freePort()
  const attempt = new HttpAttempt({ url: `http://127.0.0.1:${port}/secret-path`, secrets: [SECRET_OLD], timeoutMs: 2000, userAgent: 'medstream/test' })
  const refused = await failure(attempt)
  assert.equal(refused.reason, 'network:ECONNREFUSED')
  assert.equal(refused.retryable, true)
  assert.doesNotMatch(refused.message, /secret-path/)
})

test('http attempt keeps one connection for successive attempts, reads past a long answer, and fails when the answer is cut off', async (t) => {
  let mode: 'ok' | 'long' | 'cut' = 'ok'
  let connections = 0
  const server = createServer((request, response) => {
    request.resume()
    request.on('end', () => {
      if (mode === 'ok') {
        response.end('ok')
      } else if (mode === 'long') {
        // Twice the 64 KiB the attempt reads: it answers with the status and drops the rest.
        response.writeHead(200, { 'content-length': String(128 * 1024) })
        response.end(Buffer.alloc(128 * 1024, 0x61))
      } else {
        response.writeHead(200, { 'content-length': '1000' })
        response.write('partial')
        setTimeout(() => response.socket?.destroy(), 20)
      }
    })
  })
  server.on('connection', () => { connections++ })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const attempt = new HttpAttempt({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`, secrets: [SECRET_OLD], timeoutMs: 2000, userAgent: 'medstream/test' })
  t.after(() => {
    attempt.close()
    server.closeAllConnections()
    server.close()
  })
  for (let i = 0; i < 5; i++) assert.equal(await attempt.send(event, Date.now(), new AbortController().signal), 200)
  assert.equal(connections, 1, 'keep-alive: one connection for five attempts')
  mode = 'long'
  assert.equal(await attempt.send(event, Date.now(), new AbortController().signal), 200)
  mode = 'cut'
  const cut = await failure(attempt)
  assert.match(cut.reason, /^network:/)
  assert.equal(cut.retryable, true)
  mode = 'ok'
  assert.equal(await attempt.send(event, Date.now(), new AbortController().signal), 200, 'a later attempt gets a fresh connection')
})

test('http attempt signs exactly as the standardwebhooks library does, for any body', () => {
  const bodies = [event.body, '', '{"text":"Ich nehme Metoprolol, 50 mg — zweimal täglich. 💊"}', 'x'.repeat(70_000)]
  for (const secret of [SECRET_OLD, SECRET_NEW]) {
    const library = new Webhook(secret)
    const key = webhookKey(secret)
    for (const body of bodies) {
      assert.equal(signWebhook(key, event.id, 1_764_000_000, body), library.sign(event.id, new Date(1_764_000_000_000), body))
    }
  }
})
