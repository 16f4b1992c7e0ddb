import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

/**
 * The first port of the kernel's ephemeral range: every `listen(0)` and every outgoing connection
 * takes its local port from that range, so a port below it stays free once checked.
 */
function ephemeralStart (): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    if (Number.isInteger(low) && low > 21_000) return low
  } catch {
    // not Linux: assume the IANA range
  }
  return 49_152
}

const FIRST_PORT = 20_000

async function canListen (port: number): Promise<boolean> {
  const server = createServer()
  try {
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
  } catch {
    return false
  }
  server.close()
  await once(server, 'close')
  return true
}

/**
 * A loopback port free right now, for a child process that must know its public URL before it
 * listens (PUBLIC_URL names the port); in-process servers listen on port 0 instead. The port is
 * picked at random below the ephemeral range, so it cannot be taken between this check and the
 * child's listen by a `listen(0)` or by the local end of a connection (as the ephemeral port that
 * `listen(0)` returns could, in this process or another).
 */
export async function freePort (): Promise<number> {
  const span = ephemeralStart() - FIRST_PORT
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = FIRST_PORT + Math.floor(Math.random() * span)
    if (await canListen(port)) return port
  }
  throw new Error(`no free loopback port between ${FIRST_PORT} and ${FIRST_PORT + span} after 100 tries`)
}

/**
 * Polls `url` until it answers 200, or throws after `timeoutMs`. `alive` is checked between polls so
 * a process that exited while starting fails at once rather than at the deadline.
 */
export async function waitForOk (url: string, timeoutMs: number, alive: () => boolean = () => true): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`the process exited before ${url} answered`)
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(1000) })).status === 200) return
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`no 200 from ${url} within ${timeoutMs} ms`)
}
