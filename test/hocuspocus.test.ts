import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import {
  encodeHocuspocusClientAuthToken,
  encodeHocuspocusClientBroadcastStateless,
  encodeHocuspocusSyncStep1,
} from '../protocol/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { spawnWeft, startServer, tempDir, type InProcessServer, type WeftProcess } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { metricValue } from './harness/metrics.js'
import { destroyHocuspocus, hocuspocus, hocuspocusSocket, hocuspocusSynced, nextEvent, type Hocuspocus } from './harness/hocuspocus.js'

// The stock @hocuspocus/provider (v4) against weft's Hocuspocus endpoint (the default path `/`),
// next to stock y-websocket providers in the same rooms.

async function metric(port: number, name: string): Promise<number> {
  const value = await metricValue(`http://127.0.0.1:${port}`, name)
  assert.ok(value !== undefined, `metric ${name} is exported`)
  return value
}

/** Deterministic pseudo-random numbers, so a failing run can be repeated. */
function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0
    return state / 2 ** 32
  }
}

function randomEdit(doc: Y.Doc, next: () => number, tag: string): void {
  const text = doc.getText('text')
  const roll = next()
  if (roll < 0.6 || text.length === 0) text.insert(Math.floor(next() * (text.length + 1)), `${tag};`)
  else if (roll < 0.8) text.delete(Math.floor(next() * text.length), Math.min(3, text.length))
  else doc.getMap('map').set(`k${Math.floor(next() * 5)}`, tag)
}

describe('the Hocuspocus provider against weft', () => {
  let server: InProcessServer

  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  it('emits synced with the content, and a late joiner gets the content', async () => {
    const first = hocuspocus(server.url, 'hp-basic')
    let late: Hocuspocus | null = null
    try {
      await hocuspocusSynced(first)
      assert.equal(first.provider.isSynced, true)
      first.doc.getText('text').insert(0, 'hello from hocuspocus')
      first.doc.getMap('map').set('n', 1)
      const room = server.server.loadedRoom('hp-basic')
      assert.ok(room !== undefined, 'the room is loaded')
      await until(() => room.doc.getText('text').toString() === 'hello from hocuspocus', 'the server to have the edit')

      late = hocuspocus(server.url, 'hp-basic')
      await hocuspocusSynced(late)
      // `synced` fires on the server's step 2, which carries the whole document.
      assert.equal(late.doc.getText('text').toString(), 'hello from hocuspocus')
      assert.equal(late.doc.getMap('map').get('n'), 1)
      await converged([first.doc, late.doc, room.doc])
    } finally {
      destroyHocuspocus(first, ...(late === null ? [] : [late]))
    }
  })

  it('converges with stock y-websocket providers in the same room under concurrent random edits', async () => {
    const roomName = 'hp-mixed'
    const hps = [0, 1, 2].map(() => hocuspocus(server.url, roomName))
    const yws = [0, 1, 2].map(() => provider(server.url, roomName))
    try {
      await Promise.all([...hps.map((c) => hocuspocusSynced(c)), ...yws.map((p) => synced(p))])
      const next = random(479)
      const docs = [...hps.map((c) => c.doc), ...yws.map((p) => p.doc)]
      // Rounds of edits made without waiting in between, so they cross each other on the wire.
      for (let round = 0; round < 20; round++) {
        docs.forEach((doc, i) => randomEdit(doc, next, `${i}.${round}`))
        if (round % 5 === 4) await new Promise((resolve) => setImmediate(resolve))
      }
      const room = server.server.loadedRoom(roomName)
      assert.ok(room !== undefined)
      const state = await converged([...docs, room.doc], 'hocuspocus, y-websocket and server docs to converge')
      const text = room.doc.getText('text').toString()
      assert.ok(text.includes('0.') && text.includes('5.'), 'edits of both kinds of client are in the document')
      for (const doc of docs) assert.deepEqual(canonicalState(doc), state)
    } finally {
      destroyHocuspocus(...hps)
      destroy(...yws)
    }
  })

  it('carries awareness both ways, and removes the Hocuspocus state at the y-websocket side within a second of destroy', async () => {
    const roomName = 'hp-awareness'
    const hp = hocuspocus(server.url, roomName)
    const yw = provider(server.url, roomName)
    let hpDestroyed = false
    try {
      await Promise.all([hocuspocusSynced(hp), synced(yw)])
      const hpAwareness = hp.provider.awareness
      assert.ok(hpAwareness !== null)
      hp.provider.setAwarenessField('user', { name: 'hocuspocus' })
      yw.awareness.setLocalStateField('user', { name: 'y-websocket' })
      const hpId = hp.doc.clientID
      const ywId = yw.doc.clientID
      await until(() => (yw.awareness.getStates().get(hpId) as { user?: { name: string } } | undefined)?.user?.name === 'hocuspocus', 'y-websocket to see the Hocuspocus state')
      await until(() => (hpAwareness.getStates().get(ywId) as { user?: { name: string } } | undefined)?.user?.name === 'y-websocket', 'Hocuspocus to see the y-websocket state')

      destroyHocuspocus(hp)
      hpDestroyed = true
      await until(() => !yw.awareness.getStates().has(hpId), 'the Hocuspocus state to be removed at the y-websocket side', 1_000)
    } finally {
      if (!hpDestroyed) destroyHocuspocus(hp)
      destroy(yw)
    }
  })

  it('carries fifty documents over one socket, each converging with its own room only; closing one leaves the others syncing', async () => {
    const count = 50
    const socket = hocuspocusSocket(server.url)
    const hps = Array.from({ length: count }, (_, i) => hocuspocus(server.url, `doc-${i}`, { socket }))
    const yws: WebsocketProvider[] = Array.from({ length: count }, (_, i) => provider(server.url, `doc-${i}`))
    const destroyed = new Set<number>()
    try {
      await Promise.all([...hps.map((c) => hocuspocusSynced(c, 20_000)), ...yws.map((p) => synced(p, 20_000))])
      hps.forEach((c, i) => c.doc.getText('text').insert(0, `hp-${i};`))
      yws.forEach((p, i) => p.doc.getText('text').insert(0, `yw-${i};`))
      for (let i = 0; i < count; i++) {
        const room = server.server.loadedRoom(`doc-${i}`)
        assert.ok(room !== undefined)
        await converged([(hps[i] as Hocuspocus).doc, (yws[i] as WebsocketProvider).doc, room.doc], `doc-${i} to converge`)
        // Only its own two markers: nothing leaked from another document on the shared socket.
        const markers = (hps[i] as Hocuspocus).doc.getText('text').toString().split(';').filter((m) => m !== '').sort()
        assert.deepEqual(markers, [`hp-${i}`, `yw-${i}`], `doc-${i} holds only its own markers`)
      }
      assert.equal(await metric(server.port, 'weft_connections'), 1 + count, 'one connection for the fifty Hocuspocus documents')

      // Closing one document: the provider detaches (CLOSE frame); the socket stays for the others.
      ;(hps[0] as Hocuspocus).provider.destroy()
      destroyed.add(0)
      const room0 = server.server.loadedRoom('doc-0')
      assert.ok(room0 !== undefined)
      await until(() => room0.memberCount === 1, 'the server to drop the closed document from its room')
      ;(yws[0] as WebsocketProvider).doc.getText('text').insert(0, 'after-close;')
      await until(() => room0.doc.getText('text').toString().includes('after-close'), 'the y-websocket edit to reach the server')

      const hp1 = hps[1] as Hocuspocus
      const yw1 = yws[1] as WebsocketProvider
      hp1.doc.getMap('map').set('after', 'hp')
      yw1.doc.getMap('map').set('other', 'yw')
      await until(() => yw1.doc.getMap('map').get('after') === 'hp', 'an edit after the close to reach y-websocket')
      await until(() => hp1.doc.getMap('map').get('other') === 'yw', 'an edit after the close to reach Hocuspocus')
      const hp49 = hps[count - 1] as Hocuspocus
      hp49.doc.getMap('map').set('after', 49)
      await until(() => (yws[count - 1] as WebsocketProvider).doc.getMap('map').get('after') === 49, 'the last document to keep syncing')
      assert.ok(!(hps[0] as Hocuspocus).doc.getText('text').toString().includes('after-close'), 'the closed document gets nothing more')
      assert.equal(await metric(server.port, 'weft_connections'), 1 + count, 'the shared socket stayed open')
    } finally {
      for (const [i, c] of hps.entries()) if (!destroyed.has(i)) c.provider.destroy()
      socket.destroy()
      destroy(...yws)
    }
  })

  it('delivers stateless messages: provider → server listener, server → provider, client broadcast → other providers', async () => {
    const roomName = 'hp-stateless'
    const a = hocuspocus(server.url, roomName)
    const b = hocuspocus(server.url, roomName)
    let raw: RawClient | null = null
    const received: Array<{ room: string; payload: string }> = []
    const stop = server.server.onStateless((event) => received.push({ room: event.room, payload: event.payload }))
    try {
      await Promise.all([hocuspocusSynced(a), hocuspocusSynced(b)])

      a.provider.sendStateless('x')
      await until(() => received.length > 0, 'the server listener to get the stateless message')
      assert.deepEqual(received, [{ room: roomName, payload: 'x' }])

      const toA = nextEvent<{ payload: string }>(a.provider, 'stateless', 'a to get the server stateless', (e) => e.payload === 'y')
      const toB = nextEvent<{ payload: string }>(b.provider, 'stateless', 'b to get the server stateless', (e) => e.payload === 'y')
      assert.equal(server.server.sendStateless(roomName, 'y'), 2, 'both providers of the room were sent it')
      await Promise.all([toA, toB])

      // Provider v4 has no API for BroadcastStateless (type 6); a raw client of the same protocol sends it.
      raw = await RawClient.open(`${server.url}/`)
      raw.send(encodeHocuspocusClientAuthToken(roomName, '', 'raw'))
      raw.send(encodeHocuspocusSyncStep1(roomName, Y.encodeStateVector(new Y.Doc())))
      await raw.frame((f) => f.length > 0, 'the raw client to be answered')
      const bothGetIt = Promise.all([
        nextEvent<{ payload: string }>(a.provider, 'stateless', 'a to get the broadcast', (e) => e.payload === 'broadcast-z'),
        nextEvent<{ payload: string }>(b.provider, 'stateless', 'b to get the broadcast', (e) => e.payload === 'broadcast-z'),
      ])
      raw.send(encodeHocuspocusClientBroadcastStateless(roomName, 'broadcast-z'))
      await bothGetIt
      assert.ok(!received.some((e) => e.payload === 'broadcast-z'), 'a broadcast is not a message to the server')
    } finally {
      stop()
      raw?.socket.terminate()
      destroyHocuspocus(a, b)
    }
  })
})

describe('hasUnsyncedChanges of the Hocuspocus provider means "stored"', () => {
  const PERSIST_WINDOW_MS = 1_500

  it('stays true while the edit is applied but not yet in LevelDB, and is false only once it is', async () => {
    const server = await startServer({ persistWindowMs: PERSIST_WINDOW_MS })
    const client = hocuspocus(server.url, 'hp-unsynced')
    try {
      await hocuspocusSynced(client)
      await until(() => !client.provider.hasUnsyncedChanges, 'the handshake to be acknowledged')
      const room = server.server.loadedRoom('hp-unsynced')
      assert.ok(room !== undefined)
      // The server's store, read directly: what LevelDB holds, not what the writer has queued.
      const store = (server.server as unknown as { writer: { store: { readLog(room: string): Promise<Array<{ update: Uint8Array }>> } } }).writer.store
      const storedText = async (): Promise<string> => {
        const doc = new Y.Doc()
        for (const entry of await store.readLog('hp-unsynced')) Y.applyUpdate(doc, entry.update)
        return doc.getText('text').toString()
      }

      client.doc.getText('text').insert(0, 'durable')
      assert.equal(client.provider.hasUnsyncedChanges, true)
      await until(() => room.doc.getText('text').toString() === 'durable', 'the server to apply the edit')
      // Sampled before the store is read: an ack before the read would have to mean "already stored".
      const unsyncedBeforeRead = client.provider.hasUnsyncedChanges
      const stored = await storedText()
      if (!unsyncedBeforeRead) assert.equal(stored, 'durable', 'acknowledged, so it must be stored')
      assert.equal(stored, '', 'inside the persist window the edit is not in LevelDB yet')
      assert.equal(unsyncedBeforeRead, true, 'while it is not stored, the provider has unsynced changes')

      await until(() => !client.provider.hasUnsyncedChanges, 'the edit to be acknowledged', PERSIST_WINDOW_MS + 5_000)
      assert.equal(await storedText(), 'durable', 'acknowledged, and in LevelDB')
    } finally {
      destroyHocuspocus(client)
      await server.stop()
    }
  })

  it('an acknowledged edit survives kill -9 of the server right after the ack', async () => {
    const dir = await tempDir()
    let proc: WeftProcess | null = null
    let client: Hocuspocus | null = null
    let reader: Hocuspocus | null = null
    try {
      proc = await spawnWeft(['--data', dir.path, '--persist-window-ms', String(PERSIST_WINDOW_MS), '--log-level', 'warn'])
      client = hocuspocus(proc.url, 'hp-kill9')
      await hocuspocusSynced(client)
      await until(() => !client!.provider.hasUnsyncedChanges, 'the handshake to be acknowledged')
      client.doc.getText('text').insert(0, 'survives kill -9')
      assert.equal(client.provider.hasUnsyncedChanges, true)
      await until(() => !client!.provider.hasUnsyncedChanges, 'the edit to be acknowledged', PERSIST_WINDOW_MS + 5_000)
      proc.kill('SIGKILL')
      assert.equal(await withDeadline(proc.exited, 'weft to die', 5_000), 'SIGKILL')
      destroyHocuspocus(client)
      client = null

      proc = await spawnWeft(['--data', dir.path, '--log-level', 'warn'])
      reader = hocuspocus(proc.url, 'hp-kill9')
      await hocuspocusSynced(reader)
      assert.equal(reader.doc.getText('text').toString(), 'survives kill -9')
    } finally {
      if (client !== null) destroyHocuspocus(client)
      if (reader !== null) destroyHocuspocus(reader)
      if (proc !== null && proc.child.exitCode === null && proc.child.signalCode === null) {
        proc.kill('SIGTERM')
        await withDeadline(proc.exited, 'weft to exit', 10_000).catch(() => proc?.kill('SIGKILL'))
      }
      await dir.remove()
    }
  })
})
