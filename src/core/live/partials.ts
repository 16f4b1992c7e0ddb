import type { Turn } from '../assemblyai/protocol.ts'
import { isPlaceholderSpeaker } from '../assemblyai/protocol.ts'
import type { TrackEnergy } from '../audio/energy.ts'
import { roleFromEnergy } from '../audio/energy.ts'
import type { Role } from '../call/types.ts'

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
 * the call timeline, and the role from the two tracks' energy over the words so far. Null for a
 * partial with no words (nothing to show, nowhere to place it).
 */
export function mapPartial (turn: Turn, offsetSamples: number, energy: { inbound: TrackEnergy, outbound: TrackEnergy }): PartialTurn | null {
  const first = turn.words[0]
  const last = turn.words[turn.words.length - 1]
  if (first === undefined || last === undefined) return null
  const text = turn.transcript !== '' ? turn.transcript : turn.words.map((word) => word.text).join(' ')
  if (text.trim() === '') return null
  const offsetMs = offsetSamples / 8
  const startMs = Math.round(offsetMs + first.start)
  const endMs = Math.round(offsetMs + last.end)
  const label = turn.speaker_label ?? first.speaker
  return {
    role: roleFromEnergy(energy.inbound.meanSquare(startMs, endMs), energy.outbound.meanSquare(startMs, endMs)),
    speaker: isPlaceholderSpeaker(label) ? null : (label as string),
    start_ms: startMs,
    end_ms: endMs,
    text,
    turn_order: turn.turn_order
  }
}
