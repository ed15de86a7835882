/**
 * .ci/run (what CI here runs) and .github/workflows/ci.yml (its mirror) must run the same
 * npm commands, and both must install, test and audit.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

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

const root = repoRoot()
const read = (name: string): string => readFileSync(join(root, name), 'utf8')

/**
 * The npm command lines in shell text: `npm` followed by its arguments up to the end of the
 * command (a shell operator, redirection, quote or closing paren). Comments and echoed text
 * are skipped, and `npm --version` style queries do not count as steps.
 */
function npmCommands(shell: string): Set<string> {
  const commands = new Set<string>()
  for (const raw of shell.split('\n')) {
    const line = raw.replace(/(^|\s)#.*$/, '').trim()
    if (line === '' || /^(echo|printf)\b/.test(line)) continue
    for (const match of line.matchAll(/(?:^|[\s;&|(!])npm\s+([^;&|()<>"'`$\n]*)/g)) {
      // The capture stops at `>`, so a descriptor number before it (`2>&1`) is cut off here.
      const args = (match[1] as string).replace(/\s\d+$/, '').trim().replace(/\s+/g, ' ')
      if (args === '' || args.startsWith('-')) continue
      commands.add(`npm ${args}`)
    }
  }
  return commands
}

/** The shell text of every `run:` step of a GitHub workflow, single-line or block (`|`, `>`). */
function workflowRunScripts(yaml: string): string[] {
  const scripts: string[] = []
  const lines = yaml.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const match = /^(\s*)(?:- )?run:\s*(.*)$/.exec(lines[i] as string)
    if (match === null) continue
    const value = (match[2] as string).trim()
    if (!/^[|>][-+]?$/.test(value)) {
      scripts.push(value)
      continue
    }
    const keyIndent = (lines[i] as string).indexOf('run:')
    const block: string[] = []
    for (i++; i < lines.length; i++) {
      const line = lines[i] as string
      if (line.trim() !== '' && line.length - line.trimStart().length <= keyIndent) {
        i--
        break
      }
      block.push(line)
    }
    scripts.push(block.join('\n'))
  }
  return scripts
}

const ciRun = npmCommands(read('.ci/run'))
const workflow = npmCommands(workflowRunScripts(read('.github/workflows/ci.yml')).join('\n'))

test('.ci/run is a bash script that stops at the first error', () => {
  const text = read('.ci/run')
  assert.match(text, /^#!\/usr\/bin\/env bash\n|^#!\/bin\/bash\n/)
  assert.match(text, /^set -euo pipefail$/m)
})

test('.ci/run installs, tests and audits', () => {
  for (const step of ['npm ci', 'npm test', 'npm audit --audit-level=high']) {
    assert.ok(ciRun.has(step), `.ci/run runs \`${step}\` (found: ${[...ciRun].join(', ')})`)
  }
})

test('ci.yml installs, tests and audits', () => {
  for (const step of ['npm ci', 'npm test', 'npm audit --audit-level=high']) {
    assert.ok(workflow.has(step), `ci.yml runs \`${step}\` (found: ${[...workflow].join(', ')})`)
  }
})

test('.ci/run and ci.yml run the same npm commands', () => {
  assert.deepEqual([...workflow].sort(), [...ciRun].sort())
})

test('both install redis-server and nginx and run on Node 20', () => {
  const shell = read('.ci/run')
  const yaml = read('.github/workflows/ci.yml')
  for (const pkg of ['redis-server', 'nginx']) {
    assert.match(shell, new RegExp(`\\b${pkg}\\b`), `.ci/run installs ${pkg}`)
    assert.match(yaml, new RegExp(`apt-get install[^\\n]*\\b${pkg}\\b`), `ci.yml installs ${pkg}`)
  }
  assert.match(shell, /-lt 20\b/, '.ci/run checks for Node.js 20 or later')
  assert.match(yaml, /node-version:\s*['"]?20\b/, 'ci.yml sets up Node.js 20')
})

test('the npm command parser reads what a shell would run', () => {
  assert.deepEqual(
    [...npmCommands('# npm nope\necho "npm ci"\nnpm ci\nif npm audit --audit-level=high 2>&1 | tee x; then\nnode $(npm --version)\n  npm run build && npm test # done\n')].sort(),
    ['npm audit --audit-level=high', 'npm ci', 'npm run build', 'npm test'],
  )
  assert.deepEqual(workflowRunScripts('    steps:\n      - run: npm ci\n      - name: x\n        run: |\n          npm test\n          npm audit\n      - run: echo\n'), [
    'npm ci',
    '          npm test\n          npm audit',
    'echo',
  ])
})

test("ci.yml installs every Debian package scripts/system-packages.mjs needs (the GitHub runner is no root: the script would only refuse)", () => {
  const needed = [...read('scripts/system-packages.mjs').matchAll(/\{ program: '[^']+', apt: '([^']+)'/g)].map((m) => m[1] as string)
  assert.ok(needed.includes('redis-server'), 'the NEEDED table was read')
  const install = /apt-get install[^\n]*/.exec(read('.github/workflows/ci.yml'))?.[0] ?? ''
  for (const pkg of needed) assert.match(install, new RegExp(`\\s${pkg}(\\s|$)`), `ci.yml installs ${pkg}`)
})
