import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import { encodeSyncStep2, encodeSyncUpdate } from '../protocol/index.js'
import { SYNC_STEP2_PREFIX } from '../protocol/ywebsocket.js'
import { canonicalState, RawClient } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

// Joiners with the same state vector share one encoded sync reply, and never one that is stale.

/** Joins `room` with an empty doc and returns the document the server's step 2 describes. */
async function join(server: InProcessServer, room: string): Promise<{ client: RawClient; doc: Y.Doc }> {
  const { client, step2 } = await RawClient.joined(`${server.url}/${room}`)
  const doc = new Y.Doc()
  Y.applyUpdate(doc, step2)
  return { client, doc }
}

describe('shared sync replies', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  it('hands joiners with the same state vector the same buffer while the document is unchanged', async () => {
    const first = await join(server, 'crowd')
    try {
      const writer = new Y.Doc()
      writer.getText('t').insert(0, 'x'.repeat(10_000))
      first.client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(writer)))
      const room = server.server.loadedRoom('crowd')
      assert.ok(room !== undefined)
      await until(() => room.doc.getText('t').length === 10_000, 'the server to apply the text')
      const empty = Y.encodeStateVector(new Y.Doc())
      const a = room.syncReply(empty, 'y-websocket', SYNC_STEP2_PREFIX)
      const b = room.syncReply(Uint8Array.from(empty), 'y-websocket', SYNC_STEP2_PREFIX)
      assert.equal(a, b, 'one encoding for both')
      const partial = room.syncReply(Y.encodeStateVector(writer), 'y-websocket', SYNC_STEP2_PREFIX)
      assert.notEqual(partial, a, 'another state vector gets its own reply')
    } finally {
      first.client.close()
    }
  })

  it('a big document is encoded into its reply frame (no copies), and a joiner gets all of it', async () => {
    const first = await join(server, 'big')
    try {
      const writer = new Y.Doc()
      for (let i = 0; i < 8; i++) {
        const before = Y.encodeStateVector(writer)
        writer.getText('t').insert(writer.getText('t').length, String.fromCharCode(97 + i).repeat(64 * 1024))
        first.client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(writer, before)))
      }
      const room = server.server.loadedRoom('big')
      assert.ok(room !== undefined)
      await until(() => room.doc.getText('t').length === 8 * 64 * 1024, 'the server to apply the text')
      const reply = room.syncReply(Y.encodeStateVector(new Y.Doc()), 'y-websocket', SYNC_STEP2_PREFIX)
      assert.ok(reply.byteOffset > 0, 'a view of the buffer the update was encoded into')
      assert.deepEqual(reply, encodeSyncStep2(Y.encodeStateAsUpdate(room.doc)))
      // The whole state for HTTP, versions and compaction: one buffer sized up front (Yjs's own
      // encoder returns an exact copy), with the same bytes.
      const state = room.encodeState()
      assert.ok(state.buffer.byteLength > state.length, 'encoded into a buffer sized from the estimate')
      assert.deepEqual(state, Y.encodeStateAsUpdate(room.doc))
      const http = server.url.replace('ws://', 'http://')
      for (const path of ['/api/rooms/big?format=update', '/api/rooms/big/updates']) {
        const res = await fetch(`${http}${path}`)
        assert.equal(res.status, 200, path)
        assert.deepEqual(new Uint8Array(await res.arrayBuffer()), Y.encodeStateAsUpdate(room.doc), path)
      }
      const joiner = await join(server, 'big')
      joiner.client.close()
      assert.deepEqual(canonicalState(joiner.doc), canonicalState(writer))
    } finally {
      first.client.close()
    }
  })

  it('a joiner after a change gets the changed document, not the reply cached before it', async () => {
    const first = await join(server, 'changing')
    const writer = new Y.Doc()
    try {
      writer.getText('t').insert(0, 'one')
      first.client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(writer)))
      const room = server.server.loadedRoom('changing')
      assert.ok(room !== undefined)
      await until(() => room.doc.getText('t').toString() === 'one', 'the first edit to apply')
      const second = await join(server, 'changing')
      second.client.close()
      assert.equal(second.doc.getText('t').toString(), 'one')
      const before = Y.encodeStateVector(writer)
      writer.getText('t').insert(3, ' two')
      first.client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(writer, before)))
      await until(() => room.doc.getText('t').toString() === 'one two', 'the second edit to apply')
      const third = await join(server, 'changing')
      third.client.close()
      assert.deepEqual(canonicalState(third.doc), canonicalState(writer))
    } finally {
      first.client.close()
    }
  })

  it('structs waiting for a missing dependency are in the reply of every joiner', async () => {
    const first = await join(server, 'pending')
    try {
      const writer = new Y.Doc()
      writer.getText('t').insert(0, 'base')
      const base = Y.encodeStateAsUpdate(writer)
      const afterBase = Y.encodeStateVector(writer)
      writer.getText('t').insert(4, ' more')
      const more = Y.encodeStateAsUpdate(writer, afterBase)
      const room = server.server.loadedRoom('pending')
      assert.ok(room !== undefined)
      const empty = Y.encodeStateVector(new Y.Doc())
      // Cached while the document is empty, then the dependent update arrives without its base.
      room.syncReply(empty, 'y-websocket', SYNC_STEP2_PREFIX)
      // Clients' updates with missing dependencies are refused; only out-of-order updates from
      // the cluster are held pending, applied here as the relay would.
      Y.applyUpdate(room.doc, more, 'cluster')
      await until(() => room.doc.store.pendingStructs !== null, 'the server to hold the update as pending')
      const joiner = await join(server, 'pending')
      joiner.client.close()
      Y.applyUpdate(joiner.doc, base)
      assert.equal(joiner.doc.getText('t').toString(), 'base more')
    } finally {
      first.client.close()
    }
  })
})
