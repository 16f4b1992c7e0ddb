import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import pkg from '../package.json' with { type: 'json' }
import { buildApp } from './app.ts'
import { loadConfig, withDotEnv } from './config.ts'
import type { Config } from './config.ts'
import { ConfigError } from './core/errors.ts'
import { createLogger } from './logger.ts'
import { createMetricsServer } from './metrics-server.ts'

/** The last delivery pass gets at least this long, even when calls used the whole drain time. */
const MIN_FLUSH_MS = 5000

function readConfig (): Config {
  try {
    return loadConfig(withDotEnv(process.env))
  } catch (error) {
    if (error instanceof ConfigError) {
      // One line naming the variable and the fix; no stack, no values.
      process.stderr.write(`medstream: invalid configuration: ${error.message}\n`)
      process.exit(1)
    }
    throw error
  }
}

async function main (): Promise<void> {
  const config = readConfig()
  const logger = createLogger({ level: config.logLevel, logPii: config.logPii })
  for (const warning of config.warnings) logger.warn(warning)
  if (config.logPii) logger.warn('LOG_PII=true: transcript text and phone numbers will be written to the logs; use this for local debugging only')
  if (!config.twilioSignatureCheck) logger.warn('TWILIO_SIGNATURE_CHECK=false: Twilio signatures are NOT checked; anyone who finds this URL can start streams. Local development only')
  if (config.streamTokenSecretSource === 'random') logger.warn('neither STREAM_TOKEN_SECRET nor TWILIO_AUTH_TOKEN is set: stream tokens use a random per-process key, so run one replica only')

  // Signal handlers come before anything can take long (a database to reach, ports to bind): a
  // SIGTERM that arrives while starting stops the process once it is up, rather than killing it
  // half-built by Node's default handler.
  let shutdown: ((signal: string) => void) | null = null
  let earlySignal: string | null = null
  const onSignal = (signal: string): void => {
    if (shutdown !== null) {
      shutdown(signal)
    } else if (earlySignal === null) {
      earlySignal = signal
      logger.info({ signal }, 'signal while starting: stopping once started')
    } else {
      process.exit(1)
    }
  }
  process.on('SIGTERM', () => { onSignal('SIGTERM') })
  process.on('SIGINT', () => { onSignal('SIGINT') })

  const app = await buildApp({ config, logger, version: pkg.version })
  await app.listen({ port: config.port, host: config.host })
  const metricsServer = createMetricsServer(app.metricsRegistry)
  metricsServer.listen(config.metricsPort, config.host)
  await once(metricsServer, 'listening')
  logger.info({ metricsPort: (metricsServer.address() as AddressInfo).port, version: pkg.version }, 'metrics listening')

  let stopping = false
  const stop = async (signal: string): Promise<void> => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now')
      process.exit(1)
    }
    stopping = true
    const deadline = Date.now() + config.drainTimeoutMs
    app.calls.startDraining()
    logger.info({ signal, calls: app.calls.size, drainTimeoutMs: config.drainTimeoutMs }, 'draining: readiness is off, live calls may finish')
    const drained = await app.calls.waitUntilEmpty(deadline)
    if (!drained) logger.warn({ calls: app.calls.size }, 'drain deadline reached: ending the remaining calls')
    await app.calls.endAll('shutdown')
    await app.events.close(Math.max(deadline, Date.now() + MIN_FLUSH_MS))
    await app.close()
    metricsServer.close()
    logger.info('stopped')
    logger.flush()
    process.exit(0)
  }
  shutdown = (signal) => { void stop(signal) }
  if (earlySignal !== null) shutdown(earlySignal)
}

main().catch((error: unknown) => {
  process.stderr.write(`medstream: failed to start: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
