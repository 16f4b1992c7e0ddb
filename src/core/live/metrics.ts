import { Counter, Gauge } from 'prom-client'
import type { Registry } from 'prom-client'
import { LIVE_EVENT_TYPES } from './hub.ts'

/** The live view's metrics, on the app's one registry. Labels are a closed set; never a call id. */
export function createLiveMetrics (registry: Registry) {
  const registers = [registry]
  const metrics = {
    viewers: new Gauge({ name: 'medstream_live_viewers', help: 'Live view event streams open on this process.', registers }),
    events: new Counter({ name: 'medstream_live_events_total', help: 'Events sent to live viewers, by type (one per viewer reached).', labelNames: ['type'] as const, registers })
  }
  for (const type of LIVE_EVENT_TYPES) metrics.events.inc({ type }, 0)
  return metrics
}

export type LiveMetrics = ReturnType<typeof createLiveMetrics>
