#!/usr/bin/env node
// npm's `prepare`: runs after `npm ci`/`npm install` in this repository, before `npm pack`, and
// when someone installs weft-server from git (npm then installs the dev dependencies, runs this,
// and packs the result), so a git install gets a built dist/ like a registry install.
// The Docker build installs dependencies before it copies the sources; there is nothing to
// build yet, and the Dockerfile builds later itself.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

if (!existsSync(join(root, 'tsconfig.json')) || !existsSync(join(root, 'server'))) {
  console.log('prepare: no sources to build yet')
  process.exit(0)
}
const npm = process.env.npm_execpath
const result = npm
  ? spawnSync(process.execPath, [npm, 'run', 'build'], { cwd: root, stdio: 'inherit' })
  : spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' })
if (result.error) {
  console.error(`prepare: could not run the build: ${result.error.message}`)
  process.exit(1)
}
process.exit(result.status ?? 1)
