import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { encodeHocuspocusClientAuthToken, encodeHocuspocusPermissionDenied } from '../protocol/index.js'
import type { UpdateOrigin } from '../server/hooks.js'
import type { Room, RoomEvents } from '../server/room.js'
import { destroy, provider, RawClient, synced, textUpdate } from './harness/clients.js'
import { httpBytes, postUpdateStatus, upgradeStatus } from './harness/http.js'
import { startServer, tempDir } from './harness/server.js'
import { until } from './harness/wait.js'

// Issue 15, the update path: every update reaches the room's event sink (the hook runner's seam)
// with its typed origin, and a sink that fails in every way loses no edit and breaks no room.

type Event =
  | { event: 'changed'; room: string; origin: UpdateOrigin }
  | { event: 'stored'; room: string }
  | { event: 'loaded'; room: string; seeded: boolean }
  | { event: 'unloaded'; room: string }

/**
 * A sink that records every call, seeds a new document in `loaded`, then fails: `throws` throws
 * from every method, `rejects` returns a rejected promise from every method.
 */
function failingSink(how: 'throws' | 'rejects'): { sink: RoomEvents; events: Event[] } {
  const events: Event[] = []
  const fail = (event: string): Promise<void> => {
    const err = new Error(`the ${event} handler fails on purpose`)
    if (how === 'throws') throw err
    return Promise.reject(err)
  }
  const sink: RoomEvents = {
    changed(room: Room, _update: Uint8Array, origin: UpdateOrigin) {
      events.push({ event: 'changed', room: room.name, origin })
      return fail('changed')
    },
    stored(room: Room) {
      events.push({ event: 'stored', room: room.name })
      return fail('stored')
    },
    async loaded(room: Room, doc: Y.Doc) {
      // Seeds a new document, as an application's onLoad would; a stored one is left alone.
      const text = doc.getText('t')
      const seeded = text.length === 0
      if (seeded) text.insert(0, '[seed]')
      events.push({ event: 'loaded', room: room.name, seeded })
      if (how === 'throws') throw new Error('the loaded handler fails on purpose')
      await fail('loaded')
    },
    unloaded(room: Room) {
      events.push({ event: 'unloaded', room: room.name })
      return fail('unloaded')
    },
  }
  return { sink, events }
}

/** A stock Hocuspocus provider on its own socket, with short reconnect delays. */
function hocuspocusProvider(url: string, name: string, doc: Y.Doc): { provider: HocuspocusProvider; socket: HocuspocusProviderWebsocket } {
  const socket = new HocuspocusProviderWebsocket({ url: `${url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
  const hp = new HocuspocusProvider({ websocketProvider: socket, name, document: doc, token: null })
  hp.attach()
  return { provider: hp, socket }
}

async function roomText(http: string, room: string): Promise<string> {
  const answer = await httpBytes(http, 'GET', `/api/rooms/${room}/updates`)
  assert.equal(answer.status, 200)
  const doc = new Y.Doc()
  Y.applyUpdate(doc, answer.body)
  return doc.getText('t').toString()
}

function originKinds(events: readonly Event[]): string[] {
  const kinds = new Set<string>()
  for (const e of events) {
    if (e.event !== 'changed') continue
    kinds.add(e.origin.kind === 'client' ? `client:${e.origin.protocol}` : e.origin.kind)
  }
  return [...kinds].sort()
}

describe('room events on the update path, with a sink that fails', () => {
  for (const how of ['throws', 'rejects'] as const) {
    it(`a sink that ${how} sees every update with its origin, loses no edit and breaks no room`, async () => {
      const { sink, events } = failingSink(how)
      const data = await tempDir()
      const room = `events-${how}`
      let server = await startServer({ data: data.path, keepData: true, roomEvents: sink, roomUnloadDelayMs: 50, persistWindowMs: 20 })
      const wsDoc = new Y.Doc()
      const ws = provider(server.url, room, wsDoc)
      const hpDoc = new Y.Doc()
      const hp = hocuspocusProvider(server.url, room, hpDoc)
      let closes = 0
      ws.on('connection-close', () => closes++)
      hp.provider.on('disconnect', () => closes++)
      try {
        await synced(ws)
        // onLoad ran before any member synced: the seed is in the first sync of both protocols.
        assert.equal(wsDoc.getText('t').toString(), '[seed]')
        await until(() => hpDoc.getText('t').toString() === '[seed]', 'the Hocuspocus provider to sync the seed')
        assert.deepEqual(events.filter((e) => e.event === 'loaded'), [{ event: 'loaded', room, seeded: true }])

        wsDoc.getText('t').insert(6, ' ws')
        await until(() => hpDoc.getText('t').toString() === '[seed] ws', 'the y-websocket edit to reach the Hocuspocus provider')
        hpDoc.getText('t').insert(9, ' hp')
        await until(() => wsDoc.getText('t').toString() === '[seed] ws hp', 'the Hocuspocus edit to reach the y-websocket provider')
        // The Hocuspocus acknowledgement still means "stored", whatever the stored handler did.
        await until(() => !hp.provider.hasUnsyncedChanges, 'the Hocuspocus edit to be acknowledged')
        const http = new Y.Doc()
        Y.applyUpdate(http, Y.encodeStateAsUpdate(wsDoc))
        http.getText('t').insert(12, ' http')
        assert.equal(await postUpdateStatus(server.http, room, Y.encodeStateAsUpdate(http, Y.encodeStateVector(wsDoc))), 204)
        await until(() => wsDoc.getText('t').toString() === '[seed] ws hp http', 'the HTTP edit to reach the y-websocket provider')
        await until(() => hpDoc.getText('t').toString() === '[seed] ws hp http', 'the HTTP edit to reach the Hocuspocus provider')

        assert.deepEqual(originKinds(events), ['client:hocuspocus', 'client:y-websocket', 'http'])
        // The seed is the application's own edit: never reported back to it as a change.
        for (const e of events) {
          if (e.event === 'changed') assert.ok((e.origin.kind === 'client' || e.origin.kind === 'http') && e.origin.subject === null, `origin ${JSON.stringify(e.origin)}`)
        }
        await until(() => events.some((e) => e.event === 'stored'), 'a stored event')

        // The room still works after every handler failed: a new member syncs everything.
        const lateDoc = new Y.Doc()
        const late = provider(server.url, room, lateDoc)
        await synced(late)
        assert.equal(lateDoc.getText('t').toString(), '[seed] ws hp http')
        destroy(late)
        assert.equal(closes, 0, 'no member was disconnected by a failing handler')
      } finally {
        destroy(ws)
        hp.provider.destroy()
        hp.socket.destroy()
      }
      await until(() => events.some((e) => e.event === 'unloaded'), 'the room to unload once everyone left')
      const unloadedAt = events.findIndex((e) => e.event === 'unloaded')
      assert.ok(events.slice(0, unloadedAt).some((e) => e.event === 'stored'), 'stored before unloaded')
      await server.stop()

      // Nothing was lost: a restarted server has every edit, and the seed once (loaded sees it stored).
      server = await startServer({ data: data.path, roomEvents: sink })
      try {
        assert.equal(await roomText(server.http, room), '[seed] ws hp http')
        assert.deepEqual(events.filter((e) => e.event === 'loaded').at(-1), { event: 'loaded', room, seeded: false })
      } finally {
        await server.stop()
        await data.remove()
      }
    })
  }
})

describe('the per-room connection cap', () => {
  it('counts y-websocket connections and Hocuspocus documents together, and refuses both alike', async () => {
    const server = await startServer({ maxRoomConnections: 2 })
    const ws = provider(server.url, 'capped')
    let hocuspocus: RawClient | null = null
    let refused: RawClient | null = null
    try {
      await synced(ws)
      hocuspocus = await RawClient.hocuspocusJoined(server.url, 'capped', '')
      // The room holds two members, one of each protocol: a third is refused on either.
      assert.equal(await upgradeStatus(`${server.url}/capped`), 503)
      refused = await RawClient.open(`${server.url}/`)
      refused.send(encodeHocuspocusClientAuthToken('capped', '', 'raw-test'))
      const denial = encodeHocuspocusPermissionDenied('capped', 'room is full')
      await refused.frame((frame) => Buffer.from(frame).equals(Buffer.from(denial)), 'the Hocuspocus permission denied for the full room')
      // Another room is open.
      assert.equal(await postUpdateStatus(server.http, 'other', textUpdate('x')), 204)
    } finally {
      destroy(ws)
      hocuspocus?.close()
      refused?.close()
      await server.stop()
    }
  })
})

describe('client/ and server/', () => {
  it('the client imports nothing from server/ (the codes it shares live in protocol/)', () => {
    const clientDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'client')
    const files = readdirSync(clientDir).filter((name) => name.endsWith('.js'))
    assert.ok(files.length > 0, 'compiled client files found')
    for (const name of files) {
      const source = readFileSync(join(clientDir, name), 'utf8')
      assert.doesNotMatch(source, /from '\.\.\/server\//, `${name} imports from server/`)
    }
  })
})
