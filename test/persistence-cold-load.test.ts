import assert from 'node:assert/strict'
import { test } from 'node:test'
import * as Y from 'yjs'
import { DocumentWriter, openStore } from '../persistence/index.js'
import { canonicalState } from './harness/clients.js'
import { tempDir } from './harness/server.js'

// The bench's cold-load case, kept as a test: a room whose history is 50,000 small updates. A
// log merged with Y.mergeUpdates took Yjs gigabytes of heap to apply on load (the process died);
// the writer now keeps and loads the document's state instead.

const UPDATES = 50_000

test('50,000 small updates: stored, reloaded after a restart complete, and compacted to about the size of the document', async () => {
  const dir = await tempDir()
  try {
    const source = new Y.Doc()
    const updates: Uint8Array[] = []
    source.on('update', (u: Uint8Array) => updates.push(u))
    for (let i = 0; i < UPDATES; i++) source.getArray('a').push([{ i, t: 1_700_000_000_000 + i }])

    let writer = new DocumentWriter(await openStore(dir.path), { persistWindowMs: 5 })
    // Written as a burst of windows, like a busy room: many log entries.
    for (let i = 0; i < updates.length; i += 250) {
      await Promise.all(updates.slice(i, i + 250).map((u) => writer.write('cold', u)))
    }
    await writer.close()

    writer = new DocumentWriter(await openStore(dir.path), { persistWindowMs: 5 })
    const loaded = await writer.load('cold')
    assert.ok(loaded !== null)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, loaded)
    assert.equal(doc.getArray('a').length, UPDATES)
    assert.deepEqual(Buffer.from(canonicalState(doc)), Buffer.from(canonicalState(source)))

    await writer.compact('cold')
    const [stored] = await writer.listRooms()
    const state = Y.encodeStateAsUpdate(source).length
    assert.ok(stored !== undefined && stored.entries === 1, `one entry after compaction (${stored?.entries})`)
    assert.ok(stored.bytes <= state * 1.2, `stored ${stored.bytes} bytes for a document of ${state}`)
    await writer.close()
  } finally {
    await dir.remove()
  }
})
