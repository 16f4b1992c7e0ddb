import assert from 'node:assert/strict'
import type { ReceivedEvent } from './webhook-receiver.ts'

/** A turn of the sample call, on the audio clock (ms from the first audio byte). */
export interface SpokenTurn { track: 'inbound' | 'outbound', startMs: number, endMs: number }

/** The first `ms` of a μ-law track. */
export function sliceAudio (audio: Buffer, ms: number): Buffer {
  return audio.subarray(0, Math.min(audio.length, ms * 8))
}

/** `times` copies of a call back to back: the audio of both tracks and its turns shifted. */
export function repeatCall (call: { inbound: Buffer, outbound: Buffer, turns: SpokenTurn[] }, times: number): { inbound: Buffer, outbound: Buffer, turns: SpokenTurn[] } {
  const lengthMs = call.inbound.length / 8
  const turns: SpokenTurn[] = []
  for (let i = 0; i < times; i++) {
    for (const turn of call.turns) turns.push({ track: turn.track, startMs: turn.startMs + i * lengthMs, endMs: turn.endMs + i * lengthMs })
  }
  return { inbound: Buffer.concat(Array(times).fill(call.inbound)), outbound: Buffer.concat(Array(times).fill(call.outbound)), turns }
}

export interface Segment {
  streamSid: string
  started: Record<string, unknown>
  turns: Array<Record<string, unknown>>
  ended: Record<string, unknown>
}

/**
 * What a receiver does to rebuild one call (docs/interface.md, "Rebuilding a call"): group events by
 * stream, order streams by `segment`, and follow `next_stream_sid` until a `call.ended` whose reason
 * is not `handed_off`.
 */
export function segmentsOf (events: ReceivedEvent[], callSid: string): Segment[] {
  const byStream = new Map<string, ReceivedEvent[]>()
  for (const event of events) {
    if (event.callSid !== callSid) continue
    const sid = event.data.stream_sid as string
    byStream.set(sid, [...(byStream.get(sid) ?? []), event])
  }
  const segments: Segment[] = []
  for (const [streamSid, list] of byStream) {
    list.sort((a, b) => a.sequence - b.sequence)
    const started = list.find((event) => event.type === 'call.started')
    const ended = list.find((event) => event.type === 'call.ended')
    assert.ok(started !== undefined && ended !== undefined, `stream ${streamSid} has call.started and call.ended`)
    segments.push({ streamSid, started: started.data, ended: ended.data, turns: list.filter((event) => event.type === 'transcript.turn').map((event) => event.data) })
  }
  segments.sort((a, b) => (a.started.segment as number) - (b.started.segment as number))
  return segments
}

/** Whether the call's last segment has ended (its reason is not handed_off). */
export function callOver (events: ReceivedEvent[], callSid: string): boolean {
  return events.some((event) => event.callSid === callSid && event.type === 'call.ended' && event.data.reason !== 'handed_off')
}

/**
 * Every spoken turn is covered by published turns of its role, no two of which overlap in time
 * (nothing doubled), and nothing is published where nobody spoke.
 * @param timelineShiftMs call-timeline ms of audio position 0 (the first stream's first timestamp)
 */
export function assertEveryTurnOnce (segments: Segment[], spoken: SpokenTurn[], timelineShiftMs: number): void {
  const published = segments.flatMap((segment) => segment.turns.map((turn) => ({ segment: segment.started.segment as number, start: turn.start_ms as number, end: turn.end_ms as number, role: turn.role as string })))
  const slackMs = 400
  for (const turn of spoken) {
    const start = turn.startMs + timelineShiftMs
    const end = turn.endMs + timelineShiftMs
    const covering = published.filter((p) => p.start < end + slackMs && p.end > start - slackMs)
    assert.ok(covering.length >= 1, `spoken turn ${start}–${end} ms is in the transcript`)
    for (const p of covering) assert.equal(p.role, turn.track === 'inbound' ? 'customer' : 'agent', `role of the turn at ${p.start} ms`)
    const sorted = covering.sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) {
      assert.ok((sorted[i]?.start ?? 0) >= (sorted[i - 1]?.end ?? 0), `turns at ${sorted[i - 1]?.start} and ${sorted[i]?.start} ms overlap: a word was published twice`)
    }
  }
  for (const p of published) {
    assert.ok(spoken.some((turn) => p.start < turn.endMs + timelineShiftMs + slackMs && p.end > turn.startMs + timelineShiftMs - slackMs), `published turn at ${p.start}–${p.end} ms matches speech`)
  }
  for (const segment of segments) {
    const indexes = segment.turns.map((turn) => turn.turn_index)
    assert.deepEqual(indexes, indexes.map((_, i) => i + 1), 'turn_index counts from 1 within each segment')
  }
}
