/**
 * One logging call: fields first (ids, counts, durations), then the message; or a message alone.
 * pino's and Fastify's log methods both fit.
 */
export interface LogFn {
  (fields: object, message?: string): void
  (message: string): void
}

/**
 * The logging a core object needs: pino's and Fastify's loggers both fit, and core depends on neither.
 * Fields carry ids, counts and durations; anything PHI-grade goes only under a `pii` key, which the
 * logger redacts.
 */
export interface CoreLogger {
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
}

/** A logger that can bind fields (a call's ids) to every line of a child. */
export interface ParentLogger extends CoreLogger {
  child (bindings: Record<string, unknown>): CoreLogger
}
