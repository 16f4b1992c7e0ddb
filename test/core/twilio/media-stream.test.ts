import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { TestContext } from 'node:test'
import { CallRegistry } from '../../../src/core/call/call-registry.ts'
import { MediaStream } from '../../../src/core/twilio/media-stream.ts'
import type { MediaStreamSettings } from '../../../src/core/twilio/media-stream.ts'
import { mintStreamToken } from '../../../src/core/twilio/stream-token.ts'
import { startFakeAssemblyAi } from '../../fakes/assemblyai-server.ts'
import { ACCOUNT_SID, API_KEY, CALL_SID, STREAM_SID, counter, mulawSpeech, recordingLogger, recordingSink, testMetrics, until } from '../call/fixtures.ts'

const SECRET = Buffer.from('media-stream-test-secret-0123456')

/** A socket that records how the stream closed it. */
function fakeSocket () {
  const closes: Array<[number, string]> = []
  return { closes, close (code: number, reason: string) { closes.push([code, reason]) } }
}

async function setup (t: TestContext, settings: Partial<MediaStreamSettings> = {}) {
  const server = await startFakeAssemblyAi({ apiKeys: [API_KEY], partialsPerTurn: 0 })
  t.after(() => server.close())
  const metrics = testMetrics()
  const calls = new CallRegistry({ maxCalls: 1, metrics })
  t.after(() => calls.close())
  const sink = recordingSink()
  const logger = recordingLogger()
  const full: MediaStreamSettings = {
    streamTokenSecret: SECRET,
    assemblyai: { url: server.url, apiKey: API_KEY, speechModel: 'u3-rt-pro', domain: 'medical-v1', speakerLabels: true, maxSpeakers: 2, keyterms: ['metoprolol'], minTurnSilenceMs: 400, maxTurnSilenceMs: 1500 },
    audioChunkMs: 100,
    startTimeoutMs: 5000,
    terminateTimeoutMs: 3000,
    ...settings
  }
  const open = () => {
    const socket = fakeSocket()
    const stream = new MediaStream({ socket, settings: full, calls, sink, metrics, logger })
    t.after(() => stream.onClose(1006))
    return { socket, stream }
  }
  return { server, metrics, calls, sink, logger, open }
}

function text (message: unknown): Buffer {
  return Buffer.from(JSON.stringify(message))
}

function startMessage (token: string | undefined, callSid = CALL_SID): Buffer {
  return text({
    event: 'start',
    sequenceNumber: '1',
    streamSid: STREAM_SID,
    start: { streamSid: STREAM_SID, accountSid: ACCOUNT_SID, callSid, tracks: ['inbound'], customParameters: token === undefined ? {} : { token, clinic: 'north' }, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } }
  })
}

function mediaMessage (sequence: number, timestampMs: number, payload: Buffer, streamSid = STREAM_SID): Buffer {
  return text({ event: 'media', sequenceNumber: String(sequence), streamSid, media: { track: 'inbound', chunk: String(sequence), timestamp: String(timestampMs), payload: payload.toString('base64') } })
}

/** The same frame with the StreamSid's first letter escaped: valid JSON the fast path leaves to the general parser. */
function escapedMediaMessage (sequence: number, timestampMs: number, payload: Buffer, streamSid = STREAM_SID): Buffer {
  return Buffer.from(mediaMessage(sequence, timestampMs, payload, streamSid).toString().replace(`"streamSid":"${streamSid[0]}`, `"streamSid":"\\u00${streamSid.charCodeAt(0).toString(16)}`))
}

test('MediaStream holds a reservation until start, then owns a call that ends with close 1000 when Twilio sends stop', async (t) => {
  const { server, metrics, calls, sink, open } = await setup(t)
  const { socket, stream } = open()
  assert.equal(calls.atCapacity, true, 'the socket waiting for start holds the only place')
  stream.onMessage(text({ event: 'connected', protocol: 'Call', version: '1.0.0' }), false)
  stream.onMessage(startMessage(mintStreamToken(SECRET, CALL_SID, ACCOUNT_SID, Date.now())), false)
  assert.equal(calls.size, 1)
  assert.equal(calls.byStreamSid(STREAM_SID)?.identity.customParameters.clinic, 'north')
  assert.equal(calls.byStreamSid(STREAM_SID)?.identity.customParameters.token, undefined, 'the token never reaches the call')
  mulawSpeech(1).forEach((frame, index) => stream.onMessage(mediaMessage(index + 2, index * 20, frame), false))
  await until(() => server.sessions[0]?.turnsSent === 1)
  stream.onMessage(text({ event: 'stop', sequenceNumber: '99', streamSid: STREAM_SID }), false)
  await until(() => socket.closes.length === 1)
  assert.deepEqual(socket.closes, [[1000, 'completed']])
  assert.equal(calls.size, 0)
  assert.deepEqual(sink.bodies().map((body) => body.type), ['call.started', 'transcript.turn', 'call.ended'])
  assert.equal(await counter(metrics.twilioMessages, { event: 'start' }), 1)
  assert.equal(await counter(metrics.twilioMessages, { event: 'stop' }), 1)
})

test('MediaStream treats a media frame the same when the fast path or the general parser reads it', async (t) => {
  const { metrics, calls, open } = await setup(t)
  const { stream } = open()
  stream.onMessage(startMessage(mintStreamToken(SECRET, CALL_SID, ACCOUNT_SID, Date.now())), false)
  const silence = Buffer.alloc(160, 0xff)
  stream.onMessage(mediaMessage(2, 0, silence), false)
  stream.onMessage(escapedMediaMessage(3, 20, silence), false)
  // Another stream's frame, and a timestamp far in the past, each once per parser.
  const other = `MZ${'9'.repeat(32)}`
  stream.onMessage(mediaMessage(4, 40, silence, other), false)
  stream.onMessage(escapedMediaMessage(5, 40, silence, other), false)
  stream.onMessage(mediaMessage(6, 40, silence), false)
  stream.onMessage(mediaMessage(7, 0, silence), false)
  stream.onMessage(escapedMediaMessage(8, 0, silence), false)
  calls.flushMetrics()
  stream.onClose(1000)
  assert.equal(await counter(metrics.twilioMessages, { event: 'media' }), 5, 'frames of this stream reach the call whichever parser read them')
  assert.equal(await counter(metrics.twilioInvalidMessages, { reason: 'schema' }), 2)
  assert.equal(await counter(metrics.twilioInvalidMessages, { reason: 'timestamp' }), 2)
})

test('MediaStream refuses with 1008 and counts the reason when start is late, missing its token, or a duplicate', async (t) => {
  const { metrics, calls, open } = await setup(t, { startTimeoutMs: 50 })
  const late = open()
  await until(() => late.socket.closes.length === 1)
  assert.deepEqual(late.socket.closes, [[1008, 'start timeout']])
  late.stream.onClose(1008)
  assert.equal(calls.atCapacity, false, 'the reservation is released on close')

  const tokenless = open()
  tokenless.stream.onMessage(startMessage(undefined), false)
  assert.deepEqual(tokenless.socket.closes, [[1008, 'invalid stream token']])
  tokenless.stream.onClose(1008)

  const forged = open()
  forged.stream.onMessage(startMessage(mintStreamToken(Buffer.from('another-secret-another-secret-00'), CALL_SID, ACCOUNT_SID, Date.now())), false)
  assert.deepEqual(forged.socket.closes, [[1008, 'invalid stream token']])
  forged.stream.onClose(1008)

  const first = open()
  first.stream.onMessage(startMessage(mintStreamToken(SECRET, CALL_SID, ACCOUNT_SID, Date.now())), false)
  const second = open()
  second.stream.onMessage(startMessage(mintStreamToken(SECRET, CALL_SID, ACCOUNT_SID, Date.now())), false)
  assert.deepEqual(second.socket.closes, [[1008, 'duplicate stream']])

  assert.equal(await counter(metrics.streamRejections, { reason: 'start_timeout' }), 1)
  assert.equal(await counter(metrics.streamRejections, { reason: 'token' }), 2)
  assert.equal(await counter(metrics.streamRejections, { reason: 'duplicate' }), 1)
})

test('MediaStream closes with 1008 when media comes before start, and counts binary, oversized and unparsable frames', async (t) => {
  const { metrics, open } = await setup(t)
  const { socket, stream } = open()
  stream.onMessage(Buffer.from([1, 2, 3]), true)
  stream.onMessage(Buffer.from('{not json'), false)
  stream.onError(Object.assign(new Error('Max payload size exceeded'), { code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' }))
  stream.onMessage(mediaMessage(2, 0, Buffer.alloc(160, 0xff)), false)
  assert.deepEqual(socket.closes, [[1008, 'media before start']])
  stream.onClose(1008)
  assert.equal(await counter(metrics.twilioInvalidMessages, { reason: 'binary' }), 1)
  assert.equal(await counter(metrics.twilioInvalidMessages, { reason: 'json' }), 1)
  assert.equal(await counter(metrics.twilioInvalidMessages, { reason: 'size' }), 1)
  assert.equal(await counter(metrics.twilioInvalidMessages, { reason: 'order' }), 1)
})

test('MediaStream ends its call as stream_error when the socket closes without stop', async (t) => {
  const { calls, sink, logger, open } = await setup(t)
  const { socket, stream } = open()
  stream.onMessage(startMessage(mintStreamToken(SECRET, CALL_SID, ACCOUNT_SID, Date.now())), false)
  stream.onClose(1006)
  await until(() => calls.size === 0)
  assert.equal(sink.bodies().at(-1)?.data.reason, 'stream_error')
  assert.deepEqual(socket.closes, [], 'a closed socket is not closed again')
  const warning = logger.lines.find((line) => line.message === 'media stream closed without stop')
  assert.deepEqual(warning?.fields, { code: 1006 })
  const started = logger.lines.find((line) => line.message === 'call started')
  assert.deepEqual(started?.bindings, { callSid: CALL_SID, streamSid: STREAM_SID }, 'the call logs through a child bound to its ids')
})
