import { test } from 'node:test'
import type { TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { WebSocketServer } from 'ws'
import type { WebSocket } from 'ws'
import { AssemblyAiSession } from '../../../src/core/assemblyai/session.ts'
import type { SessionOptions } from '../../../src/core/assemblyai/protocol.ts'
import type { SessionClosed } from '../../../src/core/assemblyai/session.ts'
import type { SpeakerRevision, SpeechStarted, Turn, Warning } from '../../../src/core/assemblyai/protocol.ts'
import { UpstreamError } from '../../../src/core/errors.ts'
import { pcmFrames, pcmSilence, pcmTone, startFakeAssemblyAi } from '../../fakes/assemblyai-server.ts'
import type { FakeAssemblyAiOptions } from '../../fakes/assemblyai-server.ts'
import { until } from '../../helpers/until.ts'

const KEY = 'test-key-1'

async function fake (t: TestContext, options: Partial<FakeAssemblyAiOptions> = {}) {
  const server = await startFakeAssemblyAi({ apiKeys: [KEY], ...options })
  t.after(() => server.close())
  return server
}

function sessionOptions (url: string, overrides: Partial<SessionOptions> = {}): SessionOptions {
  return {
    url,
    apiKey: KEY,
    speechModel: 'u3-rt-pro',
    domain: 'medical-v1',
    speakerLabels: true,
    maxSpeakers: 2,
    keyterms: ['metoprolol', 'Dr. Patel'],
    minTurnSilenceMs: 400,
    maxTurnSilenceMs: 1500,
    sampleRate: 8000,
    connectTimeoutMs: 3000,
    ...overrides
  }
}

/** Collects every event of a session, and its one `closed`. */
function record (session: AssemblyAiSession) {
  const events = {
    order: [] as string[],
    speechStarted: [] as SpeechStarted[],
    partials: [] as Turn[],
    turns: [] as Turn[],
    revisions: [] as SpeakerRevision[],
    warnings: [] as Warning[],
    closedCount: 0,
    closed: null as SessionClosed | null
  }
  session.on('speechStarted', (m) => { events.order.push('speechStarted'); events.speechStarted.push(m) })
  session.on('partial', (m) => { events.order.push(`partial:${m.turn_order}`); events.partials.push(m) })
  session.on('turn', (m) => { events.order.push(`turn:${m.turn_order}`); events.turns.push(m) })
  session.on('speakerRevision', (m) => { events.order.push('speakerRevision'); events.revisions.push(m) })
  session.on('warning', (m) => { events.order.push('warning'); events.warnings.push(m) })
  session.on('closed', (c) => { events.order.push('closed'); events.closedCount++; events.closed = c })
  return events
}

function sendAll (session: AssemblyAiSession, audio: Buffer, frameMs = 50): number {
  let sent = 0
  for (const frame of pcmFrames(audio, frameMs)) if (session.sendAudio(frame)) sent++
  return sent
}

async function rejection (promise: Promise<unknown>): Promise<UpstreamError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof UpstreamError, 'rejects with an UpstreamError')
    return err
  }
  assert.fail('expected a rejection')
}

test('session opens with the medical query and the raw Authorization header when connecting', async (t) => {
  const server = await fake(t)
  const session = new AssemblyAiSession(sessionOptions(server.url))
  t.after(() => { session.close() })
  const begin = await session.connect()
  const fakeSession = server.sessions[0]
  assert.ok(fakeSession)
  assert.equal(begin.id, fakeSession.id)
  assert.equal(session.id, fakeSession.id)
  assert.ok(Math.abs((session.expiresAt ?? 0) - (Date.now() / 1000 + 10800)) < 5)
  assert.equal(begin.configuration?.domain, 'medical-v1')
  assert.equal(begin.configuration?.model, 'u3-rt-pro')
  const q = fakeSession.query
  assert.equal(q.get('speech_model'), 'u3-rt-pro')
  assert.equal(q.get('sample_rate'), '8000')
  assert.equal(q.get('encoding'), 'pcm_s16le')
  assert.equal(q.get('domain'), 'medical-v1')
  assert.equal(q.get('speaker_labels'), 'true')
  assert.equal(q.get('max_speakers'), '2')
  assert.deepEqual(JSON.parse(q.get('keyterms_prompt') ?? 'null'), ['metoprolol', 'Dr. Patel'])
  assert.equal(q.get('min_turn_silence'), '400')
  assert.equal(q.get('max_turn_silence'), '1500')
  assert.equal(fakeSession.headers.authorization, KEY)
})

test('session emits speechStarted, a partial, then one final per turn with word times when speech bursts are separated by silence', async (t) => {
  const server = await fake(t, {
    script: [{ text: 'I take metoprolol, 50 milligrams twice a day.', speaker: 'B' }, { text: 'Okay.', speaker: 'A' }]
  })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  t.after(() => { session.close() })
  const events = record(session)
  await session.connect()
  sendAll(session, Buffer.concat([pcmSilence(200), pcmTone(1000), pcmSilence(600), pcmTone(500), pcmSilence(600)]))
  await until(() => events.turns.length === 2)

  const [first, second] = events.turns
  assert.ok(first && second)
  assert.equal(first.turn_order, 0)
  assert.equal(first.transcript, 'I take metoprolol, 50 milligrams twice a day.')
  assert.equal(first.end_of_turn, true)
  assert.equal(first.speaker_label, 'B')
  assert.equal(first.words.length, 8)
  assert.equal(first.words[0]?.start, 200)
  assert.equal(first.words.at(-1)?.end, 1200)
  assert.ok(first.words.every((w) => w.word_is_final && w.speaker === 'B' && w.confidence > 0 && w.confidence <= 1))
  assert.equal(second.transcript, 'Okay.')
  assert.equal(second.speaker_label, 'A')
  assert.equal(second.words[0]?.start, 1800)
  assert.deepEqual(events.order, ['speechStarted', 'partial:0', 'turn:0', 'speechStarted', 'partial:1', 'turn:1'])
  assert.equal(events.speechStarted[0]?.timestamp, 200)
  const partial = events.partials[0]
  assert.ok(partial)
  assert.equal(partial.end_of_turn, false)
  assert.equal(partial.utterance, '')
  assert.equal(partial.speaker_label, undefined)
  assert.ok(partial.words.every((w) => !w.word_is_final))
})

test('session flushes the last turn, the SpeakerRevision and Termination then closes 1000 when terminated', async (t) => {
  const server = await fake(t, { speakerRevision: true, partialsPerTurn: 0 })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  // The second burst has no trailing silence: only Terminate can end that turn.
  sendAll(session, Buffer.concat([pcmTone(600), pcmSilence(500), pcmTone(700)]))
  await until(() => events.turns.length === 1 && (server.sessions[0]?.audio.length ?? 0) === 28800)
  assert.equal(events.turns.length, 1)

  const termination = await session.terminate(3000)
  assert.ok(termination)
  assert.equal(termination.audio_duration_seconds, 2)
  assert.ok(Number.isInteger(termination.session_duration_seconds))
  assert.deepEqual(events.order, ['speechStarted', 'turn:0', 'speechStarted', 'turn:1', 'speakerRevision', 'closed'])
  assert.equal(events.turns[1]?.transcript, 'Utterance 2.')
  const revision = events.revisions[0]?.revisions[0]
  assert.equal(revision?.turn_order, 0)
  assert.equal(revision?.speaker_label, 'B')
  assert.ok(revision?.words.every((w) => w.speaker === 'B'))
  assert.deepEqual(events.closed, { code: 1000, error: null, termination })
  assert.deepEqual(server.sessions[0]?.messages, [{ type: 'Terminate' }])
  await until(() => server.sessions[0]?.closed === true)
  assert.equal(server.sessions[0]?.closeCode, 1000)
  assert.equal(session.sendAudio(pcmSilence(50)), false)
})

test('session terminate closes the socket and resolves null when the server never answers', async (t) => {
  const server = await fake(t, { faults: () => ({ ignoreTerminate: true }) })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  const started = Date.now()
  assert.equal(await session.terminate(200), null)
  assert.ok(Date.now() - started < 2000)
  assert.equal(events.closedCount, 1)
  assert.equal(events.closed?.error, null)
})

test('session rejects with a non-retryable 1008 when the API key is invalid or sent as Bearer', async (t) => {
  const server = await fake(t)
  for (const apiKey of ['wrong-key', `Bearer ${KEY}`]) {
    const session = new AssemblyAiSession(sessionOptions(server.url, { apiKey }))
    const events = record(session)
    const error = await rejection(session.connect())
    assert.equal(error.closeCode, 1008)
    assert.equal(error.retryable, false)
    assert.match(error.message, /Invalid API key/)
    assert.equal(error.message.includes(apiKey), false)
    await until(() => events.closed !== null)
    assert.equal(events.closed?.code, 1008)
    assert.equal(events.closed?.error, error)
    assert.equal(events.closed?.termination, null)
  }
})

test('session rejects with a non-retryable 3006 when a connection parameter is invalid', async (t) => {
  const server = await fake(t)
  for (const overrides of [{ speechModel: 'u3-pro' }, { maxSpeakers: 11 }, { sampleRate: 7000 }, { domain: 'legal-v1' }]) {
    const session = new AssemblyAiSession(sessionOptions(server.url, overrides))
    const error = await rejection(session.connect())
    assert.equal(error.closeCode, 3006, JSON.stringify(overrides))
    assert.equal(error.retryable, false)
    assert.match(error.message, /User Input Validation Error/)
  }
  assert.equal(server.sessions.length, 4)
})

test('session closes with a non-retryable 3007 when audio is sent in 20 ms chunks', async (t) => {
  const server = await fake(t)
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  sendAll(session, pcmSilence(1000), 20)
  await until(() => events.closed !== null)
  assert.equal(events.closed?.code, 3007)
  assert.equal(events.closed?.error?.closeCode, 3007)
  assert.equal(events.closed?.error?.retryable, false)
  assert.match(events.closed?.error?.message ?? '', /20\.0 ms\. Expected between 50 and 1000 ms/)
  assert.equal(events.closed?.termination, null)
})

test('session reports a retryable error when the server rate-limits with 1008 or 3009', async (t) => {
  const plans = [
    { code: 1008 as const, error: 'Unauthorized Connection: Too many concurrent sessions' },
    { code: 3009 as const, error: 'Too many concurrent sessions' }
  ]
  const server = await fake(t, { faults: (index) => { const rejectWith = plans[index]; return rejectWith === undefined ? {} : { rejectWith } } })
  for (const plan of plans) {
    const error = await rejection(new AssemblyAiSession(sessionOptions(server.url)).connect())
    assert.equal(error.closeCode, plan.code)
    assert.equal(error.retryable, true)
  }
})

test('session reports a retryable 1011 when the server closes before Begin without an Error frame', async (t) => {
  const server = await fake(t, { faults: () => ({ rejectWith: { code: 1011, error: 'Internal error' } }) })
  const error = await rejection(new AssemblyAiSession(sessionOptions(server.url)).connect())
  assert.equal(error.closeCode, 1011)
  assert.equal(error.retryable, true)
})

test('session emits closed with a retryable 3005 and no Termination when the server fails mid-session', async (t) => {
  const server = await fake(t, { faults: () => ({ errorAfterAudioMs: { atMs: 500, code: 3005, error: 'Session Cancelled: An error occurred' } }) })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  sendAll(session, pcmSilence(1000))
  await until(() => events.closed !== null)
  assert.equal(events.closed?.code, 3005)
  assert.equal(events.closed?.error?.closeCode, 3005)
  assert.equal(events.closed?.error?.retryable, true)
  assert.equal(events.closed?.termination, null)
  assert.equal(await session.terminate(100), null)
  assert.equal(events.closedCount, 1)
})

test('session emits closed with a retryable 3008 when the session reaches its duration cap', async (t) => {
  const server = await fake(t, { faults: () => ({ sessionCapMs: 300 }) })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  sendAll(session, pcmSilence(500))
  await until(() => events.closed !== null)
  assert.equal(events.closed?.error?.closeCode, 3008)
  assert.equal(events.closed?.error?.retryable, true)
})

test('session reports a retryable network error and refuses audio when the TCP connection drops', async (t) => {
  const server = await fake(t, { faults: () => ({ dropAfterAudioMs: 300 }) })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  sendAll(session, pcmSilence(400))
  await until(() => events.closed !== null)
  assert.equal(events.closed?.code, 1006)
  assert.equal(events.closed?.error?.closeCode, 'network')
  assert.equal(events.closed?.error?.retryable, true)
  assert.equal(session.sendAudio(pcmSilence(50)), false)
})

test('session rejects with a retryable network error when nothing listens on the port', async (t) => {
  const server = await fake(t)
  const url = server.url
  await server.close()
  const error = await rejection(new AssemblyAiSession(sessionOptions(url)).connect())
  assert.equal(error.closeCode, 'network')
  assert.equal(error.retryable, true)
})

test('session rejects with a retryable network error when Begin does not arrive in time', async (t) => {
  const server = await fake(t, { faults: () => ({ beginDelayMs: 2000 }) })
  const session = new AssemblyAiSession(sessionOptions(server.url, { connectTimeoutMs: 150 }))
  const events = record(session)
  const started = Date.now()
  const error = await rejection(session.connect())
  assert.ok(Date.now() - started < 1500)
  assert.equal(error.closeCode, 'network')
  assert.equal(error.retryable, true)
  await until(() => events.closed !== null)
  assert.equal(events.closed?.error, error)
})

test('session classifies the HTTP status when the upgrade is refused', async (t) => {
  const http = createServer()
  http.on('upgrade', (req, socket) => {
    const status = req.url?.includes('speech_model=busy') === true ? '503 Service Unavailable' : '401 Unauthorized'
    socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
  })
  await new Promise<void>((resolve) => { http.listen(0, '127.0.0.1', resolve) })
  t.after(() => new Promise<void>((resolve) => { http.close(() => { resolve() }) }))
  const url = `ws://127.0.0.1:${(http.address() as AddressInfo).port}/v3/ws`
  const unavailable = await rejection(new AssemblyAiSession(sessionOptions(url, { speechModel: 'busy' })).connect())
  assert.deepEqual([unavailable.httpStatus, unavailable.closeCode, unavailable.retryable], [503, null, true])
  const unauthorized = await rejection(new AssemblyAiSession(sessionOptions(url)).connect())
  assert.deepEqual([unauthorized.httpStatus, unauthorized.closeCode, unauthorized.retryable], [401, null, false])
})

test('session accepts audio before Begin when the socket is already open', async (t) => {
  const server = await fake(t, { faults: () => ({ beginDelayMs: 300 }) })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  t.after(() => { session.close() })
  assert.equal(session.sendAudio(pcmSilence(50)), false)
  let begun = false
  const connected = session.connect().then(() => { begun = true })
  await until(() => session.sendAudio(pcmSilence(50)))
  assert.equal(begun, false)
  await connected
  await until(() => (server.sessions[0]?.frameBytes.length ?? 0) >= 1)
  assert.equal(server.sessions[0]?.frameBytes[0], 800)
})

function captureLogs () {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>)
      callback()
    }
  })
  return { lines, logger: pino({ level: 'debug' }, stream) }
}

test('session ignores unknown messages and surfaces Warnings when the server sends both', async (t) => {
  const server = await fake(t, { faults: () => ({ warningAfterAudioMs: 100, unknownMessageAfterAudioMs: 150 }) })
  const { lines, logger } = captureLogs()
  const session = new AssemblyAiSession(sessionOptions(server.url), logger)
  const events = record(session)
  await session.connect()
  sendAll(session, Buffer.concat([pcmSilence(200), pcmTone(500), pcmSilence(500)]))
  await until(() => events.turns.length === 1)
  assert.equal(events.warnings.length, 1)
  assert.match(events.warnings[0]?.warning ?? '', /medical-v1/)
  assert.equal(events.closedCount, 0)
  assert.ok(await session.terminate(2000))
  assert.equal(events.closed?.error, null)
  assert.ok(lines.some((line) => line.msg === 'AssemblyAI message ignored' && line.messageType === 'Heartbeat'))
  const logged = JSON.stringify(lines)
  for (const secret of [KEY, 'metoprolol', 'Utterance']) assert.equal(logged.includes(secret), false, secret)
})

test('session keeps delivering when a listener throws', async (t) => {
  const server = await fake(t, { partialsPerTurn: 0 })
  const { lines, logger } = captureLogs()
  const session = new AssemblyAiSession(sessionOptions(server.url), logger)
  session.on('turn', () => { throw new Error('consumer bug') })
  const events = record(session)
  await session.connect()
  sendAll(session, Buffer.concat([pcmTone(300), pcmSilence(500), pcmTone(300), pcmSilence(500)]))
  await until(() => events.turns.length === 2)
  assert.ok(await session.terminate(2000))
  assert.equal(events.closed?.code, 1000)
  assert.equal(lines.filter((line) => line.msg === 'AssemblyAI session listener threw').length, 2)
})

test('session emits closed once and synchronously when close is called repeatedly', async (t) => {
  const server = await fake(t)
  const session = new AssemblyAiSession(sessionOptions(server.url))
  const events = record(session)
  await session.connect()
  session.close()
  assert.equal(events.closedCount, 1)
  assert.deepEqual(events.closed, { code: 1006, error: null, termination: null })
  session.close()
  assert.equal(await session.terminate(100), null)
  await until(() => server.sessions[0]?.closed === true)
  assert.equal(events.closedCount, 1)
  const again = await rejection(session.connect())
  assert.equal(again.retryable, false)
  const unused = new AssemblyAiSession(sessionOptions(server.url))
  unused.close()
  await rejection(unused.connect())
  assert.equal(server.sessions.length, 1)
})

test('session once and off remove listeners when asked', async (t) => {
  const server = await fake(t, { partialsPerTurn: 0 })
  const session = new AssemblyAiSession(sessionOptions(server.url))
  t.after(() => { session.close() })
  let once = 0
  let removed = 0
  const listener = (): void => { removed++ }
  session.once('turn', () => { once++ })
  session.on('turn', listener)
  session.off('turn', listener)
  const events = record(session)
  await session.connect()
  sendAll(session, Buffer.concat([pcmTone(300), pcmSilence(500), pcmTone(300), pcmSilence(500)]))
  await until(() => events.turns.length === 2)
  assert.deepEqual([once, removed], [1, 0])
})

test('session emits one final per turn_order, skips empty finals and partials after the final when the server repeats itself with formatted partials', async (t) => {
  const words = [{ text: 'Hello.', start: 0, end: 400, confidence: 0.9, word_is_final: true, speaker: 'A' }]
  const turn = (order: number, final: boolean, transcript: string) => JSON.stringify({
    type: 'Turn', turn_order: order, turn_is_formatted: true, end_of_turn: final, transcript, utterance: final ? transcript : '',
    end_of_turn_confidence: final ? 1 : 0, words: transcript === '' ? [] : words
  })
  const script = [
    JSON.stringify({ type: 'Begin', id: 'scripted', expires_at: 1 }),
    turn(0, false, 'Hello'),
    turn(0, true, 'Hello.'),
    turn(0, true, 'Hello.'),
    turn(0, false, 'Hello'),
    turn(1, true, ''),
    JSON.stringify({ type: 'SpeakerRevision', turn_order: 0, speaker_label: 'B', words }),
    turn(2, true, 'Bye.'),
    JSON.stringify({ type: 'Termination', audio_duration_seconds: 1, session_duration_seconds: 1 })
  ]
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => { wss.once('listening', resolve) })
  t.after(() => new Promise<void>((resolve) => { wss.close(() => { resolve() }) }))
  wss.on('connection', (ws) => {
    for (const message of script) ws.send(message)
    ws.close(1000, 'Session Ended')
  })
  const session = new AssemblyAiSession(sessionOptions(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v3/ws`))
  const events = record(session)
  await session.connect()
  await until(() => events.closed !== null)
  assert.deepEqual(events.order, ['partial:0', 'turn:0', 'speakerRevision', 'turn:2', 'closed'])
  assert.deepEqual(events.revisions[0]?.revisions.map((r) => [r.turn_order, r.speaker_label]), [[0, 'B']])
  assert.equal(events.closed?.error, null)
  assert.equal(events.closed?.termination?.audio_duration_seconds, 1)
})

test('session reports a retryable error when the server closes 1000 without being asked', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => { wss.once('listening', resolve) })
  t.after(() => new Promise<void>((resolve) => { wss.close(() => { resolve() }) }))
  wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ type: 'Begin', id: 'scripted', expires_at: 1 }))
    ws.close(1000, 'bye')
  })
  const session = new AssemblyAiSession(sessionOptions(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v3/ws`))
  const events = record(session)
  await session.connect()
  await until(() => events.closed !== null)
  assert.equal(events.closed?.error?.closeCode, 1000)
  assert.equal(events.closed?.error?.retryable, true)
})

test('session leaves non-final Turns unparsed when nobody listens for partials, and parses them once someone does', async (t) => {
  // A broken partial (words is not a list) is logged as an ignored message only if it was parsed.
  const broken = JSON.stringify({ type: 'Turn', turn_order: 0, turn_is_formatted: false, end_of_turn: false, transcript: 'Hel', utterance: '', end_of_turn_confidence: 0, words: 'not a list' })
  const good = JSON.stringify({ type: 'Turn', turn_order: 0, turn_is_formatted: false, end_of_turn: false, transcript: 'Hello', utterance: '', end_of_turn_confidence: 0, words: [] })
  const final = JSON.stringify({ type: 'Turn', turn_order: 0, turn_is_formatted: true, end_of_turn: true, transcript: 'Hello.', utterance: 'Hello.', end_of_turn_confidence: 1, words: [{ text: 'Hello.', start: 0, end: 400, confidence: 0.9, word_is_final: true }] })
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await new Promise<void>((resolve) => { wss.once('listening', resolve) })
  t.after(() => new Promise<void>((resolve) => {
    for (const client of wss.clients) client.terminate()
    wss.close(() => { resolve() })
  }))
  const sockets: WebSocket[] = []
  wss.on('connection', (ws) => {
    sockets.push(ws)
    ws.send(JSON.stringify({ type: 'Begin', id: 'scripted', expires_at: 1 }))
  })
  const lines: string[] = []
  const logger = pino({ level: 'debug' }, new Writable({ write (chunk: Buffer, _encoding, callback) { lines.push(chunk.toString('utf8')); callback() } }))
  const session = new AssemblyAiSession(sessionOptions(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v3/ws`), logger)
  t.after(() => { session.close() })
  const partials: string[] = []
  const finals: string[] = []
  session.on('turn', (turn) => finals.push(turn.transcript))
  await session.connect()
  const ws = sockets[0]!
  ws.send(broken)
  ws.send(good)
  ws.send(final.replace('"turn_order":0', '"turn_order":5'))
  await until(() => finals.length === 1)
  assert.equal(lines.filter((line) => line.includes('AssemblyAI message ignored')).length, 0, 'no partial was parsed')
  const listener = (turn: Turn): void => { partials.push(turn.transcript) }
  session.on('partial', listener)
  ws.send(broken)
  ws.send(good)
  ws.send(final)
  await until(() => finals.length === 2)
  assert.equal(lines.filter((line) => line.includes('AssemblyAI message ignored')).length, 1, 'the broken partial was parsed (and ignored) once watched')
  assert.deepEqual(partials, ['Hello'])
  assert.deepEqual(finals, ['Hello.', 'Hello.'])
})
