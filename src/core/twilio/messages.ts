import type { Track } from '../call/types.ts'

/**
 * Runtime-validated parsing of the messages Twilio sends on a Media Streams WebSocket
 * (docs/protocols.md, "Frames"). This runs for every media frame (~100/s per call), so it
 * allocates nothing beyond what JSON.parse produces, the result object and the payload Buffer.
 */

export interface MediaFormat {
  /** Always 'audio/x-mulaw': anything else is refused as 'schema'. */
  encoding: 'audio/x-mulaw'
  /** Hz; always 8000. */
  sampleRate: 8000
  /** Always 1 (each track is its own mono stream). */
  channels: 1
}

export interface StartInfo {
  streamSid: string
  accountSid: string
  callSid: string
  /** One or two distinct tracks, as listed by Twilio. */
  tracks: Track[]
  /**
   * The TwiML `<Parameter>`s, string to string; `{}` when none were given. It is the object JSON.parse
   * built, whose keys are own data properties (a `__proto__` key is an ordinary key here and changes no
   * prototype); read it with `Object.hasOwn`, never with `in`.
   */
  customParameters: Record<string, string>
  mediaFormat: MediaFormat
}

export type TwilioMessage =
  | { event: 'connected' }
  | { event: 'start', sequenceNumber: number, start: StartInfo }
  | {
    event: 'media'
    sequenceNumber: number
    streamSid: string
    track: Track
    /** Per-message counter from 1. */
    chunk: number
    /** Presentation time in ms since the stream started (Twilio's `media.timestamp`). */
    timestampMs: number
    /** Raw μ-law bytes, 8 kHz mono; usually 160 (20 ms) but any length is accepted. */
    payload: Buffer
  }
  | { event: 'stop', sequenceNumber: number, streamSid: string }
  | { event: 'mark' | 'dtmf', streamSid: string }
  /** An event this service does not know; the caller counts it and ignores it. */
  | { event: 'unknown', name: string }
  /** Not JSON ('json') or JSON of the wrong shape ('schema'); the caller counts it and decides. */
  | { event: 'invalid', reason: 'json' | 'schema' }

/**
 * The largest Twilio message the media WebSocket accepts; a larger one closes the socket with 1009.
 * Twilio never sends one near it: a 20 ms media frame is ~400 bytes.
 */
export const MAX_MESSAGE_BYTES = 64 * 1024

/**
 * The largest media payload a message within MAX_MESSAGE_BYTES can carry (base64 is 4 characters per
 * 3 bytes). Both media parsers decode into scratch buffers of this size, so raising the message limit
 * raises them with it and no payload can be cut short.
 */
export const MAX_PAYLOAD_BYTES = Math.ceil(MAX_MESSAGE_BYTES / 4) * 3

const PAYLOAD_SCRATCH = Buffer.allocUnsafeSlow(MAX_PAYLOAD_BYTES)

// Shared, frozen results: the messages that carry nothing need no allocation.
const CONNECTED: TwilioMessage = Object.freeze({ event: 'connected' })
const INVALID_JSON: TwilioMessage = Object.freeze({ event: 'invalid', reason: 'json' })
const INVALID_SCHEMA: TwilioMessage = Object.freeze({ event: 'invalid', reason: 'schema' })

/**
 * 15 digits stay below Number.MAX_SAFE_INTEGER, and no real counter (a 24 h call has ~9 million
 * messages) comes close.
 */
const MAX_COUNTER_DIGITS = 15

/** Parses one text frame. Never throws: bad input comes back as `{ event: 'invalid' }`. */
export function parseTwilioMessage (text: string): TwilioMessage {
  let message: unknown
  try {
    message = JSON.parse(text)
  } catch {
    return INVALID_JSON
  }
  if (!isRecord(message)) return INVALID_SCHEMA
  const event = message.event
  if (typeof event !== 'string') return INVALID_SCHEMA
  switch (event) {
    case 'media': return parseMedia(message)
    case 'connected': return CONNECTED
    case 'start': return parseStart(message)
    case 'stop': return parseStop(message)
    case 'mark':
    case 'dtmf': {
      const streamSid = message.streamSid
      if (!isNonEmptyString(streamSid)) return INVALID_SCHEMA
      return { event, streamSid }
    }
    default: return { event: 'unknown', name: event }
  }
}

function parseMedia (message: Record<string, unknown>): TwilioMessage {
  const sequenceNumber = parseCounter(message.sequenceNumber)
  const streamSid = message.streamSid
  const media = message.media
  if (sequenceNumber < 1 || !isNonEmptyString(streamSid) || !isRecord(media)) return INVALID_SCHEMA
  const track = media.track
  if (track !== 'inbound' && track !== 'outbound') return INVALID_SCHEMA
  const chunk = parseCounter(media.chunk)
  const timestampMs = parseCounter(media.timestamp)
  const payload = media.payload
  if (chunk < 1 || timestampMs < 0 || typeof payload !== 'string' || !isBase64(payload)) return INVALID_SCHEMA
  // Decoded into one shared buffer: no allocation per frame. The caller consumes the payload before
  // it parses the next message (the aligner decodes it at once).
  const length = PAYLOAD_SCRATCH.write(payload, 'base64')
  return { event: 'media', sequenceNumber, streamSid, track, chunk, timestampMs, payload: PAYLOAD_SCRATCH.subarray(0, length) }
}

function parseStart (message: Record<string, unknown>): TwilioMessage {
  const sequenceNumber = parseCounter(message.sequenceNumber)
  const start = message.start
  if (sequenceNumber < 1 || !isRecord(start)) return INVALID_SCHEMA
  const { streamSid, accountSid, callSid, tracks, mediaFormat } = start
  if (!isNonEmptyString(streamSid) || !isNonEmptyString(accountSid) || !isNonEmptyString(callSid)) return INVALID_SCHEMA
  // The top-level streamSid is a copy; one that disagrees means the frame cannot be trusted.
  if (message.streamSid !== undefined && message.streamSid !== streamSid) return INVALID_SCHEMA
  if (!isTrackList(tracks) || !isMulaw8k(mediaFormat)) return INVALID_SCHEMA
  // Twilio sends {} when there are no <Parameter>s; a missing object is read the same way.
  const customParameters = start.customParameters ?? {}
  if (!isStringRecord(customParameters)) return INVALID_SCHEMA
  return {
    event: 'start',
    sequenceNumber,
    start: { streamSid, accountSid, callSid, tracks, customParameters, mediaFormat }
  }
}

function parseStop (message: Record<string, unknown>): TwilioMessage {
  const sequenceNumber = parseCounter(message.sequenceNumber)
  const streamSid = message.streamSid
  if (sequenceNumber < 1 || !isNonEmptyString(streamSid)) return INVALID_SCHEMA
  return { event: 'stop', sequenceNumber, streamSid }
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function isNonEmptyString (value: unknown): value is string {
  return typeof value === 'string' && value.length > 0
}

/** A decimal counter sent as a JSON string ("1", "155"); -1 when it is anything else. */
function parseCounter (value: unknown): number {
  if (typeof value !== 'string') return -1
  const length = value.length
  if (length === 0 || length > MAX_COUNTER_DIGITS) return -1
  let result = 0
  for (let i = 0; i < length; i++) {
    const digit = value.charCodeAt(i) - 48
    if (digit < 0 || digit > 9) return -1
    result = result * 10 + digit
  }
  return result
}

function isTrackList (value: unknown): value is Track[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > 2) return false
  const first: unknown = value[0]
  if (first !== 'inbound' && first !== 'outbound') return false
  if (value.length === 1) return true
  const second: unknown = value[1]
  return (second === 'inbound' || second === 'outbound') && second !== first
}

function isMulaw8k (value: unknown): value is MediaFormat {
  return isRecord(value) && value.encoding === 'audio/x-mulaw' && value.sampleRate === 8000 && value.channels === 1
}

function isStringRecord (value: unknown): value is Record<string, string> {
  if (!isRecord(value)) return false
  for (const key in value) {
    if (typeof value[key] !== 'string') return false
  }
  return true
}

// Standard alphabet only (Twilio never sends base64url): 1 = data character, 0 = not allowed.
const BASE64_CHARS = new Uint8Array(128)
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') BASE64_CHARS[c.charCodeAt(0)] = 1

/**
 * Node's decoder silently skips characters outside the alphabet and accepts unpadded input, so a
 * corrupted payload would decode into shifted audio instead of failing; check the text first.
 */
function isBase64 (text: string): boolean {
  const length = text.length
  if (length % 4 !== 0) return false
  let end = length
  if (end > 0 && text.charCodeAt(end - 1) === 61) end--
  if (end > 0 && text.charCodeAt(end - 1) === 61) end--
  for (let i = 0; i < end; i++) {
    const code = text.charCodeAt(i)
    if (code > 127 || BASE64_CHARS[code] !== 1) return false
  }
  return true
}
