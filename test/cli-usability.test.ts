/**
 * The CLI as a new user meets it (issue 14): help and version, settings that cannot work refused
 * at start, offline commands that refuse a directory that is not a weft data directory, start-up
 * failures on stderr, `weft token`, and `weft export` into a real pipe (issue 12 finding 9).
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer as createNetServer, type Server } from 'node:net'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { DocumentWriter, openStore } from '../persistence/index.js'
import { JwtAuthorizer } from '../server/access.js'
import { DEFAULTS, SETTINGS } from '../server/config.js'
import { canonicalUpdate } from './harness/clients.js'
import { CLI, runCli, tempDir } from './harness/server.js'
import { withDeadline } from './harness/wait.js'

const SECRET = 'cli-usability-secret-0123456789abcdef'

const dirs: Array<{ remove(): Promise<void> }> = []
after(async () => {
  await Promise.all(dirs.map((dir) => dir.remove()))
})

async function newDir(): Promise<string> {
  const dir = await tempDir('weft-cli-use-')
  dirs.push(dir)
  return dir.path
}

const weft = (args: string[], env: Record<string, string> = {}) => runCli(args, env, 15_000)

function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => line !== '')
  assert.equal(lines.length, 1, `expected one stderr line, got: ${stderr}`)
  return lines[0] as string
}

async function storeDocument(data: string, room: string, doc: Y.Doc): Promise<Uint8Array> {
  const update = Y.encodeStateAsUpdate(doc)
  const writer = new DocumentWriter(await openStore(data), { persistWindowMs: 0 })
  try {
    await writer.write(room, update)
  } finally {
    await writer.close()
  }
  return update
}

/** Runs `sh -c script` and returns its stdout, stderr and exit status. */
function shell(script: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const closed = new Promise<number | null>((resolve) => child.once('close', resolve))
  return withDeadline(closed, script, 30_000).then((status) => ({ status, stdout, stderr }))
}

describe('weft help and version', () => {
  it('weft --help lists every command and exits 0', async () => {
    const { status, stdout } = await weft(['--help'])
    assert.equal(status, 0)
    for (const command of ['serve', 'version', 'export', 'import', 'compact', 'token']) assert.match(stdout.toString(), new RegExp(`weft ${command}\\b`))
  })

  it('weft serve --help prints the settings table generated from SETTINGS and starts nothing', async () => {
    const { status, stdout } = await weft(['serve', '--help', '--port', '0'])
    assert.equal(status, 0)
    const text = stdout.toString()
    assert.ok(!text.includes('listening'))
    for (const spec of SETTINGS) {
      const row = text.split('\n').find((line) => line.startsWith(`${spec.flag} `))
      assert.ok(row !== undefined, `no row for ${spec.flag}`)
      assert.ok(row.includes(spec.env), `${spec.flag} row names ${spec.env}`)
      const value = DEFAULTS[spec.key]
      if (typeof value === 'number' || typeof value === 'string') assert.ok(row.includes(` ${value} `), `${spec.flag} row shows default ${value}: ${row}`)
    }
  })

  it('weft --version prints what weft version prints', async () => {
    const a = await weft(['--version'])
    const b = await weft(['version'])
    assert.equal(a.status, 0)
    assert.equal(a.stdout.toString(), b.stdout.toString())
    assert.match(a.stdout.toString(), /^weft \d+\.\d+\.\d+/)
  })
})

describe('settings that cannot work are refused at start', () => {
  const cases: Array<{ name: string; args: string[]; env?: Record<string, string>; setting: string; files?: Record<string, string> }> = [
    { name: 'an origin without a scheme', args: ['--allow-origin', '127.0.0.1:22010'], setting: '--allow-origin' },
    { name: 'an origin with a path', args: ['--allow-origin', 'https://app.example.com/'], setting: '--allow-origin' },
    { name: 'an origin in capitals', args: ['--allow-origin', 'https://App.example.com'], setting: '--allow-origin' },
    { name: 'an origin from the environment', args: [], env: { WEFT_ALLOW_ORIGIN: 'https://ok.example.com,example.com' }, setting: '--allow-origin' },
    { name: 'a short HS256 secret', args: ['--auth-secret', 'short'], setting: '--auth-secret' },
    { name: 'a metrics token with a trailing space', args: ['--metrics-token', 'abc '], setting: '--metrics-token' },
    { name: 'a Hocuspocus path with a query', args: ['--hocuspocus-path', '/collab?x=1'], setting: '--hocuspocus-path' },
    { name: 'a certificate that is not PEM', args: ['--tls-cert', 'FILE:cert.pem', '--tls-key', 'FILE:key.pem'], setting: '--tls-cert', files: { 'cert.pem': 'not a certificate', 'key.pem': 'not a key' } },
    { name: 'a key of another certificate', args: ['--tls-cert', 'FILE:a.crt', '--tls-key', 'FILE:b.key'], setting: '--tls-key', files: { 'a.crt': 'CERT:a', 'b.key': 'KEY:b' } },
  ]
  for (const { name, args, env, setting, files } of cases) {
    it(`exits 2 with one line naming ${setting} for ${name}`, async () => {
      const dir = await newDir()
      for (const [file, text] of Object.entries(files ?? {})) {
        if (text.startsWith('CERT:') || text.startsWith('KEY:')) continue
        await writeFile(join(dir, file), text)
      }
      if (Object.values(files ?? {}).some((text) => text.startsWith('CERT:'))) {
        // Two self-signed pairs; the certificate of one with the key of the other.
        for (const pair of ['a', 'b']) {
          execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', join(dir, `${pair}.key`), '-out', join(dir, `${pair}.crt`)], { stdio: 'pipe' })
        }
      }
      const resolved = args.map((arg) => (arg.startsWith('FILE:') ? join(dir, arg.slice(5)) : arg))
      const { status, stdout, stderr } = await weft(['serve', '--host', '127.0.0.1', '--port', '0', '--data', 'memory', ...resolved], env)
      assert.equal(status, 2, stderr)
      assert.ok(oneLine(stderr).includes(setting), stderr)
      assert.ok(!stdout.toString().includes('listening'))
    })
  }

  it('accepts a well-formed origin list and a 32-byte secret', async () => {
    const { status, stdout } = await weft(['serve', '--help', '--allow-origin', 'https://a.example.com,http://localhost:5173', '--auth-secret', SECRET])
    assert.equal(status, 0)
    assert.match(stdout.toString(), /--allow-origin/)
  })
})

describe('start-up failures', () => {
  let blocker: Server | null = null
  after(() => blocker?.close())

  it('a port in use prints one line on stderr, also with --log-level silent, and exits non-zero', async () => {
    blocker = createNetServer()
    await new Promise<void>((resolve) => (blocker as Server).listen(0, '127.0.0.1', resolve))
    const port = (blocker.address() as { port: number }).port
    const { status, stdout, stderr } = await weft(['serve', '--host', '127.0.0.1', '--port', String(port), '--data', 'memory', '--log-level', 'silent'])
    assert.notEqual(status, 0)
    assert.equal(stdout.length, 0)
    const line = oneLine(stderr)
    assert.match(line, new RegExp(`${port}.*in use`))
    assert.ok(!line.includes('    at '), 'no stack')
  })

  it('a data directory that cannot be created prints one line naming it and --data', async () => {
    const dir = await newDir()
    const file = join(dir, 'a-file')
    await writeFile(file, 'x')
    const data = join(file, 'data')
    const { status, stderr } = await weft(['serve', '--host', '127.0.0.1', '--port', '0', '--data', data, '--log-level', 'silent'])
    assert.notEqual(status, 0)
    const line = oneLine(stderr)
    assert.ok(line.includes(data) && line.includes('--data'), line)
  })
})

describe('offline commands refuse what is not a weft data directory', () => {
  for (const command of [['compact'], ['export', 'room'], ['import', 'room', 'FILE']]) {
    it(`weft ${command[0]} on a mistyped, an empty or a non-LevelDB directory exits 2 and creates nothing`, async () => {
      const dir = await newDir()
      const update = join(dir, 'update.bin')
      const doc = new Y.Doc()
      doc.getText('t').insert(0, 'x')
      await writeFile(update, Y.encodeStateAsUpdate(doc))
      const empty = join(dir, 'empty')
      await mkdir(empty)
      const other = join(dir, 'other')
      await mkdir(other)
      await writeFile(join(other, 'notes.txt'), 'not leveldb')
      for (const data of [join(dir, 'dta'), empty, other, 'memory']) {
        const args = command.map((arg) => (arg === 'FILE' ? update : arg))
        const { status, stderr } = await weft([...args, '--data', data])
        assert.equal(status, 2, `${data}: ${stderr}`)
        assert.ok(oneLine(stderr).includes('--data'), stderr)
      }
      assert.equal(existsSync(join(dir, 'dta')), false, 'the mistyped directory was created')
      assert.deepEqual(readdirSync(empty), [])
      assert.deepEqual(readdirSync(other), ['notes.txt'])
    })
  }

  it('WEFT_DATA is checked the same way', async () => {
    const dir = await newDir()
    const { status, stderr } = await weft(['compact'], { WEFT_DATA: join(dir, 'nope') })
    assert.equal(status, 2)
    assert.match(oneLine(stderr), /WEFT_DATA/)
    assert.equal(existsSync(join(dir, 'nope')), false)
  })
})

describe('weft export into a pipe', () => {
  it('writes a document of more than 1 MB whole into a pipe, as update and as JSON', async () => {
    const data = await newDir()
    const doc = new Y.Doc()
    // Many small inserts and a long one: the update is well over a pipe buffer (64 KiB) and 1 MB.
    const text = doc.getText('text')
    for (let i = 0; i < 2_000; i++) text.insert(text.length, `line ${i} `)
    text.insert(text.length, 'y'.repeat(2_000_000))
    const update = await storeDocument(data, 'big', doc)
    assert.ok(update.length > 2_000_000)
    const out = join(await newDir(), 'out.bin')
    // `cat` makes the pipe real (not the socketpair Node gives a child) and a slower reader than the writer.
    const binary = await shell(`"${process.execPath}" "${CLI}" export big --data "${data}" --format update | cat > "${out}"`)
    assert.equal(binary.stderr, '')
    const written = readFileSync(out)
    assert.equal(written.length, update.length)
    assert.deepEqual(canonicalUpdate(new Uint8Array(written)), canonicalUpdate(update))
    const count = await shell(`"${process.execPath}" "${CLI}" export big --data "${data}" | wc -c`)
    const json = JSON.stringify({ text: text.toString() }, null, 2) + '\n'
    assert.equal(Number(count.stdout.trim()), Buffer.byteLength(json))
  })
})

describe('weft token', () => {
  it('prints an HS256 token the server accepts with the rooms, access, subject and lifetime asked for', async () => {
    const before = Math.floor(Date.now() / 1000)
    const { status, stdout, stderr } = await weft(['token', '--secret', SECRET, '--room', 'notes', '--room', 'team-*', '--access', 'read', '--ttl', '15m', '--sub', 'alice'])
    assert.equal(status, 0, stderr)
    const token = stdout.toString().trim()
    const authorizer = new JwtAuthorizer(SECRET)
    for (const room of ['notes', 'team-a']) {
      const decision = await authorizer.authorize(token, room)
      assert.ok(decision.ok, JSON.stringify(decision))
      assert.equal(decision.grant.access, 'read')
      assert.equal(decision.grant.subject, 'alice')
      const ttl = (decision.grant.expiresAt as number) / 1000 - before
      assert.ok(ttl >= 15 * 60 - 1 && ttl <= 15 * 60 + 5, `ttl ${ttl}`)
    }
    const other = await authorizer.authorize(token, 'secret-room')
    assert.equal(other.ok, false)
    assert.equal((await new JwtAuthorizer(SECRET + 'x').authorize(token, 'notes')).ok, false)
  })

  it('defaults to write access for one hour, and takes the secret from WEFT_AUTH_SECRET', async () => {
    const { status, stdout } = await weft(['token', '--room', 'r'], { WEFT_AUTH_SECRET: SECRET })
    assert.equal(status, 0)
    const decision = await new JwtAuthorizer(SECRET).authorize(stdout.toString().trim(), 'r')
    assert.ok(decision.ok)
    assert.equal(decision.grant.access, 'write')
    const ttl = (decision.grant.expiresAt as number) - Date.now()
    assert.ok(ttl > 3_590_000 && ttl <= 3_600_000, `ttl ${ttl}`)
  })

  for (const [args, setting] of [
    [['--room', 'r', '--secret', 'short'], '--secret'],
    [['--secret', SECRET], '--room'],
    [['--secret', SECRET, '--room', 'r', '--access', 'owner'], '--access'],
    [['--secret', SECRET, '--room', 'r', '--ttl', 'soon'], '--ttl'],
  ] as const) {
    it(`refuses ${args.join(' ')} with status 2 naming ${setting}`, async () => {
      const { status, stdout, stderr } = await weft(['token', ...args], { WEFT_AUTH_SECRET: '' })
      assert.equal(status, 2)
      assert.equal(stdout.length, 0)
      assert.ok(oneLine(stderr).includes(setting), stderr)
    })
  }
})
