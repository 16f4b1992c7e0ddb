import type { LogFn } from 'pino'

/**
 * The logging a core object needs: pino's and Fastify's request loggers both fit. Fields carry ids,
 * counts and durations; anything PHI-grade goes only under a `pii` key, which the logger redacts.
 */
export interface CoreLogger {
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
}
