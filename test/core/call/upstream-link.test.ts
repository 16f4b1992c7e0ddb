import assert from 'node:assert/strict'
import { test } from 'node:test'
import pino from 'pino'
import { Registry } from 'prom-client'
import { ChunkPool } from '../../../src/core/audio/chunker.ts'
import { UpstreamLink } from '../../../src/core/call/upstream-link.ts'
import type { CoreLogger } from '../../../src/core/log.ts'
import { createMetrics } from '../../../src/core/metrics.ts'
import { pcmFrames, pcmSilence, pcmTone, startFakeAssemblyAi } from '../../fakes/assemblyai-server.ts'
import { until } from '../../helpers/until.ts'

const API_KEY = 'link-test-key'

function chunk (index: number): Buffer {
  // 50 ms of PCM16 whose samples say which chunk they came from.
  const samples = new Int16Array(400).fill(index + 1)
  return Buffer.from(samples.buffer)
}

test('UpstreamLink keeps audio within the replay bound during an outage and counts what it gives up', async (t) => {
  // The first three connects are rate-limited; the fourth session opens ~1 s later.
  const fake = await startFakeAssemblyAi({
    apiKeys: [API_KEY],
    faults: (index) => (index < 3 ? { rejectWith: { code: 3009, error: 'Unauthorized Connection: Too many concurrent sessions' } } : {})
  })
  t.after(() => fake.close())
  const metrics = createMetrics(new Registry(), 'test')
  const failures: unknown[] = []
  const link = new UpstreamLink({
    session: { url: fake.url, apiKey: API_KEY, speechModel: 'u3-rt-pro', domain: 'medical-v1', speakerLabels: true, maxSpeakers: 2, keyterms: [], minTurnSilenceMs: 800, maxTurnSilenceMs: 3600, sampleRate: 8000 },
    metrics,
    logger: pino({ level: 'silent' }),
    reconnect: { maxAttempts: 5, initialDelayMs: 150, maxDelayMs: 400, maxOutageMs: 10000 },
    replayMs: 1000,
    onTurn: () => {},
    onRevision: () => {},
    onFailed: (error) => failures.push(error)
  })
  t.after(() => link.close())
  link.start()
  // 3 s of audio arrives while no session is open: only the newest 1 s can be kept.
  for (let i = 0; i < 60; i++) assert.equal(link.send(chunk(i), 1200 + i * 400), false)
  assert.equal(link.droppedSamples, 40 * 400)
  assert.ok(Math.abs(((await metrics.upstreamAudioDropped.get()).values[0]?.value ?? 0) - 2) < 1e-9, 'two seconds counted as dropped')

  await until(() => fake.sessions.length === 4 && fake.sessions[3]!.frameBytes.length === 20)
  await link.finish(3000)
  assert.deepEqual(failures, [])
  const received = new Int16Array(fake.sessions[3]!.audio.buffer, fake.sessions[3]!.audio.byteOffset, fake.sessions[3]!.audio.length / 2)
  assert.equal(received.length, 20 * 400, 'the session got exactly the kept second')
  assert.equal(received[0], 41, 'starting with the oldest chunk still within the bound')
  assert.equal(received.at(-1), 60)
  assert.equal((await metrics.upstreamReconnects.get()).values[0]?.value, 3)
  link.flushMetrics()
  assert.ok(Math.abs(((await metrics.upstreamAudioSent.get()).values[0]?.value ?? 0) - 1) < 1e-9, 'one second sent, counted once flushed')
})

test('UpstreamLink replays the audio since the last final turn to a replacement session', async (t) => {
  const fake = await startFakeAssemblyAi({ apiKeys: [API_KEY], faults: (index) => (index === 0 ? { dropAfterAudioMs: 1000 } : {}) })
  t.after(() => fake.close())
  const metrics = createMetrics(new Registry(), 'test')
  const link = new UpstreamLink({
    session: { url: fake.url, apiKey: API_KEY, speechModel: 'u3-rt-pro', domain: null, speakerLabels: false, maxSpeakers: 2, keyterms: [], minTurnSilenceMs: 800, maxTurnSilenceMs: 3600, sampleRate: 8000 },
    metrics,
    logger: pino({ level: 'silent' }),
    reconnect: { maxAttempts: 5, initialDelayMs: 50, maxDelayMs: 100, maxOutageMs: 10000 },
    onTurn: () => {},
    onRevision: () => {},
    onFailed: () => {}
  })
  t.after(() => link.close())
  link.start()
  await until(() => fake.sessions.length === 1 && fake.sessions[0]!.id !== '')
  await new Promise((resolve) => setTimeout(resolve, 200))
  // A final turn ended at chunk 10; the first session is cut after 1 s (chunk 20).
  for (let i = 0; i < 30; i++) {
    link.send(chunk(i), i * 400)
    if (i === 12) link.markFinal(11 * 400)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await until(() => fake.sessions.length === 2 && fake.sessions[1]!.frameBytes.length > 0)
  await new Promise((resolve) => setTimeout(resolve, 100))
  await link.finish(3000)
  const second = new Int16Array(fake.sessions[1]!.audio.buffer, fake.sessions[1]!.audio.byteOffset, fake.sessions[1]!.audio.length / 2)
  assert.equal(second[0], 12, 'the replay starts with the chunk the last final turn ended in')
  assert.equal(second.at(-1), 30, 'and runs to the newest audio')
  assert.equal(second.length, (30 - 11) * 400)
})

test('UpstreamLink passes its logger to the session when the server never answers Terminate', async (t) => {
  const fake = await startFakeAssemblyAi({ apiKeys: [API_KEY], faults: () => ({ ignoreTerminate: true }) })
  t.after(() => fake.close())
  const lines: Array<{ level: string, fields: unknown, message: string | undefined }> = []
  const record = (level: string) => (fields: object | string, message?: string): void => {
    lines.push(typeof fields === 'string' ? { level, fields: {}, message: fields } : { level, fields, message })
  }
  const logger: CoreLogger = { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') }
  const link = new UpstreamLink({
    session: { url: fake.url, apiKey: API_KEY, speechModel: 'u3-rt-pro', domain: null, speakerLabels: false, maxSpeakers: 2, keyterms: [], minTurnSilenceMs: 800, maxTurnSilenceMs: 3600, sampleRate: 8000 },
    metrics: createMetrics(new Registry(), 'test'),
    logger,
    onTurn: () => {},
    onRevision: () => {},
    onFailed: () => {}
  })
  t.after(() => link.close())
  link.start()
  await until(() => fake.sessions.length === 1 && fake.sessions[0]!.id !== '')
  link.send(chunk(0), 0)
  await link.finish(300)
  const warning = lines.find((line) => line.message === 'AssemblyAI session did not end after Terminate; closing it')
  assert.equal(warning?.level, 'warn')
  const fields = warning?.fields as { upstreamSessionId?: string, timeoutMs?: number } | undefined
  assert.equal(fields?.upstreamSessionId, fake.sessions[0]!.id)
  assert.ok(typeof fields?.timeoutMs === 'number' && fields.timeoutMs <= 300)
  assert.ok(lines.some((line) => line.level === 'debug' && line.message === 'AssemblyAI session closed'), 'lifecycle lines reach it too')
})

test('UpstreamLink hands chunks back to its pool only once the replay bound, a final turn or the end of the call retires them', async (t) => {
  const fake = await startFakeAssemblyAi({
    apiKeys: [API_KEY],
    faults: (index) => (index < 1 ? { rejectWith: { code: 3009, error: 'Unauthorized Connection: Too many concurrent sessions' } } : {})
  })
  t.after(() => fake.close())
  const pool = new ChunkPool(800)
  const link = new UpstreamLink({
    session: { url: fake.url, apiKey: API_KEY, speechModel: 'u3-rt-pro', domain: null, speakerLabels: false, maxSpeakers: 2, keyterms: [], minTurnSilenceMs: 800, maxTurnSilenceMs: 3600, sampleRate: 8000 },
    metrics: createMetrics(new Registry(), 'test'),
    logger: pino({ level: 'silent' }),
    reconnect: { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 400, maxOutageMs: 10000 },
    replayMs: 1000,
    onTurn: () => {},
    onRevision: () => {},
    onFailed: () => {},
    chunkPool: pool
  })
  t.after(() => link.close())
  link.start()
  // Before any session opens: 30 chunks, of which the oldest 10 fall out of the 1 s bound.
  const sent = Array.from({ length: 30 }, (_, i) => chunk(i))
  for (let i = 0; i < 30; i++) link.send(sent[i]!, i * 400)
  assert.equal(pool.size, 10, 'the audio beyond the replay bound came back')
  const back = new Set<Buffer>()
  for (let i = 0; i < 10; i++) back.add(pool.acquire())
  assert.deepEqual([...back].sort((x, y) => x[0]! - y[0]!), sent.slice(0, 10), 'and it was exactly the oldest chunks')

  await until(() => fake.sessions.length === 2 && fake.sessions[1]!.frameBytes.length === 20)
  assert.equal(pool.size, 0, 'nothing sent comes back before a final turn says it is done')
  link.markFinal(25 * 400)
  assert.equal(pool.size, 15, 'the chunks wholly before the final turn\'s end came back')
  await link.finish(3000)
  assert.equal(pool.size, 20, 'the rest came back once the session had ended')
  const received = new Int16Array(fake.sessions[1]!.audio.buffer, fake.sessions[1]!.audio.byteOffset, fake.sessions[1]!.audio.length / 2)
  assert.equal(received[0], 11, 'the session got the kept audio intact')
  assert.equal(received.at(-1), 30)
})

test('UpstreamLink passes partials with the session offset only while a partial listener is set', async (t) => {
  const fake = await startFakeAssemblyAi({ apiKeys: [API_KEY], partialsPerTurn: 3 })
  t.after(() => fake.close())
  const partials: Array<{ order: number, offset: number }> = []
  const finals: number[] = []
  const link = new UpstreamLink({
    session: { url: fake.url, apiKey: API_KEY, speechModel: 'u3-rt-pro', domain: null, speakerLabels: false, maxSpeakers: 2, keyterms: [], minTurnSilenceMs: 400, maxTurnSilenceMs: 1000, sampleRate: 8000 },
    metrics: createMetrics(new Registry(), 'test'),
    logger: pino({ level: 'silent' }),
    onTurn: (turn) => finals.push(turn.turn_order),
    onRevision: () => {},
    onFailed: () => {}
  })
  t.after(() => link.close())
  link.start()
  link.setPartialListener((turn, offsetSamples) => partials.push({ order: turn.turn_order, offset: offsetSamples }))
  const speech = Buffer.concat([pcmTone(2000), pcmSilence(1000)])
  let sample = 1200
  const play = (): void => {
    for (const frame of pcmFrames(speech, 50)) {
      link.send(Buffer.from(frame), sample)
      sample += frame.length / 2
    }
  }
  play()
  await until(() => finals.length === 1)
  assert.ok(partials.length >= 2, `${partials.length} partials of the first turn`)
  assert.ok(partials.every((partial) => partial.order === 0 && partial.offset === 1200), 'on the session\'s offset')
  link.setPartialListener(null)
  const before = partials.length
  play()
  await until(() => finals.length === 2)
  assert.equal(partials.length, before, 'no partial once nobody listens')
})
