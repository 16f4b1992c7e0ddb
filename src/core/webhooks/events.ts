import type { EventData, EventType } from '../events/payloads.ts'

export type { CallEndedData, CallStartedData, EventData, EventIds, EventPayload, EventType, TranscriptTurnData } from '../events/payloads.ts'

/**
 * One outgoing event, serialized once: the webhook sender and the file sink send `body` byte for byte,
 * so a retry carries the same bytes and the same `webhook-id`.
 */
export interface OutgoingEvent {
  /** `<stream_sid>-<sequence>`: the Standard Webhooks `webhook-id`, identical on every attempt. */
  id: string
  callSid: string
  streamSid: string
  /** Counts the stream's events from 1 with no gaps. */
  sequence: number
  type: EventType
  /** `{"type","timestamp","data"}` as JSON: the exact bytes delivered. */
  body: string
}

/**
 * Where a call's events go. `publish` returns once the sink holds the event: committed to the
 * SQLite outbox or appended to the JSONL file (in the page cache: it survives a crash of the
 * process, not a power loss), or, in fleet mode, queued in order for PostgreSQL. An event a sink
 * cannot keep is counted in `medstream_events_lost_total`, never dropped silently. Delivery happens
 * later and in order per stream.
 */
export interface EventSink {
  /** Begins delivery of what an earlier run left pending. Optional: a sink with nothing to resume omits it. */
  start? (): void | Promise<void>
  publish (event: OutgoingEvent): void
  /**
   * False while new calls should go elsewhere (fleet mode: the database not yet reached, or the
   * in-memory buffer past half its bound). Absent means always true.
   */
  readonly accepting?: boolean
  /** Stops accepting events, makes a last delivery pass until `deadline` (epoch ms), keeps the rest. */
  close (deadline: number): Promise<void>
}

function eventId (streamSid: string, sequence: number): string {
  return `${streamSid}-${sequence}`
}

/** Serializes one event once; `data` must be what docs/interface.md lists for `type`. */
export function serializeEvent<T extends EventType> (type: T, data: EventData<T>, now: Date = new Date()): OutgoingEvent {
  const body = JSON.stringify({ type, timestamp: now.toISOString(), data })
  return { id: eventId(data.stream_sid, data.sequence), callSid: data.call_sid, streamSid: data.stream_sid, sequence: data.sequence, type, body }
}
