import type { OutgoingEvent } from './events.ts'

/**
 * The outbox as the sender, the sink and the operator command see it, whichever database holds it:
 * SQLite in `DATA_DIR` (one process, calls that return at once) or PostgreSQL shared by a fleet
 * (every call a promise). Callers `await` every result, so one sender drives both.
 *
 * Ordering invariant, in both backends: of a stream's pending events exactly one, the lowest
 * `sequence`, has a `next_attempt_at`; the rest wait behind it with NULL.
 */
export type Awaitable<T> = T | Promise<T>

export type OutboxState = 'pending' | 'dead'

/** An event as the operator sees it: everything but the body (which holds PHI). */
export interface OutboxRow {
  id: string
  callSid: string
  streamSid: string
  sequence: number
  type: string
  state: OutboxState
  attempts: number
  /** When the event was first published, epoch ms. */
  createdAt: number
  /** Start of the current retry window (publish time, or the last replay), epoch ms. */
  queuedAt: number
  /** Only the head of a stream has one; null for the events queued behind it and for dead letters. */
  nextAttemptAt: number | null
  lastAttemptAt: number | null
  /** HTTP status of the last failed attempt, null when it got no answer. */
  lastStatus: number | null
  /** Reason of the last failure: `status`, `redirect`, `timeout`, `shutdown` or `network:<code>`. */
  lastError: string | null
  /** A receiver's `Retry-After`: no attempt before this, even when everything else is retried at once. */
  notBefore: number | null
  deadAt: number | null
}

/** The head of a stream, due for an attempt. */
export interface DueEvent {
  id: string
  callSid: string
  streamSid: string
  sequence: number
  body: string
  attempts: number
  queuedAt: number
  /**
   * Fleet mode: aborted (reason `LEASE_LOST`) when this replica can no longer prove it holds the
   * stream's lease, before another replica could take the stream. The attempt must stop at once.
   */
  lease?: AbortSignal
}

export interface CallSummary {
  callSid: string
  pending: number
  dead: number
  /** Oldest `createdAt` among the call's events, epoch ms. */
  oldestCreatedAt: number
}

export interface PauseState {
  /** Epoch ms. */
  since: number
  status: number
}

export interface FailureRecord {
  /** Epoch ms of the attempt. */
  at: number
  status: number | null
  reason: string
}

export interface ListFilter {
  state?: OutboxState
  callSid?: string
  limit?: number
}

export interface OutboxStore {
  readonly backend: 'sqlite' | 'postgres'
  readonly closed: boolean
  /** Stores events in the given order; ids already held are skipped. Returns how many were new. */
  insertMany (events: readonly OutgoingEvent[], now?: number): Awaitable<number>
  /**
   * Up to `limit` stream heads due at `now`, soonest first, skipping the streams in `exclude`. In a
   * fleet each returned stream is leased to this process until `release`: no other replica attempts
   * it meanwhile.
   */
  claimDue (now: number, limit: number, exclude: ReadonlySet<string>): Awaitable<DueEvent[]>
  /** Ends the lease `claimDue` took on the stream (a no-op for a single process). */
  release (streamSid: string): Awaitable<void>
  /** The earliest attempt time after `now` among stream heads, or null when nothing waits. */
  nextDueAt (now: number): Awaitable<number | null>
  /** A receiver answered 2xx: the event leaves the outbox and the next one of its stream is due. */
  markDelivered (id: string, streamSid: string, now?: number): Awaitable<void>
  /** A failed attempt retried at `nextAttemptAt`; `notBefore` (Retry-After) holds even when all are retried at once. */
  markFailed (id: string, failure: FailureRecord, nextAttemptAt: number, notBefore?: number | null): Awaitable<void>
  /** The event's retry window is exhausted: it becomes a dead letter and its stream goes on. */
  markDead (id: string, streamSid: string, failure: FailureRecord): Awaitable<void>
  /** Makes every waiting stream head due at `now`, or when its Retry-After ends if later. Returns how many. */
  retryAllNow (now?: number): Awaitable<number>
  counts (): Awaitable<Record<OutboxState, number>>
  /** `createdAt` of the oldest pending event, or null when none is pending. */
  oldestPendingCreatedAt (): Awaitable<number | null>
  /** Events without their bodies, oldest first. */
  list (filter?: ListFilter): Awaitable<OutboxRow[]>
  /** Pending and dead counts per call, the call with the oldest event first. */
  summary (): Awaitable<CallSummary[]>
  /** Re-queues dead letters with a fresh window: one by id, a call's, or all. Returns how many. */
  replayDead (selector?: { id?: string, callSid?: string }, now?: number): Awaitable<number>
  /** Deletes dead letters created at least `olderThanMs` ago (all by default). Returns how many. */
  purgeDead (options?: { olderThanMs?: number }, now?: number): Awaitable<number>
  /** Records that the endpoint answered `410 Gone`; seen by every process sharing the outbox. */
  pause (status: number, now?: number): Awaitable<void>
  /** Clears the pause flag. True when delivery was paused. */
  resume (): Awaitable<boolean>
  pauseState (): Awaitable<PauseState | null>
  /** Idempotent. */
  close (): Awaitable<void>
}

/** An operator's view of one stored event from its columns, which both backends name alike. */
export function outboxRow (row: Record<string, unknown>): OutboxRow {
  return {
    id: row.id as string,
    callSid: row.call_sid as string,
    streamSid: row.stream_sid as string,
    sequence: row.sequence as number,
    type: row.type as string,
    state: row.state as OutboxState,
    attempts: row.attempts as number,
    createdAt: row.created_at as number,
    queuedAt: row.queued_at as number,
    nextAttemptAt: row.next_attempt_at as number | null,
    lastAttemptAt: row.last_attempt_at as number | null,
    lastStatus: row.last_status as number | null,
    lastError: row.last_error as string | null,
    notBefore: row.not_before as number | null,
    deadAt: row.dead_at as number | null
  }
}

/** A stream head to attempt, from the columns both backends name alike. */
export function dueEvent (row: Record<string, unknown>): DueEvent {
  return {
    id: row.id as string,
    callSid: row.call_sid as string,
    streamSid: row.stream_sid as string,
    sequence: row.sequence as number,
    body: row.body as string,
    attempts: row.attempts as number,
    queuedAt: row.queued_at as number
  }
}
