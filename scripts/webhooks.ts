// Operator command for the webhook outbox: `npm run webhooks -- list|replay|resume|purge`.
// Works beside running services, on either backend: the SQLite file in DATA_DIR (WAL) or, with
// DATABASE_URL, the PostgreSQL outbox a fleet shares. Never prints an event body (PHI), the webhook
// URL or the database URL.
import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { loadOutboxLocation, withDotEnv } from '../src/config.ts'
import { Outbox } from '../src/core/webhooks/outbox.ts'
import type { OutboxRow, OutboxStore } from '../src/core/webhooks/outbox-store.ts'
import { PostgresOutbox } from '../src/core/webhooks/postgres-outbox.ts'

const USAGE = `Usage: npm run webhooks -- <command> [options]

Commands:
  list [--call CA…] [--state pending|dead] [--limit N]
        pending and dead events by call and age (default limit 100 rows)
  replay --id ID | --call CA… | --all-dead
        re-queue dead letters with a fresh 24 h retry window
  resume
        resume delivery paused by a 410 Gone (a running service picks it up within seconds)
  purge --dead [--older-than 7d]
        delete dead letters (all, or those created at least that long ago: 90s, 30m, 12h, 7d)

DATABASE_URL (fleet mode) selects the PostgreSQL outbox; without it DATA_DIR (default ./data)
locates outbox.db. Both are also read from .env.`

class UsageError extends Error {}

async function main (argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      call: { type: 'string' },
      id: { type: 'string' },
      state: { type: 'string' },
      limit: { type: 'string' },
      'all-dead': { type: 'boolean' },
      dead: { type: 'boolean' },
      'older-than': { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  const command = positionals[0]
  if (values.help === true || command === undefined || command === 'help') {
    console.log(USAGE)
    return command === undefined && values.help !== true ? 2 : 0
  }
  if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`)
  if (!['list', 'replay', 'resume', 'purge'].includes(command)) throw new UsageError(`unknown command "${command}"`)

  const { dataDir, databaseUrl } = loadOutboxLocation(withDotEnv(process.env))
  let outbox: OutboxStore
  if (databaseUrl !== null) {
    const postgres = new PostgresOutbox({ url: databaseUrl, logger: pino({ level: 'silent' }) })
    outbox = postgres
    try {
      // Idempotent; a database with a newer schema stops here with one line.
      await postgres.migrate()
    } catch (err) {
      await postgres.close()
      throw err
    }
  } else {
    const path = Outbox.pathIn(dataDir)
    if (!existsSync(path)) {
      console.log(`No outbox at ${path}: nothing has been queued there yet.`)
      return 0
    }
    outbox = new Outbox(path)
  }
  try {
    switch (command) {
      case 'list': return await list(outbox, values)
      case 'replay': return await replay(outbox, values)
      case 'resume': return await resume(outbox)
      default: return await purge(outbox, values)
    }
  } finally {
    await outbox.close()
  }
}

async function list (outbox: OutboxStore, values: { call?: string, state?: string, limit?: string }): Promise<number> {
  if (values.state !== undefined && values.state !== 'pending' && values.state !== 'dead') {
    throw new UsageError('--state must be pending or dead')
  }
  const limit = values.limit === undefined ? 100 : Number(values.limit)
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive whole number')
  const now = Date.now()

  const pause = await outbox.pauseState()
  console.log(pause === null
    ? 'Delivery: active'
    : `Delivery: PAUSED since ${new Date(pause.since).toISOString()} (receiver answered ${pause.status}); run \`npm run webhooks -- resume\` once the endpoint is fixed`)
  const counts = await outbox.counts()
  const oldest = await outbox.oldestPendingCreatedAt()
  console.log(`Outbox: ${counts.pending} pending, ${counts.dead} dead${oldest === null ? '' : `, oldest pending ${formatAge(now - oldest)}`}`)
  console.log('')

  const calls = (await outbox.summary()).filter((call) => values.call === undefined || call.callSid === values.call)
  if (calls.length === 0) {
    console.log('No events.')
    return 0
  }
  printTable(['CALL SID', 'PENDING', 'DEAD', 'OLDEST'], calls.map((call) => [
    call.callSid, String(call.pending), String(call.dead), formatAge(now - call.oldestCreatedAt)
  ]))
  console.log('')

  const state = values.state as OutboxRow['state'] | undefined
  const rows = await outbox.list({ ...(state === undefined ? {} : { state }), ...(values.call === undefined ? {} : { callSid: values.call }), limit: limit + 1 })
  printTable(['WEBHOOK ID', 'CALL SID', 'SEQ', 'TYPE', 'STATE', 'ATTEMPTS', 'AGE', 'LAST', 'NEXT'], rows.slice(0, limit).map((row) => [
    row.id,
    row.callSid,
    String(row.sequence),
    row.type,
    row.state,
    String(row.attempts),
    formatAge(now - row.createdAt),
    row.lastStatus !== null ? String(row.lastStatus) : (row.lastError ?? '-'),
    row.state === 'dead' ? '-' : row.nextAttemptAt === null ? 'queued' : row.nextAttemptAt <= now ? 'now' : `in ${formatAge(row.nextAttemptAt - now)}`
  ]))
  if (rows.length > limit) console.log(`… more rows; narrow with --call or --state, or raise --limit`)
  return 0
}

async function replay (outbox: OutboxStore, values: { id?: string, call?: string, 'all-dead'?: boolean }): Promise<number> {
  const selectors = [values.id, values.call, values['all-dead'] === true ? true : undefined].filter((value) => value !== undefined)
  if (selectors.length !== 1) throw new UsageError('replay needs exactly one of --id ID, --call CA… or --all-dead')
  const count = await outbox.replayDead({ ...(values.id === undefined ? {} : { id: values.id }), ...(values.call === undefined ? {} : { callSid: values.call }) })
  console.log(`${count} dead letter${count === 1 ? '' : 's'} re-queued.`)
  if (count > 0) console.log('A running service sends them within seconds; otherwise at its next start.')
  return 0
}

async function resume (outbox: OutboxStore): Promise<number> {
  console.log(await outbox.resume()
    ? 'Delivery resumed: a running service retries the waiting events within seconds.'
    : 'Delivery was not paused.')
  return 0
}

async function purge (outbox: OutboxStore, values: { dead?: boolean, 'older-than'?: string }): Promise<number> {
  // Pending events are never purged: that would lose events nobody has received.
  if (values.dead !== true) throw new UsageError('purge deletes dead letters only; say so with --dead')
  const olderThan = values['older-than']
  const count = await outbox.purgeDead(olderThan === undefined ? {} : { olderThanMs: parseDurationMs(olderThan) })
  console.log(`${count} dead letter${count === 1 ? '' : 's'} purged.`)
  return 0
}

function parseDurationMs (text: string): number {
  const match = /^(\d+)(s|m|h|d)$/.exec(text)
  if (match === null) throw new UsageError(`--older-than takes a number and a unit (s, m, h, d), e.g. 7d; got "${text}"`)
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd']
  return Number(match[1]) * unit
}

function formatAge (ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000))
  if (seconds < 60) return `${seconds}s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, '0')}s`
  const hours = Math.floor(minutes / 60)
  if (hours < 24) return `${hours}h${String(minutes % 60).padStart(2, '0')}m`
  return `${Math.floor(hours / 24)}d${String(hours % 24).padStart(2, '0')}h`
}

function printTable (header: string[], rows: string[][]): void {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)))
  const line = (cells: string[]): string => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join('  ').trimEnd()
  console.log(line(header))
  for (const row of rows) console.log(line(row))
}

try {
  process.exitCode = await main(process.argv.slice(2))
} catch (err) {
  if (err instanceof UsageError || (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true)) {
    console.error(`webhooks: ${err.message}\n\n${USAGE}`)
    process.exitCode = 2
  } else {
    console.error(`webhooks: ${err instanceof Error ? err.message : String(err)}`)
    process.exitCode = 1
  }
}
