// `npm run -s viewer-token -- <CallSid|*> [--ttl 3600]`: mints a live view token and prints only the
// token on stdout. It needs only the secret's variables (LIVE_VIEW_SECRET, else STREAM_TOKEN_SECRET or
// TWILIO_AUTH_TOKEN, from the environment or .env), never the rest of the service's configuration.
import { parseArgs } from 'node:util'
import { loadLiveViewKey, withDotEnv } from '../src/config.ts'
import { ConfigError } from '../src/core/errors.ts'
import { mintViewerToken, VIEWER_TOKEN_TTL_SECONDS } from '../src/core/live/viewer-token.ts'

const USAGE = `Usage: npm run -s viewer-token -- <CallSid|*> [--ttl SECONDS]

Prints a live view token: for one call (its CallSid, e.g. for an agent desktop) or for every call (*,
a supervisor). --ttl is its lifetime in seconds (default ${VIEWER_TOKEN_TTL_SECONDS}, at most 31 days).
The key is LIVE_VIEW_SECRET, else derived from STREAM_TOKEN_SECRET or TWILIO_AUTH_TOKEN, exactly as
the service derives it (from the environment or .env). Quote * in a shell: '*'.`

function main (argv: string[]): number {
  let parsed
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { ttl: { type: 'string' }, help: { type: 'boolean', short: 'h' } } })
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.help === true) {
    console.log(USAGE)
    return 0
  }
  const scope = positionals[0]
  const ttlText = values.ttl ?? String(VIEWER_TOKEN_TTL_SECONDS)
  if (scope === undefined || positionals.length > 1 || !/^\d{1,7}$/.test(ttlText) || Number(ttlText) < 1 || Number(ttlText) > 31 * 86400) {
    console.error(USAGE)
    return 2
  }
  try {
    const key = loadLiveViewKey(withDotEnv(process.env))
    console.log(mintViewerToken(key, scope, Date.now(), Number(ttlText)))
    return 0
  } catch (error) {
    if (error instanceof ConfigError || error instanceof TypeError) {
      console.error(error.message)
      return 2
    }
    throw error
  }
}

process.exitCode = main(process.argv.slice(2))
