import { once } from 'node:events'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { connect } from 'node:net'

/**
 * A small load balancer for tests: what a Kubernetes Service does in front of the replicas. It
 * polls each backend's /readyz every POLL_MS and sends every HTTP request and WebSocket upgrade to a
 * ready one (round robin); with none ready it answers 503. Upgrades are piped as raw TCP, so the
 * replica sees Twilio's headers byte for byte.
 */
export interface ReadyProxy {
  /** `http://127.0.0.1:PORT`. */
  url: string
  port: number
  /** Backends, by their `http://127.0.0.1:PORT` origin. */
  backends: string[]
  /** Upgrades routed so far, per backend origin. */
  upgrades: Map<string, number>
  /**
   * Takes a backend out at once, as Kubernetes takes a terminating pod out of a Service's ready
   * endpoints the moment it is deleted, before its SIGTERM, rather than when a readiness probe notices.
   */
  terminating (backend: string): void
  close (): Promise<void>
}

const POLL_MS = 100

export async function startReadyProxy (backends: string[], port = 0): Promise<ReadyProxy> {
  const ready = new Set<string>()
  const gone = new Set<string>()
  const upgrades = new Map<string, number>()
  const sockets = new Set<Socket>()
  let next = 0
  let closed = false

  const poll = async (): Promise<void> => {
    await Promise.all(backends.map(async (backend) => {
      try {
        const response = await fetch(`${backend}/readyz`, { signal: AbortSignal.timeout(1000) })
        await response.arrayBuffer()
        if (response.status === 200 && !gone.has(backend)) ready.add(backend)
        else ready.delete(backend)
      } catch {
        ready.delete(backend)
      }
    }))
  }
  const pick = (): string | null => {
    const candidates = backends.filter((backend) => ready.has(backend))
    if (candidates.length === 0) return null
    return candidates[next++ % candidates.length] ?? null
  }

  const server = createServer((request, response) => {
    const backend = pick()
    if (backend === null) {
      response.writeHead(503).end()
      return
    }
    const upstream = httpRequest(new URL(request.url ?? '/', backend), { method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(response)
    })
    upstream.on('error', () => { if (!response.headersSent) response.writeHead(502); response.end() })
    request.pipe(upstream)
  })
  server.on('connection', (socket) => { sockets.add(socket); socket.on('close', () => sockets.delete(socket)) })
  server.on('upgrade', (request, socket, head) => {
    const backend = pick()
    if (backend === null) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    upgrades.set(backend, (upgrades.get(backend) ?? 0) + 1)
    const target = new URL(backend)
    const upstream = connect(Number(target.port), target.hostname)
    sockets.add(upstream)
    upstream.on('close', () => sockets.delete(upstream))
    upstream.on('error', () => socket.destroy())
    socket.on('error', () => upstream.destroy())
    upstream.once('connect', () => {
      const lines = [`${request.method ?? 'GET'} ${request.url ?? '/'} HTTP/1.1`]
      for (let i = 0; i < request.rawHeaders.length; i += 2) lines.push(`${request.rawHeaders[i] ?? ''}: ${request.rawHeaders[i + 1] ?? ''}`)
      upstream.write(lines.join('\r\n') + '\r\n\r\n')
      if (head.length > 0) upstream.write(head)
      upstream.pipe(socket)
      socket.pipe(upstream)
    })
  })
  // Listen before polling starts: a listen that fails must leave no timer keeping the process alive.
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  const actualPort = (server.address() as AddressInfo).port
  await poll()
  const timer = setInterval(() => { if (!closed) void poll() }, POLL_MS)
  return {
    url: `http://127.0.0.1:${actualPort}`,
    port: actualPort,
    backends,
    upgrades,
    terminating (backend: string) {
      gone.add(backend)
      ready.delete(backend)
    },
    async close () {
      if (closed) return
      closed = true
      clearInterval(timer)
      for (const socket of sockets) socket.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
