import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig, loadLiveViewKey } from '../src/config.ts'
import { deriveLiveViewKey } from '../src/core/live/viewer-token.ts'
import { ConfigError } from '../src/core/errors.ts'

const base = {
  PUBLIC_URL: 'https://calls.example.org',
  TWILIO_AUTH_TOKEN: 'auth-token-0123456789',
  FORWARD_TO: '+15550002222',
  ASSEMBLYAI_API_KEY: 'key-0123'
}

function failure (env: Record<string, string>): ConfigError {
  try {
    loadConfig(env)
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`)
    return error
  }
  assert.fail('expected the configuration to be refused')
}

test('config applies the documented defaults when only the required variables are set', () => {
  const config = loadConfig(base)
  assert.equal(config.port, 8080)
  assert.equal(config.host, '0.0.0.0')
  assert.equal(config.metricsPort, 9464)
  assert.equal(config.twilioSignatureCheck, true)
  assert.equal(config.streamTokenSecretSource, 'derived')
  assert.equal(config.assemblyai.url, 'wss://streaming.assemblyai.com/v3/ws')
  assert.equal(config.assemblyai.speechModel, 'u3-rt-pro')
  assert.equal(config.assemblyai.domain, 'medical-v1')
  assert.equal(config.assemblyai.speakerLabels, true)
  assert.equal(config.assemblyai.maxSpeakers, 2)
  assert.deepEqual(config.assemblyai.keyterms, [])
  assert.equal(config.assemblyai.minTurnSilenceMs, 800)
  assert.equal(config.assemblyai.maxTurnSilenceMs, 3600)
  assert.equal(config.audioChunkMs, 50)
  assert.equal(config.webhookUrl, null)
  assert.equal(config.webhookTimeoutMs, 15000)
  assert.equal(config.dataDir, './data')
  assert.equal(config.maxCalls, 500)
  assert.equal(config.drainTimeoutMs, 300000)
  assert.equal(config.logLevel, 'info')
  assert.equal(config.logPii, false)
  assert.deepEqual(config.warnings, [])
})

test('config names the variable and the fix when a required value is missing', () => {
  for (const name of ['PUBLIC_URL', 'ASSEMBLYAI_API_KEY', 'TWILIO_AUTH_TOKEN'] as const) {
    const env: Record<string, string> = { ...base }
    delete env[name]
    const error = failure(env)
    assert.equal(error.variable, name)
    assert.match(error.message, new RegExp(`^${name}: `))
    assert.doesNotMatch(error.message, /\n/)
  }
})

test('config refuses out-of-range and malformed values', () => {
  assert.equal(failure({ ...base, AUDIO_CHUNK_MS: '20' }).variable, 'AUDIO_CHUNK_MS')
  assert.equal(failure({ ...base, AUDIO_CHUNK_MS: '1001' }).variable, 'AUDIO_CHUNK_MS')
  assert.equal(failure({ ...base, PORT: 'eighty' }).variable, 'PORT')
  assert.equal(failure({ ...base, ASSEMBLYAI_MAX_SPEAKERS: '11' }).variable, 'ASSEMBLYAI_MAX_SPEAKERS')
  assert.equal(failure({ ...base, ASSEMBLYAI_SPEAKER_LABELS: 'maybe' }).variable, 'ASSEMBLYAI_SPEAKER_LABELS')
  assert.equal(failure({ ...base, ASSEMBLYAI_URL: 'https://streaming.assemblyai.com/v3/ws' }).variable, 'ASSEMBLYAI_URL')
  assert.equal(failure({ ...base, LOG_LEVEL: 'loud' }).variable, 'LOG_LEVEL')
  assert.equal(failure({ ...base, WEBHOOK_URL: 'https://hooks.example.org/medstream' }).variable, 'WEBHOOK_SECRET')
  assert.equal(failure({ ...base, WEBHOOK_URL: 'https://hooks.example.org/m', WEBHOOK_SECRET: 'plain-secret' }).variable, 'WEBHOOK_SECRET')
  assert.equal(failure({ ...base, METRICS_PORT: '8080' }).variable, 'METRICS_PORT')
  assert.equal(failure({ ...base, STREAM_TOKEN_SECRET: 'short' }).variable, 'STREAM_TOKEN_SECRET')
})

test('config requires exactly one of FORWARD_TO and TWIML_CONTINUE_URL', () => {
  const { FORWARD_TO: _forward, ...withoutForward } = base
  assert.equal(failure(withoutForward).variable, 'FORWARD_TO')
  assert.equal(failure({ ...base, TWIML_CONTINUE_URL: 'https://flows.example.org/voice' }).variable, 'FORWARD_TO')
  const redirecting = loadConfig({ ...withoutForward, TWIML_CONTINUE_URL: 'https://flows.example.org/voice' })
  assert.equal(redirecting.twimlContinueUrl, 'https://flows.example.org/voice')
  assert.equal(loadConfig({ ...base, FORWARD_TO: 'sip:agents@pbx.example.org' }).forwardTo, 'sip:agents@pbx.example.org')
})

test('config accepts plain-text schemes to a remote host only with a warning', () => {
  const config = loadConfig({ ...base, PUBLIC_URL: 'http://calls.example.org', WEBHOOK_URL: 'http://127.0.0.1:9999/hooks', WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' })
  assert.equal(config.warnings.length, 1)
  assert.match(config.warnings[0] ?? '', /^PUBLIC_URL/)
})

test('config skips signature checks only when told, and then needs no auth token', () => {
  const { TWILIO_AUTH_TOKEN: _token, ...env } = base
  const config = loadConfig({ ...env, TWILIO_SIGNATURE_CHECK: 'false' })
  assert.equal(config.twilioSignatureCheck, false)
  assert.equal(config.streamTokenSecretSource, 'random')
  assert.equal(config.streamTokenSecret.length, 32)
})

test('config reads several webhook secrets and comma-separated keyterms', () => {
  const config = loadConfig({
    ...base,
    WEBHOOK_URL: 'https://hooks.example.org/m',
    WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD',
    ASSEMBLYAI_KEYTERMS: 'metoprolol, Dr. Patel ,,lisinopril'
  })
  assert.equal(config.webhookSecrets.length, 2)
  assert.deepEqual(config.assemblyai.keyterms, ['metoprolol', 'Dr. Patel', 'lisinopril'])
})

test('config keys viewer tokens with LIVE_VIEW_SECRET, else with a key derived from the stream token key, and loadLiveViewKey agrees', () => {
  const derived = loadConfig(base)
  assert.deepEqual(derived.liveViewKey, deriveLiveViewKey(derived.streamTokenSecret))
  assert.deepEqual(loadLiveViewKey({ TWILIO_AUTH_TOKEN: base.TWILIO_AUTH_TOKEN }), derived.liveViewKey, 'the token command needs only the secret variables')
  const streamSecret = 's'.repeat(40)
  assert.deepEqual(loadLiveViewKey({ STREAM_TOKEN_SECRET: streamSecret }), loadConfig({ ...base, STREAM_TOKEN_SECRET: streamSecret }).liveViewKey)
  const secret = 'l'.repeat(40)
  assert.deepEqual(loadConfig({ ...base, LIVE_VIEW_SECRET: secret }).liveViewKey, Buffer.from(secret, 'utf8'))
  assert.deepEqual(loadLiveViewKey({ LIVE_VIEW_SECRET: secret }), Buffer.from(secret, 'utf8'))
  assert.equal(failure({ ...base, LIVE_VIEW_SECRET: 'short' }).variable, 'LIVE_VIEW_SECRET')
  assert.throws(() => loadLiveViewKey({}), (error: unknown) => error instanceof ConfigError && error.variable === 'LIVE_VIEW_SECRET')
})

test('config takes CSP frame-ancestors sources and refuses anything that could end the directive', () => {
  assert.equal(loadConfig(base).liveViewFrameAncestors, "'none'")
  assert.equal(loadConfig({ ...base, LIVE_VIEW_FRAME_ANCESTORS: 'none' }).liveViewFrameAncestors, "'none'", 'quotes lost on the way mean the keyword')
  assert.equal(loadConfig({ ...base, LIVE_VIEW_FRAME_ANCESTORS: "'self'  https://desk.example.org https://*.crm.example.com:8443" }).liveViewFrameAncestors, "'self' https://desk.example.org https://*.crm.example.com:8443")
  for (const bad of ["'none' 'self'", 'https://a.example.org; script-src *', 'https://a.example.org,https://b.example.org', "'unsafe-inline'"]) {
    assert.equal(failure({ ...base, LIVE_VIEW_FRAME_ANCESTORS: bad }).variable, 'LIVE_VIEW_FRAME_ANCESTORS', bad)
  }
})

test('config selects the PostgreSQL outbox and its buffer bound when DATABASE_URL is set', () => {
  const sqlite = loadConfig(base)
  assert.equal(sqlite.databaseUrl, null)
  assert.equal(sqlite.outboxBufferBytes, 67_108_864)
  const fleet = loadConfig({ ...base, DATABASE_URL: 'postgres://medstream:pw@db.internal:5432/medstream', OUTBOX_BUFFER_BYTES: '16777216' })
  assert.equal(fleet.databaseUrl, 'postgres://medstream:pw@db.internal:5432/medstream')
  assert.equal(fleet.outboxBufferBytes, 16_777_216)
  const wrong = failure({ ...base, DATABASE_URL: 'mysql://medstream:s3cret@db/medstream' })
  assert.equal(wrong.variable, 'DATABASE_URL')
  assert.doesNotMatch(wrong.message, /s3cret/, 'never echoes the password')
  assert.equal(failure({ ...base, OUTBOX_BUFFER_BYTES: '1024' }).variable, 'OUTBOX_BUFFER_BYTES')
})

test('config parses webhook secrets once and refuses a short or non-base64 one without echoing it', () => {
  const short = failure({ ...base, WEBHOOK_URL: 'https://hooks.example.org/m', WEBHOOK_SECRET: 'whsec_c2hvcnQ=' })
  assert.equal(short.variable, 'WEBHOOK_SECRET')
  assert.match(short.message, /secret #1/)
  const second = failure({ ...base, WEBHOOK_URL: 'https://hooks.example.org/m', WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_not*base64*at*all*here' })
  assert.match(second.message, /secret #2/)
  assert.doesNotMatch(second.message, /not\*base64/)
})
