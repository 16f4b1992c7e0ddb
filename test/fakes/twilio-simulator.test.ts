import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'
import { parseTwilioMessage } from '../../src/core/twilio/messages.ts'
import { validateHttpSignature, validateUpgradeSignature } from '../../src/core/twilio/signature.ts'
import { buildStreamTwiml } from '../../src/core/twilio/twiml.ts'
import { SimulatedStreamError, TwilioSimulator } from './twilio-simulator.ts'
import type { PlacedCall } from './twilio-simulator.ts'

const AUTH_TOKEN = 'simulator-test-auth-token'
// The public side is https, the real listener plain loopback: signatures must follow the former.
const PUBLIC_URL = 'https://calls.example.org'
const STREAM_URL = 'wss://calls.example.org/twilio/media'
/** Every test here takes well under a second; a hang must fail, not stall the suite. */
const TEST_TIMEOUT_MS = 15_000

interface RecordedRequest { method: string, url: string, headers: IncomingHttpHeaders, params: Record<string, string>, signatureValid: boolean }
interface RecordedStream {
  headers: IncomingHttpHeaders
  path: string
  socket: WebSocket
  messages: string[]
  arrivalsMs: number[]
  closed: Promise<{ code: number }>
}

/** A stand-in for medstream's Twilio edge, built from the real core functions, on 127.0.0.1:0. */
async function startService (t: TestContext, options: { closeAfterStartWith?: number } = {}) {
  const requests: RecordedRequest[] = []
  const streams: RecordedStream[] = []
  const streamWaiters: ((stream: RecordedStream) => void)[] = []
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
  const server = createServer((request, response) => {
    readBody(request).then((body) => {
      const url = new URL(request.url ?? '/', 'http://local')
      const params = Object.fromEntries(new URLSearchParams(body))
      const signature = request.headers['x-twilio-signature']
      const signatureValid = validateHttpSignature(AUTH_TOKEN, typeof signature === 'string' ? signature : undefined, PUBLIC_URL + (request.url ?? ''), params)
      requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, params, signatureValid })
      if (!signatureValid) return response.writeHead(403).end()
      if (url.pathname === '/twilio/voice') {
        const { twiml } = buildStreamTwiml({
          streamUrl: STREAM_URL,
          statusCallbackUrl: `${PUBLIC_URL}/twilio/stream-status`,
          parameters: { token: 'v1.1.test', clinic: url.searchParams.get('clinic') ?? '', long: 'x'.repeat(600) },
          forwardTo: '+15550002222'
        })
        return response.writeHead(200, { 'content-type': 'text/xml' }).end(twiml)
      }
      response.writeHead(204).end()
    }, () => response.writeHead(400).end())
  })
  server.on('upgrade', (request, socket, head) => {
    const signature = request.headers['x-twilio-signature']
    if (!validateUpgradeSignature(AUTH_TOKEN, typeof signature === 'string' ? signature : undefined, STREAM_URL)) {
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    wss.handleUpgrade(request, socket, head, (ws) => {
      const startedAt = performance.now()
      const stream: RecordedStream = {
        headers: request.headers,
        path: request.url ?? '',
        socket: ws,
        messages: [],
        arrivalsMs: [],
        closed: once(ws, 'close').then(([code]) => ({ code: code as number }))
      }
      ws.on('message', (data, isBinary) => {
        stream.messages.push(isBinary ? `<binary ${(data as Buffer).length}>` : (data as Buffer).toString())
        stream.arrivalsMs.push(performance.now() - startedAt)
        if (options.closeAfterStartWith !== undefined && stream.messages.length === 2) ws.close(options.closeAfterStartWith)
      })
      streams.push(stream)
      streamWaiters.shift()?.(stream)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  t.after(async () => {
    for (const client of wss.clients) client.terminate()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }, { timeout: 5000 })
  // Bounded, so a refused upgrade fails the test instead of leaving it pending.
  const nextStream = (): Promise<RecordedStream> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no stream reached the service within 5 s')), 5000)
    streamWaiters.push((stream) => { clearTimeout(timer); resolve(stream) })
  })
  return { url: `http://127.0.0.1:${port}`, requests, streams, nextStream }
}

/** Polls until `predicate` holds; fails the test instead of hanging when it never does. */
async function waitFor (predicate: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

function readBody (request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => resolve(Buffer.concat(chunks).toString()))
    request.on('error', reject)
  })
}

/** μ-law bytes that differ per position, so every frame's payload can be traced to its slice. */
function audio (ms: number, seed: number): Buffer {
  const bytes = Buffer.alloc(ms * 8)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + seed) & 0xff
  return bytes
}

async function placedCall (t: TestContext, serviceOptions: { closeAfterStartWith?: number } = {}) {
  const service = await startService(t, serviceOptions)
  const simulator = new TwilioSimulator({ serviceUrl: service.url, publicUrl: PUBLIC_URL, authToken: AUTH_TOKEN })
  const call = await simulator.placeCall({ path: '/twilio/voice?clinic=north' })
  assert.equal(call.status, 200)
  return { service, simulator, call }
}

test('TwilioSimulator posts a signed voice webhook with Twilio headers and fields when placing a call', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const service = await startService(t)
  const simulator = new TwilioSimulator({ serviceUrl: service.url, publicUrl: PUBLIC_URL, authToken: AUTH_TOKEN, accountSid: `AC${'a'.repeat(32)}` })
  const call = await simulator.placeCall({ path: '/twilio/voice?clinic=north', callSid: `CA${'b'.repeat(32)}`, extraParams: { StirVerstat: 'TN-Validation-Passed-A' } })
  assert.equal(call.status, 200)
  assert.equal(call.callSid, `CA${'b'.repeat(32)}`)
  assert.equal(call.accountSid, `AC${'a'.repeat(32)}`)
  const [request] = service.requests
  assert.ok(request)
  assert.equal(request.method, 'POST')
  assert.equal(request.url, '/twilio/voice?clinic=north')
  assert.equal(request.signatureValid, true)
  assert.equal(request.headers['user-agent'], 'TwilioProxy/1.1')
  assert.equal(request.headers['content-type'], 'application/x-www-form-urlencoded; charset=UTF-8')
  assert.equal(request.headers['x-home-region'], 'us1')
  assert.match(String(request.headers['i-twilio-idempotency-token']), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  assert.deepEqual(request.params, {
    AccountSid: call.accountSid,
    ApiVersion: '2010-04-01',
    CallSid: call.callSid,
    CallStatus: 'ringing',
    Direction: 'inbound',
    From: '+15550001111',
    To: '+15550002222',
    Called: '+15550002222',
    Caller: '+15550001111',
    FromCity: 'SAN FRANCISCO', FromState: 'CA', FromZip: '94103', FromCountry: 'US',
    CallerCity: 'SAN FRANCISCO', CallerState: 'CA', CallerZip: '94103', CallerCountry: 'US',
    ToCity: 'OAKLAND', ToState: 'CA', ToZip: '94612', ToCountry: 'US',
    CalledCity: 'OAKLAND', CalledState: 'CA', CalledZip: '94612', CalledCountry: 'US',
    StirVerstat: 'TN-Validation-Passed-A'
  })
  assert.equal(call.twiml?.stream?.url, STREAM_URL)
  assert.equal(call.twiml?.stream?.parameters.clinic, 'north')
  assert.deepEqual(call.twiml?.dial, { number: '+15550002222' })
})

test('TwilioSimulator omits or replaces the webhook signature when told to', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const service = await startService(t)
  const simulator = new TwilioSimulator({ serviceUrl: service.url, publicUrl: PUBLIC_URL, authToken: AUTH_TOKEN })
  const unsigned = await simulator.placeCall({ signature: null })
  assert.equal(unsigned.status, 403)
  assert.equal(unsigned.twiml, null)
  assert.equal(service.requests[0]?.headers['x-twilio-signature'], undefined)
  const forged = await simulator.placeCall({ signature: 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' })
  assert.equal(forged.status, 403)
  assert.equal(service.requests[1]?.headers['x-twilio-signature'], 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=')
})

test('TwilioSimulator sends connected, start, interleaved media and stop in Twilio format when playing two tracks', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const inbound = audio(1000, 1)
  const outbound = audio(1000, 101)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound, outbound, speed: Infinity })
  await handle.opened
  const stream = await received
  const result = await handle.done
  assert.deepEqual(await stream.closed, { code: 1000 })
  assert.deepEqual(result, { code: 1000, reason: '', framesSent: 100 })

  // Upgrade request as captured in public traces of Twilio's upgrade.
  assert.equal(stream.path, '/twilio/media')
  assert.equal(stream.headers['user-agent'], 'Twilio.TmeWs/1.0')
  assert.equal(stream.headers['accept-encoding'], 'gzip')
  assert.equal(stream.headers['sec-websocket-extensions'], undefined)
  assert.equal(stream.headers.origin, undefined)
  assert.equal(validateUpgradeSignature(AUTH_TOKEN, String(stream.headers['x-twilio-signature']), STREAM_URL), true)

  const messages = stream.messages
  assert.equal(messages.length, 1 + 1 + 100 + 1)
  assert.equal(messages[0], '{"event":"connected","protocol":"Call","version":"1.0.0"}')
  assert.deepEqual(JSON.parse(messages[1] ?? ''), {
    event: 'start',
    sequenceNumber: '1',
    start: {
      accountSid: call.accountSid,
      streamSid: handle.streamSid,
      callSid: call.callSid,
      tracks: ['inbound', 'outbound'],
      mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
      // The 600-character parameter is one Twilio would drop.
      customParameters: { token: 'v1.1.test', clinic: 'north' }
    },
    streamSid: handle.streamSid
  })
  assert.match(handle.streamSid, /^MZ[0-9a-f]{32}$/)
  for (let i = 0; i < 100; i++) {
    const text = messages[2 + i] ?? ''
    const raw = JSON.parse(text)
    const frame = Math.floor(i / 2)
    const track = i % 2 === 0 ? 'inbound' : 'outbound'
    assert.equal(text, JSON.stringify(raw), 'compact JSON')
    assert.deepEqual(Object.keys(raw), ['event', 'sequenceNumber', 'media', 'streamSid'])
    assert.equal(raw.sequenceNumber, String(2 + i))
    assert.equal(raw.media.track, track)
    assert.equal(raw.media.chunk, String(frame + 1))
    assert.equal(raw.media.timestamp, String(150 + frame * 20))
    assert.equal(raw.media.payload.length, 216)
    const source = track === 'inbound' ? inbound : outbound
    assert.deepEqual(Buffer.from(raw.media.payload, 'base64'), source.subarray(frame * 160, frame * 160 + 160))
    assert.equal(parseTwilioMessage(text).event, 'media')
  }
  assert.deepEqual(JSON.parse(messages[102] ?? ''), {
    event: 'stop',
    sequenceNumber: '102',
    streamSid: handle.streamSid,
    stop: { accountSid: call.accountSid, callSid: call.callSid }
  })
})

test('TwilioSimulator pads the last frame and the shorter track with silence when audio lengths differ', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(50, 3), outbound: audio(20, 5), speed: Infinity, firstTimestampMs: 171 })
  const result = await handle.done
  const stream = await received
  assert.equal(result.framesSent, 6)
  const media = stream.messages.slice(2, 8).map((text) => JSON.parse(text))
  assert.deepEqual(media.map((m) => `${m.media.track}:${m.media.chunk}:${m.media.timestamp}`),
    ['inbound:1:171', 'outbound:1:171', 'inbound:2:191', 'outbound:2:191', 'inbound:3:211', 'outbound:3:211'])
  const lastInbound = Buffer.from(media[4].media.payload, 'base64')
  assert.equal(lastInbound.length, 160)
  assert.deepEqual(lastInbound.subarray(0, 80), audio(50, 3).subarray(320))
  assert.ok(lastInbound.subarray(80).every((byte) => byte === 0xff))
  assert.ok(Buffer.from(media[3].media.payload, 'base64').every((byte) => byte === 0xff))
})

test('TwilioSimulator streams only the inbound track when no outbound audio is given', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(200, 9), speed: Infinity })
  await handle.done
  const stream = await received
  const start = JSON.parse(stream.messages[1] ?? '')
  assert.deepEqual(start.start.tracks, ['inbound'])
  const media = stream.messages.slice(2, -1).map((text) => JSON.parse(text))
  assert.equal(media.length, 10)
  assert.ok(media.every((m, i) => m.media.track === 'inbound' && m.sequenceNumber === String(i + 2) && m.media.chunk === String(i + 1)))
})

test('TwilioSimulator paces frames by the wall clock when speed is 10', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(2000, 1), speed: 10 })
  await handle.opened
  const openedAt = performance.now()
  await handle.done
  const elapsedMs = performance.now() - openedAt
  const stream = await received
  // 2 s of audio at 10x is 200 ms; loose bounds for a loaded 2-core machine.
  assert.ok(elapsedMs >= 170, `took ${elapsedMs} ms`)
  assert.ok(elapsedMs < 1500, `took ${elapsedMs} ms`)
  // Spread out, not one burst: the middle frame arrives well after the first.
  const mediaArrivals = stream.arrivalsMs.slice(2, -1)
  assert.equal(mediaArrivals.length, 100)
  assert.ok((mediaArrivals[50] ?? 0) - (mediaArrivals[0] ?? 0) >= 70)
})

test('TwilioSimulator holds frames back then sends them in a burst when holdMs is set', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(600, 1), speed: 1, holdMs: [{ atMs: 100, forMs: 240 }] })
  await handle.done
  const stream = await received
  const arrivals = stream.arrivalsMs.slice(2, -1)
  assert.equal(arrivals.length, 30)
  const gaps = arrivals.slice(1).map((at, i) => at - (arrivals[i] ?? 0))
  const longest = Math.max(...gaps)
  assert.ok(longest >= 180, `longest gap ${longest} ms`)
  // The held frames (due at 120..340 ms) arrive together once the hold ends.
  const burstStart = gaps.indexOf(longest) + 1
  const burst = arrivals.slice(burstStart, burstStart + 11)
  assert.ok((burst.at(-1) ?? 0) - (burst[0] ?? 0) < 40, `burst spread ${(burst.at(-1) ?? 0) - (burst[0] ?? 0)} ms`)
  // Timestamps stay continuous: nothing was lost.
  const timestamps = stream.messages.slice(2, -1).map((text) => Number(JSON.parse(text).media.timestamp))
  assert.deepEqual(timestamps, Array.from({ length: 30 }, (_, i) => 150 + i * 20))
})

test('TwilioSimulator skips frames so timestamps jump when dropFrames is set', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, {
    inbound: audio(600, 1),
    outbound: audio(600, 2),
    speed: Infinity,
    dropFrames: [{ track: 'inbound', fromMs: 200, toMs: 400 }]
  })
  const result = await handle.done
  const stream = await received
  assert.equal(result.framesSent, 60 - 10)
  const media = stream.messages.slice(2, -1).map((text) => JSON.parse(text).media)
  const inbound = media.filter((m) => m.track === 'inbound')
  const outbound = media.filter((m) => m.track === 'outbound')
  assert.equal(outbound.length, 30)
  assert.equal(inbound.length, 20)
  assert.deepEqual(inbound.slice(8, 12).map((m) => [m.chunk, m.timestamp]), [['9', '310'], ['10', '330'], ['11', '550'], ['12', '570']])
  assert.deepEqual(Buffer.from(inbound[10].payload, 'base64'), audio(600, 1).subarray(400 * 8, 420 * 8))
  const sequenceNumbers = stream.messages.slice(1).map((text) => Number(JSON.parse(text).sequenceNumber))
  assert.deepEqual(sequenceNumbers, Array.from({ length: 52 }, (_, i) => i + 1))
})

test('TwilioSimulator rejects opened with the HTTP status when the upgrade signature is wrong or missing', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { simulator, call } = await placedCall(t)
  for (const signature of ['AAAAAAAAAAAAAAAAAAAAAAAAAAA=', null]) {
    const handle = simulator.openStream(call, { inbound: audio(100, 1), signature })
    await assert.rejects(handle.opened, (error: unknown) => error instanceof SimulatedStreamError && error.statusCode === 403 && error.twilioCode === 31920)
    assert.deepEqual(await handle.done, { code: 1006, reason: 'upgrade refused with HTTP 403', framesSent: 0 })
  }
})

test('TwilioSimulator refuses to open a stream when the TwiML url carries a query string', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { simulator, call } = await placedCall(t)
  const twiml = call.twiml
  assert.ok(twiml?.stream)
  const withQuery: PlacedCall = { ...call, twiml: { ...twiml, stream: { ...twiml.stream, url: `${STREAM_URL}?token=x` } } }
  const handle = simulator.openStream(withQuery, { inbound: audio(100, 1) })
  await assert.rejects(handle.opened, (error: unknown) => error instanceof SimulatedStreamError && error.statusCode === null && error.twilioCode === 31920)
  assert.equal((await handle.done).framesSent, 0)
})

test('TwilioSimulator reports the service close code when the service closes mid-stream', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { simulator, call } = await placedCall(t, { closeAfterStartWith: 1008 })
  const handle = simulator.openStream(call, { inbound: audio(5000, 1), speed: 1 })
  const result = await handle.done
  assert.equal(result.code, 1008)
  assert.ok(result.framesSent < 10, `sent ${result.framesSent}`)
})

test('TwilioSimulator sends only connected and raw frames when sendStart is false', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(100, 1), sendStart: false })
  await handle.opened
  const stream = await received
  handle.sendRaw('not json')
  handle.sendRaw(Buffer.from([1, 2, 3]))
  await waitFor(() => stream.messages.length >= 3, 'three messages')
  handle.close(1000)
  assert.equal((await handle.done).code, 1000)
  assert.deepEqual(stream.messages, ['{"event":"connected","protocol":"Call","version":"1.0.0"}', 'not json', '<binary 3>'])
})

test('TwilioSimulator keeps the socket open after stop when closeAfterStop is false', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(100, 1), speed: Infinity, closeAfterStop: false })
  const stream = await received
  await waitFor(() => stream.messages.at(-1)?.includes('"stop"') === true, 'stop')
  const closedEarly = await Promise.race([handle.done.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 100))])
  assert.equal(closedEarly, false)
  stream.socket.close(1000)
  assert.equal((await handle.done).code, 1000)
})

test('TwilioSimulator destroys the TCP connection without a close frame when aborted', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, { inbound: audio(5000, 1), speed: 1 })
  const stream = await received
  handle.abort()
  assert.deepEqual(await stream.closed, { code: 1006 })
  assert.equal((await handle.done).code, 1006)
})

test('TwilioSimulator overrides start identity and parameters when told to', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const received = service.nextStream()
  const handle = simulator.openStream(call, {
    inbound: audio(20, 1),
    speed: Infinity,
    callSid: 'CAother',
    accountSid: 'ACother',
    streamSid: 'MZfixed',
    customParameters: { token: 'forged' }
  })
  await handle.done
  const stream = await received
  const start = JSON.parse(stream.messages[1] ?? '')
  assert.equal(handle.streamSid, 'MZfixed')
  assert.deepEqual([start.start.callSid, start.start.accountSid, start.start.streamSid, start.start.customParameters], ['CAother', 'ACother', 'MZfixed', { token: 'forged' }])
  assert.deepEqual(JSON.parse(stream.messages.at(-1) ?? '').stop, { accountSid: 'ACother', callSid: 'CAother' })
})

test('TwilioSimulator posts a signed stream status callback when postStatus is called', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const status = await simulator.postStatus(call, 'MZ123', 'stream-error', '31920 Handshake Error')
  assert.equal(status, 204)
  const request = service.requests.at(-1)
  assert.ok(request)
  assert.equal(request.url, '/twilio/stream-status')
  assert.equal(request.signatureValid, true)
  assert.deepEqual(Object.keys(request.params), ['AccountSid', 'CallSid', 'StreamSid', 'StreamName', 'StreamEvent', 'Timestamp', 'StreamError'])
  assert.equal(request.params.StreamName, 'medstream')
  assert.equal(request.params.StreamEvent, 'stream-error')
  assert.equal(request.params.CallSid, call.callSid)
  assert.match(request.params.Timestamp ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
})

test('TwilioSimulator posts stream-started and stream-stopped when statusCallbacks is on', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { service, simulator, call } = await placedCall(t)
  const handle = simulator.openStream(call, { inbound: audio(100, 1), speed: Infinity, statusCallbacks: true })
  await handle.done
  await waitFor(() => service.requests.length >= 3, 'two status callbacks')
  const events = service.requests.slice(1).map((request) => [request.params.StreamEvent, request.params.StreamSid, request.signatureValid])
  assert.deepEqual(events.sort(), [['stream-started', handle.streamSid, true], ['stream-stopped', handle.streamSid, true]])
})
