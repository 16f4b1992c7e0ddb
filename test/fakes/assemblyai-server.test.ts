import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { makeSelfSignedCertificate } from '../../bench/lib/tls.ts'
import { pcmFrames, pcmSilence, pcmTone, startFakeAssemblyAi } from './assemblyai-server.ts'
import type { FakeAssemblyAiOptions } from './assemblyai-server.ts'
import { until } from '../helpers/until.ts'

// The fake is what every other AssemblyAI test trusts, so its protocol behaviour is checked here
// with a bare `ws` client, independent of the session client.

const KEY = 'fake-key'
const GOOD_QUERY = 'speech_model=u3-rt-pro&sample_rate=8000&encoding=pcm_s16le&domain=medical-v1&speaker_labels=true&max_speakers=2&min_turn_silence=300&max_turn_silence=1200'

interface Client {
  ws: WebSocket
  messages: Array<Record<string, unknown>>
  closed: Promise<{ code: number, reason: string }>
  opened: Promise<void>
}

async function fake (t: TestContext, options: Partial<FakeAssemblyAiOptions> = {}) {
  const server = await startFakeAssemblyAi({ apiKeys: [KEY], ...options })
  t.after(() => server.close())
  return server
}

function connect (url: string, query: string, headers: Record<string, string> = { Authorization: KEY }): Client {
  const ws = new WebSocket(`${url}?${query}`, { headers })
  const messages: Array<Record<string, unknown>> = []
  ws.on('message', (data) => { messages.push(JSON.parse(String(data)) as Record<string, unknown>) })
  const closed = new Promise<{ code: number, reason: string }>((resolve) => {
    ws.on('close', (code, reason) => { resolve({ code, reason: reason.toString() }) })
  })
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => { resolve() })
    ws.once('error', reject)
  })
  return { ws, messages, closed, opened }
}

function types (client: Client): unknown[] {
  return client.messages.map((message) => message.type)
}

function stream (client: Client, audio: Buffer, frameMs = 50): void {
  for (const frame of pcmFrames(audio, frameMs)) client.ws.send(frame)
}

test('fake upgrades then refuses with Error 1008 when the Authorization header is missing, Bearer or unknown', async (t) => {
  const server = await fake(t)
  const cases: Array<[Record<string, string>, string]> = [
    [{}, 'Unauthorized Connection: Missing Authorization header'],
    [{ Authorization: `Bearer ${KEY}` }, 'Unauthorized Connection: Invalid API key'],
    [{ Authorization: 'other' }, 'Unauthorized Connection: Invalid API key']
  ]
  for (const [headers, error] of cases) {
    const client = connect(server.url, GOOD_QUERY, headers)
    await client.opened
    assert.deepEqual(await client.closed, { code: 1008, reason: 'See Error message for details' })
    assert.deepEqual(client.messages, [{ type: 'Error', error_code: 1008, error }])
  }
})

test('fake serves wss with the given certificate, refused by a client that does not trust it, when tls is set', async (t) => {
  const certificate = makeSelfSignedCertificate()
  t.after(() => { certificate.remove() })
  const server = await fake(t, { tls: { cert: certificate.cert, key: certificate.key } })
  assert.match(server.url, /^wss:\/\/127\.0\.0\.1:\d+\/v3\/ws$/)
  const untrusting = new WebSocket(`${server.url}?${GOOD_QUERY}`, { headers: { Authorization: KEY } })
  const refused = await new Promise<Error>((resolve) => { untrusting.once('error', resolve) })
  assert.match(refused.message, /self-signed certificate/)
  const trusting = new WebSocket(`${server.url}?${GOOD_QUERY}`, { headers: { Authorization: KEY }, ca: certificate.cert })
  const begin = await new Promise<Record<string, unknown>>((resolve, reject) => {
    trusting.once('message', (data) => { resolve(JSON.parse(String(data)) as Record<string, unknown>) })
    trusting.once('error', reject)
  })
  trusting.close()
  assert.equal(begin.type, 'Begin')
  assert.equal(server.sessions.length, 1, 'the refused handshake never reached the WebSocket server')
})

test('fake refuses with Error 3006 and no Begin when a connection parameter is invalid', async (t) => {
  const server = await fake(t)
  const bad = [
    'speech_model=u3-pro&sample_rate=8000',
    'sample_rate=8000',
    'speech_model=u3-rt-pro&sample_rate=7000',
    'speech_model=u3-rt-pro&sample_rate=8000&encoding=flac',
    'speech_model=u3-rt-pro&sample_rate=8000&speaker_labels=true&max_speakers=0',
    'speech_model=u3-rt-pro&sample_rate=8000&domain=legal-v1',
    'speech_model=u3-rt-pro&sample_rate=8000&keyterms_prompt=metoprolol',
    `speech_model=u3-rt-pro&sample_rate=8000&keyterms_prompt=${encodeURIComponent(JSON.stringify(Array.from({ length: 101 }, (_, i) => `t${i}`)))}`
  ]
  for (const query of bad) {
    const client = connect(server.url, query)
    assert.equal((await client.closed).code, 3006, query)
    assert.equal(client.messages.length, 1, query)
    assert.equal(client.messages[0]?.error_code, 3006)
    assert.match(String(client.messages[0]?.error), /^User Input Validation Error: /)
  }
})

test('fake sends Begin with a UUID, a 3 h expiry and the configuration echo when the request is valid', async (t) => {
  const server = await fake(t)
  const client = connect(server.url, `${GOOD_QUERY}&unknown_param=1&speaker_labels=True`)
  await until(() => client.messages.length === 1)
  const begin = client.messages[0] as { type: string, id: string, expires_at: number, configuration: Record<string, unknown> }
  assert.equal(begin.type, 'Begin')
  assert.match(begin.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
  assert.ok(Math.abs(begin.expires_at - (Date.now() / 1000 + 10800)) < 5)
  assert.equal(begin.configuration.model, 'u3-rt-pro')
  assert.equal(begin.configuration.domain, 'medical-v1')
  assert.equal(begin.configuration.speaker_labels, true)
  assert.equal(begin.configuration.voice_focus, null)
  client.ws.close()
})

test('fake closes with 3007 at once when a frame holds more than 1000 ms', async (t) => {
  const server = await fake(t)
  const client = connect(server.url, GOOD_QUERY)
  await client.opened
  client.ws.send(pcmSilence(1200))
  assert.equal((await client.closed).code, 3007)
  assert.equal(client.messages.at(-1)?.error, 'Input Duration Error: Input Duration Violation: 1200.0 ms. Expected between 50 and 1000 ms')
  assert.equal(server.sessions[0]?.frameBytes.length, 1)
})

test('fake tolerates a few short frames but closes with 3007 when they continue', async (t) => {
  const server = await fake(t)
  const client = connect(server.url, GOOD_QUERY)
  await client.opened
  for (let i = 0; i < 3; i++) client.ws.send(pcmSilence(20))
  client.ws.send(pcmSilence(50))
  for (let i = 0; i < 3; i++) client.ws.send(pcmSilence(20))
  client.ws.send(pcmSilence(50))
  await until(() => server.sessions[0]?.frameBytes.length === 8)
  assert.equal(server.sessions[0]?.closed, false)
  for (let i = 0; i < 4; i++) client.ws.send(pcmSilence(20))
  assert.equal((await client.closed).code, 3007)
})

test('fake closes with 3006 when a text frame is not JSON or names an unknown type', async (t) => {
  const server = await fake(t)
  const cases: Array<[string, RegExp]> = [['{nope', /Invalid JSON/], ['{"type":"Bogus"}', /^Invalid Message Type: Bogus$/], ['[]', /^Invalid Message: \[\]$/]]
  for (const [text, error] of cases) {
    const client = connect(server.url, GOOD_QUERY)
    await client.opened
    client.ws.send(text)
    assert.equal((await client.closed).code, 3006)
    assert.match(String(client.messages.at(-1)?.error), error)
  }
})

test('fake records KeepAlive and UpdateConfiguration without replying', async (t) => {
  const server = await fake(t)
  const client = connect(server.url, GOOD_QUERY)
  await until(() => client.messages.length === 1)
  client.ws.send(JSON.stringify({ type: 'KeepAlive' }))
  client.ws.send(JSON.stringify({ type: 'UpdateConfiguration', keyterms_prompt: ['x'], max_turn_silence: 2000 }))
  await until(() => server.sessions[0]?.messages.length === 2)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(types(client), ['Begin'])
  client.ws.send(JSON.stringify({ type: 'UpdateConfiguration', prompt: 'p'.repeat(1751) }))
  assert.equal((await client.closed).code, 3006)
})

test('fake sends a final only after min_turn_silence of audio has been received', async (t) => {
  const server = await fake(t, { partialsPerTurn: 0 })
  const client = connect(server.url, GOOD_QUERY)
  await client.opened
  stream(client, Buffer.concat([pcmTone(400), pcmSilence(250)]))
  await until(() => server.sessions[0]?.frameBytes.length === 13)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(types(client), ['Begin'])
  stream(client, pcmSilence(50))
  await until(() => client.messages.length === 3)
  assert.deepEqual(types(client), ['Begin', 'SpeechStarted', 'Turn'])
  const final = client.messages[2] as { end_of_turn: boolean, turn_is_formatted: boolean, end_of_turn_confidence: number, transcript: string, utterance: string, speaker_label: string }
  assert.deepEqual([final.end_of_turn, final.turn_is_formatted, final.end_of_turn_confidence, final.transcript, final.utterance, final.speaker_label], [true, true, 1, 'Utterance 1.', 'Utterance 1.', 'A'])
  client.ws.close()
})

test('fake waits for max_turn_silence when the scripted text does not end a sentence', async (t) => {
  const server = await fake(t, { partialsPerTurn: 0, script: [{ text: 'my name is' }] })
  const client = connect(server.url, GOOD_QUERY)
  await client.opened
  stream(client, Buffer.concat([pcmTone(400), pcmSilence(1000)]))
  await until(() => server.sessions[0]?.frameBytes.length === 28)
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.deepEqual(types(client), ['Begin'])
  stream(client, pcmSilence(200))
  await until(() => client.messages.length === 3)
  client.ws.close()
})

test('fake ends the open turn when ForceEndpoint arrives', async (t) => {
  const server = await fake(t, { partialsPerTurn: 0 })
  const client = connect(server.url, GOOD_QUERY)
  await client.opened
  stream(client, pcmTone(500))
  await until(() => server.sessions[0]?.frameBytes.length === 10)
  client.ws.send(JSON.stringify({ type: 'ForceEndpoint' }))
  await until(() => client.messages.length === 3)
  assert.equal(client.messages[2]?.end_of_turn, true)
  assert.equal(server.sessions[0]?.turnsSent, 1)
  client.ws.close()
})

test('fake omits speaker labels when speaker_labels is false and detects speech in µ-law audio', async (t) => {
  const server = await fake(t, { partialsPerTurn: 2 })
  const client = connect(server.url, 'speech_model=u3-rt-pro&sample_rate=8000&encoding=pcm_mulaw&min_turn_silence=200')
  await client.opened
  // 0x80 is a loud µ-law code, 0xFF is silence: a crude square wave is enough for an energy detector.
  const loud = Buffer.alloc(8000 * 1.2, 0)
  for (let i = 0; i < loud.length; i++) loud[i] = i % 2 === 0 ? 0x80 : 0x00
  const audio = Buffer.concat([loud, Buffer.alloc(8000 * 0.3, 0xff)])
  for (let offset = 0; offset < audio.length; offset += 400) client.ws.send(audio.subarray(offset, offset + 400))
  await until(() => types(client).filter((type) => type === 'Turn').length === 3)
  const turns = client.messages.filter((message) => message.type === 'Turn')
  assert.deepEqual(turns.map((turn) => turn.end_of_turn), [false, false, true])
  const final = turns[2] as { speaker_label?: string, words: Array<{ speaker?: string, end: number }> }
  assert.equal(final.speaker_label, undefined)
  assert.ok(final.words.every((word) => word.speaker === undefined))
  assert.equal(final.words.at(-1)?.end, 1200)
  client.ws.close()
})

test('fake answers 404 when the path is not /v3/ws', async (t) => {
  const server = await fake(t)
  const client = connect(server.url.replace('/v3/ws', '/v2/realtime/ws'), GOOD_QUERY)
  await assert.rejects(client.opened, /404/)
})

test('fake keeps every audio byte and frame arrival in order when audio is streamed', async (t) => {
  const server = await fake(t)
  const client = connect(server.url, GOOD_QUERY)
  await client.opened
  const audio = Buffer.concat([pcmTone(300), pcmSilence(200)])
  stream(client, audio, 100)
  await until(() => server.sessions[0]?.frameBytes.length === 5)
  const session = server.sessions[0]
  assert.ok(session)
  assert.ok(session.audio.equals(audio))
  assert.deepEqual(session.frameBytes, [1600, 1600, 1600, 1600, 1600])
  assert.ok(session.frameArrivals.every((at, i) => i === 0 || at >= (session.frameArrivals[i - 1] ?? 0)))
  client.ws.close()
})
