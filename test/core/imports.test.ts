import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'

const CORE = new URL('../../src/core/', import.meta.url).pathname
/** The app's tools: core takes a CoreLogger and plain options instead, so it runs without them. */
const FORBIDDEN = /^(?:fastify|@fastify\/.+|fastify-plugin|pino|pino-.+)$/

function sourceFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith('.ts') ? [path] : []
  })
}

/** Every module specifier of a file: static imports and re-exports, type-only ones included, and dynamic imports. */
function specifiers (source: string): string[] {
  const found: string[] = []
  for (const match of source.matchAll(/\b(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]/g)) found.push(match[1] as string)
  for (const match of source.matchAll(/\bimport\s*(?:\(\s*)?['"]([^'"]+)['"]/g)) found.push(match[1] as string)
  return found
}

test('specifiers finds static, type-only, side-effect and dynamic imports when a file has each', () => {
  const source = "import a from 'pino'\nimport type { B } from \"fastify\"\nimport 'fastify-plugin'\nexport { c } from '@fastify/websocket'\nconst d = await import('pino-pretty')\n"
  assert.deepEqual(specifiers(source).sort(), ['@fastify/websocket', 'fastify', 'fastify-plugin', 'pino', 'pino-pretty'])
  assert.ok(specifiers(source).every((name) => FORBIDDEN.test(name)))
})

test('src/core imports neither fastify nor pino when scanned file by file', () => {
  const files = sourceFiles(CORE)
  assert.ok(files.length > 20, 'the scan sees the core sources')
  const offenders = files.flatMap((file) => specifiers(readFileSync(file, 'utf8'))
    .filter((name) => FORBIDDEN.test(name))
    .map((name) => `${relative(CORE, file)} imports ${name}`))
  assert.deepEqual(offenders, [])
})
