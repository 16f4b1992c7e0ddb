import type { Turn } from '../assemblyai/protocol.ts'
import { isPlaceholderSpeaker } from '../assemblyai/protocol.ts'
import type { Role } from '../call/types.ts'
import type { WordRoles } from '../call/word-roles.ts'

/**
 * A non-final Turn on the call's timeline: the words so far of a turn still being spoken. Shown to
 * live viewers only; never persisted, never sent as a webhook, never logged.
 */
export interface PartialTurn {
  role: Role
  /** Partials usually carry no diarization label yet: then null, like a placeholder on a final. */
  speaker: string | null
  /** Call timeline, ms, from the first and the last word so far. */
  start_ms: number
  end_ms: number
  /** The whole turn so far: it replaces the previous partial of its `turn_order`, never appends. */
  text: string
  turn_order: number
}

/**
 * Maps a partial the way final turns are mapped: word times plus where the session's audio began on
 * the call timeline, and roles word by word. A final turn is split where its role changes; a partial
 * is shown whole, with the role of its last part: whoever is speaking now. Null for a partial with no
 * words (nothing to show, nowhere to place it).
 */
export function mapPartial (turn: Turn, offsetSamples: number, roles: WordRoles): PartialTurn | null {
  const first = turn.words[0]
  const last = turn.words[turn.words.length - 1]
  if (first === undefined || last === undefined) return null
  const text = turn.transcript !== '' ? turn.transcript : turn.words.map((word) => word.text).join(' ')
  if (text.trim() === '') return null
  const offsetMs = offsetSamples / 8
  const words = turn.words.map((word) => ({ start_ms: Math.round(offsetMs + word.start), end_ms: Math.round(offsetMs + word.end) }))
  const parts = roles.split(words, words.map((word) => roles.roleOf(word)))
  const label = turn.speaker_label ?? first.speaker
  return {
    role: parts[parts.length - 1]?.role ?? 'unknown',
    speaker: isPlaceholderSpeaker(label) ? null : (label as string),
    start_ms: words[0]?.start_ms ?? 0,
    end_ms: words[words.length - 1]?.end_ms ?? 0,
    text,
    turn_order: turn.turn_order
  }
}
