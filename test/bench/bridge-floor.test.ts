import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { after, before, test } from 'node:test'
import WebSocket from 'ws'
import { TrackAligner } from '../../src/core/audio/aligner.ts'
import { forkChild, nextMessage, stopChild } from '../../bench/lib/children.ts'
import { startFakeAssemblyAi } from '../fakes/assemblyai-server.ts'
import type { FakeAssemblyAi, FakeSession } from '../fakes/assemblyai-server.ts'
import { prng } from '../helpers/prng.ts'
import { until } from '../helpers/until.ts'

// The benchmark's ratios are only worth something if the bridge floor is a correct bridge: it must
// send the audio medstream sends, in exact 50 ms chunks, and end its session as medstream does.
// Nothing here is timed: the floor's cost is the benchmark's business.

const API_KEY = 'bench-floor-test-key'
const FRAME_BYTES = 160
const CHUNK_BYTES = 800

let upstream: FakeAssemblyAi
let floor: ChildProcess
let floorUrl: string

before(async () => {
  upstream = await startFakeAssemblyAi({ apiKeys: [API_KEY] })
  // Started as the benchmark starts it.
  floor = forkChild('bridge-floor.ts', [upstream.url, API_KEY])
  floorUrl = (await nextMessage(floor, 'ready', 10_000)).url
})

after(async () => {
  await stopChild(floor, 'SIGTERM', 5000)
  await upstream.close()
})

/** Plays a two-track call to the floor as Twilio sends it (each 20 ms: inbound, then outbound) and waits for its session to close. */
async function playCall (inbound: Uint8Array, outbound: Uint8Array): Promise<FakeSession> {
  const sessionsBefore = upstream.sessions.length
  const socket = new WebSocket(floorUrl)
  await once(socket, 'open')
  const streamSid = 'MZ' + '0'.repeat(32)
  socket.send(JSON.stringify({ event: 'connected', protocol: 'Call', version: '1.0.0' }))
  socket.send(JSON.stringify({ event: 'start', sequenceNumber: '1', streamSid, start: { streamSid, tracks: ['inbound', 'outbound'], mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } } }))
  let sequence = 2
  for (let frame = 0; frame * FRAME_BYTES < inbound.length; frame++) {
    for (const [track, audio] of [['inbound', inbound], ['outbound', outbound]] as const) {
      const payload = Buffer.from(audio.subarray(frame * FRAME_BYTES, (frame + 1) * FRAME_BYTES)).toString('base64')
      socket.send(JSON.stringify({ event: 'media', sequenceNumber: String(sequence++), streamSid, media: { track, chunk: String(frame + 1), timestamp: String(frame * 20), payload } }))
    }
  }
  socket.send(JSON.stringify({ event: 'stop', sequenceNumber: String(sequence), streamSid, stop: { accountSid: 'AC' + '0'.repeat(32), callSid: 'CA' + '0'.repeat(32) } }))
  await once(socket, 'close')
  // The fake ends the session after Terminate; bounded, so a floor that never terminates fails here.
  await until(() => upstream.sessions[sessionsBefore]?.closed === true, 5000, 'the upstream session closing after stop')
  return upstream.sessions[sessionsBefore] as FakeSession
}

/** What medstream's own aligner mixes from the same frames: the reference the floor must match. */
function medstreamMix (inbound: Uint8Array, outbound: Uint8Array): Buffer {
  const pieces: Buffer[] = []
  const aligner = new TrackAligner({ tracks: ['inbound', 'outbound'], onMixed: (samples, length) => { pieces.push(Buffer.from(Int16Array.from(samples.subarray(0, length)).buffer)) } })
  for (let frame = 0; frame * FRAME_BYTES < inbound.length; frame++) {
    aligner.push('inbound', frame * 20, inbound.subarray(frame * FRAME_BYTES, (frame + 1) * FRAME_BYTES))
    aligner.push('outbound', frame * 20, outbound.subarray(frame * FRAME_BYTES, (frame + 1) * FRAME_BYTES))
  }
  aligner.flush()
  return Buffer.concat(pieces)
}

test('the bridge floor sends medstream\'s mix in exact 800-byte chunks when a lockstep two-track call is played', async () => {
  // 1 s of random μ-law on each track: every code turns up, loud pairs saturate the mix.
  const random = prng(20261202)
  const inbound = Uint8Array.from({ length: 50 * FRAME_BYTES }, () => Math.floor(random() * 256))
  const outbound = Uint8Array.from({ length: 50 * FRAME_BYTES }, () => Math.floor(random() * 256))
  const session = await playCall(inbound, outbound)

  assert.equal(session.query.get('sample_rate'), '8000')
  assert.equal(session.query.get('encoding'), 'pcm_s16le')
  assert.equal(session.headers.authorization, API_KEY)
  assert.equal(session.frameBytes.length, 20, 'one chunk per 50 ms of the 1 s call')
  assert.ok(session.frameBytes.every((bytes) => bytes === CHUNK_BYTES), `every chunk is 800 bytes: ${session.frameBytes.join(', ')}`)
  const expected = medstreamMix(inbound, outbound)
  assert.equal(expected.length, 20 * CHUNK_BYTES)
  assert.ok(session.audio.equals(expected), 'the floor\'s audio is byte for byte the mix medstream makes of the same frames')
  // The mix saturates rather than wrapping: the loudest codes of both tracks together stay at the rails.
  const samples = Array.from({ length: session.audio.length / 2 }, (_, i) => session.audio.readInt16LE(i * 2))
  assert.ok(samples.includes(32767) && samples.includes(-32768), 'random loud pairs reach both rails')
  assert.deepEqual(session.messages, [{ type: 'Terminate' }], 'stop becomes one Terminate and nothing else')
})

test('the bridge floor sends nothing for a call that ends before its first 50 ms are complete', async () => {
  const inbound = new Uint8Array(2 * FRAME_BYTES).fill(0xff)
  const outbound = new Uint8Array(2 * FRAME_BYTES).fill(0xff)
  const session = await playCall(inbound, outbound)
  assert.deepEqual(session.frameBytes, [], 'no partial chunk is ever sent')
  assert.deepEqual(session.messages, [{ type: 'Terminate' }])
})
