/**
 * Every JavaScript snippet of the README runs as written (issue 14): each ```js block is saved as
 * a module inside the repository (so `weft-server`, `y-websocket` and the Hocuspocus provider
 * resolve as they would in a user's project) and run by Node against a live `weft serve` with an
 * auth secret, holding a token that `weft token` printed, as the README shows.
 *
 * Only two things are changed in the text: `localhost:1234` becomes the live server's address and
 * `listen(8080)` becomes `listen(0)`, so the run needs no fixed port. After the snippet, a check
 * takes what it defined: a `provider` must sync and its edit must reach the server; a `weft` that
 * drained must be stopped; a `server` must answer and stop on SIGTERM.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { runCli, spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { withDeadline } from './harness/wait.js'

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir)
  return dir
}

const ROOT = repoRoot()
const SECRET = 'readme-snippets-secret-0123456789abcdef'

/** The README's fenced code blocks, in order, with their language. */
function fences(markdown: string): Array<{ lang: string; code: string; line: number }> {
  const blocks: Array<{ lang: string; code: string; line: number }> = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i] as string)
    if (open === null) continue
    const start = i
    const body: string[] = []
    for (i++; i < lines.length && !(lines[i] as string).startsWith('```'); i++) body.push(lines[i] as string)
    blocks.push({ lang: open[1] as string, code: body.join('\n'), line: start + 1 })
  }
  return blocks
}

/** Run after each snippet, in the same module, with the variables it defined. */
const CHECK = `
const deadline = (ms, what) => { const t = setTimeout(() => { console.error('snippet check: ' + what + ' took longer than ' + ms + ' ms'); process.exit(3) }, ms); t.unref(); return t }
const until = async (condition, what, ms = 10000) => {
  const timer = deadline(ms, what)
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20))
  clearTimeout(timer)
}

export async function check({ provider, socket, doc, weft, server }) {
  const http = process.env.SNIPPET_HTTP
  const headers = { authorization: 'Bearer ' + process.env.WEFT_TOKEN }
  if (provider !== undefined) {
    await until(() => provider.synced === true, 'the provider to sync')
    const marker = 'snippet-' + process.pid
    doc.getMap('readme').set(marker, true)
    await until(async () => {
      const res = await fetch(http + '/api/rooms/my-room', { headers })
      return res.status === 200 && (await res.json()).readme?.[marker] === true
    }, 'the edit to reach the server')
    provider.destroy()
    socket?.destroy()
    console.log('snippet ok: provider synced and its edit reached the server')
    process.exit(0)
  }
  if (server !== undefined) {
    await until(() => server.listening, 'the server to listen')
    const base = 'http://127.0.0.1:' + server.address().port
    // attach() serves at once, but readiness waits for storage to open (LevelDB in ./data).
    await until(async () => (await fetch(base + '/health/ready')).status === 200, '/health/ready to answer 200')
    process.kill(process.pid, 'SIGTERM')
    await until(() => weft.state === 'stopped' && !server.listening, 'the drain on SIGTERM')
    console.log('snippet ok: served, then drained on SIGTERM')
    process.exit(0)
  }
  if (weft !== undefined) {
    if (weft.state !== 'stopped') throw new Error('weft is ' + weft.state + ' after the snippet')
    console.log('snippet ok: weft ran and stopped')
    process.exit(0)
  }
  throw new Error('the snippet defines no provider, server or weft to check')
}
`

const EPILOGUE = `
;await (await import('./check.mjs')).check({
  provider: typeof provider === 'undefined' ? undefined : provider,
  socket: typeof socket === 'undefined' ? undefined : socket,
  doc: typeof doc === 'undefined' ? undefined : doc,
  weft: typeof weft === 'undefined' ? undefined : weft,
  server: typeof server === 'undefined' ? undefined : server,
})
`

describe('README snippets', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const blocks = fences(readme)
  const snippets = blocks.filter((block) => block.lang === 'js')
  // Inside the repository: package self-reference makes `weft-server` this build.
  const dir = join(ROOT, '.tmp', `readme-snippets-${process.pid}`)
  let weft: WeftProcess
  let data: { path: string; remove(): Promise<void> }
  let cwd: { path: string; remove(): Promise<void> }
  let token = ''

  before(async () => {
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'check.mjs'), CHECK)
    data = await tempDir('weft-readme-')
    cwd = await tempDir('weft-readme-cwd-')
    weft = await spawnWeft(['--data', data.path], { WEFT_AUTH_SECRET: SECRET })
    // As the README says: the secret from the environment, a write token for my-room.
    const printed = await runCli(['token', '--room', 'my-room', '--access', 'write', '--ttl', '1h'], { WEFT_AUTH_SECRET: SECRET })
    assert.equal(printed.status, 0, printed.stderr)
    token = printed.stdout.toString().trim()
  })

  after(async () => {
    weft.kill('SIGTERM')
    await withDeadline(weft.exited, 'weft to exit', 10_000)
    await Promise.all([data.remove(), cwd.remove(), rm(dir, { recursive: true, force: true })])
  })

  it('has JavaScript snippets for each client and for embedding, and no code block in a language the test skips', () => {
    assert.ok(snippets.length >= 5, `${snippets.length} js snippets`)
    const text = snippets.map((s) => s.code).join('\n')
    for (const needed of ["from 'y-websocket'", "from '@hocuspocus/provider'", "from 'weft-server/client'", "from 'weft-server'"]) assert.ok(text.includes(needed), needed)
    const others = blocks.filter((block) => !['js', 'sh', 'text'].includes(block.lang)).map((block) => `line ${block.line}: ${block.lang || '(none)'}`)
    assert.deepEqual(others, [], 'code blocks must be js (run here), sh or text')
    assert.ok(!/from 'weft'|'weft\/client'/.test(readme), 'the package is weft-server')
  })

  it('every JavaScript snippet runs as written against a live server', async () => {
    for (const [index, snippet] of snippets.entries()) {
      const code = snippet.code.replaceAll('localhost:1234', `127.0.0.1:${weft.port}`).replaceAll('listen(8080)', 'listen(0)')
      const file = join(dir, `snippet-${index}.mjs`)
      await writeFile(file, code + '\n' + EPILOGUE)
      const child = spawn(process.execPath, [file], {
        cwd: cwd.path,
        env: { ...process.env, WEFT_TOKEN: token, SNIPPET_HTTP: weft.http },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stdout = ''
      let stderr = ''
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
      const status = await withDeadline(
        new Promise<number | null>((resolve) => child.once('close', resolve)),
        `README snippet at line ${snippet.line}`,
        30_000,
      ).finally(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      })
      assert.equal(status, 0, `README snippet at line ${snippet.line} failed:\n${snippet.code}\n--- stderr:\n${stderr}`)
      assert.match(stdout, /snippet ok/, `README snippet at line ${snippet.line}`)
    }
  })
})
