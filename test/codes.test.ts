/**
 * The README's tables against the code: close codes and HTTP errors against server/codes.ts,
 * the settings table against SETTINGS and DEFAULTS in server/config.ts. Each side must list
 * exactly what the other does.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CloseCode, HttpError } from '../server/codes.js'
import { DEFAULTS, SETTINGS } from '../server/config.js'

/** The repository root: the nearest folder above this file with a package.json (tests run from dist/test). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) throw new Error('no package.json above the test file')
    dir = parent
  }
  return dir
}

const readme = readFileSync(join(repoRoot(), 'README.md'), 'utf8')

/** Splits a Markdown table row into trimmed cells; `\|` inside a cell is not a separator. */
function cells(row: string): string[] {
  return row
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((cell) => cell.trim().replace(/\\\|/g, '|'))
}

/** The first table under the `## heading` section: header cells and body rows. */
function table(heading: string): { header: string[]; rows: string[][] } {
  const lines = readme.split('\n')
  const start = lines.findIndex((line) => line.trim() === `## ${heading}`)
  assert.notEqual(start, -1, `README has a "## ${heading}" section`)
  let i = start + 1
  while (i < lines.length && !(lines[i] as string).trim().startsWith('|')) {
    assert.ok(!(lines[i] as string).startsWith('## '), `"## ${heading}" has a table`)
    i++
  }
  const block: string[] = []
  while (i < lines.length && (lines[i] as string).trim().startsWith('|')) block.push(lines[i++] as string)
  assert.ok(block.length >= 2 && /^\|?\s*:?-+/.test((block[1] as string).trim()), `"## ${heading}" table has a header row`)
  return { header: cells(block[0] as string), rows: block.slice(2).map(cells) }
}

/** The text of a cell without Markdown code quotes. */
const plain = (cell: string): string => cell.replace(/`/g, '').trim()

const sorted = (values: Iterable<number | string>): string[] => [...values].map(String).sort()

test('README close-code table lists exactly the codes in server/codes.ts', () => {
  const { header, rows } = table('Close codes')
  assert.deepEqual(header.slice(0, 3).map((h) => h.toLowerCase()), ['code', 'when', 'what the client should do'])
  const documented: number[] = []
  for (const row of rows) {
    // A row may document several codes at once: "1002 / 1007".
    const codes = plain(row[0] ?? '').match(/\b\d{4}\b/g)
    assert.ok(codes, `close-code row "${row.join(' | ')}" starts with a code`)
    for (const code of codes) documented.push(Number(code))
    assert.ok((row[1] ?? '') !== '' && (row[2] ?? '') !== '', `row ${row[0]} says when and what to do`)
  }
  assert.equal(new Set(documented).size, documented.length, 'no code is documented twice')
  assert.deepEqual(sorted(documented), sorted(Object.values(CloseCode)))
})

test('README HTTP error table lists exactly HttpError, with its statuses', () => {
  const { header, rows } = table('HTTP errors')
  assert.deepEqual(header.slice(0, 2).map((h) => h.toLowerCase()), ['error code', 'status'])
  const documented = new Map<string, number>()
  for (const row of rows) {
    const code = plain(row[0] ?? '')
    assert.ok(!documented.has(code), `${code} is documented once`)
    documented.set(code, Number(plain(row[1] ?? '')))
  }
  assert.deepEqual(Object.fromEntries([...documented].sort()), Object.fromEntries(Object.entries(HttpError).sort()))
})

/** How the README writes a default: the value in code quotes, or a parenthesised word for "not set". */
function expectedDefault(value: unknown): RegExp {
  if (value === null || (Array.isArray(value) && value.length === 0)) return /^\([^)]+\)$/
  // An on/off setting (kind 'switch') is written as the CLI takes it.
  const text = typeof value === 'boolean' ? (value ? 'on' : 'off') : Array.isArray(value) ? value.join(',') : String(value)
  return new RegExp(`^\`${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\`$`)
}

test('README settings table lists every flag and env of SETTINGS with its DEFAULTS value', () => {
  const { header, rows } = table('Settings')
  assert.deepEqual(header.map((h) => h.toLowerCase()), ['flag', 'env', 'default', 'meaning', 'status'])
  for (const spec of SETTINGS) {
    const row = rows.find((r) => plain(r[0] ?? '').split(/[\s,]+/).includes(spec.flag))
    assert.ok(row, `${spec.flag} has a row`)
    assert.ok(plain(row[1] ?? '').split(/[\s,]+/).includes(spec.env), `${spec.flag} row names ${spec.env}`)
    const value = DEFAULTS[spec.key]
    assert.match(row[2] ?? '', expectedDefault(value), `${spec.flag} default is ${JSON.stringify(value)}`)
    assert.notEqual(row[3] ?? '', '', `${spec.flag} has a meaning`)
    assert.match(row[4] ?? '', /^(active|not yet active)$/, `${spec.flag} status is "active" or "not yet active"`)
  }
  for (const row of rows) {
    const flags = plain(row[0] ?? '').split(/[\s,]+/).filter((f) => f !== '')
    for (const flag of flags) assert.ok(SETTINGS.some((s) => s.flag === flag), `documented flag ${flag} is in SETTINGS`)
  }
})

test('README mentions every option that has no flag', () => {
  const withFlag = new Set<string>(SETTINGS.map((s) => s.key))
  for (const key of Object.keys(DEFAULTS)) {
    if (!withFlag.has(key)) assert.ok(readme.includes(`\`${key}\``), `README mentions the embedding-only option ${key}`)
  }
})

test('README opens with the two commands, start before test', () => {
  const firstBlock = /```[a-z]*\n([\s\S]*?)```/.exec(readme)
  assert.ok(firstBlock, 'README has a code block')
  const commands = (firstBlock[1] as string).split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter((l) => l !== '')
  assert.deepEqual(commands, ['npm ci && npm start', 'npm test'])
  assert.ok(readme.indexOf('```') < readme.indexOf('\n## '), 'the commands come before the first section')
})
