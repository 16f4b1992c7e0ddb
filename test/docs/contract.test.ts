import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { test } from 'node:test'

const ROOT = new URL('../../', import.meta.url).pathname
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8')

/**
 * Metrics that docs/interface.md lists but that another change adds to the code; once the code
 * declares one it is held to the table like every other.
 */
const NOT_YET_DECLARED = new Set(['medstream_upgrade_signatures_total'])

/** Every file under `dir` (relative to the repository), skipping node_modules and dot-directories. */
function filesUnder (dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(ROOT, join(entry.parentPath, entry.name)))
    .filter((path) => !path.split('/').some((part) => part === 'node_modules' || part.startsWith('.')))
}

/** The rows of the first Markdown table after `heading`: each row's cells, header and rule excluded. */
function tableAfter (markdown: string, heading: string): string[][] {
  const start = markdown.indexOf(`\n${heading}\n`)
  assert.ok(start >= 0, `heading ${heading}`)
  const lines = markdown.slice(start).split('\n')
  const first = lines.findIndex((line) => line.startsWith('|'))
  const rows: string[][] = []
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith('|')) break
    rows.push(line.slice(1, -1).split(' | ').map((cell) => cell.trim()))
  }
  return rows
}

/** Backticked names in a table cell: "`PORT` / `HOST`" → PORT, HOST. */
function names (cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((match) => match[1] as string)
}

test('docs/interface.md lists exactly the environment variables that src/config.ts reads', () => {
  const config = read('src/config.ts')
  // Every variable is read through one of the helpers by its literal name.
  const read_ = new Set([...config.matchAll(/\b(?:read|required|integer|boolean|url)\(env, '([A-Z_]+)'/g)].map((match) => match[1] as string))
  assert.ok(read_.has('PUBLIC_URL') && read_.has('DATA_DIR'), 'the names are found in config.ts')
  const documented = new Set(tableAfter(read('docs/interface.md'), '## Environment').flatMap((row) => names(row[0] ?? '')))
  assert.deepEqual([...documented].sort(), [...read_].sort())
})

test('.env.example documents every variable that docs/interface.md lists', () => {
  const example = read('.env.example')
  for (const row of tableAfter(read('docs/interface.md'), '## Environment')) {
    for (const name of names(row[0] ?? '')) assert.match(example, new RegExp(`^${name}=`, 'm'), `${name} in .env.example`)
  }
})

test('docs/interface.md lists exactly the metrics the code declares, with their types', () => {
  const declared = new Map<string, string>()
  for (const path of filesUnder('src').filter((file) => file.endsWith('.ts'))) {
    // HotHistogram (core/metrics.ts) is a histogram kept for the hot path, exposed as one.
    for (const match of read(path).matchAll(/new (Counter|Gauge|Histogram|HotHistogram)\(\{ name: '(medstream_\w+)'/g)) {
      declared.set(match[2] as string, (match[1] as string).replace('HotHistogram', 'Histogram').toLowerCase())
    }
  }
  assert.ok(declared.size > 10, 'the declarations are found')
  const documented = new Map(tableAfter(read('docs/interface.md'), '## Metrics').map((row) => [names(row[0] ?? '')[0] as string, row[1] ?? '']))
  for (const [name, type] of declared) assert.equal(documented.get(name), type, `${name} is in the table as a ${type}`)
  const missing = [...documented.keys()].filter((name) => !declared.has(name) && !NOT_YET_DECLARED.has(name))
  assert.deepEqual(missing, [], 'documented metrics that the code does not declare')
})

test('no document, script, test or configuration in the repository cites a file outside it', () => {
  // A section sign after an RFC number cites a public standard, not one of ours.
  const cited = /DESIGN\.md|STYLE\.md|shared\/|reference\/|(?<!RFC \d+ )§\d|\bthe issue\b/
  const files = [
    'README.md', 'CHANGELOG.md', '.env.example', 'docker-compose.yml', 'Dockerfile',
    ...['src', 'docs', 'observability', 'scripts', 'test', 'bench', 'k8s'].flatMap(filesUnder)
  ].filter((path) => path !== 'test/docs/contract.test.ts')
  const offenders = files.filter((path) => cited.test(read(path)))
  assert.deepEqual(offenders, [])
})
