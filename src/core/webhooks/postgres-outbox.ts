import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import pg from 'pg'
import type { CoreLogger } from '../log.ts'
import { migrate } from '../postgres/migrations.ts'
import { inTransaction } from '../postgres/transaction.ts'
import type { OutgoingEvent } from './events.ts'
import { LEASE_LOST } from './http-attempt.ts'
import { dueEvent, outboxRow } from './outbox-store.ts'
import type { CallSummary, DueEvent, FailureRecord, ListFilter, OutboxRow, OutboxState, OutboxStore, PauseState } from './outbox-store.ts'

export interface PostgresOutboxOptions {
  /** `DATABASE_URL`, `postgres://…`. */
  url: string
  logger: CoreLogger
  /**
   * How long a replica may attempt a stream's head before another replica may take the stream, ms.
   * Renewed every third of it while the attempt runs, so only a dead or cut-off replica lets one
   * expire. Default 15000: with the senders' 5 s poll a dead replica's streams resume within 20 s.
   * No attempt outlives its lease: one whose lease was not renewed in time is aborted a fifth
   * of the lease (3 s) before the lease could expire (see `DueEvent.lease`).
   */
  leaseMs?: number
  /** Connections in the pool. Default 8. */
  maxConnections?: number
  /** Opening a connection, ms. Default 2000: past it the database counts as unreachable. */
  connectTimeoutMs?: number
  /** A query with no answer for this long fails (client side), ms. Default 10000. */
  queryTimeoutMs?: number
}

const PAUSE_KEY = 'endpoint_paused'
/** Epoch ms on the database's clock: leases compare times across replicas. */
const DB_NOW = '(extract(epoch from clock_timestamp()) * 1000)::bigint'
/** Namespace of the per-stream advisory locks (the first half of a two-int key). */
const STREAM_LOCK = 0x6d73

const BIGINT_OID = 20
const types = {
  getTypeParser: ((oid: number, format?: string) => oid === BIGINT_OID
    ? (value: string) => Number(value)
    : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser
}

type Queryable = Pick<pg.PoolClient, 'query'>

/** A stream this replica holds, as far as it can prove. */
interface Lease {
  /** Aborted once the replica can no longer be sure the lease is its own. */
  controller: AbortController
  /** Monotonic ms (`performance.now()`) until which the lease is surely this replica's. */
  until: number
  /** Aborts `controller` a margin before `until`. */
  timer: NodeJS.Timeout | null
}

/**
 * The PostgreSQL outbox of fleet mode: one database shared by every replica, so any replica
 * delivers any stream's events. Same rows and the same head-of-stream invariant as the SQLite
 * outbox; two things are added for a fleet:
 * - a lease per stream (`outbox_leases`), taken by `claimDue` and held only while this replica
 *   attempts the stream's head, so no two replicas attempt one stream at once;
 * - a per-stream advisory lock around every change of a stream's head, so replicas that insert and
 *   deliver the same stream concurrently never leave it with two heads or none.
 */
export class PostgresOutbox implements OutboxStore {
  readonly backend = 'postgres'
  /** This replica's name in `outbox_leases`. */
  readonly #owner: string
  readonly pool: pg.Pool
  readonly #leaseMs: number
  readonly #logger: CoreLogger
  /** Before a held lease could expire, its attempt is aborted this much earlier, ms. */
  readonly #marginMs: number
  readonly #held = new Map<string, Lease>()
  #renewTimer: NodeJS.Timeout | null = null
  #closed = false
  #closePromise: Promise<void> | null = null

  constructor (options: PostgresOutboxOptions) {
    this.#owner = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
    this.#leaseMs = options.leaseMs ?? 15_000
    this.#marginMs = Math.floor(this.#leaseMs / 5)
    this.#logger = options.logger
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.maxConnections ?? 8,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 2000,
      query_timeout: options.queryTimeoutMs ?? 10_000,
      keepAlive: true,
      application_name: 'medstream',
      types
    })
    // A server restart cuts idle connections; without a listener that error would end the process.
    this.pool.on('error', (err) => {
      this.#logger.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'postgres connection lost; the pool reconnects')
    })
    // And a connection cut in any other state (checked out between queries) must find a listener
    // too; the failed query reports the error itself.
    this.pool.on('connect', (client) => { client.on('error', () => {}) })
  }

  get closed (): boolean {
    return this.#closed
  }

  /** Runs the schema migrations (see `migrations.ts`); throws `SchemaError` on a newer schema. */
  async migrate (): Promise<{ from: number, to: number }> {
    return await migrate(this.pool)
  }

  async insertMany (events: readonly OutgoingEvent[], now: number = Date.now()): Promise<number> {
    if (events.length === 0) return 0
    const streams = [...new Set(events.map((event) => event.streamSid))]
    return await this.#transaction(streams, async (client) => {
      const { rowCount } = await client.query(`INSERT INTO outbox_events (id, call_sid, stream_sid, sequence, type, body, created_at, queued_at)
        SELECT id, call_sid, stream_sid, sequence, type, body, $7, $7
        FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[]) AS e(id, call_sid, stream_sid, sequence, type, body)
        ON CONFLICT (id) DO NOTHING`, [
        events.map((event) => event.id),
        events.map((event) => event.callSid),
        events.map((event) => event.streamSid),
        events.map((event) => event.sequence),
        events.map((event) => event.type),
        events.map((event) => event.body),
        now
      ])
      for (const streamSid of streams) await this.#fixHead(client, streamSid, now)
      return rowCount ?? 0
    })
  }

  async claimDue (now: number, limit: number, exclude: ReadonlySet<string>): Promise<DueEvent[]> {
    if (limit <= 0) return []
    // The database sets the expiry after this moment: the lease lasts at least until `sentAt + leaseMs`.
    const sentAt = performance.now()
    // Step 1 takes leases on streams whose head is due and that no live lease of another replica
    // holds; ON CONFLICT is the arbiter when two replicas race for one stream.
    // GROUP BY: a stream appears once even if its head were ever duplicated, which ON CONFLICT
    // would refuse for the whole statement.
    const leased = await this.pool.query<{ stream_sid: string }>(`WITH due AS (
        SELECT e.stream_sid, MIN(e.next_attempt_at) AS t FROM outbox_events e
        WHERE e.next_attempt_at IS NOT NULL AND e.next_attempt_at <= $1
          AND NOT (e.stream_sid = ANY($3::text[]))
          AND NOT EXISTS (SELECT 1 FROM outbox_leases l WHERE l.stream_sid = e.stream_sid AND l.owner <> $4 AND l.expires_at > ${DB_NOW})
        GROUP BY e.stream_sid ORDER BY t LIMIT $2
      )
      INSERT INTO outbox_leases (stream_sid, owner, expires_at)
      SELECT stream_sid, $4, ${DB_NOW} + $5 FROM due
      ON CONFLICT (stream_sid) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
        WHERE outbox_leases.owner = EXCLUDED.owner OR outbox_leases.expires_at <= ${DB_NOW}
      RETURNING stream_sid`, [now, limit, [...exclude], this.#owner, this.#leaseMs])
    const streams = leased.rows.map((row) => row.stream_sid)
    if (streams.length === 0) return []
    const signals = new Map<string, AbortSignal>()
    for (const streamSid of streams) {
      const held = this.#held.get(streamSid)
      const lease = held !== undefined && !held.controller.signal.aborted ? held : { controller: new AbortController(), until: 0, timer: null }
      this.#held.set(streamSid, lease)
      this.#confirm(lease, sentAt)
      signals.set(streamSid, lease.controller.signal)
    }
    this.#armRenewal()
    // Step 2, a new statement and so a fresh snapshot: the head as the previous holder left it.
    const { rows } = await this.pool.query(`SELECT DISTINCT ON (stream_sid) id, call_sid, stream_sid, sequence, body, attempts, queued_at, next_attempt_at
      FROM outbox_events WHERE stream_sid = ANY($1::text[]) AND next_attempt_at IS NOT NULL AND next_attempt_at <= $2
      ORDER BY stream_sid, sequence`, [streams, now])
    rows.sort((a, b) => (a.next_attempt_at as number) - (b.next_attempt_at as number))
    const due = rows.map((row) => ({
      ...dueEvent(row),
      // Every row is of a stream leased just above; without one, no attempt.
      lease: signals.get(row.stream_sid as string) ?? AbortSignal.abort(LEASE_LOST)
    }))
    const withHead = new Set(due.map((event) => event.streamSid))
    for (const streamSid of streams) if (!withHead.has(streamSid)) await this.release(streamSid)
    return due
  }

  async release (streamSid: string): Promise<void> {
    const lease = this.#held.get(streamSid)
    if (lease?.timer != null) clearTimeout(lease.timer)
    this.#held.delete(streamSid)
    await this.pool.query('DELETE FROM outbox_leases WHERE stream_sid = $1 AND owner = $2', [streamSid, this.#owner])
  }

  async nextDueAt (now: number): Promise<number | null> {
    const { rows } = await this.pool.query('SELECT MIN(next_attempt_at) AS t FROM outbox_events WHERE next_attempt_at > $1', [now])
    return (rows[0]?.t as number | null | undefined) ?? null
  }

  async markDelivered (id: string, streamSid: string, now: number = Date.now()): Promise<void> {
    await this.#transaction([streamSid], async (client) => {
      await client.query('DELETE FROM outbox_events WHERE id = $1', [id])
      await this.#fixHead(client, streamSid, now)
    })
  }

  async markFailed (id: string, failure: FailureRecord, nextAttemptAt: number, notBefore: number | null = null): Promise<void> {
    await this.pool.query(`UPDATE outbox_events SET attempts = attempts + 1, last_attempt_at = $2, last_status = $3,
        last_error = $4, not_before = $5,
        next_attempt_at = CASE WHEN next_attempt_at IS NULL THEN NULL ELSE $6::bigint END
      WHERE id = $1 AND state = 'pending'`, [id, failure.at, failure.status, failure.reason, notBefore, nextAttemptAt])
  }

  async markDead (id: string, streamSid: string, failure: FailureRecord): Promise<void> {
    await this.#transaction([streamSid], async (client) => {
      await client.query(`UPDATE outbox_events SET state = 'dead', attempts = attempts + 1, last_attempt_at = $2,
          last_status = $3, last_error = $4, next_attempt_at = NULL, dead_at = $2
        WHERE id = $1 AND state = 'pending'`, [id, failure.at, failure.status, failure.reason])
      await this.#fixHead(client, streamSid, failure.at)
    })
  }

  async retryAllNow (now: number = Date.now()): Promise<number> {
    const { rowCount } = await this.pool.query(`UPDATE outbox_events SET next_attempt_at = GREATEST($1::bigint, COALESCE(not_before, 0))
      WHERE next_attempt_at > GREATEST($1::bigint, COALESCE(not_before, 0))`, [now])
    return rowCount ?? 0
  }

  async counts (): Promise<Record<OutboxState, number>> {
    const counts = { pending: 0, dead: 0 }
    const { rows } = await this.pool.query('SELECT state, COUNT(*) AS n FROM outbox_events GROUP BY state')
    for (const row of rows) counts[row.state as OutboxState] = row.n as number
    return counts
  }

  async oldestPendingCreatedAt (): Promise<number | null> {
    const { rows } = await this.pool.query("SELECT MIN(created_at) AS t FROM outbox_events WHERE state = 'pending'")
    return (rows[0]?.t as number | null | undefined) ?? null
  }

  async list (filter: ListFilter = {}): Promise<OutboxRow[]> {
    const { rows } = await this.pool.query(`SELECT id, call_sid, stream_sid, sequence, type, state, attempts, created_at, queued_at,
        next_attempt_at, last_attempt_at, last_status, last_error, not_before, dead_at
      FROM outbox_events WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR call_sid = $2)
      ORDER BY created_at, stream_sid, sequence LIMIT $3`, [filter.state ?? null, filter.callSid ?? null, filter.limit ?? null])
    return rows.map((row) => outboxRow(row as Record<string, unknown>))
  }

  async summary (): Promise<CallSummary[]> {
    const { rows } = await this.pool.query(`SELECT call_sid, COUNT(*) FILTER (WHERE state = 'pending') AS pending,
        COUNT(*) FILTER (WHERE state = 'dead') AS dead, MIN(created_at) AS oldest
      FROM outbox_events GROUP BY call_sid ORDER BY oldest`)
    return rows.map((row) => ({
      callSid: row.call_sid as string,
      pending: row.pending as number,
      dead: row.dead as number,
      oldestCreatedAt: row.oldest as number
    }))
  }

  async replayDead (selector: { id?: string, callSid?: string } = {}, now: number = Date.now()): Promise<number> {
    const match = "state = 'dead' AND ($1::text IS NULL OR id = $1) AND ($2::text IS NULL OR call_sid = $2)"
    const params = [selector.id ?? null, selector.callSid ?? null]
    const { rows } = await this.pool.query(`SELECT DISTINCT stream_sid FROM outbox_events WHERE ${match}`, params)
    if (rows.length === 0) return 0
    return await this.#transaction(rows.map((row) => row.stream_sid as string), async (client) => {
      const updated = await client.query(`UPDATE outbox_events SET state = 'pending', attempts = 0, queued_at = $3,
          next_attempt_at = NULL, not_before = NULL, dead_at = NULL
        WHERE ${match} RETURNING stream_sid`, [...params, now])
      for (const streamSid of new Set(updated.rows.map((row) => row.stream_sid as string))) await this.#fixHead(client, streamSid, now)
      return updated.rowCount ?? 0
    })
  }

  async purgeDead (options: { olderThanMs?: number } = {}, now: number = Date.now()): Promise<number> {
    const cutoff = now - (options.olderThanMs ?? 0)
    const { rowCount } = await this.pool.query("DELETE FROM outbox_events WHERE state = 'dead' AND created_at <= $1", [cutoff])
    return rowCount ?? 0
  }

  async pause (status: number, now: number = Date.now()): Promise<void> {
    await this.pool.query(`INSERT INTO outbox_control (key, value) VALUES ($1, $2)
      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, [PAUSE_KEY, JSON.stringify({ since: now, status })])
  }

  async resume (): Promise<boolean> {
    const { rowCount } = await this.pool.query('DELETE FROM outbox_control WHERE key = $1', [PAUSE_KEY])
    return (rowCount ?? 0) > 0
  }

  async pauseState (): Promise<PauseState | null> {
    const { rows } = await this.pool.query('SELECT value FROM outbox_control WHERE key = $1', [PAUSE_KEY])
    const row = rows[0]
    if (row === undefined) return null
    try {
      const value = JSON.parse(row.value as string) as Partial<PauseState>
      return { since: Number(value.since ?? 0), status: Number(value.status ?? 410) }
    } catch {
      return { since: 0, status: 410 }
    }
  }

  /** Gives up this replica's leases (so others take its streams at once) and closes the pool. Idempotent. */
  close (): Promise<void> {
    if (this.#closePromise !== null) return this.#closePromise
    this.#closed = true
    if (this.#renewTimer !== null) clearInterval(this.#renewTimer)
    this.#renewTimer = null
    this.#closePromise = (async () => {
      try {
        await this.pool.query('DELETE FROM outbox_leases WHERE owner = $1', [this.#owner])
      } catch {
        // Unreachable: the leases expire on their own.
      }
      for (const lease of this.#held.values()) if (lease.timer !== null) clearTimeout(lease.timer)
      this.#held.clear()
      await this.pool.end()
    })()
    return this.#closePromise
  }

  #armRenewal (): void {
    if (this.#renewTimer !== null || this.#closed) return
    this.#renewTimer = setInterval(() => { void this.#renew() }, Math.max(100, Math.floor(this.#leaseMs / 3)))
    this.#renewTimer.unref()
  }

  async #renew (): Promise<void> {
    if (this.#held.size === 0) return
    const sent = new Map(this.#held)
    const sentAt = performance.now()
    let renewed: Set<string>
    try {
      const { rows } = await this.pool.query<{ stream_sid: string }>(`UPDATE outbox_leases SET expires_at = ${DB_NOW} + $3
        WHERE owner = $1 AND stream_sid = ANY($2::text[]) RETURNING stream_sid`, [this.#owner, [...sent.keys()], this.#leaseMs])
      renewed = new Set(rows.map((row) => row.stream_sid))
    } catch (err) {
      // Each held attempt is aborted before its lease could expire, unless a later renewal succeeds.
      this.#logger.warn({ err: { message: (err as Error).message } }, 'postgres lease renewal failed; attempts stop before their leases could expire')
      return
    }
    for (const [streamSid, lease] of sent) {
      // Released (and perhaps claimed anew) while the renewal was on its way: not this lease any more.
      if (this.#held.get(streamSid) !== lease) continue
      if (renewed.has(streamSid)) this.#confirm(lease, sentAt)
      else this.#lose(lease)
    }
  }

  /** The database confirmed the lease at or after `sentAt` (monotonic ms): it holds until `sentAt + leaseMs`. */
  #confirm (lease: Lease, sentAt: number): void {
    if (lease.controller.signal.aborted || sentAt + this.#leaseMs <= lease.until) return
    lease.until = sentAt + this.#leaseMs
    if (lease.timer !== null) clearTimeout(lease.timer)
    lease.timer = setTimeout(() => { this.#lose(lease) }, Math.max(0, lease.until - this.#marginMs - performance.now()))
    lease.timer.unref()
  }

  /** The lease may be (or soon be) another replica's: the attempt under it stops now. */
  #lose (lease: Lease): void {
    if (lease.timer !== null) clearTimeout(lease.timer)
    lease.timer = null
    lease.controller.abort(LEASE_LOST)
  }

  async #fixHead (client: Queryable, streamSid: string, now: number): Promise<void> {
    await client.query(`UPDATE outbox_events SET next_attempt_at = NULL
      WHERE stream_sid = $1 AND state = 'pending' AND next_attempt_at IS NOT NULL
        AND sequence > (SELECT MIN(sequence) FROM outbox_events WHERE stream_sid = $1 AND state = 'pending')`, [streamSid])
    await client.query(`UPDATE outbox_events SET next_attempt_at = $2
      WHERE id = (SELECT id FROM outbox_events WHERE stream_sid = $1 AND state = 'pending' ORDER BY sequence LIMIT 1)
        AND next_attempt_at IS NULL`, [streamSid, now])
  }

  /** A transaction holding the advisory locks of `streams`, taken in sorted order so two never deadlock. */
  async #transaction<T> (streams: readonly string[], fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return await inTransaction(this.pool, async (client) => {
      for (const streamSid of [...streams].sort()) await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [STREAM_LOCK, streamSid])
      return await fn(client)
    })
  }
}
