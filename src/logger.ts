import pino from 'pino'
import type { DestinationStream, Logger } from 'pino'

/**
 * The rule for PHI (docs/interface.md, "PHI and secrets"): transcript text, phone numbers and custom
 * parameters only ever go under a `pii` key, and secrets never go into a log at all. Redaction removes
 * both unless LOG_PII is on for local debugging; the secret paths are redacted even then.
 */
const SECRET_PATHS = [
  'req.headers.authorization',
  'req.headers["x-twilio-signature"]',
  'req.headers.cookie',
  'headers.authorization',
  'headers["x-twilio-signature"]',
  'apiKey',
  'authToken',
  'token',
  'secret',
  'secrets'
]
const PII_PATHS = ['pii', '*.pii']

export interface LoggerOptions {
  level: string
  /** `true` lets `pii` fields through, for local debugging only. */
  logPii: boolean
}

export function createLogger (options: LoggerOptions, destination?: DestinationStream): Logger {
  return pino({
    level: options.level,
    base: { service: 'medstream' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: options.logPii ? SECRET_PATHS : [...SECRET_PATHS, ...PII_PATHS], remove: true },
    serializers: {
      // Fastify's default request serializer logs the URL with its query string, and the voice
      // webhook's query carries per-number keyterms and tags: keep the path only.
      req (req: { method?: string, url?: string, id?: string }) {
        return { method: req.method, path: (req.url ?? '').split('?')[0], id: req.id }
      },
      err: pino.stdSerializers.err
    }
  }, destination)
}
