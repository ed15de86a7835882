/**
 * Issue #13, routing by room for both protocols: three `weft serve --hocuspocus-path /collab`
 * processes behind a real nginx running deploy/nginx/. Stock y-websocket clients connect to
 * ws://nginx/<room>, stock Hocuspocus providers to ws://nginx/collab/<room>; nine rooms, three on
 * each instance, and every room's Hocuspocus client lands on the instance of its y-websocket
 * clients. Before the fix nginx hashed the whole path (every Hocuspocus socket on one key) and
 * weft took /collab/<room> for the y-websocket room "collab/<room>".
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { destroy, provider, synced } from './harness/clients.js'
import { startNginx, type NginxProcess } from './harness/nginx.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { eventually, until, withDeadline } from './harness/wait.js'

const HOCUSPOCUS_PATH = '/collab'
const CANDIDATES = 36
const PER_INSTANCE = 3

process.setMaxListeners(100)

interface Instance {
  name: string
  weft: WeftProcess
  data: { path: string; remove(): Promise<void> }
}

interface Hocuspocus {
  provider: HocuspocusProvider
  socket: HocuspocusProviderWebsocket
}

function hocuspocus(url: string, name: string): Hocuspocus {
  const socket = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
  const provider = new HocuspocusProvider({ websocketProvider: socket, name, document: new Y.Doc() })
  provider.attach()
  return { provider, socket }
}

function hocuspocusSynced(client: Hocuspocus): Promise<void> {
  if (client.provider.isSynced) return Promise.resolve()
  return withDeadline(new Promise<void>((resolve) => client.provider.on('synced', () => resolve())), `${client.provider.configuration.name} to sync`, 10_000)
}

/** The rooms an instance has loaded right now (listed by its admin API; open mode). */
async function loadedRooms(instance: Instance): Promise<Set<string>> {
  const res = await fetch(`${instance.weft.http}/api/rooms?limit=1000`)
  assert.equal(res.status, 200)
  const body = (await res.json()) as { rooms: Array<{ room: string; loaded: boolean }> }
  return new Set(body.rooms.filter((r) => r.loaded).map((r) => r.room))
}

describe('nginx routes a room\'s y-websocket and Hocuspocus clients to the same instance', () => {
  let redis: RedisProcess
  let nginx: NginxProcess
  const instances: Instance[] = []
  const ywebsockets: WebsocketProvider[] = []
  const hocuspocusClients: Hocuspocus[] = []

  before(async () => {
    redis = await startRedis()
    for (let i = 1; i <= 3; i++) {
      const name = `weft-${i}`
      const data = await tempDir(`weft-${name}-`)
      const weft = await spawnWeft(['--redis', redis.url, '--instance-id', name, '--data', data.path, '--hocuspocus-path', HOCUSPOCUS_PATH, '--drain-seconds', '1'])
      instances.push({ name, weft, data })
    }
    nginx = await startNginx({ upstreams: instances.map(({ weft }) => `127.0.0.1:${weft.port}`), hocuspocusPath: HOCUSPOCUS_PATH })
  })

  after(async () => {
    destroy(...ywebsockets)
    for (const c of hocuspocusClients) {
      c.provider.destroy()
      c.socket.destroy()
    }
    await nginx?.stop()
    for (const { weft } of instances) weft.kill('SIGKILL')
    await Promise.all(instances.map(({ weft }) => weft.exited))
    await Promise.all(instances.map(({ data }) => data.remove()))
    await redis?.dispose()
  })

  it('serves Hocuspocus on <hocuspocus-path>/<room> and both protocols share the room on one instance', async () => {
    // y-websocket clients of many rooms, each with an edit so the room is listed where it is loaded.
    const candidates = Array.from({ length: CANDIDATES }, (_, i) => `room-${i} ü`)
    for (const room of candidates) {
      const p = provider(nginx.url, room)
      ywebsockets.push(p)
      p.doc.getText('t').insert(0, `y:${room};`)
    }
    await Promise.all(ywebsockets.map((p) => synced(p)))
    const home = new Map<string, Instance>()
    await eventually(async () => {
      const loaded = await Promise.all(instances.map(loadedRooms))
      home.clear()
      for (const room of candidates) {
        const at = instances.filter((_, i) => loaded[i]?.has(room))
        if (at.length === 1) home.set(room, at[0] as Instance)
      }
      return home.size === candidates.length
    }, 'every candidate room loaded on exactly one instance', 5000)
    // Nine rooms, three on each instance (the ring decides where each goes; 36 candidates leave
    // each instance with three unless the ring is badly skewed).
    const chosen: string[] = []
    for (const instance of instances) {
      const rooms = candidates.filter((room) => home.get(room) === instance)
      assert.ok(rooms.length >= PER_INSTANCE, `${instance.name} got ${rooms.length} of ${CANDIDATES} rooms`)
      chosen.push(...rooms.slice(0, PER_INSTANCE))
    }
    for (const room of chosen) hocuspocusClients.push(hocuspocus(`${nginx.url}${HOCUSPOCUS_PATH}/${encodeURIComponent(room)}`, room))
    await Promise.all(hocuspocusClients.map(hocuspocusSynced))
    for (const client of hocuspocusClients) {
      const room = client.provider.configuration.name
      assert.equal(client.provider.document.getText('t').toString(), `y:${room};`, `the Hocuspocus client of ${room} synced the y-websocket edit`)
      client.provider.document.getText('t').insert(0, 'h;')
    }
    for (const room of chosen) {
      const y = ywebsockets[candidates.indexOf(room)] as WebsocketProvider
      await until(() => y.doc.getText('t').toString() === `h;y:${room};`, `the Hocuspocus edit of ${room} to reach its y-websocket client`, 5000)
    }
    // Had a Hocuspocus client landed elsewhere, its instance would have loaded the room too.
    const loaded = await Promise.all(instances.map(loadedRooms))
    const spread = new Map<string, string[]>()
    for (const room of chosen) {
      const at = instances.filter((_, i) => loaded[i]?.has(room)).map((i) => i.name)
      assert.deepEqual(at, [home.get(room)?.name], `${room} is loaded only on its y-websocket clients' instance`)
      spread.set(at[0] as string, [...(spread.get(at[0] as string) ?? []), room])
    }
    assert.equal(spread.size, 3, 'the nine Hocuspocus clients are spread over the three instances')
    // The access log names each Hocuspocus upgrade's upstream once it ends.
    for (const c of hocuspocusClients) c.socket.destroy()
    await eventually(async () => (await nginx.accessLog()).filter((line) => line.includes(`GET ${HOCUSPOCUS_PATH}/`)).length >= chosen.length, 'the access log lines of the Hocuspocus sockets', 5000)
    const lines = (await nginx.accessLog()).filter((line) => line.includes(`GET ${HOCUSPOCUS_PATH}/`))
    const upstreams = new Set(lines.map((line) => /upstream=([^,\s]+)/.exec(line)?.[1]))
    assert.equal(upstreams.size, 3, `nginx sent Hocuspocus sockets to three upstreams: ${[...upstreams].join(' ')}`)
    console.log(`rooms by instance: ${[...spread].map(([name, rooms]) => `${name}: ${rooms.join(', ')}`).join('; ')}`)
  })

  it('keeps y-websocket rooms and the Hocuspocus protocol apart on the default path /', async () => {
    // The same process checks: with --hocuspocus-path /collab, a y-websocket room elsewhere is
    // unaffected; the default-path behaviour (/ = Hocuspocus, //<room> = y-websocket room "/<room>")
    // is checked in ywebsocket.test.ts and by servesHocuspocus below.
    const { servesHocuspocus } = await import('../server/server.js')
    assert.equal(servesHocuspocus('/', '/'), true)
    assert.equal(servesHocuspocus('//doc', '/'), false, 'a provider URL ending in / keeps reaching its y-websocket room')
    assert.equal(servesHocuspocus('/doc', '/'), false)
    assert.equal(servesHocuspocus('/collab', '/collab'), true)
    assert.equal(servesHocuspocus('/collab/doc', '/collab'), true)
    assert.equal(servesHocuspocus('/collab/a/b', '/collab'), true)
    assert.equal(servesHocuspocus('/collaborate', '/collab'), false, 'only whole path segments')
    assert.equal(servesHocuspocus('/doc', '/collab'), false)
  })
})
