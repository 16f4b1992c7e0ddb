import type { SpeakerRevision, Turn } from '../assemblyai/protocol.ts'
import { isPlaceholderSpeaker } from '../assemblyai/protocol.ts'
import type { TrackEnergy } from '../audio/energy.ts'
import { samplesToMs } from '../audio/sample-rate.ts'
import { WordRoles } from './word-roles.ts'
import type { WordRoleOptions } from './word-roles.ts'

import type { Role } from './types.ts'

export interface TurnWord {
  text: string
  start_ms: number
  end_ms: number
  confidence: number
  speaker: string | null
  /** From the two tracks' energy over the word itself; never revised. */
  role: Role
}

/** `transcript.turn`'s data, without the call's ids and the event sequence. */
export interface TurnData {
  turn_index: number
  text: string
  speaker: string | null
  role: Role
  start_ms: number
  end_ms: number
  confidence: number
  words: TurnWord[]
  /** `part` counts from 0 the parts one upstream turn was split into where its words' role changes. */
  upstream: { session_id: string, turn_order: number, part: number }
}

/** One entry of `call.ended.transcript`. */
export interface TranscriptEntry {
  turn_index: number
  speaker: string | null
  role: Role
  text: string
  start_ms: number
  end_ms: number
  words: TurnWord[]
}

/** Where an emitted part came from: its transcript entry and the indices of its words in the upstream turn. */
interface PartSource {
  entry: number
  wordIndices: number[]
}

function speakerOf (label: string | null | undefined): string | null {
  return label == null || isPlaceholderSpeaker(label) ? null : label
}

/**
 * The label that most of the words' duration carries, counting only the words the upstream labelled
 * itself (`labels[i]` for `words[i]`); null when it labelled none.
 */
function dominantSpeaker (labels: ReadonlyArray<string | null | undefined>, words: readonly TurnWord[]): string | null {
  const totals = new Map<string, number>()
  let best: string | null = null
  let bestMs = 0
  labels.forEach((label, i) => {
    const speaker = speakerOf(label)
    const word = words[i]
    if (speaker === null || word === undefined) return
    const ms = (totals.get(speaker) ?? 0) + Math.max(1, word.end_ms - word.start_ms)
    totals.set(speaker, ms)
    if (ms > bestMs) {
      best = speaker
      bestMs = ms
    }
  })
  return best
}

/**
 * Turns AssemblyAI's final Turns into the call's transcript: a gapless turn index, times on the
 * call's timeline (where the session's audio began + the word's time), a role for every word from the
 * two tracks' energy over that word, one published turn per role run of an upstream turn (see
 * WordRoles.split), and speaker revisions applied for `call.ended`.
 */
export class TurnAssembler {
  readonly #roles: WordRoles
  readonly #transcript: TranscriptEntry[] = []
  /** `<session id>:<turn_order>` → the parts emitted for it, for speaker revisions. */
  readonly #byUpstream = new Map<string, PartSource[]>()
  #lastEndMs = 0

  constructor (energy: { inbound: TrackEnergy, outbound: TrackEnergy }, options: WordRoleOptions = {}) {
    this.#roles = new WordRoles(energy, options)
  }

  /** Published turns (parts) so far. */
  get count (): number { return this.#transcript.length }
  /** End of the last emitted turn on the call timeline, ms. */
  get lastEndMs (): number { return this.#lastEndMs }
  get transcript (): TranscriptEntry[] { return this.#transcript.map((entry) => ({ ...entry, words: entry.words.map((word) => ({ ...word })) })) }

  /**
   * Builds the turns to publish for one final upstream Turn, in order: one per role run of its words
   * (usually one). Empty when nothing new is left: after a reconnect the replayed audio can make the
   * new session repeat words the call already has, and those are dropped, never sent twice.
   */
  accept (turn: Turn, sessionId: string, offsetSamples: number): TurnData[] {
    const key = `${sessionId}:${turn.turn_order}`
    if (this.#byUpstream.has(key)) return []
    const offsetMs = samplesToMs(offsetSamples)
    const words: TurnWord[] = []
    /** Index of each kept word in the upstream turn, for revisions. */
    const indices: number[] = []
    turn.words.forEach((word, index) => {
      const startMs = Math.round(offsetMs + word.start)
      const endMs = Math.round(offsetMs + word.end)
      if (endMs <= this.#lastEndMs) return
      const timed = { start_ms: startMs, end_ms: endMs }
      words.push({ text: word.text, ...timed, confidence: word.confidence, speaker: speakerOf(word.speaker ?? turn.speaker_label), role: this.#roles.roleOf(timed) })
      indices.push(index)
    })
    if (turn.words.length > 0 && words.length === 0) return []
    const parts = this.#roles.split(words, words.map((word) => word.role))
    const sources: PartSource[] = []
    const emitted: TurnData[] = []
    parts.forEach((part, partIndex) => {
      const partWords = words.slice(part.from, part.to)
      const first = partWords[0]
      // A turn without words (possible for very short finals) keeps the timeline position it had.
      const startMs = first?.start_ms ?? this.#lastEndMs
      const endMs = partWords.reduce((end, word) => Math.max(end, word.end_ms), startMs)
      const whole = parts.length === 1 && words.length === turn.words.length
      const text = whole ? turn.transcript : partWords.map((word) => word.text).join(' ')
      // One part: the turn's own label, as before splitting existed. Several: each part's words' labels.
      const speaker = parts.length === 1
        ? speakerOf(turn.speaker_label)
        : dominantSpeaker(indices.slice(part.from, part.to).map((index) => turn.words[index]?.speaker), partWords) ?? speakerOf(turn.speaker_label)
      const confidence = partWords.length === 0 ? 0 : partWords.reduce((sum, word) => sum + word.confidence, 0) / partWords.length
      const data: TurnData = {
        turn_index: this.#transcript.length + 1,
        text,
        speaker,
        role: part.role,
        start_ms: startMs,
        end_ms: endMs,
        confidence: Math.round(confidence * 1000) / 1000,
        words: partWords,
        upstream: { session_id: sessionId, turn_order: turn.turn_order, part: partIndex }
      }
      sources.push({ entry: this.#transcript.length, wordIndices: indices.slice(part.from, part.to) })
      // Its own copy of the words: a revision relabels them later, the published turn stays as sent.
      this.#transcript.push({ turn_index: data.turn_index, speaker, role: part.role, text, start_ms: startMs, end_ms: endMs, words: partWords.map((word) => ({ ...word })) })
      if (endMs > this.#lastEndMs) this.#lastEndMs = endMs
      emitted.push(data)
    })
    this.#byUpstream.set(key, sources)
    return emitted
  }

  /**
   * Applies a SpeakerRevision to `call.ended`'s transcript: speaker labels change (a part's and its
   * words'), roles do not: they were measured from the audio, which a revision does not change.
   */
  applyRevision (revision: SpeakerRevision, sessionId: string): void {
    for (const item of revision.revisions) {
      const sources = this.#byUpstream.get(`${sessionId}:${item.turn_order}`)
      if (sources === undefined) continue
      for (const source of sources) {
        const entry = this.#transcript[source.entry]
        if (entry === undefined) continue
        const labels = source.wordIndices.map((index) => item.words[index]?.speaker ?? item.speaker_label)
        entry.words.forEach((word, i) => { word.speaker = speakerOf(labels[i]) })
        entry.speaker = sources.length === 1
          ? speakerOf(item.speaker_label)
          : dominantSpeaker(source.wordIndices.map((index) => item.words[index]?.speaker), entry.words) ?? speakerOf(item.speaker_label)
      }
    }
  }
}
