import type pg from 'pg'

/**
 * Runs `fn` in one transaction on a connection of its own: COMMIT when it resolves, ROLLBACK when
 * it throws. A connection that failed is destroyed rather than returned to the pool.
 */
export async function inTransaction<T> (pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  // A connection cut while checked out (a server restart) is also emitted as 'error' on the client,
  // which with no listener would end the process; the failed query reports it here.
  const onError = (): void => {}
  client.on('error', onError)
  let broken: Error | undefined
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    broken = err as Error
    await client.query('ROLLBACK').catch(() => {})
    throw err
  } finally {
    client.off('error', onError)
    client.release(broken)
  }
}
