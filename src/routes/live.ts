import { readFileSync } from 'node:fs'
import type { ServerResponse } from 'node:http'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { LiveEvent } from '../core/live/hub.ts'
import { LiveUnavailableError } from '../core/live/pg-live.ts'
import { bearerToken, grantCovers, SUPERVISOR_SCOPE, verifyViewerToken } from '../core/live/viewer-token.ts'
import type { ViewerGrant } from '../core/live/viewer-token.ts'

export interface LiveRouteOptions {
  /** The viewer token key (LIVE_VIEW_SECRET's bytes, or derived). */
  key: Buffer
  /** CSP `frame-ancestors` of the page: `'none'` or the agent desktops allowed to embed it. */
  frameAncestors: string
  /** Comment lines on every open event stream, ms, so proxies keep it open. Default 15000. */
  heartbeatMs?: number
}

const PAGE_DIR = new URL('../live-view/', import.meta.url)
const ASSETS: Record<string, { file: string, type: string }> = {
  'live-view.js': { file: 'live-view.js', type: 'text/javascript; charset=utf-8' },
  'live-view.css': { file: 'live-view.css', type: 'text/css; charset=utf-8' }
}
/**
 * A viewer that reads slower than the call speaks is cut off past this much unsent data (partials
 * add up to a few KB a second): it reconnects with Last-Event-ID and loses no final.
 */
const MAX_UNSENT_BYTES = 1024 * 1024
/** A CallSid as Twilio writes them; anything else cannot be a live call. */
const CALL_SID = /^[A-Za-z0-9_-]{1,64}$/

/**
 * The live view: the page, the supervisor's list of live calls, and one call's Server-Sent Events.
 * Every API route wants `Authorization: Bearer <viewer token>`; answers never carry PHI, and the token
 * is never logged (a view is logged with its scope and expiry).
 */
export default async function liveRoutes (fastify: FastifyInstance, options: LiveRouteOptions): Promise<void> {
  const feed = fastify.liveFeed
  const page = readFileSync(new URL('index.html', PAGE_DIR))
  const assets = new Map(Object.entries(ASSETS).map(([name, asset]) => [name, { body: readFileSync(new URL(asset.file, PAGE_DIR)), type: asset.type }]))
  const csp = `default-src 'self'; frame-ancestors ${options.frameAncestors}; base-uri 'none'; form-action 'none'; object-src 'none'`

  fastify.addHook('onSend', async (request, reply) => {
    if (!request.url.startsWith('/live')) return
    reply.header('cache-control', 'no-store')
    reply.header('x-content-type-options', 'nosniff')
    reply.header('referrer-policy', 'no-referrer')
  })

  fastify.setErrorHandler(async (error, request, reply) => {
    if (error instanceof LiveUnavailableError) return reply.code(503).header('retry-after', '1').send({ error: 'unavailable', message: 'the live view is not ready yet' })
    request.log.error({ err: error }, 'live view request failed')
    return reply.code(500).send({ error: 'internal' })
  })

  fastify.get('/live', async (_request, reply) => {
    return reply.header('content-security-policy', csp).type('text/html; charset=utf-8').send(page)
  })

  fastify.get<{ Params: { asset: string } }>('/live/assets/:asset', async (request, reply) => {
    const asset = assets.get(request.params.asset)
    if (asset === undefined) return reply.code(404).send({ error: 'not found' })
    return reply.header('content-security-policy', csp).type(asset.type).send(asset.body)
  })

  fastify.get('/live/calls', async (request, reply) => {
    const grant = authorize(request, reply, options.key)
    if (grant === null) return reply
    if (grant.scope !== SUPERVISOR_SCOPE) return forbid(request, reply, grant)
    request.log.info({ scope: grant.scope, expiresAt: grant.expiry }, 'live calls listed')
    return { calls: await feed.list() }
  })

  // One timer for every open stream of the process.
  const streams = new Set<ServerResponse>()
  const heartbeat = setInterval(() => {
    for (const raw of streams) raw.write(': heartbeat\n\n')
  }, options.heartbeatMs ?? 15000)
  heartbeat.unref()
  fastify.addHook('onClose', async () => clearInterval(heartbeat))

  fastify.get<{ Params: { callSid: string } }>('/live/calls/:callSid/events', async (request, reply) => {
    const grant = authorize(request, reply, options.key)
    if (grant === null) return reply
    const { callSid } = request.params
    if (!grantCovers(grant, callSid)) return forbid(request, reply, grant)
    if (!CALL_SID.test(callSid)) return notLive(reply)
    const lastEventId = request.headers['last-event-id']
    const raw = reply.raw
    // What the feed sends while it is being opened (the replay) waits for the headers.
    const early: string[] = []
    let streaming = false
    let endedEarly = false
    const subscription = await feed.open(callSid, typeof lastEventId === 'string' ? lastEventId : undefined, {
      send: (event) => {
        if (!streaming) {
          early.push(formatEvent(event))
        } else if (raw.writableLength > MAX_UNSENT_BYTES) {
          request.log.warn({ scope: grant.scope, unsentBytes: raw.writableLength }, 'live view cut off: the viewer reads too slowly')
          raw.destroy()
        } else {
          raw.write(formatEvent(event))
        }
      },
      end: () => {
        if (!streaming) {
          endedEarly = true
          return
        }
        streams.delete(raw)
        raw.end()
      }
    })
    if (subscription === null) return notLive(reply)
    reply.hijack()
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // nginx and friends buffer responses unless told not to.
      'x-accel-buffering': 'no'
    })
    raw.write(`retry: 1000\n\n${early.join('')}`)
    streaming = true
    request.log.info({ scope: grant.scope, expiresAt: grant.expiry, resumed: lastEventId !== undefined }, 'live view opened')
    raw.on('close', () => {
      streams.delete(raw)
      subscription.close()
      request.log.debug({ scope: grant.scope }, 'live view closed')
    })
    if (endedEarly) {
      raw.end()
      return
    }
    streams.add(raw)
  })
}

function notLive (reply: FastifyReply): FastifyReply {
  return reply.code(404).send({ error: 'not_live', message: 'no live call with this CallSid' })
}

/** One SSE message; `data` is one line of JSON, which never holds a raw newline. */
export function formatEvent (event: LiveEvent): string {
  return `${event.id === null ? '' : `id: ${event.id}\n`}event: ${event.type}\ndata: ${event.data}\n\n`
}

function authorize (request: FastifyRequest, reply: FastifyReply, key: Buffer): ViewerGrant | null {
  const token = bearerToken(request.headers.authorization)
  if (token === null) {
    request.log.info('live view refused: no bearer token')
    void reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'send Authorization: Bearer <viewer token>' })
    return null
  }
  const check = verifyViewerToken(key, token, Date.now())
  if (!check.ok) {
    request.log.info({ reason: check.reason }, 'live view refused: viewer token')
    void reply.code(401).header('www-authenticate', `Bearer error="invalid_token"`).send({ error: 'unauthorized', message: check.reason === 'expired' ? 'the viewer token has expired' : 'the viewer token is not valid' })
    return null
  }
  return check.grant
}

function forbid (request: FastifyRequest, reply: FastifyReply, grant: ViewerGrant): FastifyReply {
  request.log.info({ scope: grant.scope, expiresAt: grant.expiry }, 'live view refused: scope')
  return reply.code(403).send({ error: 'forbidden', message: 'the viewer token does not cover this resource' })
}
