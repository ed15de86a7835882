#!/usr/bin/env node
// Runs every compiled test file, dist/test/**/*.test.js, one file at a time.
// Files run serially because the behaviour tests start real servers and redis-server
// processes; running them side by side makes timings, and so failures, depend on load.
// Arguments filter the files by substring of their path: `npm test -- persistence`.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const testDir = join(root, 'dist', 'test')

function findTests(dir) {
  const found = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) found.push(...findTests(path))
    else if (entry.isFile() && entry.name.endsWith('.test.js')) found.push(path)
  }
  return found
}

if (!existsSync(testDir)) {
  console.error(`run-tests: ${relative(root, testDir)} does not exist; run \`npm run build\` first`)
  process.exit(1)
}

const filters = process.argv.slice(2)
const all = findTests(testDir)
  .map((path) => relative(root, path).split(sep).join('/'))
  .sort()
const files = filters.length === 0 ? all : all.filter((file) => filters.some((f) => file.includes(f)))

if (files.length === 0) {
  const why = filters.length === 0 ? 'no test files' : `no test files match ${filters.map((f) => `"${f}"`).join(', ')}`
  console.error(`run-tests: ${why} under ${relative(root, testDir)} (looked for **/*.test.js)`)
  process.exit(1)
}

console.log(`run-tests: ${files.length} file(s)`)
const result = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-timeout=120000', ...files],
  { cwd: root, stdio: 'inherit' },
)
if (result.error) {
  console.error(`run-tests: could not start node: ${result.error.message}`)
  process.exit(1)
}
// A signal-killed runner has no status; count that as a failure.
process.exit(result.status ?? 1)
