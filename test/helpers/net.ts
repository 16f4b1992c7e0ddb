import { once } from 'node:events'
import { createServer } from 'node:net'
import type { AddressInfo } from 'node:net'

/**
 * A loopback port free right now. For a child process that must know its public URL before it
 * listens (PUBLIC_URL names the port); in-process servers listen on port 0 instead.
 */
export async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
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
