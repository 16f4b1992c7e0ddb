import type pg from 'pg'
import { MedstreamError } from '../errors.ts'
import { LIVE_VIEW_MIGRATION } from '../live/schema.ts'
import { inTransaction } from './transaction.ts'

/**
 * The PostgreSQL schema, as an ordered list of migrations. Every replica runs `migrate` at start:
 * an advisory lock makes concurrent starts take turns, each migration runs once in the transaction
 * that records its version, and a database whose schema is newer than this build stops the process.
 * A later feature appends its own migration with the next version; a released one never changes.
 */
export interface Migration {
  version: number
  name: string
  sql: string
}

/** Key of the advisory lock migrations hold (any fixed number; "ms" in ASCII). */
const MIGRATION_LOCK = 0x6d73_0001

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'webhook outbox',
    // Times are epoch milliseconds, as in the SQLite outbox, so both backends share one code path.
    sql: `
      CREATE TABLE outbox_events (
        id TEXT PRIMARY KEY,
        call_sid TEXT NOT NULL,
        stream_sid TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        queued_at BIGINT NOT NULL,
        next_attempt_at BIGINT,
        last_attempt_at BIGINT,
        last_status INTEGER,
        last_error TEXT,
        not_before BIGINT,
        dead_at BIGINT
      );
      CREATE INDEX outbox_events_stream ON outbox_events (stream_sid, state, sequence);
      CREATE INDEX outbox_events_due ON outbox_events (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
      CREATE INDEX outbox_events_state_created ON outbox_events (state, created_at);
      CREATE TABLE outbox_control (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      -- One row per stream being attempted: the replica that may deliver it until expires_at (epoch ms
      -- on the database's clock, so replicas' clocks need not agree).
      CREATE TABLE outbox_leases (stream_sid TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at BIGINT NOT NULL);
    `
  },
  { version: 2, name: 'live view', sql: LIVE_VIEW_MIGRATION },
  {
    version: 3,
    name: 'stream handoffs',
    // One row per (call, segment) a draining replica handed on (core/handoff/store.ts): the new
    // replica's acceptance, then the old one's cut. Epoch ms for *_at; call-timeline ms for the rest.
    sql: `
      CREATE TABLE stream_handoffs (
        call_sid TEXT NOT NULL,
        segment INTEGER NOT NULL,
        previous_stream_sid TEXT NOT NULL,
        stream_sid TEXT NOT NULL,
        offset_ms BIGINT NOT NULL,
        first_audio_ms BIGINT NOT NULL,
        accepted_at BIGINT NOT NULL,
        cut_ms BIGINT,
        cut_at BIGINT,
        PRIMARY KEY (call_sid, segment)
      );
    `
  }
]

export class SchemaError extends MedstreamError {
  constructor (message: string) {
    super('MS_ERR_SCHEMA', message)
    this.name = 'SchemaError'
  }
}

/**
 * Brings the database to the newest version in `migrations`. Returns the versions before and after.
 * Throws `SchemaError` when the database is already past this build.
 */
export async function migrate (pool: pg.Pool, migrations: readonly Migration[] = MIGRATIONS): Promise<{ from: number, to: number }> {
  const latest = migrations.reduce((max, migration) => Math.max(max, migration.version), 0)
  return await inTransaction(pool, async (client) => {
    // Held until COMMIT: replicas that start together wait here, then find the work done.
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK])
    await client.query(`CREATE TABLE IF NOT EXISTS medstream_schema (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`)
    const { rows } = await client.query<{ version: number | null }>('SELECT MAX(version) AS version FROM medstream_schema')
    const from = rows[0]?.version ?? 0
    if (from > latest) {
      throw new SchemaError(`database schema version ${from} is newer than this build's ${latest}; run a medstream release that knows it (never roll back past a migration)`)
    }
    for (const migration of [...migrations].sort((a, b) => a.version - b.version)) {
      if (migration.version <= from) continue
      await client.query(migration.sql)
      await client.query('INSERT INTO medstream_schema (version, name) VALUES ($1, $2)', [migration.version, migration.name])
    }
    return { from, to: Math.max(from, latest) }
  })
}
