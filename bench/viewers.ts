/**
 * Live-view watchers for `npm run bench -- --viewers N`, in a process of their own so their CPU is
 * not the service's. Started by bench/run.ts with an IPC channel. Arguments: the service's URL, its
 * LIVE_VIEW_SECRET, and N.
 *
 * Every 500 ms it lists the live calls (`GET /live/calls`, a supervisor token) and opens N event
 * streams (`GET /live/calls/:callSid/events`) for each call it has not seen yet, each with a per-call
 * token, as an agent desktop embedding the page would. It reads the streams to their end, counting
 * events by type, and answers `viewer-stats`.
 */
import { request } from 'node:http'
import type { IncomingMessage } from 'node:http'
import { mintViewerToken, SUPERVISOR_SCOPE } from '../src/core/live/viewer-token.ts'
import type { ChildMessage, ParentMessage, ViewerStats } from './lib/ipc.ts'

const [serviceUrl, secret, perCallArg] = process.argv.slice(2)
const perCall = Number(perCallArg)
if (serviceUrl === undefined || secret === undefined || !(perCall >= 1) || process.send === undefined) {
  process.stderr.write('bench/viewers.ts is started by bench/run.ts (needs the service URL, LIVE_VIEW_SECRET, viewers per call and an IPC channel)\n')
  process.exit(1)
}
const key = Buffer.from(secret, 'utf8')
const send = (message: ChildMessage): void => { process.send?.(message) }

const stats: ViewerStats = { calls: 0, streamsOpened: 0, streamsOpen: 0, streamsEnded: 0, refused: 0, errors: 0, events: { 'turn.partial': 0, 'transcript.turn': 0, 'call.ended': 0 }, bytes: 0 }
const seen = new Set<string>()

function get (path: string, token: string, onResponse: (response: IncomingMessage) => void): void {
  const req = request(`${serviceUrl}${path}`, { headers: { authorization: `Bearer ${token}`, accept: path.endsWith('/events') ? 'text/event-stream' : 'application/json' } }, onResponse)
  req.on('error', () => { stats.errors++ })
  req.end()
}

/** Counts `event: <type>` lines as they arrive; a line may span chunks. */
function watch (callSid: string): void {
  stats.streamsOpened++
  get(`/live/calls/${encodeURIComponent(callSid)}/events`, mintViewerToken(key, callSid, Date.now()), (response) => {
    if (response.statusCode !== 200) {
      stats.refused++
      response.resume()
      return
    }
    stats.streamsOpen++
    let rest = ''
    response.setEncoding('utf8')
    response.on('data', (chunk: string) => {
      stats.bytes += Buffer.byteLength(chunk)
      const lines = (rest + chunk).split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) {
        if (!line.startsWith('event: ')) continue
        const type = line.slice(7) as keyof ViewerStats['events']
        if (type in stats.events) stats.events[type]++
      }
    })
    response.on('end', () => { stats.streamsOpen--; stats.streamsEnded++ })
    response.on('error', () => { stats.errors++ })
  })
}

function poll (): void {
  get('/live/calls', mintViewerToken(key, SUPERVISOR_SCOPE, Date.now()), (response) => {
    let body = ''
    response.setEncoding('utf8')
    response.on('data', (chunk: string) => { body += chunk })
    response.on('end', () => {
      if (response.statusCode !== 200) {
        stats.errors++
        return
      }
      for (const call of (JSON.parse(body) as { calls: Array<{ call_sid: string }> }).calls) {
        if (seen.has(call.call_sid)) continue
        seen.add(call.call_sid)
        stats.calls++
        for (let i = 0; i < perCall; i++) watch(call.call_sid)
      }
    })
  })
}

const timer = setInterval(poll, 500)
process.on('message', (message: ParentMessage) => {
  if (message.type === 'viewer-stats') send({ type: 'viewer-stats', stats })
})
process.on('disconnect', () => {
  clearInterval(timer)
  process.exit(0)
})
send({ type: 'ready', url: serviceUrl })
