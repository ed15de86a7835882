import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import { mergeWorkerCounters } from '../crdt/index.js'
import type { DocumentWriter } from '../persistence/index.js'
import { decodeYMessage, encodeAwareness, encodeAwarenessUpdate, encodeSyncStep1, encodeSyncStep2, encodeSyncUpdate } from '../protocol/index.js'
import { SYNC_STEP2_PREFIX } from '../protocol/ywebsocket.js'
import { canonicalState, canonicalUpdate, hocuspocusClient, provider, RawClient, synced, type HocuspocusClient } from './harness/clients.js'
import { httpBytes, postUpdateStatus } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { docFromFrames, holdLoads, writeTextDocument } from './harness/sync-replies.js'
import { eventually, until } from './harness/wait.js'

// Joiners with the same state vector share one encoded sync reply, and never one that is stale.

/** Joins `room` with an empty doc and returns the document the server's step 2 describes. */
async function join(server: InProcessServer, room: string): Promise<{ client: RawClient; doc: Y.Doc }> {
  const { client, step2 } = await RawClient.joined(`${server.url}/${room}`)
  const doc = new Y.Doc()
  Y.applyUpdate(doc, step2)
  return { client, doc }
}

/** Types `text` at the start of `writer`'s text, sends it from `client`, and waits until the server's `room` has it. */
async function typeInto(server: InProcessServer, room: string, writer: Y.Doc, client: RawClient, text: string): Promise<void> {
  const before = Y.encodeStateVector(writer)
  writer.getText('t').insert(0, text)
  client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(writer, before)))
  const loaded = server.server.loadedRoom(room)
  await until(() => loaded?.doc.getText('t').length === writer.getText('t').length, 'the change to apply')
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

describe('whole-state replies of a big document, merged off the event loop', () => {
  let server: InProcessServer
  before(async () => {
    // 512 KiB documents are big here: their whole state goes to the merge worker.
    server = await startServer({ mergeWorkerThresholdBytes: 64 * 1024 })
  })
  after(async () => {
    await server.stop()
  })

  it('merges the state a changed document has in storage on a worker for a y-websocket joiner; a Hocuspocus joiner after it gets that state', async () => {
    const first = await join(server, 'off-loop')
    try {
      // Two stored entries: what storage holds is merged, not read back as it is.
      const writer = new Y.Doc()
      for (const part of [await writeTextDocument(server, 'off-loop', 0.25), await writeTextDocument(server, 'off-loop', 0.25)]) Y.applyUpdate(writer, Y.encodeStateAsUpdate(part))
      const jobs = mergeWorkerCounters.jobs
      const doc = new Y.Doc()
      const ywebsocket = provider(server.url, 'off-loop', doc)
      let hocuspocus: HocuspocusClient | null = null
      try {
        await synced(ywebsocket)
        assert.equal(mergeWorkerCounters.jobs - jobs, 1, 'merged on the worker')
        // The reply's header went into the merged state's headroom: one buffer for both, no copy.
        const build = (server.server.loadedRoom('off-loop') as unknown as { stateBuild: { state: Promise<Uint8Array>; frames: Map<string, Uint8Array> } | null }).stateBuild
        assert.ok(build !== null)
        assert.equal(build.frames.get('y-websocket')?.buffer, (await build.state).buffer)
        // The room keeps the state past its cached reply: once that expired (dropped here), the
        // next joiner gets the frame made in the headroom again, not the state copied behind a header.
        const room = server.server.loadedRoom('off-loop') as unknown as { syncReplies: unknown; syncReply: (sv: Uint8Array, framing: string, prefix: Uint8Array) => Uint8Array }
        room.syncReplies = null
        assert.equal(room.syncReply(Uint8Array.of(0), 'y-websocket', SYNC_STEP2_PREFIX), build.frames.get('y-websocket'))
        hocuspocus = hocuspocusClient(server.url, 'off-loop')
        await hocuspocus.synced()
        assert.equal(mergeWorkerCounters.jobs - jobs, 1, 'the merged state again, unchanged since')
        assert.deepEqual(canonicalState(doc), canonicalState(writer), 'y-websocket')
        assert.deepEqual(canonicalState(hocuspocus.provider.document), canonicalState(writer), 'Hocuspocus')
      } finally {
        ywebsocket.destroy()
        // Its awareness (and the awareness timer) goes with the document.
        doc.destroy()
        hocuspocus?.destroy()
      }
    } finally {
      first.client.close()
    }
  })

  it('a Hocuspocus joiner gets the merged state too, and is not synced before it has it', async () => {
    const first = await join(server, 'hp-merging')
    const { loads, open, restore } = holdLoads(server)
    let hocuspocus: HocuspocusClient | null = null
    try {
      const writer = await writeTextDocument(server, 'hp-merging', 0.5)
      hocuspocus = hocuspocusClient(server.url, 'hp-merging')
      await until(() => loads.length === 1, 'the merge for the Hocuspocus joiner')
      // Its own step 2 (the answer to the server's step 1) has arrived and is stored: its
      // acknowledgement, which makes the provider synced, waits for the reply.
      await eventually(async () => ((await metricValue(server.http, 'weft_messages_total', '{direction="in",protocol="hocuspocus",type="sync_step2"}')) ?? 0) >= 1, 'the provider’s step 2')
      const internals = server.server as unknown as { writer: DocumentWriter }
      await internals.writer.flush('hp-merging')
      // Anything sent to the provider from now on comes after an acknowledgement sent until now.
      first.client.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: 4242, clock: 1, state: '{"probe":true}' }])))
      const provider = hocuspocus.provider
      await until(() => provider.awareness?.getStates().has(4242) === true, 'a later message to reach the provider')
      assert.equal(provider.isSynced, false, 'not synced before the document arrived')
      open()
      await hocuspocus.synced()
      assert.deepEqual(canonicalState(hocuspocus.provider.document), canonicalState(writer))
    } finally {
      restore()
      hocuspocus?.destroy()
      first.client.close()
    }
  })

  it('a change made while the state is merged reaches the joiner waiting for it; a joiner after the change shares that merge and gets the change after it', async () => {
    const first = await join(server, 'merging')
    // The state is read when asked for and handed over when the test says: a merge that takes long.
    const { loads, open, restore } = holdLoads(server)
    const joiners: RawClient[] = []
    try {
      const writer = await writeTextDocument(server, 'merging', 0.5)
      const empty = Y.encodeStateVector(new Y.Doc())
      const a = await RawClient.open(`${server.url}/merging`)
      joiners.push(a)
      a.send(encodeSyncStep1(empty))
      await until(() => loads.length === 1, 'the first joiner’s merge to start')
      // A change while that merge runs: the first joiner hears of it as a member.
      await typeInto(server, 'merging', writer, first.client, 'late ')
      // A joiner after the change never heard of it: the merge lacks it, so it follows the state.
      const b = await RawClient.open(`${server.url}/merging`)
      joiners.push(b)
      b.send(encodeSyncStep1(empty))
      open()
      for (const joiner of [a, b]) await joiner.frame((frame) => decodeYMessage(frame).kind === 'sync-step-2', 'the sync step 2')
      await b.frame((frame) => decodeYMessage(frame).kind === 'sync-update', 'the change after the state')
      assert.equal(loads.length, 1, 'one merge for both')
      assert.deepEqual(canonicalState(docFromFrames(a.frames).doc), canonicalState(writer), 'the first joiner: the merge and the change')
      assert.deepEqual(canonicalState(docFromFrames(b.frames).doc), canonicalState(writer), 'the second joiner: the merge, then the change')
    } finally {
      restore()
      for (const joiner of joiners) joiner.close()
      first.client.close()
    }
  })

  it('joiners of a document being edited share a merge while the changes since stay small; past that, the next joiner gets a merge of its own', async () => {
    const first = await join(server, 'edited')
    const { loads, open, restore } = holdLoads(server)
    open()
    const joiners: RawClient[] = []
    try {
      const writer = await writeTextDocument(server, 'edited', 0.5)
      const edit = (text: string): Promise<void> => typeInto(server, 'edited', writer, first.client, text)
      /** A joiner that has the whole document: the state, then the changes since it was merged, if any. */
      const joined = async (changesFollow: boolean): Promise<RawClient> => {
        const joiner = await RawClient.open(`${server.url}/edited`)
        joiners.push(joiner)
        joiner.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
        await joiner.frame((frame) => decodeYMessage(frame).kind === 'sync-step-2', 'the sync step 2')
        if (changesFollow) await joiner.frame((frame) => decodeYMessage(frame).kind === 'sync-update', 'the changes after the state')
        assert.deepEqual(canonicalState(docFromFrames(joiner.frames).doc), canonicalState(writer), `joiner ${joiners.length}`)
        return joiner
      }
      await edit('a change so that nothing is cached ')
      await joined(false)
      assert.equal(loads.length, 1, 'the first joiner’s merge')
      for (let i = 0; i < 5; i++) await edit(`typing ${i} `)
      const typed = await joined(true)
      assert.equal(docFromFrames(typed.frames).updateFrames, 1, 'the five changes in one frame')
      assert.equal(loads.length, 1, 'five small changes later: the same merge')
      // More than STATE_TAIL_MAX_BYTES (256 KiB) since the merge.
      await edit('p'.repeat(300 * 1024))
      await joined(false)
      assert.equal(loads.length, 2, 'a merge of its own past the bound')
      await edit('after the second merge ')
      await joined(true)
      assert.equal(loads.length, 2, 'the next joiner shares the second merge')
    } finally {
      restore()
      for (const joiner of joiners) joiner.close()
      first.client.close()
    }
  })

  it('a Hocuspocus joiner after a change gets the merged state, then the change in Hocuspocus framing', async () => {
    const first = await join(server, 'hp-edited')
    let hocuspocus: HocuspocusClient | null = null
    try {
      const writer = await writeTextDocument(server, 'hp-edited', 0.5)
      const ywebsocket = await join(server, 'hp-edited')
      ywebsocket.client.close()
      const jobs = mergeWorkerCounters.jobs
      await typeInto(server, 'hp-edited', writer, first.client, 'changed since the merge ')
      hocuspocus = hocuspocusClient(server.url, 'hp-edited')
      await hocuspocus.synced()
      await until(() => hocuspocus?.provider.document.getText('t').length === writer.getText('t').length, 'the change after the state')
      assert.deepEqual(canonicalState(hocuspocus.provider.document), canonicalState(writer))
      assert.equal(mergeWorkerCounters.jobs, jobs, 'no merge for the Hocuspocus joiner')
    } finally {
      hocuspocus?.destroy()
      first.client.close()
    }
  })

  it('an HTTP read of a big document after a change merges its state on the worker; reads after it share that merge until the next change', async () => {
    // Two stored entries: what storage holds is merged, not read back as it is.
    const writer = new Y.Doc()
    for (const part of [await writeTextDocument(server, 'http-read', 0.25), await writeTextDocument(server, 'http-read', 0.25)]) Y.applyUpdate(writer, Y.encodeStateAsUpdate(part))
    const get = async (path: string): Promise<Buffer> => {
      const answer = await httpBytes(server.http, 'GET', path)
      assert.equal(answer.status, 200, path)
      return answer.body
    }
    const jobs = mergeWorkerCounters.jobs
    assert.deepEqual(canonicalUpdate(await get('/api/rooms/http-read?format=update')), canonicalState(writer), 'binary')
    assert.equal(mergeWorkerCounters.jobs - jobs, 1, 'merged on the worker')
    const json = JSON.parse((await get('/api/rooms/http-read')).toString('utf8')) as { t: string }
    assert.equal(json.t, writer.getText('t').toString(), 'JSON')
    assert.deepEqual(canonicalUpdate(await get('/api/rooms/http-read/updates')), canonicalState(writer), 'the updates endpoint')
    assert.equal(mergeWorkerCounters.jobs - jobs, 1, 'unchanged since: the same merge')
    const before = Y.encodeStateVector(writer)
    writer.getText('t').insert(0, 'changed ')
    assert.equal(await postUpdateStatus(server.http, 'http-read', Y.encodeStateAsUpdate(writer, before)), 204)
    assert.deepEqual(canonicalUpdate(await get('/api/rooms/http-read?format=update')), canonicalState(writer), 'after the change')
    assert.equal(mergeWorkerCounters.jobs - jobs, 2, 'a merge with the change')
  })

  it('HTTP reads while a merge that lacks a change runs wait for it and share one merge after it', async () => {
    const writer = await writeTextDocument(server, 'http-queued', 0.5)
    const { loads, open, restore } = holdLoads(server)
    const room = server.server.loadedRoom('http-queued')
    assert.ok(room !== undefined)
    // Counts the reads that reached the room.
    const sharedStateOffLoop = room.sharedStateOffLoop.bind(room)
    let asked = 0
    room.sharedStateOffLoop = () => {
      asked++
      return sharedStateOffLoop()
    }
    try {
      const read = (): Promise<Y.Doc> =>
        httpBytes(server.http, 'GET', '/api/rooms/http-queued?format=update').then((answer) => {
          assert.equal(answer.status, 200)
          const doc = new Y.Doc()
          Y.applyUpdate(doc, answer.body)
          return doc
        })
      const first = read()
      await until(() => loads.length === 1, 'the first read’s merge')
      const before = Y.encodeStateVector(writer)
      writer.getText('t').insert(0, 'late ')
      assert.equal(await postUpdateStatus(server.http, 'http-queued', Y.encodeStateAsUpdate(writer, before)), 204)
      const later = [read(), read(), read()]
      await until(() => asked === 4, 'the later reads to reach the room')
      assert.equal(loads.length, 1, 'no merge of their own while one runs')
      open()
      const firstDoc = await first
      assert.ok(!firstDoc.getText('t').toString().startsWith('late '), 'the first read: the document as it was asked for')
      for (const doc of await Promise.all(later)) assert.deepEqual(canonicalState(doc), canonicalState(writer), 'a later read has the change')
      assert.equal(loads.length, 2, 'the later reads share one merge')
    } finally {
      restore()
    }
  })
})
