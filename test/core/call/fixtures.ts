import alawmulaw from 'alawmulaw'
import { Registry } from 'prom-client'
import type { SessionOptions } from '../../../src/core/assemblyai/protocol.ts'
import type { CoreLogger, ParentLogger } from '../../../src/core/log.ts'
import { createMetrics } from '../../../src/core/metrics.ts'
import type { Metrics } from '../../../src/core/metrics.ts'
import type { EventSink, OutgoingEvent } from '../../../src/core/webhooks/events.ts'
import { pcmSilence, pcmTone } from '../../fakes/assemblyai-server.ts'

/** Shared pieces of the call-level unit tests: a recording sink, logger and metrics, μ-law audio. */

export const API_KEY = 'call-test-key'
export const CALL_SID = `CA${'1'.repeat(32)}`
export const STREAM_SID = `MZ${'2'.repeat(32)}`
export const ACCOUNT_SID = `AC${'3'.repeat(32)}`

export function upstreamOptions (url: string, apiKey = API_KEY): SessionOptions {
  return { url, apiKey, speechModel: 'u3-rt-pro', domain: 'medical-v1', speakerLabels: true, maxSpeakers: 2, keyterms: [], minTurnSilenceMs: 400, maxTurnSilenceMs: 1500, sampleRate: 8000, connectTimeoutMs: 3000 }
}

export interface LogLine { level: string, bindings: Record<string, unknown>, fields: Record<string, unknown>, message: string | undefined }

/** A CoreLogger (with child) that keeps every line; no pino involved. */
export function recordingLogger (lines: LogLine[] = [], bindings: Record<string, unknown> = {}): ParentLogger & { lines: LogLine[] } {
  const record = (level: string) => (fields: object | string, message?: string): void => {
    lines.push(typeof fields === 'string'
      ? { level, bindings, fields: {}, message: fields }
      : { level, bindings, fields: fields as Record<string, unknown>, message })
  }
  return {
    lines,
    debug: record('debug'),
    info: record('info'),
    warn: record('warn'),
    error: record('error'),
    child: (more: Record<string, unknown>): CoreLogger => recordingLogger(lines, { ...bindings, ...more })
  }
}

/** An EventSink that keeps what it is given; `failWith` makes publish throw (a full disk). */
export function recordingSink (): EventSink & { events: OutgoingEvent[], failWith: Error | null, bodies: () => Array<{ type: string, data: Record<string, unknown> }> } {
  const events: OutgoingEvent[] = []
  return {
    events,
    failWith: null,
    publish (event) {
      if (this.failWith !== null) throw this.failWith
      events.push(event)
    },
    async close () {},
    bodies: () => events.map((event) => JSON.parse(event.body) as { type: string, data: Record<string, unknown> })
  }
}

export function testMetrics (): Metrics {
  return createMetrics(new Registry(), 'test')
}

export async function counter (metric: { get: () => Promise<{ values: Array<{ value: number, labels: Partial<Record<string, string | number>> }> }> }, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await metric.get()
  return values.find((sample) => Object.entries(labels).every(([key, value]) => String(sample.labels[key]) === value))?.value ?? 0
}

/** μ-law frames of 20 ms: `speech` ms of tone then `silence` ms, repeated `bursts` times. */
export function mulawSpeech (bursts: number, speechMs = 600, silenceMs = 900): Buffer[] {
  const parts: Buffer[] = []
  for (let i = 0; i < bursts; i++) parts.push(pcmTone(speechMs), pcmSilence(silenceMs))
  const pcm = Buffer.concat(parts)
  const samples = new Int16Array(pcm.buffer, pcm.byteOffset, pcm.length / 2)
  const mulaw = Buffer.from(alawmulaw.mulaw.encode(samples))
  const frames: Buffer[] = []
  for (let offset = 0; offset < mulaw.length; offset += 160) frames.push(mulaw.subarray(offset, offset + 160))
  return frames
}

export { until } from '../../helpers/until.ts'
