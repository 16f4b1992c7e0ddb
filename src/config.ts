import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import type { SessionOptions } from './core/assemblyai/protocol.ts'
import { ConfigError } from './core/errors.ts'
import { deriveLiveViewKey } from './core/live/viewer-token.ts'
import { deriveStreamTokenSecret } from './core/twilio/stream-token.ts'

/**
 * The one configuration schema (docs/interface.md, "Environment"). This module is the only reader of
 * `process.env`; everything else receives a validated `Config`.
 */
export interface Config {
  port: number
  host: string
  metricsPort: number
  /** External base URL, e.g. `https://calls.example.org`; origin only is used. */
  publicUrl: URL
  twilioAuthToken: string | null
  twilioSignatureCheck: boolean
  /** Key of the per-call stream token; shared by every replica. */
  streamTokenSecret: Buffer
  /** How the stream token secret was obtained: 'configured', 'derived' (from TWILIO_AUTH_TOKEN) or 'random' (one replica only). */
  streamTokenSecretSource: 'configured' | 'derived' | 'random'
  forwardTo: string | null
  twimlContinueUrl: string | null
  /** Every call's AssemblyAI session settings; the call adds its own keyterms and the sample rate. */
  assemblyai: Omit<SessionOptions, 'sampleRate' | 'connectTimeoutMs'>
  /** 50–1000 ms of audio per upstream binary frame. */
  audioChunkMs: number
  webhookUrl: string | null
  /** Validated `whsec_…` secrets, in the order given (several while rotating); empty without WEBHOOK_URL. */
  webhookSecrets: string[]
  webhookTimeoutMs: number
  dataDir: string
  /** `postgres://…`: fleet mode, the outbox in PostgreSQL shared by every replica; null = SQLite in DATA_DIR. */
  databaseUrl: string | null
  /** Fleet mode: bytes of events held in memory while PostgreSQL is unreachable; not ready above half. */
  outboxBufferBytes: number
  maxCalls: number
  drainTimeoutMs: number
  logLevel: string
  logPii: boolean
  /** Key of the live view's viewer tokens: LIVE_VIEW_SECRET's bytes, else derived from the stream token key. */
  liveViewKey: Buffer
  /** CSP `frame-ancestors` sources of the live view page, space-separated; `'none'` forbids embedding. */
  liveViewFrameAncestors: string
  /** Non-fatal findings to log once the logger exists (plain-text schemes to remote hosts and the like). */
  warnings: string[]
}

type Env = Record<string, string | undefined>

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

function read (env: Env, name: string): string | undefined {
  const value = env[name]
  if (value === undefined) return undefined
  const trimmed = value.trim()
  return trimmed === '' ? undefined : trimmed
}

function required (env: Env, name: string, fix: string): string {
  const value = read(env, name)
  if (value === undefined) throw new ConfigError(name, `is required; ${fix}`)
  return value
}

function integer (env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name)
  if (raw === undefined) return fallback
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got "${raw}"`)
  const value = Number(raw)
  if (value < min || value > max) throw new ConfigError(name, `must be from ${min} to ${max}, got ${value}`)
  return value
}

function boolean (env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name)
  if (raw === undefined) return fallback
  const lower = raw.toLowerCase()
  if (lower === 'true' || lower === '1') return true
  if (lower === 'false' || lower === '0') return false
  throw new ConfigError(name, `must be true or false, got "${raw}"`)
}

function isLoopback (hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || hostname === '::1' || /^127\.\d+\.\d+\.\d+$/.test(hostname)
}

function url (env: Env, name: string, schemes: { secure: string, plain: string }, warnings: string[], fallback?: string): URL | undefined {
  const raw = read(env, name) ?? fallback
  if (raw === undefined) return undefined
  let parsed: URL
  try {
    parsed = new URL(raw)
  } catch {
    throw new ConfigError(name, `must be an absolute ${schemes.secure}:// URL, got something that is not a URL`)
  }
  const scheme = parsed.protocol.slice(0, -1)
  if (scheme !== schemes.secure && scheme !== schemes.plain) {
    throw new ConfigError(name, `must use ${schemes.secure}:// (or ${schemes.plain}:// on loopback), got ${scheme}://`)
  }
  if (scheme === schemes.plain && !isLoopback(parsed.hostname)) {
    warnings.push(`${name} uses plain-text ${scheme}:// to a host other than loopback; use ${schemes.secure}:// in production`)
  }
  return parsed
}

function keyterms (raw: string | undefined): string[] {
  if (raw === undefined) return []
  return raw.split(',').map((term) => term.trim()).filter((term) => term !== '')
}

/**
 * Validates the environment. Throws a ConfigError naming the first bad variable and the fix; the
 * server prints that one line and exits.
 */
export function loadConfig (env: Env = process.env): Config {
  const warnings: string[] = []
  const publicUrl = url(env, 'PUBLIC_URL', { secure: 'https', plain: 'http' }, warnings)
  if (publicUrl === undefined) throw new ConfigError('PUBLIC_URL', 'is required; set it to the external base URL Twilio reaches, e.g. https://calls.example.org')

  const twilioSignatureCheck = boolean(env, 'TWILIO_SIGNATURE_CHECK', true)
  const twilioAuthToken = read(env, 'TWILIO_AUTH_TOKEN') ?? null
  if (twilioSignatureCheck && twilioAuthToken === null) {
    throw new ConfigError('TWILIO_AUTH_TOKEN', 'is required to check Twilio signatures; set it to the account\'s primary Auth Token (or TWILIO_SIGNATURE_CHECK=false for local development only)')
  }

  const configuredSecret = configuredStreamTokenSecret(env)
  let streamTokenSecret: Buffer
  let streamTokenSecretSource: Config['streamTokenSecretSource']
  if (configuredSecret !== undefined) {
    streamTokenSecret = Buffer.from(configuredSecret, 'utf8')
    streamTokenSecretSource = 'configured'
  } else if (twilioAuthToken !== null) {
    streamTokenSecret = deriveStreamTokenSecret(twilioAuthToken)
    streamTokenSecretSource = 'derived'
  } else {
    streamTokenSecret = randomBytes(32)
    streamTokenSecretSource = 'random'
  }

  const forwardTo = read(env, 'FORWARD_TO') ?? null
  const continueUrl = url(env, 'TWIML_CONTINUE_URL', { secure: 'https', plain: 'http' }, warnings)
  if (forwardTo === null && continueUrl === undefined) {
    throw new ConfigError('FORWARD_TO', 'or TWIML_CONTINUE_URL must be set: the number or sip: URI to dial after the stream starts, or the URL of the existing voice flow to redirect to')
  }
  if (forwardTo !== null && continueUrl !== undefined) {
    throw new ConfigError('FORWARD_TO', 'and TWIML_CONTINUE_URL are both set; keep only one: the TwiML either dials or redirects')
  }
  if (forwardTo !== null && !/^(\+?[0-9]{3,15}|sip:\S+)$/.test(forwardTo)) {
    throw new ConfigError('FORWARD_TO', 'must be a phone number in E.164 form (e.g. +15550002222) or a sip: URI')
  }

  const apiKey = required(env, 'ASSEMBLYAI_API_KEY', 'set it to your AssemblyAI API key (sent as the raw Authorization header)')
  const assemblyaiUrl = url(env, 'ASSEMBLYAI_URL', { secure: 'wss', plain: 'ws' }, warnings, 'wss://streaming.assemblyai.com/v3/ws')
  const minTurnSilenceMs = integer(env, 'ASSEMBLYAI_MIN_TURN_SILENCE_MS', 800, 50, 10000)
  const maxTurnSilenceMs = integer(env, 'ASSEMBLYAI_MAX_TURN_SILENCE_MS', 3600, 50, 60000)
  if (maxTurnSilenceMs < minTurnSilenceMs) {
    throw new ConfigError('ASSEMBLYAI_MAX_TURN_SILENCE_MS', `must not be below ASSEMBLYAI_MIN_TURN_SILENCE_MS (${minTurnSilenceMs})`)
  }
  const domainRaw = read(env, 'ASSEMBLYAI_DOMAIN') ?? 'medical-v1'

  const webhookUrl = url(env, 'WEBHOOK_URL', { secure: 'https', plain: 'http' }, warnings)
  const webhookSecrets = parseWebhookSecrets(read(env, 'WEBHOOK_SECRET'))
  if (webhookUrl !== undefined && webhookSecrets.length === 0) {
    throw new ConfigError('WEBHOOK_SECRET', 'is required with WEBHOOK_URL; set it to a whsec_… secret (several, space-separated, while rotating)')
  }

  const databaseUrl = read(env, 'DATABASE_URL') ?? null
  if (databaseUrl !== null) {
    const parsed = URL.canParse(databaseUrl) ? new URL(databaseUrl) : null
    // Never echo the value: it usually holds a password.
    if (parsed === null || (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:')) {
      throw new ConfigError('DATABASE_URL', 'must be a postgres://user:password@host:5432/database URL (or unset for the SQLite outbox in DATA_DIR)')
    }
  }

  const logLevel = (read(env, 'LOG_LEVEL') ?? 'info').toLowerCase()
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`)

  const port = integer(env, 'PORT', 8080, 0, 65535)
  const metricsPort = integer(env, 'METRICS_PORT', 9464, 0, 65535)
  if (port !== 0 && port === metricsPort) throw new ConfigError('METRICS_PORT', 'must differ from PORT: metrics are served on a separate listener that is never exposed publicly')

  return {
    port,
    host: read(env, 'HOST') ?? '0.0.0.0',
    metricsPort,
    publicUrl: new URL(publicUrl.origin),
    twilioAuthToken,
    twilioSignatureCheck,
    streamTokenSecret,
    streamTokenSecretSource,
    forwardTo,
    twimlContinueUrl: continueUrl?.href ?? null,
    assemblyai: {
      apiKey,
      url: (assemblyaiUrl as URL).href,
      speechModel: read(env, 'ASSEMBLYAI_SPEECH_MODEL') ?? 'u3-rt-pro',
      domain: domainRaw === 'none' ? null : domainRaw,
      speakerLabels: boolean(env, 'ASSEMBLYAI_SPEAKER_LABELS', true),
      maxSpeakers: integer(env, 'ASSEMBLYAI_MAX_SPEAKERS', 2, 1, 10),
      keyterms: keyterms(read(env, 'ASSEMBLYAI_KEYTERMS')),
      minTurnSilenceMs,
      maxTurnSilenceMs
    },
    audioChunkMs: integer(env, 'AUDIO_CHUNK_MS', 50, 50, 1000),
    webhookUrl: webhookUrl?.href ?? null,
    webhookSecrets,
    webhookTimeoutMs: integer(env, 'WEBHOOK_TIMEOUT_MS', 15000, 100, 120000),
    dataDir: loadDataDir(env),
    databaseUrl,
    outboxBufferBytes: integer(env, 'OUTBOX_BUFFER_BYTES', 67_108_864, 4096, 17_179_869_184),
    maxCalls: integer(env, 'MAX_CALLS', 500, 1, 100000),
    drainTimeoutMs: integer(env, 'DRAIN_TIMEOUT_MS', 300000, 0, 86400000),
    logLevel,
    logPii: boolean(env, 'LOG_PII', false),
    liveViewKey: configuredLiveViewKey(env) ?? deriveLiveViewKey(streamTokenSecret),
    liveViewFrameAncestors: frameAncestors(env),
    warnings
  }
}

function configuredStreamTokenSecret (env: Env): string | undefined {
  const secret = read(env, 'STREAM_TOKEN_SECRET')
  if (secret !== undefined && secret.length < 32) {
    throw new ConfigError('STREAM_TOKEN_SECRET', 'must be at least 32 characters; generate one with `openssl rand -base64 48`')
  }
  return secret
}

function configuredLiveViewKey (env: Env): Buffer | null {
  const secret = read(env, 'LIVE_VIEW_SECRET')
  if (secret === undefined) return null
  if (secret.length < 32) throw new ConfigError('LIVE_VIEW_SECRET', 'must be at least 32 characters; generate one with `openssl rand -base64 48`')
  return Buffer.from(secret, 'utf8')
}

// One CSP source expression: a keyword, a scheme (`https:`), or a host source with optional scheme,
// wildcard subdomain, port and path. Nothing that could end the directive (`;`, `,`) gets through.
const CSP_SOURCE = /^('self'|[a-z][a-z0-9+.-]*:|([a-z][a-z0-9+.-]*:\/\/)?(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:(\d{1,5}|\*))?(\/[^\s;,'"]*)?|\*)$/

function frameAncestors (env: Env): string {
  const raw = read(env, 'LIVE_VIEW_FRAME_ANCESTORS')
  if (raw === undefined) return "'none'"
  // Quotes are easy to lose on the way through a shell or a .env parser: bare none/self mean the keywords.
  const sources = raw.split(/\s+/).map((source) => (source === 'none' || source === 'self' ? `'${source}'` : source))
  if (sources.length === 1 && sources[0] === "'none'") return "'none'"
  for (const source of sources) {
    if (!CSP_SOURCE.test(source)) {
      throw new ConfigError('LIVE_VIEW_FRAME_ANCESTORS', `must be 'none' or space-separated CSP sources such as 'self' https://desk.example.org, got ${JSON.stringify(source)}`)
    }
  }
  return sources.join(' ')
}

/**
 * The viewer token key alone, for `npm run viewer-token`, which needs nothing else of the service's
 * configuration: LIVE_VIEW_SECRET, else derived from STREAM_TOKEN_SECRET or TWILIO_AUTH_TOKEN exactly
 * as the service derives it.
 */
export function loadLiveViewKey (env: Env = process.env): Buffer {
  const configured = configuredLiveViewKey(env)
  if (configured !== null) return configured
  const streamSecret = configuredStreamTokenSecret(env)
  if (streamSecret !== undefined) return deriveLiveViewKey(Buffer.from(streamSecret, 'utf8'))
  const authToken = read(env, 'TWILIO_AUTH_TOKEN')
  if (authToken !== undefined) return deriveLiveViewKey(deriveStreamTokenSecret(authToken))
  throw new ConfigError('LIVE_VIEW_SECRET', 'is required to mint viewer tokens when neither STREAM_TOKEN_SECRET nor TWILIO_AUTH_TOKEN is set; use the value the service runs with')
}

/**
 * `WEBHOOK_SECRET`: one or more `whsec_<base64>` secrets separated by spaces (several while a receiver
 * rotates). The one place secrets are parsed; the sender receives the result.
 */
export function parseWebhookSecrets (value: string | undefined): string[] {
  const secrets = (value ?? '').split(/\s+/).filter((secret) => secret !== '')
  secrets.forEach((secret, index) => {
    const base64 = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : ''
    // At least 16 decoded bytes: a truncated paste must not become a weak key.
    const decoded = /^[A-Za-z0-9+/]+={0,2}$/.test(base64) ? Buffer.from(base64, 'base64') : Buffer.alloc(0)
    if (decoded.length < 16) {
      throw new ConfigError('WEBHOOK_SECRET', `secret #${index + 1} must be whsec_ followed by base64 of at least 16 bytes (e.g. whsec_$(openssl rand -base64 32)); several are separated by spaces`)
    }
  })
  return secrets
}

/** The outbox location alone, for the operator command that needs nothing else. */
export function loadOutboxLocation (env: Env = process.env): { dataDir: string, databaseUrl: string | null } {
  const databaseUrl = read(env, 'DATABASE_URL') ?? null
  return { dataDir: loadDataDir(env), databaseUrl }
}

/** DATA_DIR alone, for the operator command that needs nothing else. */
export function loadDataDir (env: Env = process.env): string {
  return read(env, 'DATA_DIR') ?? './data'
}

/**
 * Reads `.env` into a copy of the environment with Node's own dotenv parser. Variables already set
 * in the environment win, as with most dotenv loaders.
 */
export function withDotEnv (env: Env, path = '.env'): Env {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return env
  }
  return { ...parseEnv(text), ...env }
}
