import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { WebSocketServer } from 'ws'
import { validateHttpSignature, validateUpgradeSignature } from '../../src/core/twilio/signature.ts'
import { TwilioRestError, TwilioStreams } from '../../src/core/twilio/rest.ts'
import { TRACK_LIMIT_ERROR_CODE, TwilioSimulator } from './twilio-simulator.ts'
import type { PlacedCall } from './twilio-simulator.ts'

const AUTH_TOKEN = 'simulator-streams-auth-token'
const API_KEY_SID = 'SK' + '5'.repeat(32)
const API_KEY_SECRET = 'simulator-api-key-secret'
const TEST_TIMEOUT_MS = 20_000

/** The fields of Twilio's messages these tests read. */
interface Message {
  event: string
  sequenceNumber?: string
  start: { streamSid: string, callSid: string, tracks: string[], customParameters: Record<string, string> }
  media: { track: string, chunk: string, timestamp: string }
}

interface Recorded {
  path: string
  signatureValid: boolean
  messages: Message[]
  closed: Promise<number>
}

/** A stand-in for the service: accepts every media upgrade and records what arrives, and status callbacks. */
async function startService (t: TestContext) {
  const streams: Recorded[] = []
  const callbacks: Array<Record<string, string>> = []
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
  let publicUrl = ''
  const server = createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const params = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()))
      const signature = request.headers['x-twilio-signature']
      if (validateHttpSignature(AUTH_TOKEN, typeof signature === 'string' ? signature : undefined, publicUrl + (request.url ?? ''), params)) callbacks.push(params)
      response.writeHead(204).end()
    })
  })
  server.on('upgrade', (request, socket, head) => {
    const signature = request.headers['x-twilio-signature']
    const signatureValid = validateUpgradeSignature(AUTH_TOKEN, typeof signature === 'string' ? signature : undefined, `${publicUrl.replace('http', 'ws')}${request.url ?? ''}`)
    wss.handleUpgrade(request, socket, head, (ws) => {
      const messages: Message[] = []
      ws.on('message', (data) => messages.push(JSON.parse(data.toString()) as Message))
      streams.push({ path: request.url ?? '', signatureValid, messages, closed: once(ws, 'close').then(([code]) => code as number) })
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  publicUrl = url
  t.after(async () => {
    for (const client of wss.clients) client.terminate()
    server.closeAllConnections()
    server.close()
  })
  const simulator = new TwilioSimulator({ serviceUrl: url, publicUrl: url, authToken: AUTH_TOKEN })
  simulator.addApiKey(API_KEY_SID, API_KEY_SECRET)
  const api = await simulator.listenApi()
  t.after(() => simulator.close())
  return { url, streams, callbacks, simulator, api }
}

function placed (simulator: TwilioSimulator, url: string): PlacedCall {
  const callSid = 'CA' + Math.random().toString(16).slice(2).padEnd(32, '0').slice(0, 32)
  return {
    callSid,
    accountSid: simulator.accountSid,
    status: 200,
    body: '',
    twiml: {
      stream: { name: 'medstream', url: `${url.replace('http', 'ws')}/twilio/media`, track: 'both_tracks', statusCallback: `${url}/twilio/stream-status`, statusCallbackMethod: 'POST', parameters: { token: 'v1.1.x' } },
      dial: null,
      redirect: null
    }
  }
}

/** μ-law silence, `ms` long. */
function silence (ms: number): Buffer {
  return Buffer.alloc(ms * 8, 0xff)
}

async function waitFor (condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

test('TwilioSimulator creates a second stream through the official helper with an API key and stops it by SID when asked over REST', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { url, streams, callbacks, simulator, api } = await startService(t)
  const call = placed(simulator, url)
  const live = simulator.startCall(call, { inbound: silence(20_000), outbound: silence(20_000), speed: 10 })
  t.after(() => live.hangUp())
  await waitFor(() => streams.length === 1 && streams[0]!.messages.length > 20)

  const rest = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: API_KEY_SECRET }, simulator.accountSid)
  const sid = await rest.create(call.callSid, { url: `${url.replace('http', 'ws')}/twilio/media`, name: 'medstream-2', track: 'both_tracks', statusCallback: `${url}/twilio/stream-status`, parameters: { handoff: 'h1.x', clinic: 'north' } })
  assert.match(sid, /^MZ[0-9a-f]{32}$/)
  const request = api.requests.at(-1)!
  assert.equal(request.path, `/2010-04-01/Accounts/${simulator.accountSid}/Calls/${call.callSid}/Streams.json`)
  assert.equal(request.username, API_KEY_SID)
  assert.equal(request.form.get('Url'), `${url.replace('http', 'ws')}/twilio/media`)
  assert.equal(request.form.get('Name'), 'medstream-2')
  assert.equal(request.form.get('Track'), 'both_tracks')
  assert.equal(request.form.get('Parameter1.Name'), 'handoff')
  assert.equal(request.form.get('Parameter2.Value'), 'north')

  await waitFor(() => streams.length === 2 && streams[1]!.messages.length > 10)
  const second = streams[1]!
  assert.equal(second.signatureValid, true)
  assert.deepEqual(second.messages.slice(0, 2).map((m) => m.event), ['connected', 'start'])
  const start = second.messages[1]!
  assert.equal(start.start.streamSid, sid)
  assert.equal(start.start.callSid, call.callSid)
  assert.deepEqual(start.start.customParameters, { handoff: 'h1.x', clinic: 'north' })
  assert.deepEqual(start.start.tracks, ['inbound', 'outbound'])
  // A fresh clock: the new stream's first media is near 0 while the first stream is seconds in.
  const firstMedia = second.messages.find((m) => m.event === 'media')!
  assert.ok(Number(firstMedia.media.timestamp) < 100, `first timestamp ${firstMedia.media.timestamp }`)
  assert.equal(firstMedia.sequenceNumber, '2')
  assert.equal(firstMedia.media.chunk, '1')
  const firstStreamLast = streams[0]!.messages.filter((m) => m.event === 'media').at(-1)!
  assert.ok(Number(firstStreamLast.media.timestamp) > 1000)
  const forked = live.streams.find((stream) => stream.sid === sid)!
  assert.ok(forked.zeroOnTimelineMs !== null && Math.abs(forked.zeroOnTimelineMs - (Number(firstStreamLast.media.timestamp) - Number(firstMedia.media.timestamp))) < 200)

  await rest.stop(call.callSid, sid)
  assert.equal(await second.closed, 1000)
  assert.equal(second.messages.at(-1)!.event, 'stop')
  assert.equal(live.streams[0]!.status, 'in-progress')
  await waitFor(() => callbacks.some((c) => c.StreamSid === sid && c.StreamEvent === 'stream-stopped'))
  assert.ok(callbacks.some((c) => c.StreamSid === sid && c.StreamEvent === 'stream-started' && c.StreamName === 'medstream-2'))
})

test('TwilioSimulator refuses REST calls with 401 and Twilio error 20003 when the credentials are wrong, and accepts the auth token', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { url, simulator, api } = await startService(t)
  const call = placed(simulator, url)
  const live = simulator.startCall(call, { inbound: silence(10_000), outbound: silence(10_000), speed: 10 })
  t.after(() => live.hangUp())
  const wrong = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: 'wrong' }, simulator.accountSid)
  const error = await wrong.create(call.callSid, { url: `${url.replace('http', 'ws')}/twilio/media`, name: 'a', track: 'both_tracks', parameters: {} }).catch((e: unknown) => e)
  assert.ok(error instanceof TwilioRestError)
  assert.equal(error.status, 401)
  assert.equal(error.code, 20003)
  assert.equal(error.retryable, false)
  const byToken = new TwilioStreams(new URL(api.url), { username: simulator.accountSid, password: AUTH_TOKEN }, simulator.accountSid)
  assert.match(await byToken.create(call.callSid, { url: `${url.replace('http', 'ws')}/twilio/media`, name: 'b', track: 'both_tracks', parameters: {} }), /^MZ/)
})

test('TwilioSimulator answers 400 with the track-limit code when a third both_tracks stream would exceed four tracks', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { url, simulator, api } = await startService(t)
  const call = placed(simulator, url)
  const live = simulator.startCall(call, { inbound: silence(10_000), outbound: silence(10_000), speed: 10 })
  t.after(() => live.hangUp())
  const rest = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: API_KEY_SECRET }, simulator.accountSid)
  const params = { url: `${url.replace('http', 'ws')}/twilio/media`, track: 'both_tracks' as const, parameters: {} }
  await rest.create(call.callSid, { ...params, name: 'medstream-2' })
  assert.equal(live.forkedTracks, 4)
  const error = await rest.create(call.callSid, { ...params, name: 'medstream-3' }).catch((e: unknown) => e)
  assert.ok(error instanceof TwilioRestError)
  assert.equal(error.status, 400)
  assert.equal(error.code, TRACK_LIMIT_ERROR_CODE)
  const duplicate = await rest.create(call.callSid, { ...params, name: 'medstream-2' }).catch((e: unknown) => e)
  assert.ok(duplicate instanceof TwilioRestError && duplicate.status === 400)
})

test('TwilioSimulator answers injected 429 and 500 failures once each, then creates again', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { url, simulator, api } = await startService(t)
  const call = placed(simulator, url)
  const live = simulator.startCall(call, { inbound: silence(10_000), outbound: silence(10_000), speed: 10 })
  t.after(() => live.hangUp())
  const rest = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: API_KEY_SECRET }, simulator.accountSid)
  simulator.injectRestFault({ status: 429 })
  simulator.injectRestFault({ status: 500 })
  const params = { url: `${url.replace('http', 'ws')}/twilio/media`, name: 'medstream-2', track: 'both_tracks' as const, parameters: {} }
  const first = await rest.create(call.callSid, params).catch((e: unknown) => e)
  assert.ok(first instanceof TwilioRestError && first.status === 429 && first.code === 20429 && first.retryable)
  const second = await rest.create(call.callSid, params).catch((e: unknown) => e)
  assert.ok(second instanceof TwilioRestError && second.status === 500 && second.retryable)
  assert.match(await rest.create(call.callSid, params), /^MZ/)
})

test('TwilioSimulator delays the new stream\'s first media on the call clock when firstMediaDelayMs is set', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { url, streams, simulator, api } = await startService(t)
  const call = placed(simulator, url)
  // Ten times real time: a 2 s delay on the call's clock is about 200 ms of waiting here.
  const live = simulator.startCall(call, { inbound: silence(30_000), outbound: silence(30_000), speed: 10, firstMediaDelayMs: 2000 })
  t.after(() => live.hangUp())
  await waitFor(() => streams.length === 1 && streams[0]!.messages.length > 5)
  const rest = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: API_KEY_SECRET }, simulator.accountSid)
  const createdAt = live.nowMs
  const realStart = performance.now()
  await rest.create(call.callSid, { url: `${url.replace('http', 'ws')}/twilio/media`, name: 'medstream-2', track: 'both_tracks', parameters: {} })
  await waitFor(() => streams[1]?.messages.some((m) => m.event === 'media') === true)
  const realWaitMs = performance.now() - realStart
  const firstMedia = streams[1]!.messages.find((m) => m.event === 'media')!
  // The stream's clock starts at its `start` (a moment after the create); its first audio is the
  // call's audio 2 s after the create.
  const zero = live.streams[1]!.zeroOnTimelineMs!
  const firstOnTimeline = zero + Number(firstMedia.media.timestamp)
  const due = live.timelineMs(createdAt) + 2000
  assert.ok(firstOnTimeline >= due && firstOnTimeline <= due + 300, `first media at ${firstOnTimeline} ms of the call, due at ${due}`)
  assert.ok(Number(firstMedia.media.timestamp) > 1000, 'the new stream\'s clock started before its first media')
  assert.ok(realWaitMs >= 150 && realWaitMs < 1500, `waited ${realWaitMs} ms of real time`)
  assert.ok(live.nowMs - createdAt >= 2000)
})

test('TwilioSimulator stops every stream of the call with stop and close 1000 when the call\'s audio ends', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const { url, streams, simulator, api } = await startService(t)
  const call = placed(simulator, url)
  const live = simulator.startCall(call, { inbound: silence(3000), outbound: silence(3000), speed: 10 })
  await waitFor(() => streams.length === 1)
  const rest = new TwilioStreams(new URL(api.url), { username: API_KEY_SID, password: API_KEY_SECRET }, simulator.accountSid)
  await rest.create(call.callSid, { url: `${url.replace('http', 'ws')}/twilio/media`, name: 'medstream-2', track: 'both_tracks', parameters: {} })
  await live.ended
  assert.equal(streams.length, 2)
  for (const stream of streams) {
    assert.equal(await stream.closed, 1000)
    assert.equal(stream.messages.at(-1)!.event, 'stop')
  }
})
