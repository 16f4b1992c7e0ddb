import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Turn } from '../../../src/core/assemblyai/protocol.ts'
import { TrackEnergy } from '../../../src/core/audio/energy.ts'
import { MULAW_TO_PCM16 } from '../../../src/core/audio/mulaw.ts'
import { TurnAssembler } from '../../../src/core/call/turns.ts'
import type { Role } from '../../../src/core/call/types.ts'
import { WordRoles } from '../../../src/core/call/word-roles.ts'
import { generateMessyCall } from '../../helpers/messy-call.ts'

type Track = 'inbound' | 'outbound'

/** Two tracks' energy, each segment a square wave of `amplitude` (default 3000) on its track over [fromMs, toMs). */
function energyWith (segments: Array<{ track: Track, fromMs: number, toMs: number, amplitude?: number }>, totalMs = 20000) {
  const energy = { inbound: new TrackEnergy(), outbound: new TrackEnergy() }
  for (const track of ['inbound', 'outbound'] as const) {
    const samples = new Int16Array(totalMs * 8)
    for (const segment of segments.filter((s) => s.track === track)) {
      const amplitude = segment.amplitude ?? 3000
      for (let i = segment.fromMs * 8; i < segment.toMs * 8; i++) samples[i] = i % 2 === 0 ? amplitude : -amplitude
    }
    energy[track].add(samples, samples.length, 0)
  }
  return energy
}

/** Words `[text, start, end]` laid out back to back, and who spoke each (A = agent on outbound, C = customer on inbound). */
function dialogue (parts: Array<[speaker: 'A' | 'C', words: Array<[string, number, number]>]>) {
  const segments = parts.flatMap(([speaker, words]) => words.map(([, fromMs, toMs]) => ({ track: speaker === 'A' ? 'outbound' as const : 'inbound' as const, fromMs, toMs })))
  const words = parts.flatMap(([speaker, words]) => words.map(([text, start, end]) => ({ text, start, end, speaker: speaker === 'A' ? 'A' : 'B' })))
  return { energy: energyWith(segments), words }
}

function upstreamTurn (order: number, words: Array<{ text: string, start: number, end: number, speaker?: string }>, label = 'A'): Turn {
  const text = words.map((word) => word.text).join(' ')
  return {
    type: 'Turn',
    turn_order: order,
    turn_is_formatted: true,
    end_of_turn: true,
    transcript: text,
    utterance: text,
    end_of_turn_confidence: 1,
    speaker_label: label,
    words: words.map((word) => ({ ...word, confidence: 0.9, word_is_final: true }))
  } as Turn
}

test('WordRoles refuses options out of range with a message naming the range', () => {
  const energy = energyWith([])
  assert.throws(() => new WordRoles(energy, { marginDb: -1 }), /marginDb must be a number from 0 to 40, got -1/)
  assert.throws(() => new WordRoles(energy, { minWindowMs: Number.NaN }), /minWindowMs must be a number from 0 to 2000/)
  assert.throws(() => new WordRoles(energy, { coreShare: 0 }), /coreShare must be a number from 0.1 to 1/)
  assert.throws(() => new WordRoles(energy, { inlineMaxWords: 1.5 }), /inlineMaxWords must be an integer from 0 to 10/)
  assert.throws(() => new WordRoles(energy, { inlineMaxMs: 6000 }), /inlineMaxMs must be a number from 0 to 5000/)
  assert.throws(() => new WordRoles(energy, { majority: 0.5 }), /majority must be above 0.5 and at most 1, got 0.5/)
  assert.throws(() => new WordRoles({ inbound: energy.inbound } as never), /inbound and an outbound TrackEnergy/)
  assert.throws(() => new WordRoles(energy).split([{ start_ms: 0, end_ms: 1 }], []), /0 roles for 1 words/)
})

test('WordRoles gives a word the role of the track at least 6 dB louder over it, else unknown', () => {
  // 3000 against 1500 is 6.02 dB; against 1520, 5.9 dB.
  const energy = energyWith([
    { track: 'inbound', fromMs: 0, toMs: 1000 }, { track: 'outbound', fromMs: 0, toMs: 1000, amplitude: 1500 },
    { track: 'inbound', fromMs: 1000, toMs: 2000 }, { track: 'outbound', fromMs: 1000, toMs: 2000, amplitude: 1520 },
    { track: 'outbound', fromMs: 2000, toMs: 3000 }
  ])
  const roles = new WordRoles(energy)
  assert.equal(roles.roleOf({ start_ms: 200, end_ms: 800 }), 'customer')
  assert.equal(roles.roleOf({ start_ms: 1200, end_ms: 1800 }), 'unknown')
  assert.equal(roles.roleOf({ start_ms: 2200, end_ms: 2800 }), 'agent')
  assert.equal(roles.roleOf({ start_ms: 5000, end_ms: 5400 }), 'unknown', 'silence on both tracks')
  assert.equal(new WordRoles(energy, { marginDb: 5 }).roleOf({ start_ms: 1200, end_ms: 1800 }), 'customer', 'the margin is an option')
})

test('WordRoles measures a short word over 120 ms centred on it, and a word\'s core before its whole span', () => {
  const roles = new WordRoles(energyWith([]))
  assert.deepEqual(roles.windowsOf({ start_ms: 1000, end_ms: 1020 }), [[950, 1070], [950, 1070]])
  assert.deepEqual(roles.windowsOf({ start_ms: 1000, end_ms: 1400 }), [[1100, 1300], [1000, 1400]])
  // A 10 ms word reported in a 100 ms pause of the customer's, silent on both tracks over its own
  // span: its 120 ms window reaches the customer's speech around it.
  const short = energyWith([{ track: 'inbound', fromMs: 900, toMs: 975 }, { track: 'inbound', fromMs: 1075, toMs: 1150 }])
  assert.equal(new WordRoles(short).roleOf({ start_ms: 1020, end_ms: 1030 }), 'customer')
  assert.equal(new WordRoles(short, { minWindowMs: 0 }).roleOf({ start_ms: 1020, end_ms: 1030 }), 'unknown')
  // A barge-in over a word's edges: the core is the agent's, the whole word would be undecided.
  const barge = new WordRoles(energyWith([{ track: 'outbound', fromMs: 1000, toMs: 1600 }, { track: 'inbound', fromMs: 1000, toMs: 1150, amplitude: 6000 }, { track: 'inbound', fromMs: 1450, toMs: 1600, amplitude: 6000 }]))
  assert.equal(barge.roleOf({ start_ms: 1000, end_ms: 1600 }), 'agent')
  // A word reported with silence before it (an upstream's turn-edge word): its core is silent, the whole word is not.
  const early = new WordRoles(energyWith([{ track: 'inbound', fromMs: 1700, toMs: 2000 }]))
  assert.equal(early.roleOf({ start_ms: 1000, end_ms: 2000 }), 'customer')
})

test('TurnAssembler keeps a one-word backchannel inside the surrounding turn with its own role', () => {
  const { energy, words } = dialogue([
    ['A', [['I', 1000, 1200], ['will', 1250, 1500], ['have', 1550, 1800], ['the', 1850, 2000], ['nurse', 2050, 2500]]],
    ['C', [['mm-hmm', 2600, 3100]]],
    ['A', [['call', 3200, 3500], ['you', 3550, 3800], ['back.', 3850, 4300]]]
  ])
  const parts = new TurnAssembler(energy).accept(upstreamTurn(0, words), 's', 0)
  assert.equal(parts.length, 1)
  assert.equal(parts[0]!.role, 'agent')
  assert.equal(parts[0]!.text, 'I will have the nurse mm-hmm call you back.')
  assert.deepEqual(parts[0]!.words.map((word) => word.role), ['agent', 'agent', 'agent', 'agent', 'agent', 'customer', 'agent', 'agent', 'agent'])
  assert.deepEqual(parts[0]!.upstream, { session_id: 's', turn_order: 0, part: 0 })
})

test('TurnAssembler splits an agent–caller–agent turn into three consecutive turns', () => {
  const { energy, words } = dialogue([
    ['A', [['What', 1000, 1300], ['is', 1350, 1500], ['your', 1550, 1800], ['number?', 1850, 2300]]],
    ['C', [['Five', 2350, 2700], ['five', 2750, 3100], ['five.', 3150, 3500]]],
    ['A', [['Thank', 3600, 3900], ['you.', 3950, 4300], ['Bye', 4400, 4700], ['now.', 4750, 5000]]]
  ])
  const assembler = new TurnAssembler(energy)
  assert.deepEqual(assembler.accept(upstreamTurn(0, [{ text: 'Hello.', start: 200, end: 600 }]), 's', 0).map((turn) => turn.turn_index), [1])
  const parts = assembler.accept(upstreamTurn(1, words), 's', 0)
  assert.deepEqual(parts.map((turn) => [turn.turn_index, turn.role, turn.text, turn.start_ms, turn.end_ms, turn.speaker, turn.upstream.turn_order, turn.upstream.part]), [
    [2, 'agent', 'What is your number?', 1000, 2300, 'A', 1, 0],
    [3, 'customer', 'Five five five.', 2350, 3500, 'B', 1, 1],
    [4, 'agent', 'Thank you. Bye now.', 3600, 5000, 'A', 1, 2]
  ])
  assert.ok(Math.abs(parts[1]!.confidence - 0.9) < 1e-9)
  assert.equal(assembler.count, 4)
  assert.equal(assembler.lastEndMs, 5000)
  assert.deepEqual(assembler.transcript.map((entry) => [entry.turn_index, entry.role, entry.words.length]), [[1, 'unknown', 1], [2, 'agent', 4], [3, 'customer', 3], [4, 'agent', 4]])
})

test('TurnAssembler revises the speakers of a split turn\'s parts and words from a SpeakerRevision, never their roles', () => {
  const { energy, words } = dialogue([
    ['A', [['What', 1000, 1300], ['is', 1350, 1500], ['your', 1550, 1800], ['number?', 1850, 2300]]],
    ['C', [['Five', 2350, 2700], ['five', 2750, 3100], ['five.', 3150, 3500]]]
  ])
  const assembler = new TurnAssembler(energy)
  const parts = assembler.accept(upstreamTurn(0, words), 's', 0)
  assert.deepEqual(parts.map((turn) => [turn.speaker, turn.role]), [['A', 'agent'], ['B', 'customer']])
  // Diarization swaps the labels; one word of the second part stays with the first speaker.
  const revised = words.map((word, i) => ({ ...word, confidence: 0.9, word_is_final: true, speaker: i === 4 ? 'B' : word.speaker === 'A' ? 'B' : 'A' }))
  assembler.applyRevision({ type: 'SpeakerRevision', revisions: [{ turn_order: 0, speaker_label: 'B', words: revised }] }, 's')
  const transcript = assembler.transcript
  assert.deepEqual(transcript.map((entry) => [entry.speaker, entry.role]), [['B', 'agent'], ['A', 'customer']])
  assert.deepEqual(transcript.flatMap((entry) => entry.words.map((word) => word.speaker)), ['B', 'B', 'B', 'B', 'B', 'A', 'A'])
  assert.deepEqual(transcript.flatMap((entry) => entry.words.map((word) => word.role)), ['agent', 'agent', 'agent', 'agent', 'customer', 'customer', 'customer'])
  assert.equal(parts[0]!.speaker, 'A', 'what was published stays as it was')
  assert.equal(parts[0]!.words[0]!.speaker, 'A')
})

test('TurnAssembler publishes a one-word turn as one turn with that word\'s role', () => {
  const { energy } = dialogue([['C', [['Yes.', 1000, 1250]]]])
  const parts = new TurnAssembler(energy).accept(upstreamTurn(0, [{ text: 'Yes.', start: 1000, end: 1250 }], 'B'), 's', 0)
  assert.deepEqual(parts.map((turn) => [turn.role, turn.text, turn.speaker, turn.words[0]?.role, turn.upstream.part]), [['customer', 'Yes.', 'B', 'customer', 0]])
})

test('WordRoles starts a part at a run of three words or of 700 ms, and keeps shorter runs inline', () => {
  const roles = new WordRoles(energyWith([]))
  const at = (spans: Array<[number, number]>) => spans.map(([start_ms, end_ms]) => ({ start_ms, end_ms }))
  const A: Role = 'agent'
  const C: Role = 'customer'
  const agentWords = at([[0, 500], [500, 1000], [1000, 1500]])
  const split = (middle: Array<[number, number]>, middleRoles: Role[]) => {
    const after = at([[5000, 5500], [5500, 6000], [6000, 6500]])
    return roles.split([...agentWords, ...at(middle), ...after], [A, A, A, ...middleRoles, A, A, A])
  }
  // Two words under 700 ms: inline.
  assert.deepEqual(split([[1600, 1900], [1950, 2290]], [C, C]), [{ from: 0, to: 8, role: 'agent' }])
  // Two words lasting 700 ms: a part.
  assert.deepEqual(split([[1600, 1900], [1950, 2300]], [C, C]).map((part) => part.role), ['agent', 'customer', 'agent'])
  // Three words, however short: a part.
  assert.deepEqual(split([[1600, 1700], [1700, 1800], [1800, 1900]], [C, C, C]), [{ from: 0, to: 3, role: 'agent' }, { from: 3, to: 6, role: 'customer' }, { from: 6, to: 9, role: 'agent' }])
  // The thresholds are options.
  assert.equal(new WordRoles(energyWith([]), { inlineMaxWords: 1 }).split([...agentWords, ...at([[1600, 1700], [1700, 1800]])], [A, A, A, C, C]).length, 2)
  // A short run at the start of a turn joins the part after it.
  assert.deepEqual(roles.split(at([[0, 300], [400, 1000], [1000, 1500], [1500, 2000]]), [C, A, A, A]), [{ from: 0, to: 4, role: 'agent' }])
  // A turn without words is one part.
  assert.deepEqual(roles.split([], []), [{ from: 0, to: 0, role: 'unknown' }])
})

test('WordRoles gives a part the role holding 80 % of its words\' duration, not counting unknown words', () => {
  const roles = new WordRoles(energyWith([]))
  const at = (spans: Array<[number, number]>) => spans.map(([start_ms, end_ms]) => ({ start_ms, end_ms }))
  // 2000 ms agent, 500 ms customer inline: exactly 80 %.
  assert.equal(roles.split(at([[0, 700], [700, 1400], [1400, 2000], [2000, 2500]]), ['agent', 'agent', 'agent', 'customer'])[0]?.role, 'agent')
  // 2000 ms agent, 600 ms customer: 77 %.
  assert.equal(roles.split(at([[0, 700], [700, 1400], [1400, 2000], [2000, 2600]]), ['agent', 'agent', 'agent', 'customer'])[0]?.role, 'unknown')
  // Unknown words (cross-talk) count for neither side.
  assert.equal(roles.split(at([[0, 700], [700, 1400], [1400, 2000], [2000, 2600], [2600, 3200]]), ['agent', 'agent', 'agent', 'unknown', 'unknown'])[0]?.role, 'agent')
  assert.deepEqual(roles.split(at([[0, 700], [700, 1400], [1400, 2000]]), ['unknown', 'unknown', 'unknown']), [{ from: 0, to: 3, role: 'unknown' }])
  assert.equal(new WordRoles(energyWith([]), { majority: 0.75 }).split(at([[0, 700], [700, 1400], [1400, 2000], [2000, 2600]]), ['agent', 'agent', 'agent', 'customer'])[0]?.role, 'agent')
})

for (const echoDb of [-20, -12]) {
  test(`a track carrying only the other's echo at ${echoDb} dB, 30 ms late, never gives a word its role`, async (t) => {
    // The sample call's voices one at a time (no barge-in), each track carrying the other's echo.
    const call = await generateMessyCall({ clean: true, echoDb, echoDelayMs: 30 })
    const energy = { inbound: new TrackEnergy(), outbound: new TrackEnergy() }
    for (const track of ['inbound', 'outbound'] as const) {
      const pcm = Int16Array.from(call[track], (code) => MULAW_TO_PCM16[code]!)
      energy[track].add(pcm, pcm.length, 0)
    }
    const roles = new WordRoles(energy)
    let words = 0
    let unknown = 0
    /** The speaking track's least lead over a word's core, words at their exact times, dB. */
    let leastLeadDb = Infinity
    /** The echo track's best showing against the speaking track over any window of any word, dB: it would need +6 to win. */
    let echoBestDb = -Infinity
    const other = (track: Track): Track => (track === 'inbound' ? 'outbound' : 'inbound')
    // Word times as an upstream might report them: exact, early or late by up to 60 ms.
    for (const shiftMs of [-60, -30, 0, 30, 60]) {
      for (const word of call.words) {
        const timed = { start_ms: word.startMs + shiftMs, end_ms: word.endMs + shiftMs }
        const role = roles.roleOf(timed)
        const own = word.track === 'inbound' ? 'customer' : 'agent'
        words++
        assert.notEqual(role, own === 'customer' ? 'agent' : 'customer', `"${word.text}" shifted ${shiftMs} ms took the echo's role`)
        if (role === 'unknown') unknown++
        for (const [index, [from, to]] of roles.windowsOf(timed).entries()) {
          const leadDb = 10 * Math.log10(energy[word.track].meanSquareWithin(from, to)! / energy[other(word.track)].meanSquareWithin(from, to)!)
          if (shiftMs === 0 && index === 0) leastLeadDb = Math.min(leastLeadDb, leadDb)
          echoBestDb = Math.max(echoBestDb, -leadDb)
        }
      }
    }
    t.diagnostic(`echo ${echoDb} dB: speech leads its echo by ≥ ${leastLeadDb.toFixed(1)} dB over every word (${(leastLeadDb - 6).toFixed(1)} dB above the 6 dB rule); with word times off by up to 60 ms the echo comes within ${(-echoBestDb).toFixed(1)} dB of the speech at best, ${(6 - echoBestDb).toFixed(1)} dB short of winning; ${unknown} of ${words} undecided`)
    // The lead is the echo loss, less what the 30 ms delay moves into a word's window from the words
    // before it (measured: about 2 dB).
    assert.ok(leastLeadDb >= -echoDb - 3, `least lead ${leastLeadDb.toFixed(1)} dB`)
    assert.ok(echoBestDb < 0, `the echo track came within ${echoBestDb.toFixed(1)} dB`)
    assert.equal(unknown, 0, 'every word, exact or shifted, keeps its speaker\'s role')
  })
}
