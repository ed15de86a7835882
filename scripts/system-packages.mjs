#!/usr/bin/env node
// The programs the test suite starts beyond npm's packages: redis-server and nginx (the suite
// runs its own instances on free ports), promtool and chromium. `npm test` runs this first. When one is missing and
// this process may install packages (root, with apt-get), it installs them; otherwise it stops
// at once with one line naming the command to run, instead of a suite that fails part-way.
// .ci/run calls it too, so CI and a developer's machine take the same path.
//
// WEFT_TOOLS_PATH (a PATH-style list) replaces where the programs are looked for, and
// WEFT_POLICY_RC_D where the guard against daemon starts is written; the tests of this script use
// them to play a machine without nginx without touching the real one.
import { spawnSync } from 'node:child_process'
import { accessSync, constants, existsSync, rmSync, writeFileSync } from 'node:fs'
import { delimiter, join } from 'node:path'

/** Program the suite runs → Debian package that provides it. */
const NEEDED = [
  { program: 'redis-server', apt: 'redis-server', brew: 'redis' },
  { program: 'nginx', apt: 'nginx', brew: 'nginx' },
  { program: 'promtool', apt: 'prometheus', brew: 'prometheus' },
  // Browser tests drive Debian's chromium through playwright-core (test/harness/browser.ts).
  { program: 'chromium', apt: 'chromium', brew: '--cask chromium' },
]

// Debian puts nginx in /usr/sbin, which a non-login PATH may lack; the test harness looks there too.
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin']

function searchPath() {
  const override = process.env.WEFT_TOOLS_PATH
  if (override !== undefined) return override.split(delimiter).filter((dir) => dir !== '')
  return [...(process.env.PATH ?? '').split(delimiter).filter((dir) => dir !== ''), ...SBIN]
}

function find(program) {
  for (const dir of searchPath()) {
    const candidate = join(dir, program)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return null
}

function missing() {
  return NEEDED.filter(({ program }) => find(program) === null)
}

function stop(line) {
  process.stderr.write(`${line}\n`)
  process.exit(1)
}

function run(command, args, env = process.env) {
  const result = spawnSync(command, args, { stdio: ['ignore', 'inherit', 'inherit'], env })
  if (result.error) stop(`system-packages: could not run ${command}: ${result.error.message}`)
  if (result.status !== 0) stop(`system-packages: \`${command} ${args.join(' ')}\` failed with status ${result.status ?? result.signal}`)
}

/** Installs with apt-get, keeping the packages' post-install scripts from starting system-wide daemons (nginx on port 80). */
function aptInstall(aptGet, packages) {
  // Only when the machine has no policy of its own; removed again whatever happens.
  const policy = process.env.WEFT_POLICY_RC_D ?? '/usr/sbin/policy-rc.d'
  const madePolicy = !existsSync(policy)
  if (madePolicy) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 })
  try {
    run(aptGet, ['update'])
    run(aptGet, ['install', '-y', '--no-install-recommends', ...packages], { ...process.env, DEBIAN_FRONTEND: 'noninteractive' })
  } finally {
    if (madePolicy) rmSync(policy, { force: true })
  }
}

const absent = missing()
if (absent.length === 0) process.exit(0)

const names = absent.map(({ program }) => program).join(' and ')
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
const aptGet = find('apt-get')
if (isRoot && aptGet !== null) {
  console.log(`system-packages: installing ${absent.map(({ apt }) => apt).join(' ')}`)
  aptInstall(aptGet, absent.map(({ apt }) => apt))
  const still = missing()
  if (still.length > 0) stop(`system-packages: ${still.map(({ program }) => program).join(' and ')} still not found after apt-get install`)
  process.exit(0)
}
if (process.platform === 'darwin') {
  stop(`npm test needs ${names}: run \`brew install ${absent.map(({ brew }) => brew).join(' ')}\`, then npm test again`)
}
const packages = absent.map(({ apt }) => apt).join(' ')
const sudo = isRoot ? '' : 'sudo '
const command = `${sudo}apt-get update && ${sudo}apt-get install -y ${packages}`
if (aptGet === null) stop(`npm test needs ${names}: install them with the system's package manager (on Debian or Ubuntu: \`${command}\`), then npm test again`)
stop(`npm test needs ${names}: run \`${command}\`, then npm test again`)
