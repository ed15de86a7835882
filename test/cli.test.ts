import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { DocumentWriter, LevelStore, openStore } from '../persistence/index.js'
import { canonicalState, canonicalUpdate } from './harness/clients.js'
import { CLI, runCli, tempDir } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

const dirs: Array<{ remove(): Promise<void> }> = []
after(async () => {
  await Promise.all(dirs.map((dir) => dir.remove()))
})

async function newDir(): Promise<string> {
  const dir = await tempDir('weft-cli-')
  dirs.push(dir)
  return dir.path
}

/** The CLI, killed if it overruns (a bad setting that is accepted would leave a server running). */
const weft = (args: string[], env: Record<string, string> = {}, timeoutMs = 15_000) => runCli(args, env, timeoutMs)

function stderrLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line !== '')
}

/** A document with some text and a map, as one update. */
function makeUpdate(text: string, entries: Record<string, unknown>): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('text').insert(0, text)
  for (const [key, value] of Object.entries(entries)) doc.getMap('map').set(key, value)
  return Y.encodeStateAsUpdate(doc)
}

async function storeUpdates(data: string, room: string, updates: readonly Uint8Array[]): Promise<void> {
  const writer = new DocumentWriter(await openStore(data), { persistWindowMs: 0 })
  try {
    for (const update of updates) await writer.write(room, update)
  } finally {
    await writer.close()
  }
}

describe('weft CLI', () => {
  it('weft version prints the version, commit and build time of this build', async () => {
    const info = JSON.parse(readFileSync(join(CLI, '..', '..', 'build-info.json'), 'utf8')) as { version: string; commit: string; buildTime: string }
    const pkg = JSON.parse(readFileSync(join(CLI, '..', '..', '..', 'package.json'), 'utf8')) as { version: string }
    const { status, stdout, stderr } = await weft(['version'])
    assert.equal(status, 0, stderr)
    assert.equal(stdout.toString(), `weft ${pkg.version} (commit ${info.commit}, built ${info.buildTime})\n`)
    assert.equal(info.version, pkg.version)
    assert.match(info.commit, /^([0-9a-f]{40}|unknown)$/)
    assert.ok(!Number.isNaN(Date.parse(info.buildTime)), `build time ${info.buildTime}`)
  })

  const invalid: Array<{ name: string; args: string[]; env?: Record<string, string>; setting: string }> = [
    { name: 'an unknown flag', args: ['serve', '--nope'], setting: '--nope' },
    { name: 'a port out of range', args: ['serve', '--port', '70000'], setting: '--port' },
    { name: 'a port that is not a number', args: ['serve', '--port', 'abc'], setting: '--port' },
    { name: 'WEFT_PORT that is not a number', args: ['serve'], env: { WEFT_PORT: 'abc' }, setting: 'WEFT_PORT' },
    { name: 'a malformed Redis URL', args: ['serve', '--port', '0', '--redis', 'not-a-url'], setting: '--redis' },
    { name: 'an unknown log level', args: ['serve', '--port', '0', '--log-level', 'loud'], setting: '--log-level' },
    { name: 'a --compression that is not on or off', args: ['serve', '--port', '0', '--compression', 'maybe'], setting: '--compression' },
    { name: 'WEFT_COMPRESSION_THRESHOLD_BYTES that is not a number', args: ['serve', '--port', '0'], env: { WEFT_COMPRESSION_THRESHOLD_BYTES: 'big' }, setting: 'WEFT_COMPRESSION_THRESHOLD_BYTES' },
    { name: 'an unreadable certificate', args: ['serve', '--port', '0', '--tls-cert', '/nonexistent', '--tls-key', '/nonexistent'], setting: '--tls-cert' },
  ]
  for (const { name, args, env, setting } of invalid) {
    it(`exits 2 with one line naming ${setting} for ${name}`, async () => {
      const data = await newDir()
      const { status, stdout, stderr } = await weft([...args, '--host', '127.0.0.1', '--data', data], env)
      assert.equal(status, 2, `status ${status}; stderr: ${stderr}`)
      const lines = stderrLines(stderr)
      assert.equal(lines.length, 1, `stderr: ${stderr}`)
      assert.ok(lines[0]?.includes(setting), `"${lines[0]}" does not name ${setting}`)
      assert.ok(!stdout.toString().includes('listening'), 'it started listening')
    })
  }

  it('exits 2 for an unknown command', async () => {
    const { status, stderr } = await weft(['frobnicate'])
    assert.equal(status, 2)
    assert.equal(stderrLines(stderr).length, 1, stderr)
    assert.match(stderr, /frobnicate/)
  })

  it('weft import merges an update file into a stored document; export shows both', async () => {
    const data = await newDir()
    const base = makeUpdate('base text', { from: 'base' })
    await storeUpdates(data, 'imported', [base])
    const extra = new Y.Doc()
    extra.getMap('map').set('imported', true)
    extra.getArray('list').push(['x', 'y'])
    const file = join(await newDir(), 'update.bin')
    await writeFile(file, Y.encodeStateAsUpdate(extra))

    const imported = await weft(['import', 'imported', file, '--data', data])
    assert.equal(imported.status, 0, imported.stderr)
    const json = await weft(['export', 'imported', '--data', data])
    assert.equal(json.status, 0, json.stderr)
    assert.deepEqual(JSON.parse(json.stdout.toString()), { text: 'base text', map: { from: 'base', imported: true }, list: ['x', 'y'] })
    const update = await weft(['export', 'imported', '--data', data, '--format', 'update'])
    assert.equal(update.status, 0, update.stderr)
    assert.deepEqual(canonicalUpdate(new Uint8Array(update.stdout)), canonicalUpdate(Y.mergeUpdates([base, Y.encodeStateAsUpdate(extra)])))
  })

  it('weft import of a file that is not a Yjs update exits 2 naming the file, and changes nothing', async () => {
    const data = await newDir()
    const base = makeUpdate('untouched', {})
    await storeUpdates(data, 'garbage', [base])
    const file = join(await newDir(), 'garbage.bin')
    await writeFile(file, Buffer.from('this is not a Yjs update\n\x00\xff\xff\xff\xff'))
    const { status, stderr } = await weft(['import', 'garbage', file, '--data', data])
    assert.equal(status, 2, stderr)
    const lines = stderrLines(stderr)
    assert.equal(lines.length, 1, stderr)
    assert.ok(lines[0]?.includes(file), `"${lines[0]}" does not name ${file}`)
    const exported = await weft(['export', 'garbage', '--data', data, '--format', 'update'])
    assert.deepEqual(canonicalUpdate(new Uint8Array(exported.stdout)), canonicalUpdate(base))
  })

  it('weft compact keeps every document byte-identical (canonical) and shrinks its log', async () => {
    const data = await newDir()
    // Appended straight to the store: the writer would merge or compact them on its own.
    const store = await LevelStore.open(data)
    const docs = new Map<string, Y.Doc>()
    const appends: Array<Promise<string>> = []
    try {
      for (const room of ['compact-a', 'compact-b']) {
        const doc = new Y.Doc()
        docs.set(room, doc)
        doc.on('update', (update: Uint8Array) => {
          appends.push(store.append(room, update))
        })
        for (let i = 0; i < 40; i++) {
          doc.getText('text').insert(doc.getText('text').length, `${room}:${i} `)
          if (i % 3 === 0) doc.getText('text').delete(0, 2)
          doc.getMap('map').set(`k${i % 5}`, i)
        }
      }
      await Promise.all(appends)
      const before = await store.listRooms()
      assert.deepEqual(
        before.map((r) => [r.room, r.entries > 40]),
        [
          ['compact-a', true],
          ['compact-b', true],
        ],
      )
    } finally {
      await store.close()
    }

    const { status, stderr } = await weft(['compact', '--data', data])
    assert.equal(status, 0, stderr)

    const reopened = await LevelStore.open(data)
    try {
      const after = await reopened.listRooms()
      assert.deepEqual(
        after.map((r) => [r.room, r.entries]),
        [
          ['compact-a', 1],
          ['compact-b', 1],
        ],
      )
    } finally {
      await reopened.close()
    }
    for (const [room, doc] of docs) {
      const exported = await weft(['export', room, '--data', data, '--format', 'update'])
      assert.equal(exported.status, 0, exported.stderr)
      assert.deepEqual(canonicalUpdate(new Uint8Array(exported.stdout)), canonicalState(doc), room)
    }
  })

  it('weft export of a room that is not stored exits 1', async () => {
    const data = await newDir()
    await storeUpdates(data, 'present', [makeUpdate('x', {})])
    const { status, stdout, stderr } = await weft(['export', 'absent', '--data', data])
    assert.equal(status, 1, stderr)
    assert.equal(stdout.length, 0)
    assert.match(stderr, /absent/)
  })

  it('npm start’s command logs JSON, then "listening" with the actual port, and serves on it', async () => {
    const pkg = JSON.parse(readFileSync(join(CLI, '..', '..', '..', 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    assert.equal(pkg.scripts.start, 'node dist/server/cli.js serve')
    const data = await newDir()
    const child = spawn(process.execPath, [CLI, 'serve'], {
      env: { ...process.env, WEFT_PORT: '0', WEFT_DATA: data, WEFT_HOST: '127.0.0.1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    let stdout = ''
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk
    })
    try {
      await until(() => /"msg":"listening"/.test(stdout), 'the listening line', 15_000)
      const lines = stdout.split('\n').filter((line) => line !== '')
      const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>)
      const listening = entries.find((entry) => entry.msg === 'listening')
      assert.ok(listening !== undefined)
      const port = listening.port
      assert.ok(typeof port === 'number' && port > 0 && port !== 1234, `port ${String(port)}`)
      const res = await fetch(`http://127.0.0.1:${port}/health/live`)
      assert.equal(res.status, 200)
      child.kill('SIGTERM')
      assert.equal(await withDeadline(exited, 'weft to exit after SIGTERM', 10_000), 0)
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await withDeadline(exited, 'weft to exit', 10_000).catch(() => {})
    }
  })
})
