import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { documentToJson } from '../server/index.js'
import { canonicalState, canonicalUpdate, converged, destroy, provider, synced } from './harness/clients.js'
import { runCli, spawnWeft, startServer, tempDir, type WeftProcess } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

/** The `--persist-window-ms` the kill -9 test runs with (the contract's default). */
const PERSIST_WINDOW_MS = 100
/**
 * Beyond the window: the LevelDB append itself and timer lateness in a loaded child process. An
 * edit seen by the second client more than PERSIST_WINDOW_MS + this before the kill must survive.
 */
const PERSIST_MARGIN_MS = 50
/** One edit every this many ms while the kill -9 test edits continuously. */
const EDIT_INTERVAL_MS = 5

function killChild(proc: WeftProcess | null): void {
  if (proc !== null && proc.child.exitCode === null && proc.child.signalCode === null) proc.kill('SIGKILL')
}

/** The sequence numbers in a text of `seq;` tokens. */
function sequences(text: string): Set<number> {
  return new Set(text.split(';').filter((token) => token !== '').map(Number))
}

describe('durability', () => {
  it('keeps every edit across a real close and a restart on the same data directory', async () => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    let weft = await startServer({ data: dir.path })
    try {
      const a = provider(weft.url, 'restart')
      const b = provider(weft.url, 'restart')
      providers.push(a, b)
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'hello from a')
      b.doc.getMap('map').set('from', 'b')
      b.doc.getArray<number>('list').push([1, 2, 3])
      const state = await converged([a.doc, b.doc])
      await until(() => {
        const doc = weft.server.loadedRoom('restart')?.doc
        return doc !== undefined && Buffer.from(canonicalState(doc)).equals(Buffer.from(state))
      }, 'the server to apply both clients’ edits')
      destroy(...providers.splice(0))
      await weft.stop()

      weft = await startServer({ data: dir.path })
      const c = provider(weft.url, 'restart')
      providers.push(c)
      await synced(c)
      assert.deepEqual(canonicalState(c.doc), state)
      assert.equal(c.doc.getText('text').toString(), 'hello from a')
      assert.deepEqual(c.doc.getMap('map').toJSON(), { from: 'b' })
      assert.deepEqual(c.doc.getArray('list').toJSON(), [1, 2, 3])
    } finally {
      destroy(...providers)
      await weft.stop()
      await dir.remove()
    }
  })

  it('a child process stopped with SIGTERM exits 0 and its edits are there after a restart', async () => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    let proc: WeftProcess | null = null
    try {
      // A persist window far longer than the test: only the drain's flush can store the edits.
      proc = await spawnWeft(['--data', dir.path, '--drain-seconds', '2', '--persist-window-ms', '30000'])
      const a = provider(proc.url, 'sigterm')
      const b = provider(proc.url, 'sigterm')
      providers.push(a, b)
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'saved by the drain')
      a.doc.getMap('map').set('n', 42)
      const state = await converged([a.doc, b.doc], 'b to see a’s edits (the server applied them)')
      proc.kill('SIGTERM')
      assert.equal(await withDeadline(proc.exited, 'weft to exit after SIGTERM', 10_000), 0)
      destroy(...providers.splice(0))

      proc = await spawnWeft(['--data', dir.path])
      const c = provider(proc.url, 'sigterm')
      providers.push(c)
      await synced(c)
      assert.deepEqual(canonicalState(c.doc), state)
      assert.equal(c.doc.getText('text').toString(), 'saved by the drain')
    } finally {
      destroy(...providers)
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => {})
      await dir.remove()
    }
  })

  it('after kill -9 during continuous editing, every edit applied more than --persist-window-ms before the kill survives', async (t) => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    let proc: WeftProcess | null = null
    let editTimer: NodeJS.Timeout | null = null
    try {
      proc = await spawnWeft(['--data', dir.path, '--persist-window-ms', String(PERSIST_WINDOW_MS)])
      const writer = provider(proc.url, 'kill9')
      const observer = provider(proc.url, 'kill9')
      providers.push(writer, observer)
      await Promise.all([synced(writer), synced(observer)])

      // When the second client first saw each sequence number: the server applied it before that.
      const seenAt = new Map<number, number>()
      observer.doc.getText('text').observe((event) => {
        const now = performance.now()
        for (const op of event.delta) {
          if (typeof op.insert !== 'string') continue
          for (const seq of sequences(op.insert)) if (!seenAt.has(seq)) seenAt.set(seq, now)
        }
      })
      const text = writer.doc.getText('text')
      let next = 0
      editTimer = setInterval(() => {
        text.insert(text.length, `${next};`)
        next++
      }, EDIT_INTERVAL_MS)

      // Edit for a while (at least 300 edits applied), then kill the server mid-stream.
      await until(() => seenAt.size >= 300, '300 edits to reach the second client', 20_000)
      const killedAt = performance.now()
      proc.kill('SIGKILL')
      assert.equal(await withDeadline(proc.exited, 'weft to die', 5_000), 'SIGKILL')
      clearInterval(editTimer)
      editTimer = null
      destroy(...providers.splice(0))

      proc = await spawnWeft(['--data', dir.path])
      const reader = provider(proc.url, 'kill9')
      providers.push(reader)
      await synced(reader)
      const stored = sequences(reader.doc.getText('text').toString())

      const cutoff = killedAt - PERSIST_WINDOW_MS - PERSIST_MARGIN_MS
      const required = [...seenAt].filter(([, at]) => at < cutoff).map(([seq]) => seq)
      const lastWindow = [...seenAt].filter(([, at]) => at >= cutoff).map(([seq]) => seq)
      const missing = required.filter((seq) => !stored.has(seq))
      t.diagnostic(
        `edits sent ${next}, applied ${seenAt.size}, required ${required.length}; ` +
          `of the ${lastWindow.length} applied in the last ${PERSIST_WINDOW_MS + PERSIST_MARGIN_MS} ms, ${lastWindow.filter((seq) => stored.has(seq)).length} survived; ` +
          `stored ${stored.size}`,
      )
      assert.ok(required.length >= 200, `only ${required.length} edits were old enough to be required`)
      assert.deepEqual(missing, [], `edits applied more than ${PERSIST_WINDOW_MS} + ${PERSIST_MARGIN_MS} ms before kill -9 were lost`)
      // Nothing the server never applied can appear, and a stored text is a prefix of what was sent.
      for (const seq of stored) assert.ok(seq < next, `stored an edit ${seq} that was never made`)
    } finally {
      if (editTimer !== null) clearInterval(editTimer)
      destroy(...providers)
      killChild(proc)
      if (proc !== null) await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => {})
      await dir.remove()
    }
  })

  it('weft export prints, as JSON and as an update, what the clients see', async () => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    const weft = await startServer({ data: dir.path })
    try {
      const a = provider(weft.url, 'exported')
      const b = provider(weft.url, 'exported')
      providers.push(a, b)
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'Hello, world')
      b.doc.getText('text').insert(0, '» ')
      a.doc.getMap('map').set('title', 'export')
      b.doc.getMap('map').set('count', 3)
      b.doc.getMap('map').set('nested', { list: [1, 'two'], flag: true })
      a.doc.getMap('map').delete('title')
      const state = await converged([a.doc, b.doc])
      destroy(...providers.splice(0))
      await weft.stop()

      const json = await runCli(['export', 'exported', '--data', dir.path])
      assert.equal(json.status, 0, json.stderr)
      const exported = JSON.parse(json.stdout.toString('utf8')) as Record<string, unknown>
      assert.equal(exported.text, a.doc.getText('text').toString())
      assert.equal(JSON.stringify(exported.map), JSON.stringify(a.doc.getMap('map').toJSON()))
      assert.deepEqual(exported, documentToJson(a.doc))

      const binary = await runCli(['export', 'exported', '--data', dir.path, '--format', 'update'])
      assert.equal(binary.status, 0, binary.stderr)
      assert.deepEqual(canonicalUpdate(new Uint8Array(binary.stdout)), state)
      const fromExport = new Y.Doc()
      Y.applyUpdate(fromExport, new Uint8Array(binary.stdout))
      assert.equal(fromExport.getText('text').toString(), a.doc.getText('text').toString())
    } finally {
      destroy(...providers)
      await weft.stop()
      await dir.remove()
    }
  })
})
