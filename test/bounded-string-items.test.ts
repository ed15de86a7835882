import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { boundStringItems, MAX_MERGED_STRING_LENGTH } from '../crdt/index.js'

// crdt/bounded-string-items.ts: a room's document keeps merged text items bounded, so appending to
// a big text does not copy all of it per update; the text, and what other documents do, stay the same.

const CHUNK = 64 * 1024

/** Lengths of the text items of `doc`'s client `client`, in clock order. */
function stringItemLengths(doc: Y.Doc, client: number): number[] {
  const structs = doc.store.clients.get(client) ?? []
  return structs.flatMap((struct) => (struct instanceof Y.Item && struct.content instanceof Y.ContentString ? [struct.content.str.length] : []))
}

/** A writer appending `chunks` chunks of text, each update applied to every `docs` as it is made. */
function appendChunks(writer: Y.Doc, docs: readonly Y.Doc[], chunks: number): void {
  const text = writer.getText('t')
  for (let i = 0; i < chunks; i++) {
    const before = Y.encodeStateVector(writer)
    text.insert(text.length, String.fromCharCode(97 + (i % 26)).repeat(CHUNK))
    const update = Y.encodeStateAsUpdate(writer, before)
    for (const doc of docs) Y.applyUpdate(doc, update)
  }
}

describe('bounded string items', () => {
  it('keeps merged text items of a bounded document at most MAX_MERGED_STRING_LENGTH; the text is the same', () => {
    const writer = new Y.Doc()
    const bounded = new Y.Doc()
    boundStringItems(bounded)
    const stock = new Y.Doc()
    const emitted: Uint8Array[] = []
    bounded.on('update', (update: Uint8Array) => emitted.push(update))
    const chunks = Math.ceil((3 * MAX_MERGED_STRING_LENGTH) / CHUNK) + 1
    appendChunks(writer, [bounded, stock], chunks)

    const text = writer.getText('t').toString()
    assert.equal(bounded.getText('t').toString(), text)
    const lengths = stringItemLengths(bounded, writer.clientID)
    assert.ok(lengths.length > 1, 'the text is in several items')
    assert.ok(lengths.every((length) => length <= MAX_MERGED_STRING_LENGTH), `item lengths ${lengths.join(', ')}`)
    assert.equal(lengths.reduce((sum, length) => sum + length, 0), text.length)
    // Another document in the same process merges as Yjs always did.
    assert.deepEqual(stringItemLengths(stock, writer.clientID), [text.length])

    // What it emits and its encoded state give the same text to any document.
    const fromUpdates = new Y.Doc()
    for (const update of emitted) Y.applyUpdate(fromUpdates, update)
    assert.equal(fromUpdates.getText('t').toString(), text)
    const fromState = new Y.Doc()
    Y.applyUpdate(fromState, Y.encodeStateAsUpdate(bounded))
    assert.equal(fromState.getText('t').toString(), text)
  })

  it('appends to a big loaded text without merging into it, and leaves one long insertion whole', () => {
    const writer = new Y.Doc()
    // One insertion longer than the bound: one item, as Yjs made it.
    writer.getText('t').insert(0, 'x'.repeat(2 * MAX_MERGED_STRING_LENGTH))
    const loaded = new Y.Doc()
    boundStringItems(loaded)
    Y.applyUpdate(loaded, Y.encodeStateAsUpdate(writer))
    assert.deepEqual(stringItemLengths(loaded, writer.clientID), [2 * MAX_MERGED_STRING_LENGTH])
    appendChunks(writer, [loaded], 2)
    assert.deepEqual(stringItemLengths(loaded, writer.clientID), [2 * MAX_MERGED_STRING_LENGTH, 2 * CHUNK])
    assert.equal(loaded.getText('t').toString(), writer.getText('t').toString())
    // Deleting across the items and inserting in the middle work as on any document.
    const edit = (doc: Y.Doc): void => {
      doc.getText('t').delete(MAX_MERGED_STRING_LENGTH, MAX_MERGED_STRING_LENGTH + CHUNK)
      doc.getText('t').insert(10, 'middle')
    }
    const before = Y.encodeStateVector(writer)
    edit(writer)
    Y.applyUpdate(loaded, Y.encodeStateAsUpdate(writer, before))
    assert.equal(loaded.getText('t').toString(), writer.getText('t').toString())
  })
})
