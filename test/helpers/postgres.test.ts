import assert from 'node:assert/strict'
import { test } from 'node:test'
import pg from 'pg'
import { startPostgres } from './postgres.ts'

test('throwaway PostgreSQL cluster answers queries, survives a restart and is removed when destroyed', async (t) => {
  const cluster = await startPostgres()
  t.after(() => cluster.destroy())
  const url = await cluster.createDatabase('helper_check')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  const { rows } = await client.query<{ answer: number }>('SELECT 6 * 7 AS answer')
  assert.equal(rows[0]?.answer, 42)
  await client.query('CREATE TABLE kept (n int)')
  await client.query('INSERT INTO kept VALUES (1)')
  await client.end()

  await cluster.stopServer()
  const refused = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 })
  await assert.rejects(refused.connect())
  await refused.end().catch(() => {})

  await cluster.startServer()
  const again = new pg.Client({ connectionString: url })
  await again.connect()
  const kept = await again.query<{ n: number }>('SELECT n FROM kept')
  assert.deepEqual(kept.rows, [{ n: 1 }])
  await again.end()
})
