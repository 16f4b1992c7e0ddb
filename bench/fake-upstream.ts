/**
 * The fake AssemblyAI server in a process of its own, so its CPU is not the service's. Started by
 * bench/run.ts with an IPC channel: it answers `collect` with each session's audio byte count and the
 * arrival time of every binary frame (ms on the machine's monotonic clock, as `clockMs()` reads it),
 * from which the outside latency is computed.
 * Arguments: the API key it accepts, then (with `--tls`) the PEM certificate and key files it serves
 * wss with. BENCH_PARTIALS_PER_TURN in its environment sets the partials per turn (1).
 */
import { readFileSync } from 'node:fs'
import { startFakeAssemblyAi } from '../test/fakes/assemblyai-server.ts'
import type { FakeUtterance } from '../test/fakes/assemblyai-server.ts'
import type { ChildMessage, ParentMessage, UpstreamSessionReport } from './lib/ipc.ts'

const [apiKey, certFile, keyFile] = process.argv.slice(2)
if (apiKey === undefined || process.send === undefined) {
  process.stderr.write('bench/fake-upstream.ts is started by bench/run.ts (needs an API key argument and an IPC channel)\n')
  process.exit(1)
}

const manifest = JSON.parse(readFileSync(new URL('../samples/call.json', import.meta.url), 'utf8')) as { turns: Array<{ track: string, text: string }> }
// The sample's lines, over and over, so turns have realistic lengths however long the run is.
const script: FakeUtterance[] = []
for (let i = 0; i < 1000; i++) {
  const turn = manifest.turns[i % manifest.turns.length]!
  script.push({ text: turn.text, speaker: turn.track === 'outbound' ? 'A' : 'B' })
}

const tls = certFile === undefined || keyFile === undefined ? undefined : { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') }
// `--viewers` runs ask for a partial every 500 ms of speech (BENCH_PARTIALS_PER_TURN=20 over a 10 s
// turn), more than u3-rt-pro's continuous partials, so watching is weighed at its dearest.
const partialsPerTurn = Number(process.env.BENCH_PARTIALS_PER_TURN ?? 1)
const fake = await startFakeAssemblyAi({ apiKeys: [apiKey], script, recordAudio: false, partialsPerTurn, ...(tls === undefined ? {} : { tls }) })
const send = (message: ChildMessage): void => { process.send?.(message) }

function callKey (query: URLSearchParams): string | null {
  try {
    const terms = JSON.parse(query.get('keyterms_prompt') ?? '[]') as unknown
    if (!Array.isArray(terms)) return null
    const key = terms.find((term): term is string => typeof term === 'string' && term.startsWith('bench-'))
    return key ?? null
  } catch {
    return null
  }
}

process.on('message', (message: ParentMessage) => {
  if (message.type !== 'collect') return
  const sessions: UpstreamSessionReport[] = fake.sessions.map((session) => {
    // The fake records arrivals on the machine's monotonic clock, which clockMs() reads too.
    let firstIndex = 0
    while (firstIndex < session.frameArrivals.length && (session.frameArrivals[firstIndex] as number) < message.fromAt) firstIndex++
    const arrivals = Float64Array.from(session.frameArrivals.slice(firstIndex))
    return {
      key: callKey(session.query),
      closed: session.closed,
      closeCode: session.closeCode,
      bytes: session.frameBytes.reduce((sum, bytes) => sum + bytes, 0),
      turnsSent: session.turnsSent,
      firstIndex,
      arrivals
    }
  })
  send({ type: 'sessions', sessions })
})
process.on('disconnect', () => { void fake.close().then(() => process.exit(0)) })
send({ type: 'ready', url: fake.url })
