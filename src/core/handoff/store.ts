import pg from 'pg'
import { migrate } from '../postgres/migrations.ts'

/**
 * The handoff records in PostgreSQL (table `stream_handoffs`, migration 3 in core/postgres/migrations.ts),
 * shared by every replica of a fleet: one row per (call, segment).
 * The new replica inserts it when it accepts a handed-off stream (`offset_ms`, and where its first
 * audio lies); the old replica waits for that row, then writes the cut into it; the new replica
 * waits for the cut. Waiting is polling, batched: one query every POLL_MS answers every waiter of
 * the process, so 200 calls handed off at once cost 5 queries a second, not 1000.
 */

/** How often waiters look for their row, ms. */
const POLL_MS = 200

export interface Acceptance {
  callSid: string
  segment: number
  previousStreamSid: string
  streamSid: string
  offsetMs: number
  /** Call-timeline ms of the new stream's first audio: the cut may not lie before it. */
  firstAudioMs: number
}

interface Waiter {
  callSid: string
  segment: number
  /** Resolves the waiter when its row says so; returns whether it did. */
  check: (row: Row | undefined) => boolean
  deadline: number
  expire: () => void
}

interface Row { call_sid: string, segment: number, stream_sid: string, first_audio_ms: string, cut_ms: string | null }

export class HandoffStore {
  readonly #pool: pg.Pool
  readonly #waiters = new Set<Waiter>()
  #timer: NodeJS.Timeout | null = null
  #polling = false
  #closed = false

  constructor (pool: pg.Pool) {
    this.#pool = pool
  }

  /**
   * Brings the schema to this build's version (the outbox does the same at start; the advisory lock
   * makes the two, and every replica, take turns). Throws SchemaError for a newer database.
   */
  async ensureSchema (): Promise<void> {
    await migrate(this.#pool)
  }

  /**
   * Records that this replica took the call's segment. False when another stream already holds that
   * segment (a replayed or duplicated handoff): the caller must then not publish.
   */
  async accept (acceptance: Acceptance): Promise<boolean> {
    const { rows } = await this.#pool.query<{ stream_sid: string }>(
      `INSERT INTO stream_handoffs (call_sid, segment, previous_stream_sid, stream_sid, offset_ms, first_audio_ms, accepted_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (call_sid, segment) DO UPDATE SET call_sid = stream_handoffs.call_sid
       RETURNING stream_sid`,
      [acceptance.callSid, acceptance.segment, acceptance.previousStreamSid, acceptance.streamSid, acceptance.offsetMs, acceptance.firstAudioMs, Date.now()]
    )
    return rows[0]?.stream_sid === acceptance.streamSid
  }

  /** The old side: resolves the new stream's first-audio position once accepted, or null after `timeoutMs`. */
  waitForAcceptance (callSid: string, segment: number, streamSid: string, timeoutMs: number): Promise<{ firstAudioMs: number } | null> {
    return new Promise((resolve) => {
      this.#wait(callSid, segment, timeoutMs, () => resolve(null), (row) => {
        if (row === undefined || row.stream_sid !== streamSid) return false
        resolve({ firstAudioMs: Number(row.first_audio_ms) })
        return true
      })
    })
  }

  /** The old side: the cut, as a call-timeline ms. False when the row is not the expected stream's. */
  async recordCut (callSid: string, segment: number, streamSid: string, cutMs: number): Promise<boolean> {
    const result = await this.#pool.query(
      'UPDATE stream_handoffs SET cut_ms = $4, cut_at = $5 WHERE call_sid = $1 AND segment = $2 AND stream_sid = $3 AND cut_ms IS NULL',
      [callSid, segment, streamSid, cutMs, Date.now()]
    )
    return result.rowCount === 1
  }

  /** The new side: resolves the cut once recorded, or null after `timeoutMs`. */
  waitForCut (callSid: string, segment: number, timeoutMs: number): Promise<number | null> {
    return new Promise((resolve) => {
      this.#wait(callSid, segment, timeoutMs, () => resolve(null), (row) => {
        if (row?.cut_ms == null) return false
        resolve(Number(row.cut_ms))
        return true
      })
    })
  }

  /** Ends every wait (as timed out) and stops polling. Idempotent; the pool belongs to the caller. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    for (const waiter of this.#waiters) waiter.expire()
    this.#waiters.clear()
  }

  #wait (callSid: string, segment: number, timeoutMs: number, expire: () => void, check: Waiter['check']): void {
    if (this.#closed) {
      expire()
      return
    }
    this.#waiters.add({ callSid, segment, check, deadline: Date.now() + timeoutMs, expire })
    this.#schedule(0)
  }

  #schedule (delayMs: number): void {
    if (this.#timer !== null || this.#polling || this.#closed || this.#waiters.size === 0) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      void this.#poll()
    }, delayMs)
  }

  async #poll (): Promise<void> {
    this.#polling = true
    const waiters = [...this.#waiters]
    try {
      const { rows } = await this.#pool.query<Row>(
        `SELECT h.call_sid, h.segment, h.stream_sid, h.first_audio_ms, h.cut_ms
         FROM stream_handoffs h JOIN unnest($1::text[], $2::int[]) AS w(call_sid, segment)
         ON h.call_sid = w.call_sid AND h.segment = w.segment`,
        [waiters.map((w) => w.callSid), waiters.map((w) => w.segment)]
      )
      const byKey = new Map(rows.map((row) => [`${row.call_sid}:${row.segment}`, row]))
      for (const waiter of waiters) {
        if (waiter.check(byKey.get(`${waiter.callSid}:${waiter.segment}`))) this.#waiters.delete(waiter)
      }
    } catch {
      // PostgreSQL unreachable for a moment: the waits run on until their deadlines.
    } finally {
      this.#polling = false
    }
    const now = Date.now()
    for (const waiter of this.#waiters) {
      if (waiter.deadline <= now) {
        this.#waiters.delete(waiter)
        waiter.expire()
      }
    }
    this.#schedule(POLL_MS)
  }
}

/** The handoff's own small pool: the outbox's pool is busy with deliveries and sized for them. */
export function createHandoffPool (databaseUrl: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 5000 })
  // An idle client cut by a server restart emits 'error' on the pool; the next query reports it.
  pool.on('error', () => {})
  return pool
}
