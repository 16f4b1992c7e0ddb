import type { OutgoingEvent } from '../webhooks/events.ts'
import type { PartialTurn } from './partials.ts'

/** What a live viewer receives; `data` is JSON text, serialized once for every viewer. */
export interface LiveEvent {
  type: LiveEventType
  /** `<segment>-<sequence>` on finals (`transcript.turn`, `call.ended`); null on partials, which are not resumable. */
  id: string | null
  data: string
}

export type LiveEventType = 'turn.partial' | 'transcript.turn' | 'call.ended'
export const LIVE_EVENT_TYPES = ['turn.partial', 'transcript.turn', 'call.ended'] as const satisfies readonly LiveEventType[]

/** One entry of `GET /live/calls`. */
export interface LiveCallRow {
  call_sid: string
  stream_sid: string
  segment: number
  started_at: string
  duration_ms: number
  turn_count: number
  last_role: string | null
}

/** The end of one viewer's event stream. */
export interface LiveViewer {
  send (event: LiveEvent): void
  /** The call is over (after its last `call.ended`) or the hub closes: end the stream. */
  end (): void
}

/** Where partials come from: the live CallSession of a stream (see CallSession.watchPartials). */
export interface PartialSource {
  watchPartials (listener: ((partial: PartialTurn) => void) | null): void
}

export interface LiveHubOptions {
  /** The live CallSession of a StreamSid on this process, if any. */
  sourceOf: (streamSid: string) => PartialSource | undefined
  /** Shortest time between two partials of one call, ms. Default 200 (at most 5 a second). */
  partialIntervalMs?: number
  /** How long an ended call's finals stay for viewers that reconnect, ms. Default 60000. */
  graceMs?: number
  /** Counts what viewers were sent, by event type, and the viewers connected. */
  onViewerCount?: (delta: number) => void
  onSent?: (type: LiveEventType) => void
  /** Monotonic clock, ms (tests drive it). Default performance.now. */
  now?: () => number
  /**
   * Fleet mode: a partial of a call of this process goes to other replicas too, while one of them
   * holds a watch lease on the call (see leaseWatch).
   */
  fanOutPartial?: (callSid: string, event: LiveEvent) => void
}

interface ResumePoint { segment: number, sequence: number }

interface StoredFinal extends LiveEvent {
  segment: number
  sequence: number
}

/**
 * A later segment of a call whose events came before the current one ended: in fleet mode the new
 * replica's `call.started` (and even turns) can beat the old replica's last turns and its `handed_off`
 * `call.ended`. They wait here, so viewers get every segment whole and in order.
 */
interface LaterSegment {
  streamSid: string
  /** The sequence of its `call.started`. */
  startSequence: number
  lastSequence: number
  finals: Array<{ final: StoredFinal, data: Record<string, unknown> }>
}

/**
 * A 2-hour call holds ~700 turns of ~3 KB (`words` dominate): ~2 MB. Past this many finals the oldest
 * go, and a viewer resuming from before them gets what is left.
 */
const MAX_FINALS_PER_CALL = 4096
/**
 * How long a later segment waits for the current one's `handed_off` end (the old replica collects its
 * last turns first, within its Terminate timeout). Past it, the old replica is taken to have died
 * after the cut: viewers move on to the later segment without the rest of the current one.
 */
const HANDOFF_HOLD_MS = 30_000

/** A final as viewers get it and resumes find it: its SSE id is `<segment>-<sequence>`. */
function storedFinal (event: OutgoingEvent, segment: number, data: Record<string, unknown>): StoredFinal {
  return { type: event.type as LiveEventType, id: `${segment}-${event.sequence}`, data: JSON.stringify(data), segment, sequence: event.sequence }
}

/** Parses a `Last-Event-ID` of ours; anything else resumes from the beginning. */
export function parseEventId (value: string | undefined): ResumePoint | null {
  if (value === undefined) return null
  const match = /^(\d{1,6})-(\d{1,9})$/.exec(value.trim())
  if (match === null) return null
  return { segment: Number(match[1]), sequence: Number(match[2]) }
}

class LiveCall {
  readonly callSid: string
  /** The segment this process first heard of: above 1 when it took the call over from another replica. */
  readonly firstSegment: number
  streamSid: string
  segment: number
  readonly startedAt: string
  readonly startedAtMs: number
  turnCount = 0
  lastRole: string | null = null
  ended = false
  /** The current segment ended with `handed_off`: the call goes on in the next one. */
  handedOff = false
  readonly finals: StoredFinal[] = []
  /** Later segments waiting for the current one to end, by segment number. */
  readonly later = new Map<number, LaterSegment>()
  holdTimer: NodeJS.Timeout | null = null
  readonly viewers = new Set<LiveViewer>()
  source: PartialSource | null = null
  // Partial rate cap: the newest partial not yet sent waits for the interval to pass.
  lastPartialAt = -Infinity
  pendingPartial: PartialTurn | null = null
  partialTimer: NodeJS.Timeout | null = null
  graceTimer: NodeJS.Timeout | null = null
  /** Last final taken, to take each once whichever way it came (this process, or PostgreSQL). */
  lastSegment = 0
  lastSequence = 0
  /** Fleet mode: another replica has viewers of this call until then (this process's clock, ms). */
  remoteLeaseUntil = 0
  leaseTimer: NodeJS.Timeout | null = null

  constructor (callSid: string, streamSid: string, segment: number, startedAt: string) {
    this.callSid = callSid
    this.firstSegment = segment
    this.streamSid = streamSid
    this.segment = segment
    this.startedAt = startedAt
    const parsed = Date.parse(startedAt)
    this.startedAtMs = Number.isFinite(parsed) ? parsed : Date.now()
  }

  clearTimers (): void {
    if (this.partialTimer !== null) clearTimeout(this.partialTimer)
    if (this.graceTimer !== null) clearTimeout(this.graceTimer)
    if (this.leaseTimer !== null) clearTimeout(this.leaseTimer)
    if (this.holdTimer !== null) clearTimeout(this.holdTimer)
    this.partialTimer = null
    this.graceTimer = null
    this.leaseTimer = null
    this.holdTimer = null
    this.pendingPartial = null
  }
}

/**
 * The live view's in-process bus and memory (single mode): each live call's finals until the call
 * ends plus a grace, its row for `/live/calls`, its viewers, and its partials, capped in rate and
 * parsed upstream only while the call has a viewer.
 */
export class LiveHub {
  readonly #options: LiveHubOptions
  readonly #intervalMs: number
  readonly #graceMs: number
  readonly #calls = new Map<string, LiveCall>()
  readonly #now: () => number
  #closed = false

  constructor (options: LiveHubOptions) {
    this.#options = options
    this.#intervalMs = options.partialIntervalMs ?? 200
    this.#graceMs = options.graceMs ?? 60000
    this.#now = options.now ?? (() => performance.now())
  }

  /** A durable event of a call, as the webhook sink got it. Never throws. */
  publishFinal (event: OutgoingEvent): void {
    if (this.#closed) return
    const { data } = JSON.parse(event.body) as { data: Record<string, unknown> }
    switch (event.type) {
      case 'call.started':
        this.#onStarted(event, data)
        return
      case 'transcript.turn':
      case 'call.ended':
        this.#onFinal(event, data)
    }
  }

  /** Live calls (not those in their grace), oldest first. */
  list (nowMs: number = Date.now()): LiveCallRow[] {
    const rows: LiveCallRow[] = []
    for (const call of this.#calls.values()) {
      if (call.ended) continue
      rows.push({
        call_sid: call.callSid,
        stream_sid: call.streamSid,
        segment: call.segment,
        started_at: call.startedAt,
        duration_ms: Math.max(0, nowMs - call.startedAtMs),
        turn_count: call.turnCount,
        last_role: call.lastRole
      })
    }
    return rows
  }

  /** Whether the call is live or in its grace (a viewer may open it). */
  has (callSid: string): boolean {
    return this.#calls.has(callSid)
  }

  get viewerCount (): number {
    let count = 0
    for (const call of this.#calls.values()) count += call.viewers.size
    return count
  }

  /**
   * Sends the finals after `lastEventId` (all of them without one), then everything new. Returns
   * false when the call is unknown here. A call already over is replayed and ended at once.
   */
  subscribe (callSid: string, lastEventId: string | undefined, viewer: LiveViewer): { close: () => void } | null {
    const call = this.#calls.get(callSid)
    if (call === undefined || this.#closed) return null
    const after = parseEventId(lastEventId)
    for (const final of call.finals) {
      if (after !== null && (final.segment < after.segment || (final.segment === after.segment && final.sequence <= after.sequence))) continue
      this.#send(viewer, final)
    }
    if (call.ended) {
      viewer.end()
      return { close: () => {} }
    }
    call.viewers.add(viewer)
    this.#options.onViewerCount?.(1)
    if (call.viewers.size === 1) this.#attachSource(call)
    let closed = false
    return {
      close: () => {
        if (closed) return
        closed = true
        this.#removeViewer(call, viewer)
      }
    }
  }

  /** Where the call's finals stand here: a fleet catch-up reads what comes after. Null when unknown. */
  lastFinal (callSid: string): { segment: number, sequence: number } | null {
    const call = this.#calls.get(callSid)
    return call === undefined ? null : { segment: call.lastSegment, sequence: call.lastSequence }
  }

  /**
   * Fleet mode: forgets a call this process knows only from a later segment (it took the call over
   * from another replica) while nobody views it here, so that a catch-up reads the call again from
   * its first segment. Returns whether it did.
   */
  forgetIfPartial (callSid: string): boolean {
    const call = this.#calls.get(callSid)
    if (call === undefined || call.firstSegment <= 1 || call.viewers.size > 0) return false
    call.clearTimers()
    this.#detachSource(call)
    this.#calls.delete(callSid)
    return true
  }

  /** Calls with viewers here whose partials come from another replica (no local source). */
  watchedElsewhere (): Array<{ callSid: string, streamSid: string }> {
    const calls: Array<{ callSid: string, streamSid: string }> = []
    for (const call of this.#calls.values()) {
      if (!call.ended && call.viewers.size > 0 && call.source === null) calls.push({ callSid: call.callSid, streamSid: call.streamSid })
    }
    return calls
  }

  /** Fleet mode: another replica has viewers of this call; watch its partials until `untilMs`. */
  leaseWatch (callSid: string, untilMs: number): void {
    const call = this.#calls.get(callSid)
    if (call === undefined || call.ended || this.#closed) return
    call.remoteLeaseUntil = Math.max(call.remoteLeaseUntil, untilMs)
    this.#attachSource(call)
    if (call.leaseTimer !== null) clearTimeout(call.leaseTimer)
    call.leaseTimer = setTimeout(() => {
      call.leaseTimer = null
      if (call.viewers.size === 0 && this.#now() >= call.remoteLeaseUntil) this.#detachSource(call)
    }, Math.max(0, call.remoteLeaseUntil - this.#now()))
    call.leaseTimer.unref()
  }

  /** Fleet mode: a partial another replica produced, for the viewers here. */
  deliverPartial (callSid: string, event: LiveEvent): void {
    const call = this.#calls.get(callSid)
    if (call === undefined || call.ended) return
    for (const viewer of call.viewers) this.#send(viewer, event)
  }

  /** Ends every viewer's stream and forgets every call; idempotent. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    for (const call of this.#calls.values()) {
      call.clearTimers()
      this.#detachSource(call)
      for (const viewer of call.viewers) {
        this.#options.onViewerCount?.(-1)
        viewer.end()
      }
      call.viewers.clear()
    }
    this.#calls.clear()
  }

  #onStarted (event: OutgoingEvent, data: Record<string, unknown>): void {
    const segment = typeof data.segment === 'number' ? data.segment : 1
    let call = this.#calls.get(event.callSid)
    if (call === undefined) {
      call = new LiveCall(event.callSid, event.streamSid, segment, typeof data.started_at === 'string' ? data.started_at : new Date().toISOString())
      call.lastSegment = segment
      call.lastSequence = event.sequence
      this.#calls.set(event.callSid, call)
      return
    }
    // Taken already (fleet mode sees its own events twice: in process and from PostgreSQL), or an
    // earlier segment's, too late.
    if (segment <= call.segment || call.later.has(segment) || call.ended) return
    // The next segment of a call handed off: same call, same viewers, once the current segment is over.
    call.later.set(segment, { streamSid: event.streamSid, startSequence: event.sequence, lastSequence: event.sequence, finals: [] })
    this.#advance(call, false)
  }

  #onFinal (event: OutgoingEvent, data: Record<string, unknown>): void {
    const call = this.#calls.get(event.callSid)
    if (call === undefined || call.ended) return
    if (event.streamSid !== call.streamSid) {
      for (const [segment, later] of call.later) {
        if (later.streamSid !== event.streamSid) continue
        if (event.sequence <= later.lastSequence) return
        later.lastSequence = event.sequence
        later.finals.push({ final: storedFinal(event, segment, data), data })
        return
      }
      // An earlier segment's, after viewers moved on: too late for them.
      return
    }
    if (event.sequence <= call.lastSequence) return
    this.#take(call, storedFinal(event, call.segment, data), data)
    if (call.handedOff) this.#advance(call, false)
  }

  /**
   * Moves the call on to its next segment once the current one is handed off (with `force`: to the
   * first later segment, whatever became of the current one), and gives viewers what that segment
   * held back. While a later segment still waits, a timer bounds the wait.
   */
  #advance (call: LiveCall, force: boolean): void {
    while (!call.ended && call.later.size > 0) {
      let segment: number | null = call.handedOff && call.later.has(call.segment + 1) ? call.segment + 1 : null
      if (segment === null && force) segment = Math.min(...call.later.keys())
      if (segment === null) break
      force = false
      const next = call.later.get(segment) as LaterSegment
      call.later.delete(segment)
      this.#detachSource(call)
      call.handedOff = false
      call.streamSid = next.streamSid
      call.segment = segment
      call.lastSegment = segment
      call.lastSequence = next.startSequence
      if (call.viewers.size > 0) this.#attachSource(call)
      for (const { final, data } of next.finals) this.#take(call, final, data)
    }
    if (call.later.size === 0 || call.ended) {
      if (call.holdTimer !== null) clearTimeout(call.holdTimer)
      call.holdTimer = null
    } else if (call.holdTimer === null) {
      call.holdTimer = setTimeout(() => {
        call.holdTimer = null
        this.#advance(call, true)
      }, HANDOFF_HOLD_MS)
      call.holdTimer.unref()
    }
  }

  /** A final of the current segment, in order: kept for resumes and sent to the viewers. */
  #take (call: LiveCall, final: StoredFinal, data: Record<string, unknown>): void {
    call.lastSegment = final.segment
    call.lastSequence = final.sequence
    call.finals.push(final)
    if (call.finals.length > MAX_FINALS_PER_CALL) call.finals.shift()
    if (final.type === 'transcript.turn') {
      call.turnCount++
      call.lastRole = typeof data.role === 'string' ? data.role : null
      // A partial still waiting for its turn would arrive after the final that replaced it.
      const upstream = data.upstream as { turn_order?: unknown } | undefined
      if (call.pendingPartial !== null && call.pendingPartial.turn_order === upstream?.turn_order) {
        call.pendingPartial = null
        if (call.partialTimer !== null) clearTimeout(call.partialTimer)
        call.partialTimer = null
      }
    }
    for (const viewer of call.viewers) this.#send(viewer, final)
    if (final.type !== 'call.ended') return
    call.clearTimers()
    this.#detachSource(call)
    // After a handoff the call goes on in another stream: viewers stay for the next segment.
    if (data.reason === 'handed_off') {
      call.handedOff = true
      return
    }
    call.later.clear()
    call.ended = true
    for (const viewer of call.viewers) {
      this.#options.onViewerCount?.(-1)
      viewer.end()
    }
    call.viewers.clear()
    call.graceTimer = setTimeout(() => {
      if (this.#calls.get(call.callSid) === call) this.#calls.delete(call.callSid)
    }, this.#graceMs)
    call.graceTimer.unref()
  }

  #onPartial (call: LiveCall, partial: PartialTurn): void {
    const now = this.#now()
    if (call.ended || (call.viewers.size === 0 && call.remoteLeaseUntil <= now)) return
    const wait = call.lastPartialAt + this.#intervalMs - now
    if (wait <= 0 && call.partialTimer === null) {
      this.#sendPartial(call, partial, now)
      return
    }
    // Within the interval only the newest partial matters: it is the whole turn so far.
    call.pendingPartial = partial
    if (call.partialTimer !== null) return
    call.partialTimer = setTimeout(() => {
      call.partialTimer = null
      const pending = call.pendingPartial
      call.pendingPartial = null
      if (pending !== null && !call.ended) this.#sendPartial(call, pending, this.#now())
    }, Math.max(0, wait))
    call.partialTimer.unref()
  }

  #sendPartial (call: LiveCall, partial: PartialTurn, now: number): void {
    call.lastPartialAt = now
    const event: LiveEvent = {
      type: 'turn.partial',
      id: null,
      data: JSON.stringify({
        call_sid: call.callSid,
        stream_sid: call.streamSid,
        segment: call.segment,
        role: partial.role,
        speaker: partial.speaker,
        start_ms: partial.start_ms,
        end_ms: partial.end_ms,
        text: partial.text,
        upstream: { turn_order: partial.turn_order }
      })
    }
    for (const viewer of call.viewers) this.#send(viewer, event)
    if (this.#options.fanOutPartial !== undefined && call.remoteLeaseUntil > now) this.#options.fanOutPartial(call.callSid, event)
  }

  #send (viewer: LiveViewer, event: LiveEvent): void {
    try {
      viewer.send(event)
      this.#options.onSent?.(event.type)
    } catch {
      // One viewer's broken socket must not stop the others; its close handler removes it.
    }
  }

  #removeViewer (call: LiveCall, viewer: LiveViewer): void {
    if (!call.viewers.delete(viewer)) return
    this.#options.onViewerCount?.(-1)
    if (call.viewers.size === 0 && call.remoteLeaseUntil <= this.#now()) {
      this.#detachSource(call)
      if (call.partialTimer !== null) clearTimeout(call.partialTimer)
      call.partialTimer = null
      call.pendingPartial = null
    }
  }

  #attachSource (call: LiveCall): void {
    if (call.ended || call.source !== null) return
    const source = this.#options.sourceOf(call.streamSid)
    if (source === undefined) return
    call.source = source
    source.watchPartials((partial) => this.#onPartial(call, partial))
  }

  #detachSource (call: LiveCall): void {
    const source = call.source
    call.source = null
    source?.watchPartials(null)
  }
}
