import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { encodeHocuspocusSyncStep2, encodeSyncStep2 } from '../protocol/index.js'
import { hocuspocusSyncStep2Prefix } from '../protocol/hocuspocus.js'
import { SYNC_STEP2_PREFIX } from '../protocol/ywebsocket.js'
import { encodeFramedState, encodeState } from '../server/framed-state.js'

// server/framed-state.ts: a big document's sync step 2 is encoded straight into its frame's buffer,
// and the frame holds exactly the bytes encoding and then framing would give.

const EMPTY_STATE_VECTOR = Uint8Array.of(0)

/** A document of ~`bytes` of text in 64 KiB inserts, with a map entry and a deletion beside it. */
function bigDocument(bytes: number): Y.Doc {
  const doc = new Y.Doc()
  const text = doc.getText('body')
  for (let written = 0; written < bytes; written += 65_536) text.insert(text.length, String.fromCharCode(97 + ((written >> 16) % 26)).repeat(65_536))
  text.delete(10, 1000)
  doc.getMap('meta').set('title', 'big')
  return doc
}

describe('framed state', () => {
  const doc = bigDocument(2 * 1024 * 1024)
  const update = Y.encodeStateAsUpdate(doc)

  it('with a fitting hint, writes the frame into the encoder buffer (one buffer, no copy) with the bytes of encodeSyncStep2', () => {
    const frame = encodeFramedState(doc, EMPTY_STATE_VECTOR, SYNC_STEP2_PREFIX, update.length + 1024)
    assert.deepEqual(frame, encodeSyncStep2(update))
    // A view of the encoder's buffer, after the room reserved for the prefix; a copy would start at 0.
    assert.ok(frame.byteOffset > 0, 'the frame is the encoder buffer itself')
    assert.ok(frame.buffer.byteLength <= frame.length + 1024 + SYNC_STEP2_PREFIX.length + 5)
  })

  it('frames the same bytes for Hocuspocus, whose prefix carries the document name', () => {
    const name = 'notes/ünïcode päth'
    const frame = encodeFramedState(doc, EMPTY_STATE_VECTOR, hocuspocusSyncStep2Prefix(name), update.length)
    assert.deepEqual(frame, encodeHocuspocusSyncStep2(name, update))
    assert.ok(frame.byteOffset > 0)
  })

  it('with a hint too small (the encoder grew) or far too big (copied to size), still the same bytes', () => {
    const small = encodeFramedState(doc, EMPTY_STATE_VECTOR, SYNC_STEP2_PREFIX, 1000)
    assert.deepEqual(small, encodeSyncStep2(update))
    const huge = encodeFramedState(doc, EMPTY_STATE_VECTOR, SYNC_STEP2_PREFIX, update.length * 4)
    assert.deepEqual(huge, encodeSyncStep2(update))
    assert.equal(huge.buffer.byteLength, huge.length, 'not kept in a buffer four times its size')
  })

  it('answers a partial state vector with the missing part only, as Y.encodeStateAsUpdate does', () => {
    const reader = new Y.Doc()
    Y.applyUpdate(reader, update)
    doc.getText('body').insert(0, 'new at the start')
    try {
      const stateVector = Y.encodeStateVector(reader)
      const frame = encodeFramedState(doc, stateVector, SYNC_STEP2_PREFIX, 64 * 1024)
      assert.deepEqual(frame, encodeSyncStep2(Y.encodeStateAsUpdate(doc, stateVector)))
    } finally {
      doc.getText('body').delete(0, 'new at the start'.length)
    }
  })

  it('includes structs and deletes waiting for a missing dependency, as Y.encodeStateAsUpdate does', () => {
    const source = new Y.Doc()
    source.getText('t').insert(0, 'first')
    const first = Y.encodeStateAsUpdate(source)
    const before = Y.encodeStateVector(source)
    source.getText('t').insert(5, ' second')
    source.getText('t').delete(0, 2)
    const second = Y.encodeStateAsUpdate(source, before)
    const target = new Y.Doc()
    Y.applyUpdate(target, second) // its dependency (first) is missing: held as pending
    assert.ok(target.store.pendingStructs !== null)
    const frame = encodeFramedState(target, EMPTY_STATE_VECTOR, SYNC_STEP2_PREFIX, 64 * 1024)
    assert.deepEqual(frame, encodeSyncStep2(Y.encodeStateAsUpdate(target)))
    assert.deepEqual(encodeState(target, 64 * 1024), Y.encodeStateAsUpdate(target))
    // And what it carries completes a document that has the dependency.
    const joiner = new Y.Doc()
    Y.applyUpdate(joiner, first)
    const payload = Y.encodeStateAsUpdate(target)
    Y.applyUpdate(joiner, payload)
    assert.equal(joiner.getText('t').toString(), 'rst second')
  })

  it('encodes the whole state alone into one buffer too: the bytes of Y.encodeStateAsUpdate, whatever the hint', () => {
    // The document as the tests before left it (one of them edits it).
    const state = Y.encodeStateAsUpdate(doc)
    const fitting = encodeState(doc, state.length + 1024)
    assert.deepEqual(fitting, state)
    assert.equal(fitting.byteOffset, 0)
    assert.equal(fitting.buffer.byteLength, state.length + 1024, 'the buffer sized from the hint, not a copy')
    assert.deepEqual(encodeState(doc, 1000), state)
    const huge = encodeState(doc, state.length * 4)
    assert.deepEqual(huge, state)
    assert.equal(huge.buffer.byteLength, huge.length, 'not kept in a buffer four times its size')
  })
})
