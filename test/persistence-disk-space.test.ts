import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { DocumentWriter, LevelStore } from '../persistence/index.js'
import { removeStoreDirs, storeTempDir } from './harness/stores.js'

// LevelDB keeps the bytes of deleted entries until a compaction rewrites their file, and
// compactRange alone leaves a file it flushed straight to level 2 as it is: the bench's cold-load
// room (50,000 updates) left 17 times the document's size on disk after a clean shutdown.

after(removeStoreDirs)

const quiet = { warn() {}, error() {}, info() {} }

/** Apparent size of every file under `dir`, as the bench measures it. */
async function directoryBytes(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? await directoryBytes(path) : (await stat(path)).size
  }
  return total
}

describe('LevelDB disk space', () => {
  it('after many small updates and close, the directory is within 1.2 times the document', async () => {
    const dir = await storeTempDir('weft-space-')
    const doc = new Y.Doc()
    // As the server does: compaction takes the live document.
    const writer = new DocumentWriter(await LevelStore.open(dir), { persistWindowMs: 5, logger: quiet, snapshots: { snapshot: () => Y.encodeStateAsUpdate(doc) } })
    const writes: Array<Promise<void>> = []
    doc.on('update', (update: Uint8Array) => writes.push(writer.write('history', update)))
    const count = 20_000
    // Bursts of 250, each stored before the next: many log entries, many compactions.
    for (let i = 0; i < count; i += 250) {
      for (let j = i; j < i + 250; j++) doc.getArray('log').push([j])
      await Promise.all(writes.splice(0))
    }
    await writer.close()

    const state = Y.encodeStateAsUpdate(doc).byteLength
    const disk = await directoryBytes(dir)
    assert.ok(disk <= state * 1.2, `${disk} bytes on disk for a document of ${state} (${(disk / state).toFixed(2)}x)`)

    const reopened = await LevelStore.open(dir)
    try {
      const loaded = new Y.Doc()
      for (const entry of await reopened.readLog('history')) Y.applyUpdate(loaded, entry.update)
      assert.equal(loaded.getArray('log').length, count)
    } finally {
      await reopened.close()
    }
  })

  it('gives back the space of a deleted room and keeps the others', async () => {
    const dir = await storeTempDir('weft-space-')
    let store = await LevelStore.open(dir)
    const kept = [randomBytes(1000), randomBytes(1000)]
    for (const update of kept) await store.append('kept', update)
    // Random bytes: LevelDB's compression cannot shrink them, so the size is the garbage's.
    for (let i = 0; i < 40; i++) await store.append('gone', randomBytes(50_000))
    // Reopening moves the log into a table file, where deleted bytes stay until it is rewritten.
    await store.close()
    store = await LevelStore.open(dir)
    await store.deleteRoom('gone')
    await store.reclaimSpace()
    await store.close()

    const disk = await directoryBytes(dir)
    assert.ok(disk < 100_000, `${disk} bytes on disk after deleting 2 MB`)
    store = await LevelStore.open(dir)
    try {
      assert.deepEqual((await store.readLog('kept')).map((entry) => Buffer.from(entry.update)), kept)
      assert.deepEqual(await store.readLog('gone'), [])
    } finally {
      await store.close()
    }
  })

  it('loses nothing written while it runs', async () => {
    const dir = await storeTempDir('weft-space-')
    const store = await LevelStore.open(dir)
    try {
      for (let i = 0; i < 20; i++) await store.append('busy', randomBytes(20_000))
      const first = await store.readLog('busy')
      await store.replace('busy', first.map((entry) => entry.key), randomBytes(20_000))
      const expected = (await store.readLog('busy')).map((entry) => Buffer.from(entry.update))
      const appended: Buffer[] = []
      const appending = (async () => {
        for (let i = 0; i < 50; i++) {
          const update = randomBytes(100)
          appended.push(update)
          await store.append('busy', update)
        }
      })()
      await Promise.all([store.reclaimSpace(), appending])
      assert.deepEqual((await store.readLog('busy')).map((entry) => Buffer.from(entry.update)), [...expected, ...appended])
    } finally {
      await store.close()
    }
  })
})
