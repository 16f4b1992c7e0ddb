import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import { TwilioSignatures } from '../core/twilio/signature.ts'
import { answerVoiceWebhook, parseForm, readStreamStatus } from '../core/twilio/voice.ts'
import type { FormParams } from '../core/twilio/voice.ts'

export interface TwilioRouteOptions {
  config: Config
}

/** The voice webhook and the stream status callback: signature, then the answer core computes. */
export default async function twilioVoiceRoutes (fastify: FastifyInstance, options: TwilioRouteOptions): Promise<void> {
  const { config } = options
  const signatures = new TwilioSignatures(config.twilioAuthToken, config.publicUrl)
  const settings = { publicUrl: config.publicUrl, streamTokenSecret: config.streamTokenSecret, forwardTo: config.forwardTo, continueUrl: config.twimlContinueUrl }

  fastify.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 65536 }, (_request, body, done) => {
    done(null, parseForm(body as string))
  })

  // Both routes of this plugin: the signature covers PUBLIC_URL's origin plus the URL as requested.
  fastify.addHook('preHandler', async (request, reply) => {
    if (!config.twilioSignatureCheck) return
    if (signatures.checkWebhook(request.headers['x-twilio-signature'], request.url, (request.body ?? {}) as FormParams)) return
    if (request.routeOptions.url === '/twilio/voice') fastify.metrics.streamRejections.inc({ reason: 'signature' })
    request.log.warn({ path: request.url.split('?')[0] }, 'twilio signature check failed')
    return reply.code(403).send({ error: 'invalid Twilio signature' })
  })

  fastify.post('/twilio/voice', async (request, reply) => {
    const query = new URL(request.url, 'http://localhost').searchParams
    const answer = answerVoiceWebhook((request.body ?? {}) as FormParams, query, settings, Date.now())
    if (!answer.ok) return reply.code(400).send({ error: answer.error })
    if (answer.droppedParameters.length > 0) {
      request.log.warn({ callSid: answer.callSid, dropped: answer.droppedParameters.length }, 'stream parameters over Twilio\'s 500-character limit were left out')
    }
    request.log.info({ callSid: answer.callSid }, 'voice webhook answered')
    return reply.type('text/xml').send(answer.twiml)
  })

  fastify.post('/twilio/stream-status', async (request, reply) => {
    const status = readStreamStatus((request.body ?? {}) as FormParams)
    request.log.info({ callSid: status.callSid, streamSid: status.streamSid, streamEvent: status.event, streamError: status.error }, 'stream status')
    const session = status.streamSid === null ? undefined : fastify.calls.byStreamSid(status.streamSid)
    if (session !== undefined && status.endReason !== null) void session.end(status.endReason)
    return reply.code(204).send()
  })
}
