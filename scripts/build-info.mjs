#!/usr/bin/env node
// Writes dist/build-info.json, which `weft version` prints: { version, commit, buildTime }.
// The Docker build has no .git, so the Dockerfile passes WEFT_BUILD_COMMIT / WEFT_BUILD_TIME
// as build arguments; an empty value counts as unset.
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

function gitCommit() {
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
    const commit = out.trim()
    return /^[0-9a-f]{40,64}$/.test(commit) ? commit : 'unknown'
  } catch {
    // Not a git work tree, no commit yet, or git not installed.
    return 'unknown'
  }
}

function buildTime(override) {
  if (!override) return new Date().toISOString()
  const parsed = new Date(override)
  if (Number.isNaN(parsed.getTime())) {
    console.error(`build-info: WEFT_BUILD_TIME "${override}" is not a date`)
    process.exit(1)
  }
  return parsed.toISOString()
}

const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const info = {
  version,
  commit: process.env.WEFT_BUILD_COMMIT || gitCommit(),
  buildTime: buildTime(process.env.WEFT_BUILD_TIME),
}

mkdirSync(join(root, 'dist'), { recursive: true })
writeFileSync(join(root, 'dist', 'build-info.json'), JSON.stringify(info, null, 2) + '\n')
console.log(`build-info: ${info.version} ${info.commit} ${info.buildTime}`)
