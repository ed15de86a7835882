import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import {
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeSyncUpdate,
  type YMessage,
} from '../protocol/index.js'
import { webSocketFrame } from '../server/wire-format.js'
import { canonicalState, RawClient } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

// A burst of updates that reaches the server in one read of a socket goes out to each member
// as one merged update message (one message per frame, as stock clients expect), and nothing that
// follows the burst overtakes it.

function decoded(frame: Uint8Array): YMessage | null {
  try {
    return decodeYMessage(frame)
  } catch {
    return null
  }
}

function liveUpdates(client: RawClient): Uint8Array[] {
  const updates: Uint8Array[] = []
  for (const frame of client.frames) {
    const message = decoded(frame)
    if (message?.kind === 'sync-update') updates.push(message.update)
  }
  return updates
}

/** A raw client that has done the y-websocket handshake on an empty doc. */
async function joined(url: string): Promise<RawClient> {
  return (await RawClient.joined(url)).client
}

/** `count` updates of a writer doc, one Y.Map set each, as separate update messages. */
function mapSets(doc: Y.Doc, count: number, key: string): Uint8Array[] {
  const frames: Uint8Array[] = []
  const record = (update: Uint8Array): void => {
    frames.push(encodeSyncUpdate(update))
  }
  doc.on('update', record)
  for (let i = 1; i <= count; i++) doc.getMap('m').set(key, i)
  doc.off('update', record)
  return frames
}

describe('broadcast batching', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  it('sends a burst of 50 updates from one writer as fewer, merged update messages, and not back to the writer', async () => {
    const url = `${server.url}/burst`
    const writer = await joined(url)
    const reader = await joined(url)
    try {
      const doc = new Y.Doc()
      const frames = mapSets(doc, 50, 'k')
      // One turn of this process's loop: the server (same process) reads them in one go.
      for (const frame of frames) writer.send(frame)
      await until(() => {
        const replica = new Y.Doc()
        for (const update of liveUpdates(reader)) Y.applyUpdate(replica, update)
        return replica.getMap('m').get('k') === 50
      }, 'the reader to hold all 50 updates')
      const messages = liveUpdates(reader)
      assert.ok(messages.length < 10, `50 updates arrived as ${messages.length} messages`)
      const replica = new Y.Doc()
      for (const update of messages) Y.applyUpdate(replica, update)
      assert.deepEqual(canonicalState(replica), canonicalState(doc))
      assert.deepEqual(liveUpdates(writer), [], 'the sole writer hears none of its own updates back')
      const batched = (await metricValue(server.http, 'weft_batched_updates_total', '')) ?? 0
      assert.ok(batched >= 50 - messages.length, `weft_batched_updates_total is ${batched}`)
    } finally {
      writer.close()
      reader.close()
    }
  })

  it('bursts from several writers at once converge at every member and the server', async () => {
    const url = `${server.url}/several`
    const a = await joined(url)
    const b = await joined(url)
    const c = await joined(url)
    try {
      const docA = new Y.Doc()
      const docB = new Y.Doc()
      const framesA = mapSets(docA, 20, 'a')
      const framesB = mapSets(docB, 20, 'b')
      docA.getText('t').insert(0, 'from a')
      docB.getText('t').insert(0, 'from b')
      framesA.push(encodeSyncUpdate(Y.encodeStateAsUpdate(docA)))
      framesB.push(encodeSyncUpdate(Y.encodeStateAsUpdate(docB)))
      for (let i = 0; i < framesA.length; i++) {
        a.send(framesA[i] as Uint8Array)
        b.send(framesB[i] as Uint8Array)
      }
      const expected = new Y.Doc()
      Y.applyUpdate(expected, Y.encodeStateAsUpdate(docA))
      Y.applyUpdate(expected, Y.encodeStateAsUpdate(docB))
      const replicaOf = (client: RawClient, own: Y.Doc | null): Y.Doc => {
        const replica = new Y.Doc()
        if (own !== null) Y.applyUpdate(replica, Y.encodeStateAsUpdate(own))
        for (const update of liveUpdates(client)) Y.applyUpdate(replica, update)
        return replica
      }
      const want = Buffer.from(canonicalState(expected))
      const same = (doc: Y.Doc): boolean => Buffer.from(canonicalState(doc)).equals(want)
      await until(() => same(replicaOf(a, docA)) && same(replicaOf(b, docB)) && same(replicaOf(c, null)), 'a, b and c to converge')
      const room = server.server.loadedRoom('several')
      assert.ok(room !== undefined)
      assert.ok(same(room.doc), 'the server holds the same document')
    } finally {
      a.close()
      b.close()
      c.close()
    }
  })

  it('broadcast frames of every header size (7-bit, 16-bit and 64-bit lengths) arrive intact', async () => {
    const url = `${server.url}/frame-sizes`
    const writer = await joined(url)
    const reader = await joined(url)
    try {
      const doc = new Y.Doc()
      const sizes = [10, 300, 70_000]
      for (const [i, size] of sizes.entries()) {
        const before = Y.encodeStateVector(doc)
        doc.getMap('m').set(`k${i}`, 'x'.repeat(size))
        writer.send(encodeSyncUpdate(Y.encodeStateAsUpdate(doc, before)))
        // One update per turn, so each goes out as it was sent, in a frame of its own size class.
        await until(() => liveUpdates(reader).length === i + 1, `update ${i} (${size} characters) to arrive`)
      }
      const replica = new Y.Doc()
      for (const update of liveUpdates(reader)) Y.applyUpdate(replica, update)
      assert.deepEqual(canonicalState(replica), canonicalState(doc))
      assert.deepEqual(liveUpdates(reader).map((u) => u.length > 65_535), [false, false, true])
    } finally {
      writer.close()
      reader.close()
    }
  })

  it('a burst that cannot be merged still goes out, one update at a time, and the server carries on', async () => {
    const url = `${server.url}/unmergeable`
    const reader = await joined(url)
    try {
      const room = server.server.loadedRoom('unmergeable')
      assert.ok(room !== undefined)
      // Bytes Yjs cannot read, as if the document had emitted them: Y.mergeUpdates throws on them.
      const broken = [Uint8Array.of(0xff, 0xff, 0xff), Uint8Array.of(0xfe, 0xfe)]
      for (const bytes of broken) room.doc.emit('update', [bytes, null, room.doc, null as unknown as Y.Transaction])
      await until(() => liveUpdates(reader).length === 2, 'both updates to arrive')
      assert.deepEqual(liveUpdates(reader).map((u) => [...u]), broken.map((u) => [...u]))
      const after = await joined(url)
      after.close()
    } finally {
      reader.close()
    }
  })

  it('an awareness message sent after an update does not overtake it', async () => {
    const url = `${server.url}/order`
    const writer = await joined(url)
    const reader = await joined(url)
    try {
      const doc = new Y.Doc()
      const [frame] = mapSets(doc, 1, 'cursor-target')
      writer.send(frame as Uint8Array)
      writer.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: doc.clientID, clock: 1, state: '{"cursor":1}' }])))
      await until(() => reader.frames.some((f) => decoded(f)?.kind === 'awareness'), 'the awareness message to arrive')
      const kinds = reader.frames.map((f) => decoded(f)?.kind).filter((kind) => kind === 'sync-update' || kind === 'awareness')
      assert.deepEqual(kinds, ['sync-update', 'awareness'])
    } finally {
      writer.close()
      reader.close()
    }
  })
})

describe('webSocketFrame', () => {
  it('frames a payload as ws would: FIN + binary, unmasked, the shortest length form', () => {
    const header = (length: number): number[] => [...webSocketFrame(new Uint8Array(length)).subarray(0, length < 126 ? 2 : length < 65_536 ? 4 : 10)]
    assert.deepEqual(header(0), [0x82, 0])
    assert.deepEqual(header(125), [0x82, 125])
    assert.deepEqual(header(126), [0x82, 126, 0, 126])
    assert.deepEqual(header(65_535), [0x82, 126, 0xff, 0xff])
    assert.deepEqual(header(65_536), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
    const payload = Uint8Array.of(1, 2, 3)
    assert.deepEqual([...webSocketFrame(payload)], [0x82, 3, 1, 2, 3])
  })
})
