import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { MULAW_TO_PCM16 } from '../../../src/core/audio/mulaw.ts'
import { TrackAligner } from '../../../src/core/audio/aligner.ts'
import { roleFromEnergy } from '../../../src/core/audio/energy.ts'

interface Turn { track: 'inbound' | 'outbound', text: string, startMs: number, endMs: number }

const samplesDir = new URL('../../../samples/', import.meta.url)
const script = JSON.parse(readFileSync(new URL('call.json', samplesDir), 'utf8')) as { sampleRate: number, turns: Turn[] }
const audio = {
  inbound: readFileSync(new URL('call-inbound.ulaw', samplesDir)),
  outbound: readFileSync(new URL('call-outbound.ulaw', samplesDir))
}
const SILENCE = 0xff
/** -30 dBFS: espeak speech normalised to -3 dBFS peak sits well above it, line noise well below. */
const SPEECH_RMS = 1000

function rms (bytes: Uint8Array): number {
  let sum = 0
  for (const code of bytes) sum += MULAW_TO_PCM16[code]! ** 2
  return Math.sqrt(sum / bytes.length)
}

function span (track: 'inbound' | 'outbound', fromMs: number, toMs: number): Buffer {
  return audio[track].subarray(fromMs * 8, toMs * 8)
}

test('sample call has the documented shape when its files are read', () => {
  assert.equal(script.sampleRate, 8000)
  assert.equal(audio.inbound.length, audio.outbound.length)
  assert.ok(audio.inbound.length <= 300_000, `${audio.inbound.length} bytes`)
  const durationMs = audio.inbound.length / 8
  assert.ok(durationMs >= 25_000 && durationMs <= 35_000, `${durationMs} ms`)
  assert.ok(script.turns.length >= 6 && script.turns.length <= 8)
  assert.equal(script.turns[0]!.text, 'Thank you for calling North Clinic, this is Dana. How can I help you?')
  script.turns.forEach((turn, i) => {
    assert.equal(turn.track, i % 2 === 0 ? 'outbound' : 'inbound', `turn ${i} alternates, agent first`)
    assert.ok(Number.isInteger(turn.startMs) && turn.endMs > turn.startMs && turn.endMs <= durationMs)
    const next = script.turns[i + 1]
    if (next !== undefined) assert.ok(next.startMs - turn.endMs >= 1200, `pause after turn ${i}: ${next.startMs - turn.endMs} ms`)
  })
})

test('sample call turns match the audio when each turn\'s span is measured on both tracks', () => {
  for (const [i, turn] of script.turns.entries()) {
    const other = turn.track === 'inbound' ? 'outbound' : 'inbound'
    assert.ok(rms(span(turn.track, turn.startMs, turn.endMs)) > SPEECH_RMS, `turn ${i} has speech on ${turn.track}`)
    // The times are measured, not guessed: speech starts and ends within 50 ms of them.
    assert.ok(span(turn.track, turn.startMs, turn.startMs + 50).some((b) => b !== SILENCE), `turn ${i} starts at startMs`)
    assert.ok(span(turn.track, turn.endMs - 50, turn.endMs).some((b) => b !== SILENCE), `turn ${i} ends at endMs`)
    assert.ok(span(other, turn.startMs, turn.endMs).every((b) => b === SILENCE), `turn ${i}: ${other} is silent`)
  }
  for (const track of ['inbound', 'outbound'] as const) {
    const outside = Buffer.from(audio[track])
    for (const turn of script.turns) if (turn.track === track) outside.fill(SILENCE, turn.startMs * 8, turn.endMs * 8)
    assert.ok(outside.every((b) => b === SILENCE), `${track} is silent outside its turns`)
  }
})

test('sample call turns get their track\'s role when played through the aligner as Twilio frames', () => {
  const firstMs = 150
  let mixed = 0
  const aligner = new TrackAligner({ tracks: ['inbound', 'outbound'], onMixed (_samples, length) { mixed += length } })
  for (let at = 0; at < audio.inbound.length; at += 160) {
    aligner.push('inbound', firstMs + at / 8, audio.inbound.subarray(at, at + 160))
    aligner.push('outbound', firstMs + at / 8, audio.outbound.subarray(at, at + 160))
  }
  aligner.flush()
  assert.equal(mixed, audio.inbound.length)
  for (const turn of script.turns) {
    const role = roleFromEnergy(
      aligner.energy.inbound.meanSquare(firstMs + turn.startMs, firstMs + turn.endMs),
      aligner.energy.outbound.meanSquare(firstMs + turn.startMs, firstMs + turn.endMs))
    assert.equal(role, turn.track === 'inbound' ? 'customer' : 'agent', turn.text)
  }
})
