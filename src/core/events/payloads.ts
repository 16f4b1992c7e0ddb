import type { EndReason } from '../call/call-session.ts'
import type { TranscriptEntry, TurnData } from '../call/turns.ts'
import type { Track } from '../call/types.ts'
import type { UpstreamSessionSummary } from '../call/upstream-link.ts'

/**
 * The `data` of each webhook event, field for field as docs/interface.md ("Webhook events") lists it: the
 * compiler checks every event the service builds against these types. Field names are the wire's
 * snake_case.
 */

/** What every event's data starts with. */
export interface EventIds {
  call_sid: string
  stream_sid: string
  /** Counts the stream's events from 1 with no gaps. */
  sequence: number
}

export interface CallStartedData extends EventIds {
  account_sid: string
  /** ISO-8601 UTC with milliseconds. */
  started_at: string
  tracks: Track[]
  /** The stream's `<Parameter>`s without the token (and without `keyterms`). PHI-grade. */
  custom_parameters: Record<string, string>
  transcription: {
    speech_model: string
    domain: string | null
    speaker_labels: boolean
    sample_rate: number
  }
}

export interface TranscriptTurnData extends EventIds, TurnData {}

export interface CallEndedData extends EventIds {
  reason: EndReason
  started_at: string
  ended_at: string
  /** Length of the call's timeline (one track's worth), ms. */
  audio_ms: number
  turn_count: number
  /** Every turn, speaker revisions applied. */
  transcript: TranscriptEntry[]
  upstream_sessions: UpstreamSessionSummary[]
}

/** One event: its type and the data that type carries. */
export type EventPayload =
  | { type: 'call.started', data: CallStartedData }
  | { type: 'transcript.turn', data: TranscriptTurnData }
  | { type: 'call.ended', data: CallEndedData }

export type EventType = EventPayload['type']

/** The data of events of type `T`. */
export type EventData<T extends EventType = EventType> = Extract<EventPayload, { type: T }>['data']
