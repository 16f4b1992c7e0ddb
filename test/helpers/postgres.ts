import { spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { freePort } from './net.ts'

/**
 * A throwaway PostgreSQL cluster from Debian's `postgresql` package, for tests. The server refuses
 * to run as root, and CI is root: the cluster lives in a temp dir owned by `postgres` and every
 * server binary runs through `runuser -u postgres`. It listens on a free loopback port, with its
 * Unix socket inside the same dir. A missing server is an error, never a skip: fleet mode is only
 * tested against the real thing.
 */
export interface PostgresCluster {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust auth on loopback). */
  readonly url: string
  readonly port: number
  /** A URL for another database of the same cluster, created empty. */
  createDatabase (name: string): Promise<string>
  /** Stops the server (fast shutdown: open connections are cut, as in a real restart). */
  stopServer (): Promise<void>
  /** Starts it again on the same port and data. */
  startServer (): Promise<void>
  /** Stops the server and deletes the cluster. Idempotent. */
  destroy (): Promise<void>
}

/** `/usr/lib/postgresql/<version>/bin`, newest version first; throws with the install hint. */
export function postgresBinDir (): string {
  const root = '/usr/lib/postgresql'
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))) : []
  versions.sort((a, b) => Number(b) - Number(a))
  const newest = versions[0]
  if (newest === undefined) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: install Debian\'s postgresql package (.ci/run does)')
  return join(root, newest, 'bin')
}

const asRoot = process.getuid?.() === 0

function asPostgres (command: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args]
}

function run (command: string, args: string[]): void {
  const [cmd, argv] = asPostgres(command, args)
  const result = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 60_000 })
  if (result.status !== 0) throw new Error(`${command} failed (${result.status}): ${result.stderr || result.stdout}`)
}

export async function startPostgres (): Promise<PostgresCluster> {
  const bin = postgresBinDir()
  const dir = mkdtempSync(join(tmpdir(), 'medstream-pg-'))
  chmodSync(dir, 0o700)
  if (asRoot) {
    const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
    const gids = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' })
    chownSync(dir, Number(ids.stdout.trim()), Number(gids.stdout.trim()))
  }
  const data = join(dir, 'data')
  run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C'])
  const port = await freePort()
  const log = join(dir, 'server.log')
  // fsync off: a test cluster trades durability across power loss for speed.
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`
  let running = false

  const startServer = async (): Promise<void> => {
    run(join(bin, 'pg_ctl'), ['-D', data, '-l', log, '-o', serverOptions, '-w', '-t', '30', 'start'])
    running = true
  }

  const stopServer = async (): Promise<void> => {
    if (!running) return
    running = false
    // Fast shutdown: open connections are cut, as when a real server restarts.
    run(join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', '-t', '30', 'stop'])
  }

  let destroyed = false
  await startServer()
  // A test that dies before its cleanup must not leave a daemonized server behind.
  const onExit = (): void => {
    if (running) spawnSync(...asPostgres(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop']), { timeout: 10_000 })
  }
  process.once('exit', onExit)
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  return {
    url,
    port,
    async createDatabase (name: string) {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`database name ${name} must be a plain lower-case identifier`)
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      try {
        await client.query(`CREATE DATABASE ${name}`)
      } finally {
        await client.end()
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`
    },
    stopServer,
    startServer,
    async destroy () {
      if (destroyed) return
      destroyed = true
      process.removeListener('exit', onExit)
      await stopServer()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
