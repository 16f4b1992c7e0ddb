// Container health check (Dockerfile HEALTHCHECK): GET /healthz on the service's own PORT.
// Exit 0 when it answers 200 within the timeout, 1 otherwise. No dependencies, no output on success.
const TIMEOUT_MS = 3000

const port = process.env.PORT ?? '8080'
try {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(TIMEOUT_MS) })
  if (response.status !== 200) {
    process.stderr.write(`healthcheck: /healthz answered ${response.status}\n`)
    process.exit(1)
  }
  process.exit(0)
} catch (error) {
  process.stderr.write(`healthcheck: /healthz did not answer: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
}
