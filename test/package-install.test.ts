/**
 * weft as a user installs it (issue 14): `npm pack` of this build, installed into an empty
 * project, where `npx weft serve` serves a stock y-websocket client and the three exports
 * (`weft-server`, `weft-server/client`, `weft-server/protocol`) import and work. The tarball
 * holds the build and its documents, never the tests or benchmarks.
 *
 * Dependencies come from npm's cache first (`--prefer-offline`): after `npm ci` every one of
 * them is there, so the install does not wait on the registry.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { converged, destroy, provider, synced } from './harness/clients.js'
import { tempDir } from './harness/server.js'
import { eventually, until, withDeadline } from './harness/wait.js'

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir)
  return dir
}

const ROOT = repoRoot()
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const KEPT_NPM_CONFIG = /^npm_config_(registry|cache|userconfig|globalconfig|proxy|https_proxy|noproxy|strict_ssl|cafile|ca)$/i

interface Run {
  status: number | null
  stdout: string
  stderr: string
}

function run(command: string, args: string[], cwd: string, timeoutMs: number): Promise<Run> {
  // The npm_* variables of an enclosing `npm test` describe the weft project (its prefix, its
  // package), not the consumer; only where packages come from is kept.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_') || KEPT_NPM_CONFIG.test(key)))
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve))
  return withDeadline(closed, `${command} ${args.join(' ')}`, timeoutMs)
    .then((status) => ({ status, stdout, stderr }))
    .finally(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    })
}

describe('the npm package', () => {
  const dirs: Array<{ remove(): Promise<void> }> = []
  let project = ''
  let tarball = ''
  let packed: string[] = []

  before(async () => {
    const out = await tempDir('weft-pack-')
    dirs.push(out)
    // --ignore-scripts: pack this build as it is (prepare would rebuild dist/ under the running tests).
    const pack = await run(NPM, ['pack', '--json', '--ignore-scripts', '--pack-destination', out.path], ROOT, 60_000)
    assert.equal(pack.status, 0, pack.stderr)
    const [info] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
    assert.ok(info !== undefined)
    tarball = join(out.path, info.filename)
    packed = info.files.map((file) => file.path)

    const consumer = await tempDir('weft-consumer-')
    dirs.push(consumer)
    project = consumer.path
    await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }))
    const install = await run(NPM, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], project, 180_000)
    assert.equal(install.status, 0, install.stderr)
  })

  after(async () => {
    await Promise.all(dirs.map((dir) => dir.remove()))
  })

  it('is weft-server with a LICENSE, the build and no tests, benchmarks or their source maps', () => {
    assert.match(tarball, /weft-server-\d+\.\d+\.\d+\.tgz$/)
    for (const file of ['LICENSE', 'README.md', 'package.json', 'dist/server/cli.js', 'dist/server/index.js', 'dist/server/index.d.ts', 'dist/client/index.js', 'dist/protocol/index.js', 'dist/build-info.json', 'docs/openapi.yaml']) {
      assert.ok(packed.includes(file), `${file} is in the tarball`)
    }
    const unwanted = packed.filter((file) => /(^|\/)(test|bench|fuzz-corpus)\//.test(file) || /\.test\.(js|d\.ts|js\.map)$/.test(file) || /^(server|client|protocol|cluster|persistence)\//.test(file))
    assert.deepEqual(unwanted, [])
    assert.match(readFileSync(join(ROOT, 'LICENSE'), 'utf8'), /^MIT License/)
  })

  it('npx weft serve in the consumer project serves a stock y-websocket client', async () => {
    const data = join(project, 'data')
    // Its own process group, so that a failed test can kill weft and npx together.
    const child: ChildProcess = spawn('npx', ['--no-install', 'weft', 'serve', '--host', '127.0.0.1', '--port', '0', '--data', data], {
      cwd: project,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')))
    let stdout = ''
    let stderr = ''
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    try {
      await until(() => /"msg":"listening"/.test(stdout), `npx weft serve to listen (stderr: ${stderr})`, 30_000)
      const listening = stdout
        .split('\n')
        .filter((line) => line.includes('"msg":"listening"'))
        .map((line) => JSON.parse(line) as { port: number })[0] as { port: number }
      const url = `ws://127.0.0.1:${listening.port}`
      const a = provider(url, 'packaged')
      const b = provider(url, 'packaged')
      try {
        await Promise.all([synced(a), synced(b)])
        a.doc.getText('t').insert(0, 'from the tarball')
        await converged([a.doc, b.doc])
        assert.equal(b.doc.getText('t').toString(), 'from the tarball')
      } finally {
        destroy(a, b)
      }
      const page = await fetch(`http://127.0.0.1:${listening.port}/`)
      assert.match(await page.text(), /weft/)
      // npx and weft both get the signal; weft drains and exits, and then its data directory opens
      // for the offline commands (LevelDB admits one process), which show the stored edit.
      process.kill(-(child.pid as number), 'SIGTERM')
      await withDeadline(exited, 'npx weft serve to exit', 15_000)
      let exported: Run | null = null
      await eventually(async () => {
        exported = await run('npx', ['--no-install', 'weft', 'export', 'packaged', '--data', data], project, 15_000)
        return exported.status === 0
      }, 'weft export on the stopped server\'s data directory', 20_000, 200)
      assert.deepEqual(JSON.parse((exported as Run | null)?.stdout ?? ''), { t: 'from the tarball' })
    } finally {
      try {
        process.kill(-(child.pid as number), 'SIGKILL')
      } catch {
        // the group is gone already
      }
    }
  })

  it("imports weft-server, weft-server/client and weft-server/protocol in the consumer project", async () => {
    // yjs and ws are weft-server's own dependencies, so a consumer has them too.
    await writeFile(
      join(project, 'check.mjs'),
      `import { createServer } from 'weft-server'
import { WeftProvider } from 'weft-server/client'
import { validateUpdate } from 'weft-server/protocol'
import * as Y from 'yjs'
import WebSocket from 'ws'

const weft = createServer({ host: '127.0.0.1', port: 0, data: 'memory', logLevel: 'silent' })
const { port } = await weft.listen()
const doc = new Y.Doc()
const client = new WeftProvider('ws://127.0.0.1:' + port, 'consumer', doc, { WebSocket })
await client.whenSynced(10000)
doc.getText('t').insert(0, 'hello')
validateUpdate(Y.encodeStateAsUpdate(doc))
let stored = null
for (let i = 0; i < 200 && stored === null; i++) {
  const res = await fetch('http://127.0.0.1:' + port + '/api/rooms/consumer')
  if (res.status === 200) stored = await res.json()
  else await new Promise((resolve) => setTimeout(resolve, 25))
}
client.destroy()
await weft.close()
console.log(JSON.stringify(stored))
`,
    )
    const result = await run(process.execPath, ['check.mjs'], project, 30_000)
    assert.equal(result.status, 0, result.stderr)
    assert.deepEqual(JSON.parse(result.stdout.trim()), { t: 'hello' })
  })
})
