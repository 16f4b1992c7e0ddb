import { test } from 'node:test'
import assert from 'node:assert/strict'
import twilio from 'twilio'
import WebSocket from 'ws'
import { AUTH_TOKEN, PUBLIC_URL, metricValue, startHarness } from '../helpers/harness.ts'

/** Opens the media WebSocket with a signature header; resolves with the HTTP status (101 when upgraded). */
function upgrade (serviceUrl: string, signature: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${serviceUrl.replace(/^http/, 'ws')}/twilio/media`, { headers: { 'x-twilio-signature': signature } })
    const timer = setTimeout(() => { socket.terminate(); reject(new Error('upgrade timed out')) }, 5000)
    socket.on('open', () => { clearTimeout(timer); socket.close(1000); resolve(101) })
    socket.on('unexpected-response', (_request, response) => { clearTimeout(timer); response.resume(); socket.terminate(); resolve(response.statusCode ?? 0) })
    socket.on('error', () => {})
  })
}

const host = new URL(PUBLIC_URL).host
const FORMS = {
  wss: `wss://${host}/twilio/media`,
  wss_slash: `wss://${host}/twilio/media/`,
  https: `https://${host}/twilio/media`,
  https_slash: `https://${host}/twilio/media/`
}

test('the media upgrade is accepted and its form counted when Twilio signed either twin, with or without a slash', async (t) => {
  const harness = await startHarness({ webhook: false })
  t.after(() => harness.close())
  for (const [form, url] of Object.entries(FORMS)) {
    assert.equal(await upgrade(harness.serviceUrl, twilio.getExpectedTwilioSignature(AUTH_TOKEN, url, {})), 101, form)
  }
  assert.equal(await upgrade(harness.serviceUrl, twilio.getExpectedTwilioSignature(AUTH_TOKEN, FORMS.https, {})), 101)
  assert.deepEqual({
    wss: await metricValue(harness.app, 'medstream_upgrade_signatures_total', { form: 'wss' }),
    wss_slash: await metricValue(harness.app, 'medstream_upgrade_signatures_total', { form: 'wss_slash' }),
    https: await metricValue(harness.app, 'medstream_upgrade_signatures_total', { form: 'https' }),
    https_slash: await metricValue(harness.app, 'medstream_upgrade_signatures_total', { form: 'https_slash' })
  }, { wss: 1, wss_slash: 1, https: 2, https_slash: 1 })
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'signature' }), 0)
})

test('the media upgrade gets 403 and counts no form when the signature is forged or made with another token', async (t) => {
  const harness = await startHarness({ webhook: false })
  t.after(() => harness.close())
  assert.equal(await upgrade(harness.serviceUrl, 'AAAAAAAAAAAAAAAAAAAAAAAAAAA='), 403)
  for (const url of Object.values(FORMS)) {
    assert.equal(await upgrade(harness.serviceUrl, twilio.getExpectedTwilioSignature('another-auth-token', url, {})), 403)
  }
  assert.equal(await upgrade(harness.serviceUrl, twilio.getExpectedTwilioSignature(AUTH_TOKEN, `https://${host}/twilio/voice`, {})), 403)
  assert.equal(await metricValue(harness.app, 'medstream_stream_rejections_total', { reason: 'signature' }), 6)
  for (const form of Object.keys(FORMS)) {
    assert.equal(await metricValue(harness.app, 'medstream_upgrade_signatures_total', { form }), 0)
  }
})
