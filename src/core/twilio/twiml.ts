import twilio from 'twilio'

/**
 * The TwiML answering the voice webhook (docs/protocols.md, "How a call reaches us"): start a
 * unidirectional stream of both tracks, then hand the call on. `<Start>` is non-blocking, so a verb
 * must follow or Twilio hangs up.
 */

export interface StreamTwimlOptions {
  /** Absolute `wss://` URL of the media route, without a query string (Twilio strips or refuses one). */
  streamUrl: string
  /** Absolute URL of the stream status callback route. */
  statusCallbackUrl: string
  /** `<Stream name>`, echoed as StreamName in status callbacks; the same for every call. Default 'medstream'. */
  streamName?: string
  /** Each becomes a `<Parameter>` and arrives in `start.customParameters`; includes `token`. */
  parameters: Record<string, string>
  /** A phone number, or a `sip:` URI, to `<Dial>` after starting the stream. Wins over continueUrl. */
  forwardTo?: string | null
  /** The customer's existing voice flow, reached with `<Redirect method="POST">`. */
  continueUrl?: string | null
}

export interface StreamTwiml {
  twiml: string
  /** Names of parameters left out by the 500-character rule, for the caller to warn about. */
  droppedParameters: string[]
}

/** Where the TwiML points Twilio: the media WebSocket and the stream status callback, from PUBLIC_URL. */
export function streamUrls (publicUrl: URL): { streamUrl: string, statusCallbackUrl: string } {
  // Twilio only connects to wss://; a plain http PUBLIC_URL (loopback development) maps to ws://.
  const wsScheme = publicUrl.protocol === 'https:' ? 'wss:' : 'ws:'
  return {
    streamUrl: `${wsScheme}//${publicUrl.host}/twilio/media`,
    statusCallbackUrl: `${publicUrl.origin}/twilio/stream-status`
  }
}

const DEFAULT_STREAM_NAME = 'medstream'
/** Twilio: name + value of each `<Parameter>` must be under 500 characters. */
export const MAX_PARAMETER_CHARS = 500
const TOKEN_PARAMETER = 'token'

export function buildStreamTwiml (options: StreamTwimlOptions): StreamTwiml {
  // An empty string from the environment means "not set", like null.
  const forwardTo = options.forwardTo || null
  const continueUrl = options.continueUrl || null
  if (forwardTo === null && continueUrl === null) {
    throw new TypeError('buildStreamTwiml needs forwardTo or continueUrl; set FORWARD_TO or TWIML_CONTINUE_URL, otherwise Twilio hangs up after <Start>')
  }
  const response = new twilio.twiml.VoiceResponse()
  const stream = response.start().stream({
    name: options.streamName ?? DEFAULT_STREAM_NAME,
    url: options.streamUrl,
    track: 'both_tracks',
    statusCallback: options.statusCallbackUrl,
    statusCallbackMethod: 'POST'
  })
  const droppedParameters: string[] = []
  for (const [name, value] of Object.entries(options.parameters)) {
    // The token is what authenticates the stream; without it the call could never be transcribed.
    if (name !== TOKEN_PARAMETER && name.length + value.length >= MAX_PARAMETER_CHARS) {
      droppedParameters.push(name)
      continue
    }
    stream.parameter({ name, value })
  }
  if (forwardTo !== null) {
    const dial = response.dial()
    if (forwardTo.toLowerCase().startsWith('sip:')) dial.sip(forwardTo)
    else dial.number(forwardTo)
  } else if (continueUrl !== null) {
    response.redirect({ method: 'POST' }, continueUrl)
  }
  return { twiml: response.toString(), droppedParameters }
}
