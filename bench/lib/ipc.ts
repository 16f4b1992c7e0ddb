/**
 * Messages between bench/run.ts and its children (forked with `serialization: 'advanced'`, so typed
 * arrays travel as they are). Every time is milliseconds on the machine's monotonic clock from
 * `clockMs()` (bench/lib/proc.ts): the processes share one machine, hence one clock.
 */

export interface ServiceTarget {
  kind: 'service'
  /** Where the service listens, http://127.0.0.1:PORT (also its PUBLIC_URL). */
  serviceUrl: string
  authToken: string
}

export interface FloorTarget {
  kind: 'floor'
  /** ws://127.0.0.1:PORT/ */
  wsUrl: string
}

export interface LoadPlan {
  target: ServiceTarget | FloorTarget
  calls: number
  /** When the first call is placed. */
  startAt: number
  /** Call i is placed at startAt + i × staggerMs / calls. */
  staggerMs: number
  /** Chunk-completing frames sent in [windowStartAt, windowEndAt) are recorded. */
  windowStartAt: number
  windowEndAt: number
  /** Every call plays until then, sends `stop` and closes. */
  endAt: number
  /** The service's AUDIO_CHUNK_MS: which frame completes each upstream chunk. */
  chunkMs: number
}

export interface CallReport {
  /** `bench-0001`…: also the call's keyterm, which is how the fake upstream tells sessions apart. */
  key: string
  error: string | null
  closeCode: number | null
  /** 20 ms ticks played; each sends one frame per track. */
  ticks: number
  framesSent: number
  /** Chunk index (0-based, per AUDIO_CHUNK_MS of the mixed timeline) of each recorded frame. */
  chunkIndex: Int32Array
  /** When the frame that completes that chunk was handed to the socket. */
  chunkSentAt: Float64Array
  /** How late the generator's timer sent it, ms past its due time. */
  chunkLatenessMs: Float64Array
}

export interface LoadReport {
  type: 'report'
  calls: CallReport[]
}

export interface UpstreamSessionReport {
  key: string | null
  closed: boolean
  closeCode: number | null
  bytes: number
  turnsSent: number
  /** Index of arrivals[0] among the session's binary frames. */
  firstIndex: number
  /** Arrival time of each binary frame from firstIndex on. */
  arrivals: Float64Array
}

/** What bench/viewers.ts saw: calls it found live, event streams it opened and what they carried. */
export interface ViewerStats {
  calls: number
  streamsOpened: number
  streamsOpen: number
  /** Ended by the service after the call's call.ended. */
  streamsEnded: number
  /** Answered other than 200. */
  refused: number
  errors: number
  events: { 'turn.partial': number, 'transcript.turn': number, 'call.ended': number }
  bytes: number
}

export type ChildMessage =
  | { type: 'ready', url: string }
  | LoadReport
  | { type: 'sessions', sessions: UpstreamSessionReport[] }
  | { type: 'floor-stats', connections: number, frames: number, payloadBytes: number }
  | { type: 'receiver-stats', requests: number, events: number }
  | { type: 'viewer-stats', stats: ViewerStats }

export type ParentMessage =
  | { type: 'plan', plan: LoadPlan }
  | { type: 'collect', fromAt: number }
  | { type: 'floor-stats' }
  | { type: 'receiver-stats' }
  | { type: 'viewer-stats' }
