import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import type { StatementSync } from 'node:sqlite'
import type { OutgoingEvent } from './events.ts'
import { dueEvent, outboxRow } from './outbox-store.ts'
import type { CallSummary, DueEvent, FailureRecord, ListFilter, OutboxRow, OutboxState, OutboxStore, PauseState } from './outbox-store.ts'

export type { CallSummary, DueEvent, FailureRecord, OutboxRow, OutboxState, PauseState } from './outbox-store.ts'

const SCHEMA_VERSION = 1
const PAUSE_KEY = 'endpoint_paused'
/**
 * A delivery is written to the file with the next transaction (usually the next event's insert),
 * or after this long, ms. Until then a SIGKILL means the event is sent again (same webhook-id).
 */
const DELIVERED_FLUSH_MS = 100

/** A stream's head as the sender sees it: the one pending event with a `next_attempt_at`. */
interface Head {
  id: string
  sequence: number
  nextAttemptAt: number
  /** The event as it is attempted, when this process has it at hand (it inserted or promoted it). */
  event: DueEvent | null
  /** The stream's highest pending sequence, when this process knows it (it inserted every event behind the head). */
  newest: number | null
}

/** How often a claim asks SQLite whether another process committed, ms. Each commit asks too. */
const REFRESH_MS = 100

/** A delivery not yet written: delete `id`, and make `next` (the stream's next event) due at `at`. */
interface Delivered {
  id: string
  streamSid: string
  next: string | null
  at: number
}

/**
 * The SQLite outbox, the default backend (one process, `DATA_DIR/outbox.db`): every event is committed here before `publish` returns, and leaves only when a
 * receiver answered 2xx. Dead letters stay until an operator replays or purges them.
 *
 * Ordering invariant: of a stream's pending events exactly one, the lowest `sequence`, has a
 * `next_attempt_at`; the rest wait behind it with NULL. "What is due" is then one range scan of a
 * partial index, however large a backlog a long outage leaves.
 *
 * The operator CLI opens the same file from another process; WAL lets it read and write while the
 * service runs, and the `control` table carries the endpoint pause flag between the two.
 *
 * The hot path is one commit per event. One process delivers the file, so the heads live in memory
 * too: claiming what is due reads no table, and `PRAGMA data_version` tells when another process
 * (the CLI) changed the file and the heads must be read again. A delivery is recorded in memory at
 * once and written with the next commit, which is mostly the next event's insert: the receiver's
 * 2xx is what matters, and a lost delete only sends the event again, under the same webhook-id.
 */
export class Outbox implements OutboxStore {
  readonly backend = 'sqlite'
  readonly path: string
  #db: DatabaseSync
  #closed = false
  #insert: StatementSync
  #demote: StatementSync
  #promote: StatementSync
  #due: StatementSync
  #delete: StatementSync
  #fail: StatementSync
  #dead: StatementSync
  #retryAll: StatementSync
  #getControl: StatementSync
  #setControl: StatementSync
  #deleteControl: StatementSync
  #dataVersion: StatementSync
  #heads: StatementSync
  #streamHead: StatementSync
  #nextInStream: StatementSync
  #byId: StatementSync
  #promoteId: StatementSync
  /** streamSid → head, mirroring the file plus the deliveries in `#delivered`. */
  readonly #head = new Map<string, Head>()
  /** Deliveries recorded in memory, in order, not yet in the file. */
  #delivered: Delivered[] = []
  #flushTimer: NodeJS.Timeout | null = null
  /** `PRAGMA data_version` when the heads were last read; -1 forces a re-read. */
  #seenVersion = -1
  #refreshedAt = -Infinity

  static pathIn (dataDir: string): string {
    return join(dataDir, 'outbox.db')
  }

  /** Opens (and creates, with its directory, mode 0700) the database at `path`. */
  constructor (path: string) {
    this.path = path
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    this.#db = new DatabaseSync(path)
    // WAL with synchronous=NORMAL: a committed event survives a SIGKILL or crash of the process (it
    // is in the WAL file when publish returns); only a power loss or kernel crash can take the last
    // commits before a checkpoint. FULL would fsync on the event loop for every event, and at a few
    // hundred calls those stalls delay every call's audio (the benchmark showed 9.5 % of CPU in fsync
    // and 70 ms event-loop stalls at 200 calls).
    // busy_timeout first: the operator CLI and the service open the same file concurrently.
    this.#db.exec(`
      PRAGMA busy_timeout = 5000;
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY,
        call_sid TEXT NOT NULL,
        stream_sid TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        queued_at INTEGER NOT NULL,
        next_attempt_at INTEGER,
        last_attempt_at INTEGER,
        last_status INTEGER,
        last_error TEXT,
        not_before INTEGER,
        dead_at INTEGER
      ) STRICT;
      CREATE INDEX IF NOT EXISTS events_stream ON events (stream_sid, state, sequence);
      CREATE INDEX IF NOT EXISTS events_due ON events (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
      CREATE INDEX IF NOT EXISTS events_state_created ON events (state, created_at);
      CREATE TABLE IF NOT EXISTS control (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    `)
    if (this.#db.prepare('PRAGMA user_version').get()?.user_version !== SCHEMA_VERSION) {
      this.#db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)
    }
    const db = this.#db
    this.#insert = db.prepare(`INSERT INTO events (id, call_sid, stream_sid, sequence, type, body, created_at, queued_at, next_attempt_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`)
    this.#demote = db.prepare(`UPDATE events SET next_attempt_at = NULL
      WHERE stream_sid = :s AND state = 'pending' AND next_attempt_at IS NOT NULL
        AND sequence > (SELECT MIN(sequence) FROM events WHERE stream_sid = :s AND state = 'pending')`)
    this.#promote = db.prepare(`UPDATE events SET next_attempt_at = :now
      WHERE id = (SELECT id FROM events WHERE stream_sid = :s AND state = 'pending' ORDER BY sequence LIMIT 1)
        AND next_attempt_at IS NULL`)
    this.#due = db.prepare(`SELECT id, call_sid, stream_sid, sequence, body, attempts, queued_at FROM events
      WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ? ORDER BY next_attempt_at`)
    this.#delete = db.prepare('DELETE FROM events WHERE id = ?')
    this.#fail = db.prepare(`UPDATE events SET attempts = attempts + 1, last_attempt_at = :at, last_status = :status,
        last_error = :reason, not_before = :notBefore,
        next_attempt_at = CASE WHEN next_attempt_at IS NULL THEN NULL ELSE :next END
      WHERE id = :id AND state = 'pending' RETURNING stream_sid`)
    this.#dead = db.prepare(`UPDATE events SET state = 'dead', attempts = attempts + 1, last_attempt_at = :at,
        last_status = :status, last_error = :reason, next_attempt_at = NULL, dead_at = :at
      WHERE id = :id AND state = 'pending'`)
    this.#retryAll = db.prepare(`UPDATE events SET next_attempt_at = MAX(:now, COALESCE(not_before, 0))
      WHERE next_attempt_at > MAX(:now, COALESCE(not_before, 0))`)
    this.#getControl = db.prepare('SELECT value FROM control WHERE key = ?')
    this.#setControl = db.prepare('INSERT INTO control (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value')
    this.#deleteControl = db.prepare('DELETE FROM control WHERE key = ?')
    this.#dataVersion = db.prepare('PRAGMA data_version')
    this.#heads = db.prepare('SELECT id, stream_sid, sequence, next_attempt_at FROM events WHERE next_attempt_at IS NOT NULL')
    this.#streamHead = db.prepare('SELECT id, sequence, next_attempt_at FROM events WHERE stream_sid = ? AND next_attempt_at IS NOT NULL')
    this.#nextInStream = db.prepare(`SELECT id, call_sid, stream_sid, sequence, body, attempts, queued_at FROM events
      WHERE stream_sid = ? AND state = 'pending' AND sequence > ?
      ORDER BY sequence LIMIT 1`)
    this.#byId = db.prepare(`SELECT id, call_sid, stream_sid, sequence, body, attempts, queued_at FROM events
      WHERE id = ? AND state = 'pending'`)
    this.#promoteId = db.prepare(`UPDATE events SET next_attempt_at = :now
      WHERE id = :id AND state = 'pending' AND next_attempt_at IS NULL`)
    this.#refresh()
  }

  get closed (): boolean {
    return this.#closed
  }

  /** The durability settings this connection runs with, read back from SQLite (for tests and the docs). */
  pragmas (): { journalMode: string, synchronous: 'OFF' | 'NORMAL' | 'FULL' | 'EXTRA', busyTimeoutMs: number, userVersion: number } {
    const read = (name: string): unknown => Object.values(this.#db.prepare(`PRAGMA ${name}`).get() ?? {})[0]
    const synchronous = (['OFF', 'NORMAL', 'FULL', 'EXTRA'] as const)[Number(read('synchronous'))] ?? 'FULL'
    return { journalMode: String(read('journal_mode')), synchronous, busyTimeoutMs: Number(read('busy_timeout')), userVersion: Number(read('user_version')) }
  }

  /** Commits the event (durable when this returns). False when an event with this id is already held. */
  insert (event: OutgoingEvent, now: number = Date.now()): boolean {
    return this.insertMany([event], now) === 1
  }

  /** Commits the events in order, in one transaction. Returns how many were new. */
  insertMany (events: readonly OutgoingEvent[], now: number = Date.now()): number {
    return this.#transaction(() => {
      let inserted = 0
      for (const event of events) {
        const head = this.#head.get(event.streamSid)
        // In order behind a head, or the first pending event of its stream: the head is known
        // without a query. An event older than its stream's head takes the head's place.
        const inOrder = head === undefined || head.sequence < event.sequence
        const { changes } = this.#insert.run(event.id, event.callSid, event.streamSid, event.sequence, event.type, event.body,
          now, now, head === undefined ? now : null)
        if (changes === 0) continue
        inserted++
        if (head === undefined) {
          const due = { id: event.id, callSid: event.callSid, streamSid: event.streamSid, sequence: event.sequence, body: event.body, attempts: 0, queuedAt: now }
          this.#head.set(event.streamSid, { id: event.id, sequence: event.sequence, nextAttemptAt: now, event: due, newest: event.sequence })
        } else if (!inOrder) {
          this.#fixHead(event.streamSid, now)
        } else if (head.newest !== null) {
          head.newest = Math.max(head.newest, event.sequence)
        }
      }
      return inserted
    })
  }

  /** One process delivers this file, so a claim is just the first `limit` due heads not excluded, soonest first. */
  claimDue (now: number, limit: number, exclude: ReadonlySet<string>): DueEvent[] {
    if (limit <= 0) return []
    this.#refresh()
    const due: Head[] = []
    for (const [streamSid, head] of this.#head) {
      if (head.nextAttemptAt <= now && !exclude.has(streamSid)) due.push(head)
    }
    due.sort((a, b) => a.nextAttemptAt - b.nextAttemptAt)
    const claimed: DueEvent[] = []
    for (const head of due) {
      if (claimed.length >= limit) break
      if (head.event === null) {
        const row = this.#byId.get(head.id)
        if (row === undefined) {
          // Gone from the file behind our back: read the heads again at the next claim.
          this.#seenVersion = -1
          this.#refreshedAt = -Infinity
          continue
        }
        head.event = dueEvent(row)
      }
      claimed.push(head.event)
    }
    return claimed
  }

  release (_streamSid: string): void {}

  /** Heads of streams whose next attempt is due at `now`, soonest first, read from the file. */
  * due (now: number): Generator<DueEvent> {
    this.#flush()
    for (const row of this.#due.iterate(now)) yield dueEvent(row)
  }

  /** The earliest attempt time after `now` among stream heads, or null when nothing waits. */
  nextDueAt (now: number): number | null {
    let next = Infinity
    for (const head of this.#head.values()) {
      if (head.nextAttemptAt > now && head.nextAttemptAt < next) next = head.nextAttemptAt
    }
    return next === Infinity ? null : next
  }

  /**
   * A receiver answered 2xx: the event leaves the outbox and the next one of its stream is due. The
   * head moves at once; the file follows with the next commit (at most `DELIVERED_FLUSH_MS` later).
   */
  markDelivered (id: string, streamSid: string, now: number = Date.now()): void {
    const head = this.#head.get(streamSid)
    if (head?.id !== id || this.#closed) {
      // Not the head this process knows (another process changed the file): the slow, exact way.
      // Closed: the write fails and says so, rather than a delivery kept where nothing writes it.
      this.#transaction(() => {
        this.#delete.run(id)
        this.#fixHead(streamSid, now)
      })
      return
    }
    // Mostly a stream's events are delivered before its next one is published: nothing to read.
    const next = head.newest !== null && head.newest <= head.sequence ? undefined : this.#nextInStream.get(streamSid, head.sequence)
    this.#head.delete(streamSid)
    if (next !== undefined) {
      this.#head.set(streamSid, { id: next.id as string, sequence: next.sequence as number, nextAttemptAt: now, event: dueEvent(next), newest: head.newest })
    }
    this.#delivered.push({ id, streamSid, next: (next?.id as string | undefined) ?? null, at: now })
    if (this.#flushTimer === null) {
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = null
        try {
          this.#flush()
        } catch {
          // The file is unwritable for now (disk full, locked too long): kept in memory and written
          // with the next commit, which reports the failure to its caller.
        }
      }, DELIVERED_FLUSH_MS)
      this.#flushTimer.unref()
    }
  }

  /**
   * A failed attempt that will be retried at `nextAttemptAt`. `notBefore` (a receiver's Retry-After)
   * also holds when everything else is retried at once.
   */
  markFailed (id: string, failure: FailureRecord, nextAttemptAt: number, notBefore: number | null = null): void {
    this.#flush()
    const row = this.#fail.get({ id, at: failure.at, status: failure.status, reason: failure.reason, next: nextAttemptAt, notBefore })
    const head = row === undefined ? undefined : this.#head.get(row.stream_sid as string)
    if (head?.id === id) {
      head.nextAttemptAt = nextAttemptAt
      head.event = null
    }
  }

  /** The event's retry window is exhausted: it becomes a dead letter and its stream goes on. */
  markDead (id: string, streamSid: string, failure: FailureRecord): void {
    this.#transaction(() => {
      this.#dead.run({ id, at: failure.at, status: failure.status, reason: failure.reason })
      this.#fixHead(streamSid, failure.at)
    })
  }

  /**
   * Makes every waiting stream head due at `now` (start, recovery, resume), or when its receiver's
   * Retry-After ends if that is later. Returns how many.
   */
  retryAllNow (now: number = Date.now()): number {
    return this.#transaction(() => {
      const changes = Number(this.#retryAll.run({ now }).changes)
      if (changes > 0) this.#loadHeads()
      return changes
    })
  }

  counts (): Record<OutboxState, number> {
    this.#flush()
    const counts = { pending: 0, dead: 0 }
    for (const row of this.#db.prepare('SELECT state, COUNT(*) AS n FROM events GROUP BY state').all()) {
      counts[row.state as OutboxState] = row.n as number
    }
    return counts
  }

  /** `createdAt` of the oldest pending event, or null when none is pending. */
  oldestPendingCreatedAt (): number | null {
    this.#flush()
    const row = this.#db.prepare("SELECT MIN(created_at) AS t FROM events WHERE state = 'pending'").get()
    return (row?.t as number | null | undefined) ?? null
  }

  /** Events without their bodies, oldest first. */
  list (filter: ListFilter = {}): OutboxRow[] {
    this.#flush()
    const rows = this.#db.prepare(`SELECT id, call_sid, stream_sid, sequence, type, state, attempts, created_at, queued_at,
        next_attempt_at, last_attempt_at, last_status, last_error, not_before, dead_at
      FROM events WHERE (:state IS NULL OR state = :state) AND (:call IS NULL OR call_sid = :call)
      ORDER BY created_at, stream_sid, sequence LIMIT :limit`)
      .all({ state: filter.state ?? null, call: filter.callSid ?? null, limit: filter.limit ?? -1 })
    return rows.map((row) => outboxRow(row as Record<string, unknown>))
  }

  /** Pending and dead counts per call, the call with the oldest event first. */
  summary (): CallSummary[] {
    this.#flush()
    const rows = this.#db.prepare(`SELECT call_sid, SUM(state = 'pending') AS pending, SUM(state = 'dead') AS dead,
        MIN(created_at) AS oldest FROM events GROUP BY call_sid ORDER BY oldest`).all()
    return rows.map((row) => ({
      callSid: row.call_sid as string,
      pending: row.pending as number,
      dead: row.dead as number,
      oldestCreatedAt: row.oldest as number
    }))
  }

  /**
   * Re-queues dead letters with a fresh retry window: one by id, a call's, or (with neither) all.
   * A replayed event goes to the head of its stream's queue. Returns how many.
   */
  replayDead (selector: { id?: string, callSid?: string } = {}, now: number = Date.now()): number {
    return this.#transaction(() => {
      const rows = this.#db.prepare(`UPDATE events SET state = 'pending', attempts = 0, queued_at = :now,
          next_attempt_at = NULL, not_before = NULL, dead_at = NULL
        WHERE state = 'dead' AND (:id IS NULL OR id = :id) AND (:call IS NULL OR call_sid = :call)
        RETURNING stream_sid`).all({ now, id: selector.id ?? null, call: selector.callSid ?? null })
      for (const streamSid of new Set(rows.map((row) => row.stream_sid as string))) this.#fixHead(streamSid, now)
      return rows.length
    })
  }

  /** Deletes dead letters created at least `olderThanMs` ago (all of them by default). Returns how many. */
  purgeDead (options: { olderThanMs?: number } = {}, now: number = Date.now()): number {
    const cutoff = now - (options.olderThanMs ?? 0)
    return Number(this.#db.prepare("DELETE FROM events WHERE state = 'dead' AND created_at <= ?").run(cutoff).changes)
  }

  /** Records that the endpoint answered `410 Gone`; kept until `resume()`, visible to every process. */
  pause (status: number, now: number = Date.now()): void {
    this.#setControl.run(PAUSE_KEY, JSON.stringify({ since: now, status }))
  }

  /** Clears the pause flag. True when delivery was paused. */
  resume (): boolean {
    return Number(this.#deleteControl.run(PAUSE_KEY).changes) > 0
  }

  pauseState (): PauseState | null {
    const row = this.#getControl.get(PAUSE_KEY)
    if (row === undefined) return null
    try {
      const value = JSON.parse(row.value as string) as Partial<PauseState>
      return { since: Number(value.since ?? 0), status: Number(value.status ?? 410) }
    } catch {
      return { since: 0, status: 410 }
    }
  }

  /** Idempotent. */
  close (): void {
    if (this.#closed) return
    try {
      this.#flush()
    } catch {
      // Deliveries that cannot be written now are sent again after the next start (same webhook-id).
    } finally {
      this.#closed = true
      if (this.#flushTimer !== null) clearTimeout(this.#flushTimer)
      this.#flushTimer = null
      this.#db.close()
    }
  }

  /** Restores the one-head invariant for a stream whose order changed, and mirrors its head. */
  #fixHead (streamSid: string, now: number): void {
    this.#fixHeadRows(streamSid, now)
    const row = this.#streamHead.get(streamSid)
    if (row === undefined) this.#head.delete(streamSid)
    else this.#head.set(streamSid, { id: row.id as string, sequence: row.sequence as number, nextAttemptAt: row.next_attempt_at as number, event: null, newest: null })
  }

  #fixHeadRows (streamSid: string, now: number): void {
    this.#demote.run({ s: streamSid })
    this.#promote.run({ s: streamSid, now })
  }

  /**
   * Reads the heads again when another process committed since they were last read; asks at most
   * every `REFRESH_MS`, so an operator's replay or resume is seen within that (and the sender's poll).
   */
  #refresh (): void {
    const now = performance.now()
    if (now - this.#refreshedAt < REFRESH_MS) return
    this.#refreshedAt = now
    if (this.#dataVersion.get()?.data_version !== this.#seenVersion) this.#transaction(() => {})
  }

  /** Writes the deliveries held in memory, if any. */
  #flush (): void {
    if (this.#delivered.length > 0) this.#transaction(() => {})
  }

  #loadHeads (): void {
    this.#head.clear()
    for (const row of this.#heads.iterate()) {
      this.#head.set(row.stream_sid as string, { id: row.id as string, sequence: row.sequence as number, nextAttemptAt: row.next_attempt_at as number, event: null, newest: null })
    }
  }

  /**
   * Runs `fn` in a write transaction that first writes the deliveries held in memory and, when
   * another process committed since, reads the heads again: `fn` sees the file and the heads agree.
   */
  #transaction<T> (fn: () => T): T {
    this.#db.exec('BEGIN IMMEDIATE')
    const written = this.#delivered.length
    try {
      const version = this.#dataVersion.get()?.data_version as number
      const stale = version !== this.#seenVersion
      for (let i = 0; i < written; i++) {
        const delivered = this.#delivered[i] as Delivered
        this.#delete.run(delivered.id)
        // Another process may have changed the stream (a replay): find its head the exact way.
        if (stale) this.#fixHeadRows(delivered.streamSid, delivered.at)
        else if (delivered.next !== null) this.#promoteId.run({ id: delivered.next, now: delivered.at })
      }
      if (stale) {
        this.#seenVersion = version
        this.#loadHeads()
      }
      const result = fn()
      this.#db.exec('COMMIT')
      this.#delivered = this.#delivered.slice(written)
      return result
    } catch (err) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK')
      // The heads may have moved with the rolled-back writes: read them again next time.
      this.#seenVersion = -1
      throw err
    }
  }
}
