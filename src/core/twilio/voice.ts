import type { EndReason } from '../call/call-session.ts'
import { mintStreamToken } from './stream-token.ts'
import { buildStreamTwiml, streamUrls } from './twiml.ts'

/**
 * The two form-encoded webhooks Twilio sends (docs/interface.md, "Routes"): the voice webhook, which
 * is answered with TwiML that starts the stream, and the stream status callback.
 */

/** A form body, kept whole: the signature covers every parameter Twilio sent, repeated ones included. */
export type FormParams = Record<string, string | string[]>

/** Parses an `application/x-www-form-urlencoded` body; a repeated name keeps every value in order. */
export function parseForm (body: string): FormParams {
  const params: FormParams = Object.create(null) as FormParams
  for (const [name, value] of new URLSearchParams(body)) {
    const existing = params[name]
    if (existing === undefined) params[name] = value
    else if (Array.isArray(existing)) existing.push(value)
    else params[name] = [existing, value]
  }
  return params
}

/** The first value of a form field. */
export function formValue (params: FormParams, name: string): string | undefined {
  const value = params[name]
  return Array.isArray(value) ? value[0] : value
}

/** Query parameters of the voice URL that never become a stream `<Parameter>`. */
const RESERVED_PARAMETERS = new Set(['token'])
const CALL_SID = /^CA[0-9a-fA-F]{32}$/
const ACCOUNT_SID = /^AC[0-9a-fA-F]{32}$/

export interface VoiceSettings {
  publicUrl: URL
  streamTokenSecret: Buffer
  forwardTo: string | null
  continueUrl: string | null
}

export type VoiceAnswer =
  | { ok: true, callSid: string, twiml: string, droppedParameters: string[] }
  | { ok: false, error: string }

/**
 * The voice webhook's answer: TwiML that starts a stream carrying a fresh stream token, then hands
 * the call on. The number's voice URL may carry per-number settings: `keyterms` joins the global list
 * for the call, every other query parameter becomes a stream `<Parameter>` (e.g. clinic=north).
 */
export function answerVoiceWebhook (params: FormParams, query: URLSearchParams, settings: VoiceSettings, nowMs: number): VoiceAnswer {
  const callSid = formValue(params, 'CallSid')
  const accountSid = formValue(params, 'AccountSid')
  if (callSid === undefined || accountSid === undefined || !CALL_SID.test(callSid) || !ACCOUNT_SID.test(accountSid)) {
    return { ok: false, error: 'CallSid and AccountSid are required (CA… and AC… followed by 32 hex digits)' }
  }
  const parameters: Record<string, string> = {}
  for (const [name, value] of query) {
    if (!RESERVED_PARAMETERS.has(name)) parameters[name] = value
  }
  parameters.token = mintStreamToken(settings.streamTokenSecret, callSid, accountSid, nowMs)
  const { streamUrl, statusCallbackUrl } = streamUrls(settings.publicUrl)
  const { twiml, droppedParameters } = buildStreamTwiml({
    streamUrl,
    statusCallbackUrl,
    parameters,
    forwardTo: settings.forwardTo,
    continueUrl: settings.continueUrl
  })
  return { ok: true, callSid, twiml, droppedParameters }
}

export interface StreamStatus {
  callSid: string | null
  streamSid: string | null
  /** `stream-started`, `stream-stopped`, `stream-error`, or whatever Twilio sent. */
  event: string | null
  /** Twilio's description of a `stream-error`. */
  error: string | null
  /** How the stream's call ends because of this callback, or null when it does not end it. */
  endReason: EndReason | null
}

/** Reads a stream status callback: a stopped stream completes its call, an errored one fails it. */
export function readStreamStatus (params: FormParams): StreamStatus {
  const event = formValue(params, 'StreamEvent') ?? null
  return {
    callSid: formValue(params, 'CallSid') ?? null,
    streamSid: formValue(params, 'StreamSid') ?? null,
    event,
    error: formValue(params, 'StreamError') ?? null,
    endReason: event === 'stream-stopped' ? 'completed' : event === 'stream-error' ? 'stream_error' : null
  }
}
