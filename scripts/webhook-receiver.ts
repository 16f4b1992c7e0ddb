/**
 * The one webhook receiver: what a customer's endpoint must do, written once. It verifies every
 * delivery's Standard Webhooks signature (any of several secrets, for rotation), answers, and
 * de-duplicates accepted events by `webhook-id`. Used three ways:
 * - the `webhook-receiver` service of docker-compose.yml (this file's `main`), printing one line per
 *   new event: `<type> seq=<sequence> call=<call_sid>` plus turn index and role;
 * - `npm run demo`, and the end-to-end tests (test/helpers/webhook-receiver.ts);
 * - the webhook delivery tests (test/core/webhooks/receiver.ts), which script its answers.
 *
 * Transcript text is PHI, so `main` prints it only with `--print-text`, labelled as such.
 *
 *   WEBHOOK_SECRET=whsec_… node scripts/webhook-receiver.ts [--port 8081] [--host 0.0.0.0] [--print-text]
 */
import { createServer } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseArgs } from 'node:util'
import { Webhook } from 'standardwebhooks'

/** Larger bodies are refused: a `call.ended` of a long call is well below this. */
const MAX_BODY_BYTES = 8 * 1024 * 1024
/** De-duplication memory; a retry comes within 24 h, far fewer than this many events later in a demo. */
const MAX_SEEN_IDS = 100_000

/** One delivery attempt as it arrived. */
export interface ReceivedAttempt {
  path: string
  id: string
  timestamp: string
  signature: string
  body: string
  userAgent: string
  contentType: string
  /** True when a secret the receiver knows verified the signature and timestamp. */
  verified: boolean
  /** performance.now() when the request ended. */
  at: number
  /** What the receiver answered (or will answer, after `delayMs`). */
  status: number | 'hang'
}

/** How to answer an attempt that verified. */
export interface Reply {
  status: number | 'hang'
  headers?: Record<string, string>
  /** Answer after this long, ms. */
  delayMs?: number
}

/** The first accepted (2xx) delivery of a `webhook-id`. */
export interface ReceivedEvent {
  id: string
  type: string
  sequence: number
  callSid: string
  streamSid: string
  data: Record<string, unknown>
  body: string
}

export interface ReceiverOptions {
  /** `whsec_…` secrets; a delivery is accepted when any of them verifies it (secret rotation). */
  secrets: string[]
  /** False only for tests that move the sender's clock a day ahead (its timestamps would be "too new"). Default true. */
  verify?: boolean
  /** The answer to a verified attempt. Default 204. A failed verification always gets 401. */
  reply?: (attempt: ReceivedAttempt) => Reply
  /** Every attempt, verified or not, once its answer is decided. */
  onAttempt?: (attempt: ReceivedAttempt) => void
  /** Each webhook-id's first accepted delivery. */
  onEvent?: (event: ReceivedEvent) => void
  /** An accepted delivery of a webhook-id already accepted (its first 2xx was lost on the way back). */
  onDuplicate?: (attempt: ReceivedAttempt) => void
  /** Print `data.text` of turns (PHI) in `write` lines. Default false. */
  printText?: boolean
  /** One line per new event (default: none; `main` prints to stdout). */
  write?: (line: string) => void
  /** Rejections (default: none; `main` prints to stderr). */
  warn?: (line: string) => void
}

type EventData = Record<string, unknown>

function describe (type: string, data: EventData, printText: boolean): string {
  const parts = [type, `seq=${String(data.sequence)}`, `call=${String(data.call_sid)}`]
  if (type === 'transcript.turn') {
    parts.push(`turn=${String(data.turn_index)}`, `role=${String(data.role)}`, `speaker=${String(data.speaker)}`)
    if (printText) parts.push(`text(PHI)=${JSON.stringify(data.text)}`)
  } else if (type === 'call.ended') {
    parts.push(`reason=${String(data.reason)}`, `turns=${String(data.turn_count)}`)
  }
  return parts.join(' ')
}

function readBody (request: IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    request.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) { resolve(null); request.destroy(); return }
      chunks.push(chunk)
    })
    request.on('end', () => { resolve(Buffer.concat(chunks)) })
    request.on('error', reject)
  })
}

/** An HTTP server (not yet listening) that accepts signed deliveries on any path. */
export function createWebhookReceiver (options: ReceiverOptions): Server {
  if (options.secrets.length === 0) throw new Error('webhook receiver: no secret; set WEBHOOK_SECRET to the whsec_… secret medstream signs with')
  const verifiers = options.secrets.map((secret) => new Webhook(secret))
  const verify = options.verify ?? true
  const seen = new Set<string>()

  return createServer((request, response) => {
    if (request.method !== 'POST') {
      response.writeHead(405, { allow: 'POST' }).end()
      return
    }
    readBody(request).then((raw) => {
      if (raw === null) { response.writeHead(413).end(); return }
      const body = raw.toString('utf8')
      const headers = {
        'webhook-id': String(request.headers['webhook-id'] ?? ''),
        'webhook-timestamp': String(request.headers['webhook-timestamp'] ?? ''),
        'webhook-signature': String(request.headers['webhook-signature'] ?? '')
      }
      const id = headers['webhook-id']
      let verified = !verify
      if (verify) {
        verified = verifiers.some((verifier) => {
          try {
            verifier.verify(body, headers)
            return true
          } catch {
            return false
          }
        })
      }
      const attempt: ReceivedAttempt = {
        path: request.url ?? '',
        id,
        timestamp: headers['webhook-timestamp'],
        signature: headers['webhook-signature'],
        body,
        userAgent: String(request.headers['user-agent'] ?? ''),
        contentType: String(request.headers['content-type'] ?? ''),
        verified,
        at: performance.now(),
        status: 401
      }
      const reply: Reply = verified ? (options.reply?.(attempt) ?? { status: 204 }) : { status: 401 }
      attempt.status = reply.status
      if (!verified) options.warn?.(`rejected id=${JSON.stringify(id)}: signature or timestamp did not verify`)
      options.onAttempt?.(attempt)
      const status = reply.status
      if (status === 'hang') return
      const answer = (): void => {
        if (response.destroyed) return
        if (status >= 200 && status < 300) accept(attempt)
        response.writeHead(status, reply.headers).end(status === 204 ? undefined : '{"ok":true}')
      }
      if (reply.delayMs === undefined) answer()
      else setTimeout(answer, reply.delayMs)
    }).catch(() => {
      if (!response.headersSent) response.writeHead(400).end()
    })
  })

  function accept (attempt: ReceivedAttempt): void {
    // 2xx to a retry as well: its first 2xx was lost on the way back.
    if (seen.has(attempt.id)) {
      options.onDuplicate?.(attempt)
      return
    }
    seen.add(attempt.id)
    if (seen.size > MAX_SEEN_IDS) seen.delete(seen.values().next().value as string)
    let parsed: { type: string, data: EventData }
    try {
      parsed = JSON.parse(attempt.body) as { type: string, data: EventData }
    } catch {
      return
    }
    const data = parsed.data ?? {}
    options.write?.(describe(parsed.type, data, options.printText === true))
    options.onEvent?.({
      id: attempt.id,
      type: parsed.type,
      sequence: data.sequence as number,
      callSid: data.call_sid as string,
      streamSid: data.stream_sid as string,
      data,
      body: attempt.body
    })
  }
}

/** Starts the receiver on `host:port` (0 = any free port); resolves with its address. */
export async function listenWebhookReceiver (server: Server, port = 0, host = '127.0.0.1'): Promise<AddressInfo> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => { server.off('error', reject); resolve() })
  })
  return server.address() as AddressInfo
}

function main (): void {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '8081' },
      host: { type: 'string', default: '0.0.0.0' },
      'print-text': { type: 'boolean', default: false }
    }
  })
  const secrets = (process.env.WEBHOOK_SECRET ?? '').split(/\s+/).filter((secret) => secret !== '')
  if (secrets.length === 0) {
    process.stderr.write('webhook-receiver: WEBHOOK_SECRET is not set; set it to the whsec_… secret medstream signs with\n')
    process.exit(1)
  }
  const printText = values['print-text']
  const server = createWebhookReceiver({
    secrets,
    printText,
    write: (line) => { process.stdout.write(`${line}\n`) },
    warn: (line) => { process.stderr.write(`${line}\n`) }
  })
  server.listen(Number(values.port), values.host, () => {
    const { port } = server.address() as AddressInfo
    process.stdout.write(`webhook-receiver: listening on ${values.host}:${port}${printText ? ' (printing transcript text: PHI)' : ''}\n`)
  })
  const stop = (): void => { server.close(() => process.exit(0)); server.closeAllConnections() }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (import.meta.main) main()
