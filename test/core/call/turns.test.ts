import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Turn } from '../../../src/core/assemblyai/protocol.ts'
import { TrackEnergy } from '../../../src/core/audio/energy.ts'
import { TurnAssembler } from '../../../src/core/call/turns.ts'
import type { TurnData } from '../../../src/core/call/turns.ts'

/** Two tracks' energy with `loud` speaking (a 3000-amplitude square wave) over [fromMs, toMs). */
function energyWith (segments: Array<{ track: 'inbound' | 'outbound', fromMs: number, toMs: number }>, totalMs = 20000) {
  const energy = { inbound: new TrackEnergy(), outbound: new TrackEnergy() }
  for (const track of ['inbound', 'outbound'] as const) {
    const samples = new Int16Array(totalMs * 8)
    for (const segment of segments.filter((s) => s.track === track)) {
      for (let i = segment.fromMs * 8; i < segment.toMs * 8; i++) samples[i] = i % 2 === 0 ? 3000 : -3000
    }
    energy[track].add(samples, samples.length, 0)
  }
  return energy
}

/** The one turn an upstream turn became, or null when it was dropped; fails when it was split. */
function single (parts: TurnData[]): TurnData | null {
  assert.ok(parts.length <= 1, `${parts.length} parts`)
  return parts[0] ?? null
}

function turn (order: number, words: Array<[string, number, number, string?]>, label?: string): Turn {
  return {
    type: 'Turn',
    turn_order: order,
    turn_is_formatted: true,
    end_of_turn: true,
    transcript: words.map(([text]) => text).join(' '),
    utterance: words.map(([text]) => text).join(' '),
    end_of_turn_confidence: 1,
    ...(label === undefined ? {} : { speaker_label: label }),
    words: words.map(([text, start, end, speaker], i) => ({ text, start, end, confidence: 0.5 + i * 0.1, word_is_final: true, ...(speaker === undefined ? {} : { speaker }) }))
  } as Turn
}

test('TurnAssembler maps word times onto the call timeline from where the session began', () => {
  const assembler = new TurnAssembler(energyWith([{ track: 'inbound', fromMs: 1000, toMs: 3000 }]))
  // The session's audio began at 1200 samples = 150 ms of the call timeline.
  const data = single(assembler.accept(turn(0, [['I', 900, 1100], ['take', 1150, 1500], ['metoprolol.', 1550, 2600]], 'A'), 'session-1', 1200))
  assert.ok(data !== null)
  assert.equal(data.turn_index, 1)
  assert.equal(data.start_ms, 1050)
  assert.equal(data.end_ms, 2750)
  assert.deepEqual(data.words.map((word) => [word.start_ms, word.end_ms]), [[1050, 1250], [1300, 1650], [1700, 2750]])
  assert.equal(data.text, 'I take metoprolol.')
  assert.equal(data.confidence, 0.6, 'the mean of the words\' confidences')
  assert.deepEqual(data.upstream, { session_id: 'session-1', turn_order: 0, part: 0 })
})

test('TurnAssembler gives the role of the track at least 6 dB louder over the turn, else unknown', () => {
  const energy = energyWith([
    { track: 'inbound', fromMs: 1000, toMs: 3000 },
    { track: 'outbound', fromMs: 4000, toMs: 6000 },
    { track: 'inbound', fromMs: 7000, toMs: 9000 },
    { track: 'outbound', fromMs: 7000, toMs: 9000 }
  ])
  const assembler = new TurnAssembler(energy)
  assert.equal(single(assembler.accept(turn(0, [['hello', 1000, 3000]]), 's', 0))?.role, 'customer')
  assert.equal(single(assembler.accept(turn(1, [['hello', 4000, 6000]]), 's', 0))?.role, 'agent')
  assert.equal(single(assembler.accept(turn(2, [['both', 7000, 9000]]), 's', 0))?.role, 'unknown', 'equal energy on both tracks')
  assert.equal(single(assembler.accept(turn(3, [['silence', 10000, 12000]]), 's', 0))?.role, 'unknown', 'no energy on either track')
})

test('TurnAssembler sends placeholder speaker labels as null and falls back to the turn label for words', () => {
  const assembler = new TurnAssembler(energyWith([]))
  const pending = single(assembler.accept(turn(0, [['ok', 100, 300]], 'PENDING'), 's', 0))
  assert.equal(pending?.speaker, null)
  assert.equal(pending?.words[0]?.speaker, null)
  const labelled = single(assembler.accept(turn(1, [['yes', 400, 600], ['sure', 700, 900, 'B']], 'A'), 's', 0))
  assert.equal(labelled?.speaker, 'A')
  assert.deepEqual(labelled?.words.map((word) => word.speaker), ['A', 'B'])
  assert.equal(single(assembler.accept(turn(2, [['hm', 1000, 1200]], 'UNKNOWN'), 's', 0))?.speaker, null)
})

test('TurnAssembler never emits a turn twice, and drops words a replacement session repeats', () => {
  const assembler = new TurnAssembler(energyWith([]))
  assert.ok(single(assembler.accept(turn(0, [['first', 100, 500], ['turn.', 600, 1000]]), 'old', 0)) !== null)
  assert.equal(single(assembler.accept(turn(0, [['first', 100, 500], ['turn.', 600, 1000]]), 'old', 0)), null, 'the same upstream turn again')
  // A new session replayed from 800 ms of the call: its first turn repeats "turn." then goes on.
  const replayed = single(assembler.accept(turn(0, [['turn.', 0, 200], ['Next', 400, 700], ['one.', 750, 1100]]), 'new', 800 * 8))
  assert.ok(replayed !== null)
  assert.equal(replayed.text, 'Next one.')
  assert.equal(replayed.turn_index, 2, 'turn_index stays gapless')
  assert.equal(replayed.start_ms, 1200)
  assert.equal(single(assembler.accept(turn(1, [['turn.', 100, 150]]), 'new', 0)), null, 'a turn wholly before the last one is dropped')
  assert.equal(assembler.count, 2)
})

test('TurnAssembler applies speaker revisions to the transcript only, keeping roles', () => {
  const assembler = new TurnAssembler(energyWith([{ track: 'outbound', fromMs: 0, toMs: 2000 }]))
  single(assembler.accept(turn(0, [['hello', 100, 900]], 'A'), 's1', 0))
  single(assembler.accept(turn(1, [['there', 1000, 1900]], 'B'), 's1', 0))
  assembler.applyRevision({ type: 'SpeakerRevision', revisions: [{ turn_order: 0, speaker_label: 'B', words: [] }, { turn_order: 7, speaker_label: 'C', words: [] }] }, 's1')
  assembler.applyRevision({ type: 'SpeakerRevision', revisions: [{ turn_order: 1, speaker_label: 'A', words: [] }] }, 'other-session')
  assert.deepEqual(assembler.transcript.map((entry) => [entry.speaker, entry.role]), [['B', 'agent'], ['B', 'agent']])
})
