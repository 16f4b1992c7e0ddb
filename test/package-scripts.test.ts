import assert from 'node:assert/strict'
import { globSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

// The test scripts are named for what they run: each test file belongs to exactly one of them, and
// `npm test` (the one gate, also CI's) runs every file.

const ROOT = new URL('../', import.meta.url).pathname
const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts
const NAMED = ['test:unit', 'test:e2e', 'test:deploy', 'test:observability'] as const

/** The quoted glob patterns a `node --test …` script passes. */
function patternsOf (script: string): string[] {
  const command = scripts[script]
  assert.ok(command !== undefined, `package.json has a ${script} script`)
  assert.match(command, /^node --test --test-concurrency=2 /, `${script} runs node --test two files at a time`)
  // A test or hook that hangs fails at the timeout, and a handle a failed test leaves open (a timer,
  // a socket) cannot keep its file running until CI's own limit: the file exits once its tests end.
  assert.match(command, / --test-timeout=\d+ /, `${script} bounds every test and hook`)
  assert.match(command, / --test-force-exit /, `${script} ends each file when its tests end`)
  return [...command.matchAll(/"([^"]+)"/g)].map((match) => match[1] as string)
}

function filesOf (script: string): string[] {
  return patternsOf(script).flatMap((pattern) => globSync(pattern, { cwd: ROOT })).sort()
}

const allFiles = globSync('test/**/*.test.ts', { cwd: ROOT }).sort()

test('every test file is run by exactly one named test script when the suite is split', () => {
  const owners = new Map<string, string[]>()
  for (const script of NAMED) {
    for (const file of filesOf(script)) owners.set(file, [...(owners.get(file) ?? []), script])
  }
  for (const file of allFiles) assert.equal(owners.get(file)?.length, 1, `${file} is run by ${owners.get(file)?.join(' and ') ?? 'no named script'}`)
})

test('test:unit runs no end-to-end, deploy or observability test when it is run alone', () => {
  const unit = filesOf('test:unit')
  assert.ok(unit.includes('test/config.test.ts') && unit.some((file) => file.startsWith('test/core/')) && unit.some((file) => file.startsWith('test/fakes/')))
  assert.deepEqual(unit.filter((file) => /^test\/(e2e|deploy|observability)\//.test(file)), [])
})

test('npm test runs lint, type-check and every test file when it is the gate', () => {
  assert.equal(scripts.test, 'npm run lint && npm run typecheck && npm run test:all')
  assert.deepEqual(filesOf('test:all'), allFiles)
})
