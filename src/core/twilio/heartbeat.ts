/** What the heartbeat needs of a WebSocket (`ws`'s fits). */
export interface PingableSocket {
  ping (): void
  terminate (): void
}

/**
 * One ping timer for every media socket of the process, not one per call. A socket that has not
 * answered the previous ping by the next one is dead (a peer gone without a FIN) and is terminated,
 * which ends its call through the socket's own close.
 */
export class Heartbeat {
  readonly #alive = new Map<PingableSocket, boolean>()
  #timer: NodeJS.Timeout | null

  /** @param intervalMs time between pings, ms (20000 in production). */
  constructor (intervalMs: number) {
    this.#timer = setInterval(() => this.#beat(), intervalMs)
    this.#timer.unref()
  }

  /** Watches a socket from now on; it counts as having answered. */
  add (socket: PingableSocket): void {
    if (this.#timer !== null) this.#alive.set(socket, true)
  }

  /** The socket answered a ping (its `pong` event). */
  pong (socket: PingableSocket): void {
    if (this.#alive.has(socket)) this.#alive.set(socket, true)
  }

  /** Stops watching a socket (its `close` event). */
  delete (socket: PingableSocket): void {
    this.#alive.delete(socket)
  }

  get size (): number { return this.#alive.size }

  /** Idempotent: stops the timer and forgets every socket. */
  close (): void {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    this.#alive.clear()
  }

  #beat (): void {
    for (const [socket, answered] of this.#alive) {
      if (!answered) {
        this.#alive.delete(socket)
        socket.terminate()
        continue
      }
      this.#alive.set(socket, false)
      socket.ping()
    }
  }
}
