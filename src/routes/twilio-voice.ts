import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import { TwilioSignatures } from '../core/twilio/signature.ts'
import { mintStreamToken } from '../core/twilio/stream-token.ts'
import { buildStreamTwiml, streamUrls } from '../core/twilio/twiml.ts'

type FormParams = Record<string, string | string[]>

export interface TwilioRouteOptions {
  config: Config
}

/** Twilio's form bodies, kept whole: the signature covers every parameter Twilio sent. */
function parseForm (body: string): FormParams {
  const params: FormParams = Object.create(null) as FormParams
  for (const [name, value] of new URLSearchParams(body)) {
    const existing = params[name]
    if (existing === undefined) params[name] = value
    else if (Array.isArray(existing)) existing.push(value)
    else params[name] = [existing, value]
  }
  return params
}

function single (params: FormParams, name: string): string | undefined {
  const value = params[name]
  return Array.isArray(value) ? value[0] : value
}

const RESERVED_PARAMETERS = new Set(['token'])
const SID = /^CA[0-9a-fA-F]{32}$/
const ACCOUNT_SID = /^AC[0-9a-fA-F]{32}$/

export default async function twilioVoiceRoutes (fastify: FastifyInstance, options: TwilioRouteOptions): Promise<void> {
  const { config } = options
  const signatures = new TwilioSignatures(config.twilioAuthToken, config.publicUrl)
  // Behind a proxy the Host header and scheme are not what Twilio signed: PUBLIC_URL's origin is.
  fastify.addHook('preHandler', async (request, reply) => {
    if (!config.twilioSignatureCheck) return
    const params = (request.body ?? {}) as FormParams
    if (signatures.checkWebhook(request.headers['x-twilio-signature'], request.url, params)) return
    if (request.routeOptions.url === '/twilio/voice') fastify.metrics.streamRejections.inc({ reason: 'signature' })
    request.log.warn({ path: request.url.split('?')[0] }, 'twilio signature check failed')
    return reply.code(403).send({ error: 'invalid Twilio signature' })
  })
  fastify.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 65536 }, (_request, body, done) => {
    done(null, parseForm(body as string))
  })

  fastify.post('/twilio/voice', async (request, reply) => {
    const params = (request.body ?? {}) as FormParams
    const callSid = single(params, 'CallSid')
    const accountSid = single(params, 'AccountSid')
    if (callSid === undefined || accountSid === undefined || !SID.test(callSid) || !ACCOUNT_SID.test(accountSid)) {
      return reply.code(400).send({ error: 'CallSid and AccountSid are required (CA… and AC… followed by 32 hex digits)' })
    }
    // The number's voice URL may carry per-number settings: `keyterms` joins the global list for the
    // call, every other query parameter becomes a stream <Parameter> (e.g. clinic=north).
    const query = new URL(request.url, 'http://localhost').searchParams
    const parameters: Record<string, string> = {}
    for (const [name, value] of query) {
      if (!RESERVED_PARAMETERS.has(name)) parameters[name] = value
    }
    parameters.token = mintStreamToken(config.streamTokenSecret, callSid, accountSid, Date.now())
    const { streamUrl, statusCallbackUrl } = streamUrls(config.publicUrl)
    const { twiml, droppedParameters } = buildStreamTwiml({
      streamUrl,
      statusCallbackUrl,
      parameters,
      forwardTo: config.forwardTo,
      continueUrl: config.twimlContinueUrl
    })
    if (droppedParameters.length > 0) {
      request.log.warn({ callSid, dropped: droppedParameters.length }, 'stream parameters over Twilio\'s 500-character limit were left out')
    }
    request.log.info({ callSid }, 'voice webhook answered')
    return reply.type('text/xml').send(twiml)
  })

  fastify.post('/twilio/stream-status', async (request, reply) => {
    const params = (request.body ?? {}) as FormParams
    const event = single(params, 'StreamEvent')
    const streamSid = single(params, 'StreamSid')
    const callSid = single(params, 'CallSid')
    request.log.info({ callSid, streamSid, streamEvent: event, streamError: single(params, 'StreamError') ?? null }, 'stream status')
    const session = streamSid === undefined ? undefined : fastify.calls.byStreamSid(streamSid)
    if (session !== undefined && (event === 'stream-stopped' || event === 'stream-error')) {
      void session.end(event === 'stream-stopped' ? 'completed' : 'stream_error')
    }
    return reply.code(204).send()
  })
}
