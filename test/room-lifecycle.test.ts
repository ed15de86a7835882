import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { WebsocketProvider } from 'y-websocket'
import type { DocumentWriter, Store } from '../persistence/index.js'
import type { WeftServer } from '../server/index.js'
import { canonicalState, destroy, provider, synced } from './harness/clients.js'
import { startServer, tempDir } from './harness/server.js'
import { until } from './harness/wait.js'

/** `roomUnloadDelayMs` of these tests: short, so the unload races the next connection. */
const ROOM_UNLOAD_DELAY_MS = 20
/**
 * How long after a client leaves the next one connects, in the race test: before, around and after
 * the unload delay, so a connection lands while the room is active, unloading (flushing) and unloaded.
 */
const RECONNECT_DELAYS_MS = Array.from({ length: 21 }, (_, i) => i * 2)
/**
 * Storage made this slow (every append waits this long) in the race test, so the `unloading` state,
 * which lasts as long as the unload's flush, is wide enough for reconnects to land in it.
 */
const SLOW_APPEND_MS = 15
/** The persist window of the unload test: far longer than the test, so only the unload's flush stores the edit. */
const LONG_PERSIST_WINDOW_MS = 60_000

/** The server's DocumentWriter (private): the tests count loads and check pending writes through it. */
function writerOf(server: WeftServer): DocumentWriter {
  const writer = (server as unknown as { writer: DocumentWriter | null }).writer
  assert.ok(writer !== null, 'the server has no writer')
  return writer
}

/** Makes every append of the server's store wait `ms` first: a slow disk. */
function slowDownAppends(server: WeftServer, ms: number): void {
  const store = (writerOf(server) as unknown as { store: Store }).store
  const append = store.append.bind(store)
  store.append = async (room: string, update: Uint8Array) => {
    await pause(ms)
    return append(room, update)
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function serverText(server: WeftServer, room: string): string {
  return server.loadedRoom(room)?.doc.getText('text').toString() ?? ''
}

describe('room lifecycle', () => {
  it('unloads a room without connections once its writes are stored; the next client gets it from storage', async () => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    let weft = await startServer({ data: dir.path, roomUnloadDelayMs: ROOM_UNLOAD_DELAY_MS, persistWindowMs: LONG_PERSIST_WINDOW_MS })
    try {
      const a = provider(weft.url, 'unload')
      providers.push(a)
      await synced(a)
      a.doc.getText('text').insert(0, 'kept through an unload')
      a.doc.getMap('map').set('k', 'v')
      const state = canonicalState(a.doc)
      await until(() => serverText(weft.server, 'unload') === 'kept through an unload', 'the server to apply the edit')
      const first = weft.server.loadedRoom('unload')
      assert.ok(first !== undefined)
      assert.equal(first.state, 'active')
      assert.ok(writerOf(weft.server).hasPending('unload'), 'the edit should still wait in its persist window')

      destroy(...providers.splice(0))
      await until(() => weft.server.loadedRoom('unload') === undefined, 'the empty room to unload', 5_000)
      assert.equal(first.state, 'unloaded')
      // Unloaded long before the persist window ran out: the unload flushed the edit itself.
      assert.equal(writerOf(weft.server).hasPending('unload'), false, 'the room unloaded with writes not yet stored')

      const b = provider(weft.url, 'unload')
      providers.push(b)
      await synced(b)
      assert.deepEqual(canonicalState(b.doc), state)
      const second = weft.server.loadedRoom('unload')
      assert.ok(second !== undefined && second !== first, 'the room should have been loaded afresh')

      // And it is in LevelDB, not only in memory: a new server on the directory has it.
      destroy(...providers.splice(0))
      await weft.stop()
      weft = await startServer({ data: dir.path })
      const c = provider(weft.url, 'unload')
      providers.push(c)
      await synced(c)
      assert.deepEqual(canonicalState(c.doc), state)
    } finally {
      destroy(...providers)
      await weft.stop()
      await dir.remove()
    }
  })

  it('loses nothing when a client connects while its room unloads (Hocuspocus#971)', async (t) => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    let weft = await startServer({ data: dir.path, roomUnloadDelayMs: ROOM_UNLOAD_DELAY_MS })
    const room = 'unload-race'
    const tokens: string[] = []
    let reloads = 0
    let unloadingSeen = 0
    try {
      slowDownAppends(weft.server, SLOW_APPEND_MS)
      let previousRoom = weft.server.loadedRoom(room)
      const delays = [...RECONNECT_DELAYS_MS, ...RECONNECT_DELAYS_MS.slice().reverse()]
      for (const [i, delay] of delays.entries()) {
        // A fresh document each time: the client cannot re-send what the server lost, so the
        // server (memory or storage) is the only place the earlier edits can come from.
        const p = provider(weft.url, room)
        providers.push(p)
        await synced(p)
        const text = p.doc.getText('text')
        await until(
          () => tokens.every((token) => text.toString().includes(token)),
          `client ${i} (connected ${delay} ms after the last one left) to receive every earlier edit; has "${text.toString()}"`,
          3_000,
        )
        const current = weft.server.loadedRoom(room)
        if (current !== previousRoom) reloads++
        previousRoom = current
        const token = `<${i}>`
        tokens.push(token)
        // The edit is still travelling when the client leaves: the server gets it, then the close.
        text.insert(text.length, token)
        destroy(p)
        providers.splice(providers.indexOf(p), 1)
        await pause(delay)
        // The room's state as the next client connects: active, unloading (flushing) or gone.
        if (weft.server.loadedRoom(room)?.state === 'unloading') unloadingSeen++
      }
      await until(() => tokens.every((token) => serverText(weft.server, room).includes(token)) || weft.server.loadedRoom(room) === undefined, 'the last edit to be applied')
      t.diagnostic(`${delays.length} reconnects, ${reloads} found the room reloaded from storage, ${unloadingSeen} connected while it was unloading`)
      // Some reconnects must have found the room unloaded, or the test did not exercise the race.
      assert.ok(reloads > 0, 'no reconnect came after an unload')
      assert.ok(reloads < delays.length, 'no reconnect came before an unload')
      assert.ok(unloadingSeen > 0, 'no reconnect came while the room was unloading')

      await weft.stop()
      weft = await startServer({ data: dir.path })
      const reader = provider(weft.url, room)
      providers.push(reader)
      await synced(reader)
      const stored = reader.doc.getText('text').toString()
      assert.deepEqual(
        tokens.filter((token) => !stored.includes(token)),
        [],
        `edits lost across unload/reload; stored "${stored}"`,
      )
    } finally {
      destroy(...providers)
      await weft.stop()
      await dir.remove()
    }
  })

  it('connections that arrive while a room loads share that one load', async () => {
    const dir = await tempDir()
    const providers: WebsocketProvider[] = []
    const clients = 20
    let weft = await startServer({ data: dir.path })
    let releaseLoad = (): void => {}
    try {
      const seed = provider(weft.url, 'shared-load')
      providers.push(seed)
      await synced(seed)
      seed.doc.getText('text').insert(0, 'stored before the load')
      seed.doc.getArray<number>('list').push([1, 2, 3])
      const state = canonicalState(seed.doc)
      await until(() => serverText(weft.server, 'shared-load') === 'stored before the load', 'the server to apply the edit')
      destroy(...providers.splice(0))
      await weft.stop()

      weft = await startServer({ data: dir.path })
      // Hold every load of the room until all clients are connected, so they all arrive during it.
      const writer = writerOf(weft.server)
      const load = writer.load.bind(writer)
      const held = new Promise<void>((resolve) => {
        releaseLoad = resolve
      })
      let loads = 0
      writer.load = async (name: string) => {
        if (name === 'shared-load') {
          loads++
          await held
        }
        return load(name)
      }

      for (let i = 0; i < clients; i++) providers.push(provider(weft.url, 'shared-load'))
      await until(() => weft.server.loadedRoom('shared-load')?.memberCount === clients, `${clients} clients to join the loading room`)
      const room = weft.server.loadedRoom('shared-load')
      assert.equal(room?.state, 'loading')
      assert.equal(providers.some((p) => p.synced), false, 'a client synced before its room loaded')
      releaseLoad()
      await Promise.all(providers.map((p) => synced(p)))
      for (const p of providers) assert.deepEqual(canonicalState(p.doc), state)
      assert.equal(loads, 1, 'the room was loaded more than once')
      assert.equal(weft.server.loadedRoom('shared-load'), room)
      assert.equal(room?.state, 'active')
    } finally {
      releaseLoad()
      destroy(...providers)
      await weft.stop()
      await dir.remove()
    }
  })
})
