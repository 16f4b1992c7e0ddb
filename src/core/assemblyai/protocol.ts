import type { UpstreamError } from '../errors.ts'
import type { UpstreamErrorLabel } from '../metrics.ts'

/**
 * AssemblyAI Streaming v3 wire format (docs/protocols.md, "AssemblyAI streaming v3"). Field names stay
 * in the wire's snake_case so a message can be compared with the reference and with logs of real
 * traffic without a mapping table.
 */

/** Connection settings of one upstream session; every field ends up in the URL or the upgrade. */
export interface SessionOptions {
  /** Base WebSocket URL, e.g. `wss://streaming.assemblyai.com/v3/ws` (or the EU host). */
  url: string
  /** Sent raw as the `Authorization` upgrade header (no `Bearer`: the server rejects it). */
  apiKey: string
  /** e.g. `u3-rt-pro`; passed through, the server validates it. */
  speechModel: string
  /** `medical-v1` for Medical Mode; null sends no `domain` parameter. */
  domain: string | null
  speakerLabels: boolean
  /** 1–10; only sent with `speakerLabels`. */
  maxSpeakers: number
  /** Normalised again here (see normalizeKeyterms), so at most 100 terms of at most 50 characters. */
  keyterms: string[]
  /** Milliseconds of silence before the end-of-turn check; the server clamps to 50–10000. */
  minTurnSilenceMs: number
  /** Milliseconds of silence after which a turn is forced to end. */
  maxTurnSilenceMs: number
  /** Hz of the PCM16 audio sent, 8000 for telephony; 8000–96000. */
  sampleRate: number
  /** Milliseconds allowed for the upgrade plus the `Begin` message. Default 10000. */
  connectTimeoutMs?: number
}

export interface Word {
  text: string
  /** Milliseconds of session audio (the clock of every time field in this protocol). */
  start: number
  end: number
  /** 0–1. */
  confidence: number
  word_is_final: boolean
  /** Diarization label on final words; may be missing on some words (fall back to the turn's). */
  speaker?: string
  speaker_confidence?: number
}

export interface BeginConfiguration {
  model?: string
  mode?: string
  api_version?: string
  speaker_labels?: boolean
  redact_pii?: boolean
  filter_profanity?: boolean
  domain?: string | null
  voice_focus?: string | null
}

export interface Begin {
  type: 'Begin'
  id: string
  /** Unix seconds at which the server ends the session with 3008. */
  expires_at: number
  configuration?: BeginConfiguration
}

export interface SpeechStarted {
  type: 'SpeechStarted'
  /** Milliseconds of session audio. */
  timestamp: number
  confidence?: number
}

export interface Turn {
  type: 'Turn'
  /** 0-based; every partial and the final of one turn share it. */
  turn_order: number
  /** Not an end-of-turn signal: partials carry `true` on some model versions. */
  turn_is_formatted: boolean
  /** The only final-transcript signal. */
  end_of_turn: boolean
  /** The whole turn so far: replace, never append. */
  transcript: string
  utterance: string
  end_of_turn_confidence: number
  words: Word[]
  /** Finals only, with `speaker_labels=true`; may be a placeholder (see isPlaceholderSpeaker). */
  speaker_label?: string
  speaker_confidence?: number
  language_code?: string
  language_confidence?: number
}

export interface SpeakerRevisionItem {
  turn_order: number
  speaker_label: string
  words: Word[]
}

export interface SpeakerRevision {
  type: 'SpeakerRevision'
  /** Apply in arrival order; the last revision of a `turn_order` wins. */
  revisions: SpeakerRevisionItem[]
}

export interface Termination {
  type: 'Termination'
  /** Whole seconds. */
  audio_duration_seconds: number
  /** Whole seconds; what is billed. */
  session_duration_seconds: number
}

export interface ErrorMessage {
  type: 'Error'
  /** Equals the close code that follows; null when the frame lacked it. */
  error_code: number | null
  error: string
}

export interface Warning {
  type: 'Warning'
  warning_code: number | null
  warning: string
}

/** Anything else: a message type this client does not know, or a known type with a broken shape. */
export interface UnknownMessage {
  type: 'Unknown'
  /** The `type` field as received, when there was a string one; safe to log. */
  messageType: string | null
  /** The frame's text as received; may hold transcript text, never log it. */
  raw: string
}

export type ServerMessage = Begin | SpeechStarted | Turn | SpeakerRevision | Termination | ErrorMessage | Warning | UnknownMessage

export interface UpdateConfiguration {
  type: 'UpdateConfiguration'
  /** Replaces the whole set; `[]` clears it. */
  keyterms_prompt?: string[]
  prompt?: string
  min_turn_silence?: number
  max_turn_silence?: number
}

export type ClientMessage = { type: 'Terminate' } | { type: 'ForceEndpoint' } | { type: 'KeepAlive' } | UpdateConfiguration

const MAX_KEYTERMS = 100
const MAX_KEYTERM_CHARS = 50

type JsonObject = Record<string, unknown>

function isObject (value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function num (value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null
}

function str (value: unknown): string | null {
  return typeof value === 'string' ? value : null
}

function parseWord (value: unknown): Word | null {
  if (!isObject(value)) return null
  const start = num(value.start)
  const end = num(value.end)
  if (start === null || end === null) return null
  const word: Word = {
    text: str(value.text) ?? '',
    start,
    end,
    confidence: num(value.confidence) ?? 0,
    word_is_final: value.word_is_final === true
  }
  const speaker = str(value.speaker)
  if (speaker !== null) word.speaker = speaker
  const speakerConfidence = num(value.speaker_confidence)
  if (speakerConfidence !== null) word.speaker_confidence = speakerConfidence
  return word
}

function parseWords (value: unknown): Word[] | null {
  if (value === undefined || value === null) return []
  if (!Array.isArray(value)) return null
  const words: Word[] = []
  for (const item of value) {
    const word = parseWord(item)
    if (word === null) return null
    words.push(word)
  }
  return words
}

function parseTurn (value: JsonObject): Turn | null {
  const turnOrder = num(value.turn_order)
  const words = parseWords(value.words)
  if (turnOrder === null || words === null) return null
  const transcript = str(value.transcript) ?? ''
  const turn: Turn = {
    type: 'Turn',
    turn_order: turnOrder,
    turn_is_formatted: value.turn_is_formatted === true,
    end_of_turn: value.end_of_turn === true,
    transcript,
    utterance: str(value.utterance) ?? '',
    end_of_turn_confidence: num(value.end_of_turn_confidence) ?? 0,
    words
  }
  const speakerLabel = str(value.speaker_label)
  if (speakerLabel !== null) turn.speaker_label = speakerLabel
  const speakerConfidence = num(value.speaker_confidence)
  if (speakerConfidence !== null) turn.speaker_confidence = speakerConfidence
  const languageCode = str(value.language_code)
  if (languageCode !== null) turn.language_code = languageCode
  const languageConfidence = num(value.language_confidence)
  if (languageConfidence !== null) turn.language_confidence = languageConfidence
  return turn
}

function parseRevisionItem (value: unknown): SpeakerRevisionItem | null {
  if (!isObject(value)) return null
  const turnOrder = num(value.turn_order)
  const label = str(value.speaker_label)
  const words = parseWords(value.words)
  if (turnOrder === null || label === null || words === null) return null
  return { turn_order: turnOrder, speaker_label: label, words }
}

function parseSpeakerRevision (value: JsonObject): SpeakerRevision | null {
  if (Array.isArray(value.revisions)) {
    const revisions: SpeakerRevisionItem[] = []
    for (const item of value.revisions) {
      const revision = parseRevisionItem(item)
      if (revision === null) return null
      revisions.push(revision)
    }
    return { type: 'SpeakerRevision', revisions }
  }
  // A short-lived SDK release (May 2026) sent one flat revision per message.
  const flat = parseRevisionItem(value)
  return flat === null ? null : { type: 'SpeakerRevision', revisions: [flat] }
}

function parseKnown (value: JsonObject): ServerMessage | null {
  // Error frames are recognised by their `error` key, as the Node SDK does: `type` may be missing.
  if ('error' in value) {
    const text = str(value.error) ?? JSON.stringify(value.error) ?? ''
    return { type: 'Error', error_code: num(value.error_code), error: text }
  }
  switch (value.type) {
    case 'Begin': {
      const id = str(value.id)
      const expiresAt = num(value.expires_at)
      if (id === null || expiresAt === null) return null
      const begin: Begin = { type: 'Begin', id, expires_at: expiresAt }
      if (isObject(value.configuration)) begin.configuration = value.configuration as BeginConfiguration
      return begin
    }
    case 'SpeechStarted': {
      const message: SpeechStarted = { type: 'SpeechStarted', timestamp: num(value.timestamp) ?? 0 }
      const confidence = num(value.confidence)
      if (confidence !== null) message.confidence = confidence
      return message
    }
    case 'Turn':
      return parseTurn(value)
    case 'SpeakerRevision':
      return parseSpeakerRevision(value)
    case 'Termination':
      return {
        type: 'Termination',
        audio_duration_seconds: num(value.audio_duration_seconds) ?? 0,
        session_duration_seconds: num(value.session_duration_seconds) ?? 0
      }
    case 'Warning':
      return { type: 'Warning', warning_code: num(value.warning_code), warning: str(value.warning) ?? '' }
    default:
      return null
  }
}

const PARTIAL_MARK = Buffer.from('"end_of_turn":false')
const TURN_MARK = Buffer.from('"type":"Turn"')
const FINAL_MARK = Buffer.from('"end_of_turn":true')

/**
 * A cheap look at a text frame before any decoding: true when it is a non-final Turn as the server
 * sends it (compact JSON with `"type":"Turn"` and `"end_of_turn":false`, and no `"end_of_turn":true`).
 * Outside a string those byte runs can only be keys and values (inside one every quote is escaped),
 * so a frame this accepts parses to a partial Turn, or to nothing a session acts on; anything else,
 * spacing variants included, says false and is parsed in full. Lets a session skip the partials
 * nobody listens to (most of the upstream traffic). test/core/assemblyai/protocol.test.ts holds it to
 * parseServerMessage.
 */
export function isPartialTurnFrame (data: Buffer): boolean {
  return data.indexOf(PARTIAL_MARK) !== -1 && data.indexOf(TURN_MARK) !== -1 && data.indexOf(FINAL_MARK) === -1
}

/** Never throws: malformed or unfamiliar frames come back as `Unknown`, which callers ignore. */
export function parseServerMessage (text: string): ServerMessage {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { type: 'Unknown', messageType: null, raw: text }
  }
  if (!isObject(value)) return { type: 'Unknown', messageType: null, raw: text }
  return parseKnown(value) ?? { type: 'Unknown', messageType: str(value.type), raw: text }
}

/**
 * Trims, drops empties, de-duplicates case-insensitively (first spelling wins), drops terms over 50
 * characters (the server would ignore them silently) and keeps the first 100 (more is a fatal 3006).
 */
export function normalizeKeyterms (terms: string[]): { terms: string[], droppedTooLong: number, droppedOverLimit: number } {
  const kept: string[] = []
  const seen = new Set<string>()
  let droppedTooLong = 0
  let droppedOverLimit = 0
  for (const raw of terms) {
    const term = raw.trim()
    if (term === '') continue
    const key = term.toLowerCase()
    if (seen.has(key)) continue
    seen.add(key)
    // Code points, not UTF-16 units: the server (Python) counts characters that way.
    if ([...term].length > MAX_KEYTERM_CHARS) {
      droppedTooLong++
    } else if (kept.length >= MAX_KEYTERMS) {
      droppedOverLimit++
    } else {
      kept.push(term)
    }
  }
  return { terms: kept, droppedTooLong, droppedOverLimit }
}

/** The session URL: every setting travels in the query string; arrays as JSON strings. */
export function buildSessionUrl (options: SessionOptions): string {
  const url = new URL(options.url)
  const query = url.searchParams
  query.set('speech_model', options.speechModel)
  query.set('sample_rate', String(Math.round(options.sampleRate)))
  query.set('encoding', 'pcm_s16le')
  if (options.domain !== null) query.set('domain', options.domain)
  query.set('speaker_labels', options.speakerLabels ? 'true' : 'false')
  if (options.speakerLabels) query.set('max_speakers', String(Math.round(options.maxSpeakers)))
  const { terms } = normalizeKeyterms(options.keyterms)
  if (terms.length > 0) query.set('keyterms_prompt', JSON.stringify(terms))
  query.set('min_turn_silence', String(Math.round(options.minTurnSilenceMs)))
  query.set('max_turn_silence', String(Math.round(options.maxTurnSilenceMs)))
  return url.toString()
}

const RETRYABLE_1008 = [/too many concurrent sessions/i, /signature has expired/i]
const INACTIVITY_3006 = /session terminated due to inactivity/i

/**
 * Whether a new session can help after a close, and the metrics label of the code
 * (docs/protocols.md, "Close codes and what medstream does").
 * 1008 is both an auth/billing failure (fatal) and a rate limit (retry): the `error` text decides.
 */
export function classifyClose (code: number, errorText: string | null): { retryable: boolean, label: UpstreamErrorLabel } {
  switch (code) {
    case 1008:
      return { retryable: errorText !== null && RETRYABLE_1008.some((pattern) => pattern.test(errorText)), label: '1008' }
    case 3009:
      return { retryable: true, label: '3009' }
    case 1005:
    case 1006:
      return { retryable: true, label: 'network' }
    case 1011:
      return { retryable: true, label: '1011' }
    case 3005:
      return { retryable: true, label: '3005' }
    case 3006:
      // Inactivity is the one 3006 that is not a bug in what we sent (reconnect if the call still needs one).
      return { retryable: errorText !== null && INACTIVITY_3006.test(errorText), label: '3006' }
    case 3007:
      return { retryable: false, label: '3007' }
    case 3008:
      // The 3 h cap: a call that outlives it rolls over to a new session.
      return { retryable: true, label: '3008' }
    case 1000:
    case 1001:
    case 1012:
    case 1013:
    case 1014:
      // A normal or "going away / restart / try later" close we did not ask for: the server left.
      return { retryable: true, label: 'other' }
    default:
      return { retryable: false, label: 'other' }
  }
}

/** The metrics label of an UpstreamError: its close code's, or 'other' for a refused upgrade. */
export function upstreamErrorLabel (error: UpstreamError): UpstreamErrorLabel {
  const { closeCode } = error
  if (closeCode === null) return 'other'
  return closeCode === 'network' ? 'network' : classifyClose(closeCode, null).label
}

/**
 * Real labels are "A", "B", … (two letters leave room past "Z"); anything else, such as "UNKNOWN"
 * (Mar 2026) or "PENDING" (Jun 2026) for turns too short to attribute, is a placeholder.
 */
export function isPlaceholderSpeaker (label: string | undefined | null): boolean {
  return label === undefined || label === null || !/^[A-Z]{1,2}$/.test(label)
}
