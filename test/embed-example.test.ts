/**
 * examples/embed.mjs, the README's embedding example, runs here as written (only `listen(8080)`
 * becomes `listen(0)`, as readme-snippets does): an application logs a user in with its own
 * cookie, a stock y-websocket client connects with that cookie, the change hook logs the edit and
 * the edit is in the application's own store. It also type-checks against weft-server's types.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it } from 'node:test'
import { destroy, provider, synced } from './harness/clients.js'
import { httpRequest, upgradeStatus } from './harness/http.js'
import { eventually, until, withDeadline } from './harness/wait.js'

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir)
  return dir
}

const ROOT = repoRoot()
const EXAMPLE = join(ROOT, 'examples', 'embed.mjs')

describe('the embedding example (examples/embed.mjs)', () => {
  it('is the README\'s example, word for word', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const example = readFileSync(EXAMPLE, 'utf8')
    assert.ok(readme.includes('```js\n' + example.trimEnd() + '\n```'), 'README.md shows examples/embed.mjs in a js block')
  })

  it('authenticates by its cookie, logs the change, and keeps the edit in its own store', async () => {
    // Inside the repository, so `weft-server` resolves to this build (package self-reference).
    const dir = join(ROOT, '.tmp', `embed-example-${process.pid}`)
    await mkdir(dir, { recursive: true })
    const file = join(dir, 'embed.mjs')
    await writeFile(file, readFileSync(EXAMPLE, 'utf8').replaceAll('listen(8080)', 'listen(0)'))
    const child = spawn(process.execPath, [file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    const lines: Array<Record<string, unknown>> = []
    let stderr = ''
    let rest = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (rest + chunk).split('\n')
      rest = parts.pop() as string
      for (const line of parts) if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>)
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    let client: ReturnType<typeof provider> | null = null
    try {
      await until(() => lines.some((line) => line.msg === 'app listening') || child.exitCode !== null, 'the app to listen')
      const listening = lines.find((line) => line.msg === 'app listening')
      assert.ok(listening !== undefined, stderr)
      const { port } = listening.address as { port: number }
      const url = `ws://127.0.0.1:${port}`

      assert.equal(await upgradeStatus(`${url}/notes`), 401, 'no cookie, no document')
      const login = await httpRequest(port, '/login?user=alice')
      assert.equal(login.status, 204)
      const cookie = String(login.headers['set-cookie']?.[0]).split(';')[0] as string
      assert.match(cookie, /^session=/)

      client = provider(url, 'notes', undefined, { headers: { cookie } })
      await synced(client)
      client.doc.getText('text').insert(0, 'written through the app')
      await until(() => lines.some((line) => line.msg === 'document changed'), 'the change hook to log')
      const logged = lines.find((line) => line.msg === 'document changed')
      assert.deepEqual({ ...logged, bytes: typeof logged?.bytes }, { msg: 'document changed', room: 'notes', origin: 'client', subject: 'alice', bytes: 'number' })

      // The application reads the document from its own store, not from weft.
      await eventually(async () => {
        const answer = await httpRequest(port, '/documents/notes', { headers: { cookie } })
        return answer.status === 200 && (JSON.parse(answer.body) as { text?: string }).text === 'written through the app'
      }, 'the edit to be in the application\'s store')
    } finally {
      if (client !== null) destroy(client)
      child.kill('SIGTERM')
      const code = await withDeadline(exited, 'the example to stop on SIGTERM', 15_000)
      await rm(dir, { recursive: true, force: true })
      assert.equal(code, 0, stderr)
    }
  })

  it('type-checks against weft-server\'s published types', async () => {
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
    const args = ['--noEmit', '--allowJs', '--checkJs', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--skipLibCheck', EXAMPLE]
    const child = spawn(process.execPath, [tsc, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
    const code = await withDeadline(new Promise<number | null>((resolve) => child.once('exit', resolve)), 'tsc on the example', 120_000)
    assert.equal(code, 0, output)
  })
})
