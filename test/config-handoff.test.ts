import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig } from '../src/config.ts'
import { ConfigError } from '../src/core/errors.ts'

const base = {
  PUBLIC_URL: 'https://calls.example.org',
  TWILIO_AUTH_TOKEN: 'auth-token-0123456789',
  FORWARD_TO: '+15550002222',
  ASSEMBLYAI_API_KEY: 'key-0123'
}
const FLEET = { DATABASE_URL: 'postgres://medstream@db.internal:5432/medstream' }
const KEY_SID = 'SK' + 'a'.repeat(32)

function failure (env: Record<string, string>): ConfigError {
  try {
    loadConfig(env)
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`)
    return error
  }
  assert.fail('expected the configuration to be refused')
}

test('config points REST at api.twilio.com and turns handoff off when not in fleet mode', () => {
  const config = loadConfig(base)
  assert.equal(config.twilioApiUrl.href, 'https://api.twilio.com/')
  assert.equal(config.twilioApiKey, null)
  assert.equal(config.handoffOnDrain, false)
})

test('config turns handoff on by default when in fleet mode with REST credentials', () => {
  assert.equal(loadConfig({ ...base, ...FLEET }).handoffOnDrain, true)
  const withKey = loadConfig({ ...base, ...FLEET, TWILIO_API_KEY_SID: KEY_SID, TWILIO_API_KEY_SECRET: 'secret' })
  assert.deepEqual(withKey.twilioApiKey, { sid: KEY_SID, secret: 'secret' })
  assert.equal(withKey.handoffOnDrain, true)
  assert.equal(loadConfig({ ...base, ...FLEET, HANDOFF_ON_DRAIN: 'false' }).handoffOnDrain, false)
})

test('config turns handoff off by default when fleet mode has no REST credentials', () => {
  const { TWILIO_AUTH_TOKEN: _token, ...noToken } = base
  assert.equal(loadConfig({ ...noToken, ...FLEET, TWILIO_SIGNATURE_CHECK: 'false' }).handoffOnDrain, false)
})

test('config refuses HANDOFF_ON_DRAIN=true when DATABASE_URL or credentials are missing', () => {
  assert.match(failure({ ...base, HANDOFF_ON_DRAIN: 'true' }).message, /HANDOFF_ON_DRAIN.*DATABASE_URL/)
  const { TWILIO_AUTH_TOKEN: _token, ...noToken } = base
  assert.match(failure({ ...noToken, ...FLEET, TWILIO_SIGNATURE_CHECK: 'false', HANDOFF_ON_DRAIN: 'true' }).message, /HANDOFF_ON_DRAIN.*credentials/)
})

test('config allows plain http for TWILIO_API_URL only on loopback', () => {
  assert.equal(loadConfig({ ...base, TWILIO_API_URL: 'http://127.0.0.1:4010' }).twilioApiUrl.href, 'http://127.0.0.1:4010/')
  assert.match(failure({ ...base, TWILIO_API_URL: 'http://api.example.org' }).message, /TWILIO_API_URL.*loopback/)
  assert.match(failure({ ...base, TWILIO_API_URL: 'ftp://api.example.org' }).message, /TWILIO_API_URL/)
})

test('config refuses an API key SID without its secret or of the wrong form', () => {
  assert.match(failure({ ...base, TWILIO_API_KEY_SID: KEY_SID }).message, /TWILIO_API_KEY_SECRET/)
  assert.match(failure({ ...base, TWILIO_API_KEY_SECRET: 'x' }).message, /TWILIO_API_KEY_SID/)
  assert.match(failure({ ...base, TWILIO_API_KEY_SID: 'AC' + 'a'.repeat(32), TWILIO_API_KEY_SECRET: 'x' }).message, /TWILIO_API_KEY_SID.*SK/)
})
