import assert from 'node:assert/strict'
import { test } from 'node:test'
import { CallSession } from '../../../src/core/call/call-session.ts'
import { CREATES_PER_SECOND, HandoffAcceptor, HandoffCoordinator } from '../../../src/core/handoff/handoff.ts'
import type { HandoffStore } from '../../../src/core/handoff/store.ts'
import { TwilioSimulator } from '../../fakes/twilio-simulator.ts'
import { counter, recordingLogger, recordingSink, testMetrics, upstreamOptions } from '../call/fixtures.ts'

const AUTH_TOKEN = 'handoff-unit-auth-token'

test('HandoffAcceptor places the new stream at at_ms plus the wall-clock time from the create to its start', () => {
  const claim = { callSid: 'CA1', accountSid: 'AC1', previousStreamSid: 'MZ1', segment: 2, atMs: 61_240, atEpochMs: 1_780_000_000_000 }
  assert.equal(HandoffAcceptor.offsetMs(claim, 1_780_000_000_350), 61_590)
  assert.equal(HandoffAcceptor.offsetMs({ ...claim, atMs: 100 }, claim.atEpochMs - 5000), 0, 'a clock far behind cannot put a stream before the call began')
})

test('HandoffCoordinator paces its creates at CREATES_PER_SECOND and counts each failed create once', { timeout: 30_000 }, async (t) => {
  // A Twilio that knows none of these calls: every create fails at once (404), so only the pacing
  // spaces the requests.
  const simulator = new TwilioSimulator({ serviceUrl: 'http://127.0.0.1:9', publicUrl: 'http://127.0.0.1:9', authToken: AUTH_TOKEN })
  const api = await simulator.listenApi()
  t.after(() => simulator.close())
  const metrics = testMetrics()
  const coordinator = new HandoffCoordinator({
    settings: { publicUrl: new URL('https://calls.example.org'), tokenSecret: Buffer.alloc(32, 1), apiUrl: new URL(api.url), apiKey: null, authToken: AUTH_TOKEN },
    store: {} as HandoffStore,
    metrics,
    logger: recordingLogger()
  })
  const sessions = Array.from({ length: 8 }, (_, i) => new CallSession({
    identity: { callSid: 'CA' + String(i).padStart(32, '0'), streamSid: 'MZ' + String(i).padStart(32, '0'), accountSid: simulator.accountSid, tracks: ['inbound', 'outbound'], customParameters: {} },
    upstream: upstreamOptions('ws://127.0.0.1:9/v3/ws'),
    chunkMs: 100,
    sink: recordingSink(),
    metrics,
    logger: recordingLogger(),
    onEnded: () => {}
  }))
  const results = await coordinator.handOffAll(sessions)
  assert.equal(results.create_failed, sessions.length)
  assert.equal(await counter(metrics.handoffs, { result: 'create_failed' }), sessions.length)
  const creates = api.requests.filter((request) => request.path.endsWith('/Streams.json'))
  assert.equal(creates.length, sessions.length)
  assert.equal(creates[0]?.username, simulator.accountSid, 'without an API key, the call\'s AccountSid and the auth token')
  const spacingMs = 1000 / CREATES_PER_SECOND
  // Measured where the simulator answered, so one request's own latency can shorten one gap.
  for (let i = 1; i < creates.length; i++) {
    const gap = (creates[i]?.atMs ?? 0) - (creates[i - 1]?.atMs ?? 0)
    assert.ok(gap >= spacingMs * 0.5, `creates ${i - 1} and ${i} were ${Math.round(gap)} ms apart`)
  }
  const span = (creates.at(-1)?.atMs ?? 0) - (creates[0]?.atMs ?? 0)
  assert.ok(span >= spacingMs * (creates.length - 1) * 0.9, `${creates.length} creates took ${Math.round(span)} ms`)
  // 200 calls at this pace: their creates take 200 / CREATES_PER_SECOND s, plus one cut window.
  assert.ok(200 / CREATES_PER_SECOND <= 45)
})
