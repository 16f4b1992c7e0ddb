import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'
import { loadConfig } from '../../src/config.ts'
import { verifyViewerToken } from '../../src/core/live/viewer-token.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** Runs the command as npm would, in an empty directory (no .env) with only the given variables. */
function run (env: Record<string, string>, ...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  const cwd = mkdtempSync(`${tmpdir()}/medstream-token-`)
  return new Promise((resolve) => {
    execFile(process.execPath, [`${ROOT}scripts/viewer-token.ts`, ...args], { cwd, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 15_000 }, (err, stdout, stderr) => {
      rmSync(cwd, { recursive: true, force: true })
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr })
    })
  })
}

const SERVICE = { PUBLIC_URL: 'https://calls.example.org', FORWARD_TO: '+15550002222', ASSEMBLYAI_API_KEY: 'key' }

test('viewer-token prints only a token the service accepts when given only TWILIO_AUTH_TOKEN', async () => {
  const { code, stdout, stderr } = await run({ TWILIO_AUTH_TOKEN: 'auth-token-0123456789' }, 'CA0123456789abcdef0123456789abcdef', '--ttl', '120')
  assert.equal(code, 0, stderr)
  assert.match(stdout, /^lv1\.CA0123456789abcdef0123456789abcdef\.\d+\.[A-Za-z0-9_-]{43}\n$/)
  const key = loadConfig({ ...SERVICE, TWILIO_AUTH_TOKEN: 'auth-token-0123456789' }).liveViewKey
  const check = verifyViewerToken(key, stdout.trim(), Date.now())
  assert.ok(check.ok)
  assert.ok(Math.abs(check.grant.expiry - (Date.now() / 1000 + 120)) < 5)
})

test('viewer-token mints a supervisor token with LIVE_VIEW_SECRET and a one-hour default lifetime', async () => {
  const secret = 'x'.repeat(48)
  const { code, stdout } = await run({ LIVE_VIEW_SECRET: secret }, '*')
  assert.equal(code, 0)
  const check = verifyViewerToken(Buffer.from(secret), stdout.trim(), Date.now())
  assert.ok(check.ok)
  assert.equal(check.grant.scope, '*')
  assert.ok(Math.abs(check.grant.expiry - (Date.now() / 1000 + 3600)) < 5)
})

test('viewer-token exits 2 with a message and no token when the secret or the arguments are missing', async () => {
  const none = await run({}, '*')
  assert.equal(none.code, 2)
  assert.equal(none.stdout, '')
  assert.match(none.stderr, /LIVE_VIEW_SECRET/)
  for (const args of [[], ['*', '--ttl', '0'], ['*', 'extra'], ['CA.1']]) {
    const bad = await run({ TWILIO_AUTH_TOKEN: 'auth-token-0123456789' }, ...args)
    assert.equal(bad.code, 2, args.join(' '))
    assert.equal(bad.stdout, '')
  }
})
