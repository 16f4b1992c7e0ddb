import type { SpeakerRevision, Turn } from '../assemblyai/protocol.ts'
import { isPlaceholderSpeaker } from '../assemblyai/protocol.ts'
import type { TrackEnergy } from '../audio/energy.ts'
import { roleFromEnergy } from '../audio/energy.ts'
import { samplesToMs } from '../audio/sample-rate.ts'

import type { Role } from './types.ts'

export interface TurnWord {
  text: string
  start_ms: number
  end_ms: number
  confidence: number
  speaker: string | null
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
  upstream: { session_id: string, turn_order: number }
}

/** One entry of `call.ended.transcript`. */
export interface TranscriptEntry {
  turn_index: number
  speaker: string | null
  role: Role
  text: string
  start_ms: number
  end_ms: number
}

function speakerOf (label: string | null | undefined): string | null {
  return label == null || isPlaceholderSpeaker(label) ? null : label
}

/**
 * Turns AssemblyAI's final Turns into the call's transcript: a gapless turn index, times on the
 * call's timeline (where the session's audio began + the word's time), the role from the two tracks'
 * energy over the turn, and speaker revisions applied for `call.ended`.
 */
export class TurnAssembler {
  readonly #energy: { inbound: TrackEnergy, outbound: TrackEnergy }
  readonly #transcript: TranscriptEntry[] = []
  /** `<session id>:<turn_order>` → index into #transcript, for speaker revisions. */
  readonly #byUpstream = new Map<string, number>()
  #lastEndMs = 0

  constructor (energy: { inbound: TrackEnergy, outbound: TrackEnergy }) {
    this.#energy = energy
  }

  get count (): number { return this.#transcript.length }
  /** End of the last emitted turn on the call timeline, ms. */
  get lastEndMs (): number { return this.#lastEndMs }
  get transcript (): TranscriptEntry[] { return this.#transcript.map((entry) => ({ ...entry })) }

  /**
   * Builds the next turn, or null when nothing new is left: after a reconnect the replayed audio can
   * make the new session repeat words the call already has, and those are dropped, never sent twice.
   */
  accept (turn: Turn, sessionId: string, offsetSamples: number): TurnData | null {
    const key = `${sessionId}:${turn.turn_order}`
    if (this.#byUpstream.has(key)) return null
    const offsetMs = samplesToMs(offsetSamples)
    const words: TurnWord[] = []
    for (const word of turn.words) {
      const startMs = Math.round(offsetMs + word.start)
      const endMs = Math.round(offsetMs + word.end)
      if (endMs <= this.#lastEndMs) continue
      words.push({ text: word.text, start_ms: startMs, end_ms: endMs, confidence: word.confidence, speaker: speakerOf(word.speaker ?? turn.speaker_label) })
    }
    if (turn.words.length > 0 && words.length === 0) return null
    const first = words[0]
    const last = words[words.length - 1]
    // A turn without words (possible for very short finals) keeps the timeline position it had.
    const startMs = first?.start_ms ?? this.#lastEndMs
    const endMs = last?.end_ms ?? startMs
    const text = words.length === turn.words.length ? turn.transcript : words.map((word) => word.text).join(' ')
    const role = roleFromEnergy(this.#energy.inbound.meanSquare(startMs, endMs), this.#energy.outbound.meanSquare(startMs, endMs))
    const confidence = words.length === 0 ? 0 : words.reduce((sum, word) => sum + word.confidence, 0) / words.length
    const data: TurnData = {
      turn_index: this.#transcript.length + 1,
      text,
      speaker: speakerOf(turn.speaker_label),
      role,
      start_ms: startMs,
      end_ms: endMs,
      confidence: Math.round(confidence * 1000) / 1000,
      words,
      upstream: { session_id: sessionId, turn_order: turn.turn_order }
    }
    this.#byUpstream.set(key, this.#transcript.length)
    this.#transcript.push({ turn_index: data.turn_index, speaker: data.speaker, role, text, start_ms: startMs, end_ms: endMs })
    if (endMs > this.#lastEndMs) this.#lastEndMs = endMs
    return data
  }

  /** Applies a SpeakerRevision: the speaker changes, the role decided at emission does not. */
  applyRevision (revision: SpeakerRevision, sessionId: string): void {
    for (const item of revision.revisions) {
      const index = this.#byUpstream.get(`${sessionId}:${item.turn_order}`)
      const entry = index === undefined ? undefined : this.#transcript[index]
      if (entry !== undefined) entry.speaker = speakerOf(item.speaker_label)
    }
  }
}
