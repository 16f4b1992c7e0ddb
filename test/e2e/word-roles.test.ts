import assert from 'node:assert/strict'
import { test } from 'node:test'
import { metricValue, startHarness } from '../helpers/harness.ts'
import { generateMessyCall } from '../helpers/messy-call.ts'
import type { MessyCall, Track } from '../helpers/messy-call.ts'

/** Twilio's first `media.timestamp` in the simulator: the call timeline is the track audio shifted by it. */
const FIRST_TIMESTAMP_MS = 150
const ROLE_OF: Record<Track, string> = { inbound: 'customer', outbound: 'agent' }
const LABEL_OF: Record<Track, string> = { outbound: 'A', inbound: 'B' }

interface PublishedWord { text: string, start_ms: number, end_ms: number, speaker: string | null, role: string }
interface PublishedTurn {
  turn_index: number
  text: string
  role: string
  speaker: string | null
  start_ms: number
  end_ms: number
  words: PublishedWord[]
  upstream: { session_id: string, turn_order: number, part: number }
}

interface Figures {
  /** Words whose midpoint lies in exactly one party's speech, and how many got that party's role. */
  words: { counted: number, right: number }
  /** Spoken turns other than backchannels, and how many the most-overlapping published turn covers with their role. */
  turns: { counted: number, right: number, wrong: string[] }
  upstreamTurns: number
  published: PublishedTurn[]
  ended: Record<string, unknown>
}

/** Plays a generated call through the real service with the AssemblyAI fake hearing its words as spoken. */
async function playThroughService (call: MessyCall, t: { after: (fn: () => Promise<void>) => void }): Promise<Figures> {
  const spokenWords = call.words.map((word) => ({ text: word.text, startMs: word.startMs, endMs: word.endMs, speaker: LABEL_OF[word.track] }))
  const harness = await startHarness({ fake: { spokenWords } })
  t.after(() => harness.close())
  const placed = await harness.simulator.placeCall()
  // 20× real time: the fake is paced by the audio it receives, never by the clock.
  const stream = harness.simulator.openStream(placed, { inbound: call.inbound, outbound: call.outbound, speed: 20, firstTimestampMs: FIRST_TIMESTAMP_MS })
  await stream.opened
  assert.equal((await stream.done).code, 1000)
  const receiver = harness.receiver!
  await receiver.waitFor((events) => events.some((event) => event.type === 'call.ended'))
  const events = receiver.events.filter((event) => event.callSid === placed.callSid)
  assert.deepEqual(events.map((event) => event.sequence), events.map((_, index) => index + 1), 'sequence stays gapless across parts')
  const published = events.filter((event) => event.type === 'transcript.turn').map((event) => event.data as unknown as PublishedTurn)
  const ended = events.at(-1)!.data

  // Word roles: each published word against the party (or parties) speaking at its midpoint.
  const words = { counted: 0, right: 0 }
  for (const word of published.flatMap((turn) => turn.words)) {
    const midpoint = (word.start_ms + word.end_ms) / 2 - FIRST_TIMESTAMP_MS
    const speaking = new Set(call.words.filter((spoken) => spoken.startMs <= midpoint && midpoint < spoken.endMs).map((spoken) => spoken.track))
    if (speaking.size !== 1) continue
    words.counted++
    if (word.role === ROLE_OF[[...speaking][0]!]) words.right++
  }

  // Turn roles: the published turn that overlaps a spoken turn most on the call timeline has its role.
  const turns = { counted: 0, right: 0, wrong: [] as string[] }
  for (const spoken of call.turns.filter((turn) => !turn.backchannel)) {
    const from = spoken.startMs + FIRST_TIMESTAMP_MS
    const to = spoken.endMs + FIRST_TIMESTAMP_MS
    let best: PublishedTurn | null = null
    let bestOverlap = 0
    for (const turn of published) {
      const overlap = Math.min(to, turn.end_ms) - Math.max(from, turn.start_ms)
      if (overlap > bestOverlap) {
        best = turn
        bestOverlap = overlap
      }
    }
    turns.counted++
    if (best?.role === ROLE_OF[spoken.track]) turns.right++
    else turns.wrong.push(`${spoken.track} ${Math.round(from)}–${Math.round(to)}: ${best === null ? 'no turn' : `turn ${best.turn_index} ${best.role}`}`)
  }
  const upstreamTurns = new Set(published.map((turn) => `${turn.upstream.session_id}:${turn.upstream.turn_order}`)).size

  // The metrics and call.ended follow the split.
  for (const role of ['customer', 'agent', 'unknown']) {
    assert.equal(await metricValue(harness.app, 'medstream_turns_total', { role }), published.filter((turn) => turn.role === role).length, `turns_total{role="${role}"}`)
  }
  return { words, turns, upstreamTurns, published, ended }
}

function percent (part: number, whole: number): string {
  return `${(100 * part / whole).toFixed(1)} %`
}

test('a messy two-party call gets its speakers\' roles per word and per spoken turn when played through the service', async (t) => {
  const call = await generateMessyCall()
  const figures = await playThroughService(call, t)
  const { words, turns, published } = figures
  t.diagnostic(`messy call: word roles ${words.right}/${words.counted} (${percent(words.right, words.counted)}), turn roles ${turns.right}/${turns.counted}, ${figures.upstreamTurns} upstream turns → ${published.length} published`)

  // The scenario is the hard one: the fake's VAD merged the barge-ins and the cross-talk into
  // upstream turns holding both parties, so fewer upstream turns than spoken turns arrived.
  const spokenTurns = call.turns.filter((turn) => !turn.backchannel).length
  assert.ok(figures.upstreamTurns < spokenTurns, `${figures.upstreamTurns} upstream turns for ${spokenTurns} spoken turns`)
  assert.ok(published.some((turn) => turn.upstream.part > 0), 'some upstream turn was split')

  assert.ok(words.counted >= call.words.length * 0.6, `${words.counted} of ${call.words.length} words lie in one party's speech`)
  assert.ok(words.right >= words.counted * 0.95, `word roles: ${words.right}/${words.counted}`)
  assert.deepEqual(turns.wrong, [], 'every spoken turn is covered by a published turn with its role')

  // Parts of one upstream turn: consecutive, same turn_order, parts counted from 0, own times and text.
  const byUpstream = Map.groupBy(published, (turn) => `${turn.upstream.session_id}:${turn.upstream.turn_order}`)
  for (const parts of byUpstream.values()) {
    assert.deepEqual(parts.map((turn) => turn.upstream.part), parts.map((_, index) => index))
    assert.deepEqual(parts.map((turn) => turn.turn_index), parts.map((_, index) => parts[0]!.turn_index + index), 'parts are consecutive turns')
    for (const [index, turn] of parts.entries()) {
      assert.equal(turn.text, turn.words.map((word) => word.text).join(' '))
      assert.equal(turn.start_ms, turn.words[0]!.start_ms)
      assert.equal(turn.end_ms, Math.max(...turn.words.map((word) => word.end_ms)))
      if (index > 0) assert.notEqual(turn.role, parts[index - 1]!.role, 'a part starts only where the role changes')
    }
  }

  // The backchannel stays inline, inside the agent's turn, with its own role.
  const backchannel = published.flatMap((turn) => turn.words.map((word) => ({ turn, word }))).find(({ word }) => word.text === 'mm-hmm')
  assert.ok(backchannel !== undefined, 'the backchannel was transcribed')
  assert.equal(backchannel.word.role, 'customer')
  assert.equal(backchannel.turn.role, 'agent')
  assert.ok(backchannel.turn.words.length > 3, 'it is not a turn of its own')

  // call.ended carries the same turns, words and roles.
  const transcript = figures.ended.transcript as Array<{ turn_index: number, role: string, text: string, words: PublishedWord[] }>
  assert.equal(figures.ended.turn_count, published.length)
  assert.deepEqual(transcript.map((entry) => [entry.turn_index, entry.role, entry.text, entry.words.map((word) => word.role)]),
    published.map((turn) => [turn.turn_index, turn.role, turn.text, turn.words.map((word) => word.role)]))
})

test('the clean version of the call gets every word and every spoken turn its role when played through the service', async (t) => {
  const call = await generateMessyCall({ clean: true, echoDb: null })
  const figures = await playThroughService(call, t)
  const { words, turns } = figures
  t.diagnostic(`clean call: word roles ${words.right}/${words.counted} (${percent(words.right, words.counted)}), turn roles ${turns.right}/${turns.counted}`)
  assert.equal(words.counted, call.words.length, 'no word overlaps another party\'s')
  assert.equal(words.right, words.counted)
  assert.deepEqual(turns.wrong, [])
  assert.ok(figures.published.every((turn) => turn.upstream.part === 0), 'nothing is split')
})
