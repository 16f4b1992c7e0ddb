/** One message of a Server-Sent Events stream, as a browser's parser would give it. */
export interface SseMessage {
  id: string | null
  event: string
  data: string
  /** Date.now() when the message was complete. */
  at: number
}

export interface SseStream {
  status: number
  /** Every complete message so far, in order. */
  messages: SseMessage[]
  /** Comment lines (heartbeats), without the colon. */
  comments: string[]
  /** The id of the last message that had one (what a reconnect sends as Last-Event-ID). */
  lastEventId: string | null
  /** Resolves when the server ends the stream (or the request fails or is aborted). */
  done: Promise<void>
  /** Resolves once `predicate` holds; rejects after `timeoutMs`. */
  waitFor (predicate: (messages: SseMessage[]) => boolean, timeoutMs?: number): Promise<void>
  abort (): void
}

/**
 * A minimal event-stream reader over fetch, as the live view page has one (EventSource cannot send an
 * Authorization header). The body of a non-200 answer is in `messages[0].data`.
 */
export async function openSse (url: string, headers: Record<string, string>): Promise<SseStream> {
  const controller = new AbortController()
  const response = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: controller.signal })
  const waiters = new Set<() => void>()
  const stream: SseStream = {
    status: response.status,
    messages: [],
    comments: [],
    lastEventId: null,
    done: Promise.resolve(),
    async waitFor (predicate, timeoutMs = 20000) {
      if (predicate(stream.messages)) return
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`SSE condition not met within ${timeoutMs} ms; got ${stream.messages.map((m) => m.event).join(',')}`)) }, timeoutMs)
        const check = (): void => {
          if (!predicate(stream.messages)) return
          clearTimeout(timer)
          waiters.delete(check)
          resolve()
        }
        waiters.add(check)
      })
    },
    abort () { controller.abort() }
  }
  if (response.status !== 200) {
    stream.messages.push({ id: null, event: 'error', data: await response.text(), at: Date.now() })
    return stream
  }
  stream.done = (async () => {
    const decoder = new TextDecoder()
    let buffer = ''
    let message: { id: string | null, event: string, data: string[] } = { id: null, event: 'message', data: [] }
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true })
        let newline: number
        while ((newline = buffer.indexOf('\n')) !== -1) {
          const line = buffer.slice(0, newline).replace(/\r$/, '')
          buffer = buffer.slice(newline + 1)
          if (line === '') {
            if (message.data.length > 0) {
              stream.messages.push({ id: message.id, event: message.event, data: message.data.join('\n'), at: Date.now() })
              if (message.id !== null) stream.lastEventId = message.id
              for (const check of [...waiters]) check()
            }
            message = { id: null, event: 'message', data: [] }
          } else if (line.startsWith(':')) {
            stream.comments.push(line.slice(1).trim())
            for (const check of [...waiters]) check()
          } else {
            const colon = line.indexOf(':')
            const field = colon === -1 ? line : line.slice(0, colon)
            const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
            if (field === 'id') message.id = value
            else if (field === 'event') message.event = value
            else if (field === 'data') message.data.push(value)
          }
        }
      }
    } catch {
      // aborted or reset: the stream is over either way
    }
  })()
  return stream
}
