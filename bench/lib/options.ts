import { parseArgs } from 'node:util'

/** Where the service under test stores its webhook events. */
export type Outbox = 'sqlite' | 'postgres'
/** `file`: the file sink (no WEBHOOK_URL), named so it can run beside the outboxes in one round. */
export type Sink = 'file' | Outbox
const SINKS: readonly Sink[] = ['file', 'sqlite', 'postgres']

/**
 * The floors the service is compared with. `receive`: a bare ws server that JSON-parses and
 * base64-decodes each frame (bench/floor-server.ts). `bridge`: the cheapest correct bridge, which
 * also decodes, mixes and sends exact 50 ms chunks to its own upstream session (bench/bridge-floor.ts).
 */
export type Floor = 'receive' | 'bridge'
const FLOORS: readonly Floor[] = ['receive', 'bridge']

export interface BenchOptions {
  calls: number
  /** The measured window. */
  seconds: number
  warmupSeconds: number
  /** Calls are placed evenly over this many seconds. */
  staggerSeconds: number
  /** The service's AUDIO_CHUNK_MS. */
  chunkMs: number
  /** Measured after the service, in this order; empty with --no-floor. */
  floors: Floor[]
  /** Rounds of service and floors, alternating; ratios are reported per round and as medians. */
  repeat: number
  cpuProf: boolean
  /** Replaces the --max-semi-space-size of `npm start` for the service (MiB); null: as `npm start`. */
  semiSpaceMib: number | null
  soak: boolean
  /** The fake upstream serves wss with a self-signed certificate the service trusts. */
  tls: boolean
  /**
   * One service run per entry, in this order, each delivering its events through that outbox to a
   * local receiver (`file`: the file sink, no WEBHOOK_URL). Empty: one run with the file sink.
   */
  outboxes: Sink[]
  /**
   * Live-view event streams per call. With N > 0 each service run is made twice in a round, without
   * viewers and with N per call, alternating which goes first; 0: no viewers, one run.
   */
  viewers: number
  /**
   * The measured process (service or floor) bound to CPU 0 and everything else of the benchmark to
   * CPU 1, so the generator and the fake upstream do not take the measured process's core.
   */
  pin: boolean
}

export const USAGE = `usage: npm run bench -- [options]

  --calls N        concurrent calls (50)
  --seconds S      measured window (60)
  --warmup S       warm-up before the window (10)
  --stagger S      place the calls over S seconds (calls/50, 1..6)
  --chunk-ms N     the service's AUDIO_CHUNK_MS (50)
  --tls            the fake upstream serves wss with a self-signed certificate made now with
                   openssl; the service trusts it through NODE_EXTRA_CA_CERTS
  --outbox LIST    sqlite, postgres or a comma-separated list of them: one service run per backend,
                   events webhooked to a local receiver (PostgreSQL: a throwaway cluster,
                   DATABASE_URL). file names the file sink (no WEBHOOK_URL), the default without
                   --outbox: --outbox file,sqlite weighs what webhooks cost within each round
  --floor LIST     receive, bridge or receive,bridge (the default): the floors measured after the
                   service with the same load. receive: a bare ws server, JSON.parse + base64 only.
                   bridge: the cheapest correct bridge (μ-law table, lockstep mix, exact 50 ms
                   chunks to its own upstream session per call, over wss with --tls)
  --no-floor       skip the floors
  --repeat N       N rounds of service then floors, alternating; prints each round's ratios and
                   their medians over the rounds whose every phase had all calls live (1)
  --semi-space N   run the service with --max-semi-space-size=N (MiB) instead of npm start's,
                   to weigh the young generation's size against CPU and RSS
  --viewers N      run the service twice per round: without live-view viewers, and with N event
                   streams per call (bench/viewers.ts, per-call viewer tokens), to weigh what
                   watching costs; the upstream then sends a partial every 500 ms of speech
  --pin            bind the measured process (service or floor) to CPU 0 and the generator, the fake
                   upstream, the receiver, the viewers and PostgreSQL to CPU 1 (taskset; 2+ CPUs),
                   so event-loop delay and latency measure the service rather than its neighbours
  --cpu-prof       profile the service and the floors (their CPU figures then include the
                   profiler); each profile is printed in % of busy time and in ms, side by side
  --soak           report RSS, heap, event-loop delay and CPU per 30 s window
  --help           this text
`

/** Parses `npm run bench` arguments; exits with a message (status 2) on a bad one. */
export function parseBenchOptions (args: string[] = process.argv.slice(2)): BenchOptions {
  let values
  try {
    ({ values } = parseArgs({
      args,
      options: {
        calls: { type: 'string', default: '50' },
        seconds: { type: 'string', default: '60' },
        warmup: { type: 'string', default: '10' },
        stagger: { type: 'string' },
        floor: { type: 'string', default: 'receive,bridge' },
        'no-floor': { type: 'boolean', default: false },
        repeat: { type: 'string', default: '1' },
        'semi-space': { type: 'string' },
        'cpu-prof': { type: 'boolean', default: false },
        'chunk-ms': { type: 'string', default: '50' },
        soak: { type: 'boolean', default: false },
        tls: { type: 'boolean', default: false },
        outbox: { type: 'string' },
        viewers: { type: 'string', default: '0' },
        pin: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false }
      }
    }))
  } catch (error) {
    fail(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
  }
  if (values.help) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
  const calls = positiveInteger('calls', values.calls)
  const warmupSeconds = Number(values.warmup)
  const staggerSeconds = values.stagger === undefined ? Math.min(6, Math.max(1, calls / 50)) : Number(values.stagger)
  if (!(warmupSeconds >= 0) || !(staggerSeconds >= 0)) fail('--warmup and --stagger take seconds ≥ 0')
  const outboxes = values.outbox === undefined ? [] : values.outbox.split(',').map((name) => name.trim())
  for (const name of outboxes) {
    if (!SINKS.includes(name as Sink)) fail(`--outbox takes ${SINKS.join(', ')} or a comma-separated list of them, got ${name}`)
  }
  if (new Set(outboxes).size !== outboxes.length) fail('--outbox names each backend once')
  const floors = values['no-floor'] ? [] : values.floor.split(',').map((name) => name.trim())
  for (const name of floors) {
    if (!FLOORS.includes(name as Floor)) fail(`--floor takes ${FLOORS.join(', ')} or a comma-separated list of them, got ${name}`)
  }
  if (new Set(floors).size !== floors.length) fail('--floor names each floor once')
  return {
    calls,
    seconds: positiveInteger('seconds', values.seconds),
    warmupSeconds,
    staggerSeconds,
    chunkMs: positiveInteger('chunk-ms', values['chunk-ms']),
    floors: floors as Floor[],
    repeat: positiveInteger('repeat', values.repeat),
    cpuProf: values['cpu-prof'],
    semiSpaceMib: values['semi-space'] === undefined ? null : positiveInteger('semi-space', values['semi-space']),
    soak: values.soak,
    tls: values.tls,
    outboxes: outboxes as Sink[],
    viewers: nonNegativeInteger('viewers', values.viewers),
    pin: values.pin
  }
}

function positiveInteger (name: string, raw: string | undefined): number {
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) fail(`--${name} must be a positive integer, got ${String(raw)}`)
  return value
}

function nonNegativeInteger (name: string, raw: string | undefined): number {
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 0) fail(`--${name} must be an integer ≥ 0, got ${String(raw)}`)
  return value
}

export function fail (message: string): never {
  process.stderr.write(`bench: ${message}\n`)
  process.exit(2)
}
