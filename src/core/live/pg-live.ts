import { randomUUID } from 'node:crypto'
import type pg from 'pg'
import type { CoreLogger } from '../log.ts'
import { migrate } from '../postgres/migrations.ts'
import type { OutgoingEvent } from '../webhooks/events.ts'
import type { LiveCallRow, LiveEvent, LiveHub, LiveViewer } from './hub.ts'

/** The fleet's live view has not reached PostgreSQL yet (the route answers 503). */
export class LiveUnavailableError extends Error {
  constructor () {
    super('live view: PostgreSQL not reached yet')
    this.name = 'LiveUnavailableError'
  }
}

/** One channel; payloads are small JSON: ids for finals (the rows hold the data), partials whole. */
export const LIVE_CHANNEL = 'medstream_live'
/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. */
const MAX_PAYLOAD_BYTES = 7900
/** A replica with viewers of a call elsewhere says so this often; the owner watches for 3 times it. */
const WATCH_PING_MS = 5000
/** Rows of calls whose replica stopped refreshing them (it died) leave the list after this. */
const STALE_MS = 90_000
const RELISTEN_MS = 1000

type Notice =
  | { k: 'f', c: string, g: number, s: number }
  | { k: 'p', r: string, c: string, d: string }
  | { k: 'w', r: string, c: string }

export interface PgLiveOptions {
  pool: pg.Pool
  hub: LiveHub
  logger: CoreLogger
  /** How long an ended call stays readable, ms. Default 60000 (as the hub's). */
  graceMs?: number
  /** Live CallSids of this process, whose rows it keeps fresh. */
  localCalls: () => string[]
}

/**
 * Fleet mode's bus: PostgreSQL LISTEN/NOTIFY between replicas, its tables as the memory. Events of a
 * call of this process are stored, then announced by id; every replica that has the call open reads
 * what it has not seen yet. Partials are never stored: the replica that owns the call sends them,
 * rate-capped, in the notification itself, and only while another replica holds a watch on the call.
 */
export class PgLive {
  readonly #options: PgLiveOptions
  readonly #replicaId = randomUUID()
  readonly #graceMs: number
  /** Per call, the chain of its writes and reads: each call's events stay in order. */
  readonly #chains = new Map<string, Promise<void>>()
  readonly #segments = new Map<string, number>()
  #listener: pg.PoolClient | null = null
  /** Schema migrated and the first LISTEN in place: until then the feed answers "not yet". */
  #ready = false
  #markReady: () => void = () => {}
  /** Events recorded before PostgreSQL is reached wait for it, in order. */
  readonly #whenReady = new Promise<void>((resolve) => { this.#markReady = resolve })
  #timer: NodeJS.Timeout | null = null
  #closed = false

  constructor (options: PgLiveOptions) {
    this.#options = options
    this.#graceMs = options.graceMs ?? 60000
  }

  /**
   * Brings the schema up to date and starts listening. PostgreSQL may not be reachable yet when a
   * replica starts (the outbox waits for it too): then this keeps trying every second, and the live
   * view works from the moment it succeeds.
   */
  start (): void {
    const attempt = (): void => {
      if (this.#closed) return
      migrate(this.#options.pool).then(() => this.#listen()).then(() => {
        if (this.#closed) return
        this.#ready = true
        this.#markReady()
        this.#timer = setInterval(() => { void this.#tick() }, WATCH_PING_MS)
        this.#timer.unref()
      }, (error: unknown) => {
        this.#options.logger.warn({ err: error }, 'live view: PostgreSQL not reached; trying again')
        setTimeout(attempt, RELISTEN_MS).unref()
      })
    }
    attempt()
  }

  /** One connection LISTENs; when it fails (a PostgreSQL restart) another takes over within a second. */
  async #listen (): Promise<void> {
    const client = await this.#options.pool.connect()
    if (this.#closed) {
      client.release()
      return
    }
    this.#listener = client
    let lost = false
    const onLost = (error?: Error): void => {
      if (lost) return
      lost = true
      if (this.#listener === client) this.#listener = null
      client.release(error ?? true)
      if (this.#closed) return
      this.#options.logger.warn({ err: error }, 'live view: PostgreSQL listener lost; listening again')
      const retry = (): void => {
        if (this.#closed) return
        this.#listen().catch(() => { setTimeout(retry, RELISTEN_MS).unref() })
      }
      setTimeout(retry, RELISTEN_MS).unref()
    }
    client.on('notification', (message) => {
      if (message.channel === LIVE_CHANNEL && message.payload !== undefined) this.#onNotice(message.payload)
    })
    client.on('error', onLost)
    client.on('end', () => onLost())
    try {
      await client.query(`LISTEN ${LIVE_CHANNEL}`)
    } catch (error) {
      onLost(error as Error)
      throw error
    }
  }

  /** A stored event of a call of this process: into the tables, then announced. Never throws. */
  record (event: OutgoingEvent): void {
    if (this.#closed) return
    this.#chain(event.callSid, () => this.#store(event))
  }

  /** A partial the hub let through (rate-capped), for the replicas that watch the call. */
  fanOutPartial (callSid: string, event: LiveEvent): void {
    const payload = JSON.stringify({ k: 'p', r: this.#replicaId, c: callSid, d: event.data } satisfies Notice)
    // A partial that big is a turn far past the upstream's own length cap; its final will follow.
    if (Buffer.byteLength(payload) > MAX_PAYLOAD_BYTES) return
    this.#notify(payload)
  }

  async list (): Promise<LiveCallRow[]> {
    if (!this.#ready) throw new LiveUnavailableError()
    const { rows } = await this.#options.pool.query<{ call_sid: string, stream_sid: string, segment: number, started_at: string, turn_count: number, last_role: string | null }>(
      `SELECT call_sid, stream_sid, segment, started_at, turn_count, last_role FROM live_calls
        WHERE ended_at IS NULL AND seen_at > now() - make_interval(secs => $1) ORDER BY started_at`, [STALE_MS / 1000])
    const now = Date.now()
    return rows.map((row) => ({ ...row, duration_ms: Math.max(0, now - Date.parse(row.started_at)) }))
  }

  /**
   * Opens a viewer on any replica: the call's stored events are loaded here first when this process
   * does not have the call yet, or has it only from a later segment. Null when no replica has it (or it ended longer ago than the grace).
   */
  async open (callSid: string, lastEventId: string | undefined, viewer: LiveViewer): Promise<{ close: () => void } | null> {
    const { hub } = this.#options
    if (!this.#ready) throw new LiveUnavailableError()
    // A call taken over from another replica is known here from its later segment only: read it whole.
    if (!hub.has(callSid) || hub.forgetIfPartial(callSid)) await this.#chainAwait(callSid, () => this.#catchUp(callSid))
    const subscription = hub.subscribe(callSid, lastEventId, viewer)
    if (subscription !== null) this.#pingWatches()
    return subscription
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    // Writes still waiting for PostgreSQL are given up: the live view is best effort, webhooks are not.
    if (this.#ready) await Promise.allSettled([...this.#chains.values()])
    const listener = this.#listener
    this.#listener = null
    if (listener !== null) {
      try {
        await listener.query(`UNLISTEN ${LIVE_CHANNEL}`)
      } catch {
        // the connection is going away either way
      }
      for (const event of ['notification', 'end', 'error']) listener.removeAllListeners(event)
      listener.release()
    }
  }

  async #store (event: OutgoingEvent): Promise<void> {
    await this.#whenReady
    const { pool } = this.#options
    const { data } = JSON.parse(event.body) as { data: Record<string, unknown> }
    if (event.type === 'call.started') this.#segments.set(event.callSid, typeof data.segment === 'number' ? data.segment : 1)
    const segment = this.#segments.get(event.callSid) ?? 1
    await pool.query('INSERT INTO live_events (call_sid, segment, sequence, stream_sid, type, body) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING',
      [event.callSid, segment, event.sequence, event.streamSid, event.type, event.body])
    switch (event.type) {
      case 'call.started':
        await pool.query(`INSERT INTO live_calls (call_sid, stream_sid, segment, started_at) VALUES ($1, $2, $3, $4)
          ON CONFLICT (call_sid) DO UPDATE SET stream_sid = $2, segment = $3, seen_at = now(), ended_at = NULL`,
        [event.callSid, event.streamSid, segment, typeof data.started_at === 'string' ? data.started_at : new Date().toISOString()])
        break
      case 'transcript.turn':
        await pool.query('UPDATE live_calls SET turn_count = turn_count + 1, last_role = $2, seen_at = now() WHERE call_sid = $1', [event.callSid, typeof data.role === 'string' ? data.role : null])
        break
      case 'call.ended':
        if (data.reason !== 'handed_off') {
          await pool.query('UPDATE live_calls SET ended_at = now() WHERE call_sid = $1', [event.callSid])
          this.#segments.delete(event.callSid)
        }
    }
    this.#notify(JSON.stringify({ k: 'f', c: event.callSid, g: segment, s: event.sequence } satisfies Notice))
  }

  /** Feeds the hub the call's stored events it has not taken yet, in order. */
  async #catchUp (callSid: string): Promise<void> {
    const { hub, pool } = this.#options
    const after = hub.lastFinal(callSid) ?? { segment: 0, sequence: 0 }
    const { rows } = await pool.query<{ segment: number, sequence: number, stream_sid: string, type: OutgoingEvent['type'], body: string }>(
      `SELECT segment, sequence, stream_sid, type, body FROM live_events
        WHERE call_sid = $1 AND (segment, sequence) > ($2, $3) ORDER BY segment, sequence`, [callSid, after.segment, after.sequence])
    for (const row of rows) {
      hub.publishFinal({ id: `${row.stream_sid}-${row.sequence}`, callSid, streamSid: row.stream_sid, sequence: row.sequence, type: row.type, body: row.body })
    }
  }

  #onNotice (payload: string): void {
    let notice: Notice
    try {
      notice = JSON.parse(payload) as Notice
    } catch {
      return
    }
    const { hub } = this.#options
    switch (notice.k) {
      case 'f': {
        // Only calls open here are followed (others are read when a viewer opens them, and one being
        // read now is read again after it), and only for events not taken yet: the owner took its
        // own in process.
        const last = hub.lastFinal(notice.c)
        const behind = last === null ? this.#chains.has(notice.c) : notice.g > last.segment || (notice.g === last.segment && notice.s > last.sequence)
        if (behind) this.#chain(notice.c, () => this.#catchUp(notice.c))
        return
      }
      case 'p':
        if (notice.r !== this.#replicaId) hub.deliverPartial(notice.c, { type: 'turn.partial', id: null, data: notice.d })
        return
      case 'w':
        if (notice.r !== this.#replicaId) hub.leaseWatch(notice.c, performance.now() + 3 * WATCH_PING_MS)
    }
  }

  #pingWatches (): void {
    for (const { callSid } of this.#options.hub.watchedElsewhere()) {
      this.#notify(JSON.stringify({ k: 'w', r: this.#replicaId, c: callSid } satisfies Notice))
    }
  }

  async #tick (): Promise<void> {
    this.#pingWatches()
    const { pool, localCalls, logger } = this.#options
    try {
      const calls = localCalls()
      if (calls.length > 0) await pool.query('UPDATE live_calls SET seen_at = now() WHERE call_sid = ANY($1)', [calls])
      await pool.query(`DELETE FROM live_events e USING live_calls c WHERE e.call_sid = c.call_sid
        AND (c.ended_at < now() - make_interval(secs => $1) OR c.seen_at < now() - interval '1 hour')`, [this.#graceMs / 1000])
      await pool.query(`DELETE FROM live_calls WHERE ended_at < now() - make_interval(secs => $1) OR seen_at < now() - interval '1 hour'`, [this.#graceMs / 1000])
    } catch (error) {
      logger.warn({ err: error }, 'live view: PostgreSQL housekeeping failed')
    }
  }

  #notify (payload: string): void {
    if (this.#closed) return
    this.#options.pool.query('SELECT pg_notify($1, $2)', [LIVE_CHANNEL, payload]).catch((error: unknown) => {
      this.#options.logger.warn({ err: error }, 'live view: PostgreSQL notify failed')
    })
  }

  #chain (callSid: string, step: () => Promise<void>): void {
    void this.#chainAwait(callSid, step).catch((error: unknown) => {
      this.#options.logger.warn({ err: error, callSid }, 'live view: PostgreSQL write or read failed')
    })
  }

  #chainAwait (callSid: string, step: () => Promise<void>): Promise<void> {
    const previous = this.#chains.get(callSid) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(step)
    const settled = next.catch(() => {})
    this.#chains.set(callSid, settled)
    void settled.then(() => { if (this.#chains.get(callSid) === settled) this.#chains.delete(callSid) })
    return next
  }
}
