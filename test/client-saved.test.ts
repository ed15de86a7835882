import { test } from 'node:test'
import assert from 'node:assert/strict'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WeftProvider } from '../client/index.js'
import { MemoryStore } from '../persistence/index.js'
import { MessageType, WeftMessageType, decodeYMessage, encodeQueryAwareness, type YMessage } from '../protocol/index.js'
import { destroy, provider, synced } from './harness/clients.js'
import { startServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until } from './harness/wait.js'

const WS = WebSocket as unknown as typeof globalThis.WebSocket

/**
 * A real MemoryStore whose appends wait while the gate is closed: the update is in the room (and
 * relayed) but not in storage, which is the window `saved` must not paper over.
 */
function gatedStore(): { store: MemoryStore; close(): void; open(): void; held(): number; appended: string[] } {
  const inner = new MemoryStore()
  let gate: { promise: Promise<void>; release: () => void } | null = null
  let held = 0
  const appended: string[] = []
  const store = new Proxy(inner, {
    get(target, key, receiver) {
      if (key !== 'append') {
        const value = Reflect.get(target, key, receiver) as unknown
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
      }
      return async (room: string, update: Uint8Array): Promise<string> => {
        if (gate !== null) {
          held++
          await gate.promise
          held--
        }
        const key = await target.append(room, update)
        appended.push(room)
        return key
      }
    },
  })
  return {
    store,
    appended,
    held: () => held,
    close() {
      let release = (): void => {}
      const promise = new Promise<void>((resolve) => (release = resolve))
      gate = { promise, release }
    },
    open() {
      gate?.release()
      gate = null
    },
  }
}

function weft(url: string, room: string, doc = new Y.Doc()): WeftProvider {
  return new WeftProvider(url, room, doc, { WebSocket: WS, backoff: { initialMs: 20, maxMs: 200 } })
}

test('saved turns true only once the change is in storage; a stock y-websocket client never sees the acknowledgement', async () => {
  const gated = gatedStore()
  const server = await startServer({ store: gated.store })
  const savedEvents: boolean[] = []
  const doc = new Y.Doc()
  const client = weft(server.url, 'saved-room', doc)
  client.on('saved', (saved) => savedEvents.push(saved))
  const stockDoc = new Y.Doc()
  const stock = provider(server.url, 'saved-room', stockDoc)
  // Every frame of a type y-websocket has no handler for would land here.
  const foreign: number[] = []
  stock.messageHandlers[WeftMessageType.stored] = () => {
    foreign.push(WeftMessageType.stored)
  }
  let stockAwarenessFrames = 0
  const awarenessHandler = stock.messageHandlers[MessageType.awareness]
  assert.ok(awarenessHandler)
  stock.messageHandlers[MessageType.awareness] = (...args) => {
    stockAwarenessFrames++
    awarenessHandler(...args)
  }
  try {
    assert.equal(client.saved, false, 'nothing is acknowledged before the first connection')
    await client.whenSynced(10_000)
    await synced(stock)
    // The first sync step 2 carries whatever the doc held; its acknowledgement makes saved true.
    await until(() => client.saved, 'saved after the first sync')

    gated.close()
    doc.getText('t').insert(0, 'hello')
    assert.equal(client.saved, false, 'a local change is unsaved at once')
    stockDoc.getText('s').insert(0, 'stock edit')
    // Applied and relayed, but held before storage.
    await until(() => stockDoc.getText('t').toString() === 'hello', 'the stock client to receive the edit')
    await until(() => gated.held() >= 1, 'an append held at the gate')
    assert.equal(client.saved, false, 'not saved while storage holds the write')

    gated.open()
    await until(() => client.saved, 'saved once storage has the write')
    assert.ok(gated.appended.includes('saved-room'))
    assert.deepEqual(savedEvents, [true, false, true])

    // A round trip on the stock socket after its own update was stored: any acknowledgement for it
    // would have been sent before this answer.
    const before = stockAwarenessFrames
    stock.ws?.send(encodeQueryAwareness())
    await until(() => stockAwarenessFrames > before, 'the stock client to get its query-awareness answer')
    const stored = new Y.Doc()
    Y.applyUpdate(stored, new Uint8Array(await (await fetch(`${server.http}/api/rooms/saved-room`, { headers: { accept: 'application/octet-stream' } })).arrayBuffer()))
    assert.equal(stored.getText('s').toString(), 'stock edit')
    assert.deepEqual(foreign, [], 'a stock y-websocket client never receives the stored acknowledgement')
  } finally {
    client.destroy()
    destroy(stock)
    gated.open()
    await server.stop()
  }
})

test('a change made while disconnected is unsaved until the next connection stores it', async () => {
  const gated = gatedStore()
  const server = await startServer({ store: gated.store })
  const doc = new Y.Doc()
  const client = weft(server.url, 'offline-saved', doc)
  try {
    await until(() => client.saved, 'saved after the first sync')
    client.disconnect()
    doc.getText('t').insert(0, 'offline')
    assert.equal(client.saved, false)
    gated.close()
    client.connect()
    await client.whenSynced(10_000)
    await until(() => gated.held() >= 1, 'the offline change held at the gate')
    assert.equal(client.saved, false, 'synced is not saved')
    gated.open()
    await until(() => client.saved, 'saved once the offline change is stored')
    const check = new Y.Doc()
    Y.applyUpdate(check, (await gated.store.readLog('offline-saved')).reduce((acc, entry) => Y.mergeUpdates([acc, entry.update]), Y.encodeStateAsUpdate(new Y.Doc())))
    assert.equal(check.getText('t').toString(), 'offline')
  } finally {
    client.destroy()
    gated.open()
    await server.stop()
  }
})

test('with trackSaved: false the provider never asks and saved stays false', async () => {
  const server = await startServer()
  const doc = new Y.Doc()
  const quiet = new WeftProvider(server.url, 'untracked', doc, { WebSocket: WS, trackSaved: false })
  try {
    await quiet.whenSynced(10_000)
    doc.getText('t').insert(0, 'x')
    const observer = new Y.Doc()
    const stock = provider(server.url, 'untracked', observer)
    await until(() => observer.getText('t').toString() === 'x', 'the edit to reach another client')
    assert.equal(quiet.saved, false, 'no acknowledgements asked for: saved stays false')
    destroy(stock)
  } finally {
    quiet.destroy()
    await server.stop()
  }
})

test('a change weft refuses (read-only access) is never acknowledged: saved stays false', async () => {
  const secret = 'client-saved-test-hs256-secret-0123456789abcdef'
  const server = await startServer({ authSecret: secret })
  const token = await signToken({ rooms: ['*'], access: 'read' }, { secret, subject: 'reader' })
  // Every message the provider receives, decoded, to see the refusal arrive and no acknowledgement for it.
  const received: YMessage[] = []
  class Recording extends WebSocket {
    constructor(url: string) {
      super(url)
      this.on('message', (data: Buffer) => received.push(decodeYMessage(new Uint8Array(data))))
    }
  }
  const doc = new Y.Doc()
  const reader = new WeftProvider(server.url, 'read-only-saved', doc, { WebSocket: Recording as unknown as typeof globalThis.WebSocket, params: { token } })
  try {
    // Its sync step 2 repeats nothing new: harmless for a reader, and acknowledged.
    await until(() => reader.saved, 'saved after the first sync')
    doc.getText('t').insert(0, 'not allowed')
    assert.equal(reader.saved, false)
    await until(() => received.some((m) => m.kind === 'auth-denied'), 'the refusal (permission-denied)')
    // The refusal and the end of acknowledgements happen together on the server: none can follow.
    assert.equal(reader.saved, false)
    const counts = received.flatMap((m) => (m.kind === 'weft-stored' ? [m.count] : []))
    assert.deepEqual(counts, [1], 'only the first sync step 2 was acknowledged')
  } finally {
    reader.destroy()
    await server.stop()
  }
})
