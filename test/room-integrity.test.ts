import assert from 'node:assert/strict'
import { request } from 'node:http'
import { after, describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { encodeHocuspocusClientAuthToken, encodeHocuspocusSyncUpdate, encodeSyncUpdate } from '../protocol/index.js'
import { LevelStore } from '../persistence/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { httpRequest } from './harness/http.js'
import { describeLive, whileLive } from './harness/live-probe.js'
import { metricValue } from './harness/metrics.js'
import { runCli, startServer, tempDir, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

// Issue 12, finding 1: a writer must not be able to break a room. Updates that nest shared types
// deep enough to overflow Yjs's stack are refused (also when the depth is built up over many
// updates), an exception from Yjs never leaves a half-applied document that is then stored,
// broadcast or compacted, and a stored entry that cannot be applied is quarantined at load.

const DEPTH = 24

type Nesting = 'map' | 'array' | 'xml' | 'text-embed'

/** A chain of `depth` nested shared types of one kind under a root type, as one update from `clientID`. */
function chain(kind: Nesting, depth: number, clientID = 7): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = clientID
  doc.transact(() => {
    const root = kind === 'xml' ? doc.getXmlFragment('root') : kind === 'text-embed' ? doc.getText('root') : doc.getMap('root')
    let parent = root as unknown as Y.AbstractType<unknown>
    for (let level = 1; level < depth; level++) {
      const child = kind === 'array' ? new Y.Array() : kind === 'xml' ? new Y.XmlElement('p') : kind === 'text-embed' ? new Y.Text() : new Y.Map()
      if (parent instanceof Y.XmlFragment) parent.insert(0, [child as Y.XmlElement])
      else if (parent instanceof Y.Text) parent.insertEmbed(0, child)
      else if (parent instanceof Y.Array) parent.push([child])
      else (parent as Y.Map<unknown>).set('k', child)
      parent = child as unknown as Y.AbstractType<unknown>
    }
  })
  return Y.encodeStateAsUpdate(doc)
}

/** The six bytes of the report: client 1 deletes clock 0 (the outer map of its chain). */
const DELETE_OUTER = Uint8Array.from([0x00, 0x01, 0x01, 0x01, 0x00, 0x01])

function hocuspocusSocket(url: string): HocuspocusProviderWebsocket {
  return new HocuspocusProviderWebsocket({ url: `${url}/`, WebSocketPolyfill: WebSocket, delay: 50, minDelay: 50, maxDelay: 300 })
}

function hocuspocus(url: string, name: string): { provider: HocuspocusProvider; socket: HocuspocusProviderWebsocket; doc: Y.Doc } {
  const socket = hocuspocusSocket(url)
  const doc = new Y.Doc()
  const p = new HocuspocusProvider({ websocketProvider: socket, name, document: doc, token: null })
  p.attach()
  return { provider: p, socket, doc }
}

function hocuspocusSynced(p: HocuspocusProvider): Promise<void> {
  return until(() => p.isSynced && p.hasUnsyncedChanges === false, `hocuspocus ${p.configuration.name} synced`, 10_000)
}

async function postUpdate(server: InProcessServer, room: string, update: Uint8Array): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(`${server.http}/api/rooms/${encodeURIComponent(room)}/updates`)
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end(Buffer.from(update))
  })
}

/** A raw Hocuspocus client that opened `room` (open mode: any token is accepted). */
async function rawHocuspocus(server: InProcessServer, room: string): Promise<RawClient> {
  const client = await RawClient.open(`${server.url}/`)
  client.send(encodeHocuspocusClientAuthToken(room, 'token'))
  await client.frame((frame) => frame.length > 0, 'the Authenticated answer')
  return client
}

/** Sends `update` over `transport` and returns how it was refused: a close code or an HTTP status. */
async function sendHostile(server: InProcessServer, transport: 'y-websocket' | 'hocuspocus' | 'http', room: string, update: Uint8Array): Promise<number> {
  if (transport === 'http') return (await postUpdate(server, room, update)).status
  if (transport === 'y-websocket') {
    const { client } = await RawClient.joined(`${server.url}/${encodeURIComponent(room)}`)
    client.send(encodeSyncUpdate(update))
    return client.waitClosed()
  }
  const client = await rawHocuspocus(server, room)
  client.send(encodeHocuspocusSyncUpdate(room, update))
  return client.waitClosed()
}

/** An honest y-websocket and Hocuspocus client edit `room`, converge, and the server holds their edits. */
async function honestClientsWork(server: InProcessServer, room: string): Promise<Uint8Array> {
  const y = provider(server.url, room)
  const h = hocuspocus(server.url, room)
  try {
    await synced(y)
    await hocuspocusSynced(h.provider)
    y.doc.getText('honest').insert(0, 'from y-websocket ')
    h.doc.getText('honest').insert(0, 'from hocuspocus ')
    const state = await converged([y.doc, h.doc], 'honest clients to converge')
    // Acknowledged by SyncStatus: stored.
    await hocuspocusSynced(h.provider)
    assert.match(y.doc.getText('honest').toString(), /from hocuspocus/)
    assert.match(y.doc.getText('honest').toString(), /from y-websocket/)
    return state
  } finally {
    destroy(y)
    h.provider.destroy()
    h.socket.destroy()
  }
}

describe('a writer cannot break a room (issue 12, finding 1)', () => {
  const dirs: Array<{ remove(): Promise<void> }> = []
  after(async () => {
    for (const dir of dirs) await dir.remove()
  })

  it('the report: 20,000 nested Y.Maps then a 6-byte delete; the room keeps working, survives a restart, and exports', async (t) => {
    const dir = await tempDir()
    dirs.push(dir)
    let server = await startServer({ data: dir.path, keepData: true })
    const room = 'deep-report'
    const attacker = await RawClient.joined(`${server.url}/${room}`)
    const deep = chain('map', 20_000, 1)
    // The server keeps answering /health/live through the attack: a probe sent after each attacker
    // was refused is answered, and no probe failed or hung (how fast is for bench/, not here).
    const { live } = await whileLive(server.port, async (probe) => {
      attacker.client.send(encodeSyncUpdate(deep))
      assert.equal(await attacker.client.waitClosed(), 1007)
      await probe.answer('/health/live after the first deep chain')
      // Five more attackers with the same chain: each is refused by a linear walk of its bytes.
      for (let i = 0; i < 5; i++) {
        const next = await RawClient.joined(`${server.url}/${room}`)
        next.client.send(encodeSyncUpdate(deep))
        assert.equal(await next.client.waitClosed(), 1007)
        await probe.answer(`/health/live after deep chain ${i + 2}`)
      }
      const second = await RawClient.joined(`${server.url}/${room}`)
      second.client.send(encodeSyncUpdate(DELETE_OUTER))
      assert.equal(await second.client.waitClosed(), 1007)
      await probe.answer('/health/live after the 6-byte delete')
    })
    t.diagnostic(`during the attack: ${describeLive(live)}`)
    let state: Uint8Array
    const extra = new Y.Doc()
    let before: Awaited<ReturnType<typeof httpRequest>>
    try {
      assert.equal(await metricValue(server.http, 'weft_update_refusals_total', '{reason="too_deep"}'), 6)
      assert.equal(await metricValue(server.http, 'weft_update_refusals_total', '{reason="missing_dependencies"}'), 1)
      state = await honestClientsWork(server, room)
      // An HTTP write is acknowledged only once stored, and shows up for everyone.
      extra.getText('honest').insert(0, 'via http ')
      assert.equal((await postUpdate(server, room, Y.encodeStateAsUpdate(extra))).status, 204)
      before = await httpRequest(server.port, `/api/rooms/${room}`)
      assert.equal(before.status, 200)
    } finally {
      // Stopped also when an assertion failed: a server left running would hold the file open.
      await server.stop()
    }
    server = await startServer({ data: dir.path, keepData: true })
    try {
      const json = await httpRequest(server.port, `/api/rooms/${room}`)
      assert.equal(json.status, 200)
      assert.deepEqual(JSON.parse(json.body), JSON.parse(before.body))
      const fresh = provider(server.url, room)
      try {
        await synced(fresh)
        const expected = new Y.Doc()
        Y.applyUpdate(expected, state)
        Y.applyUpdate(expected, Y.encodeStateAsUpdate(extra))
        assert.deepEqual(canonicalState(fresh.doc), canonicalState(expected))
      } finally {
        destroy(fresh)
      }
    } finally {
      await server.stop()
    }
    const exported = await runCli(['export', room, '--data', dir.path])
    assert.equal(exported.status, 0, exported.stderr)
    assert.match(exported.stdout.toString(), /via http/)
  })

  for (const kind of ['map', 'array', 'xml', 'text-embed'] as const) {
    for (const transport of ['y-websocket', 'hocuspocus', 'http'] as const) {
      it(`${kind} nesting past --max-nesting-depth over ${transport} is refused; nothing is applied`, async () => {
        const server = await startServer({ maxNestingDepth: DEPTH })
        try {
          const room = `deep-${kind}-${transport}`
          const refused = await sendHostile(server, transport, room, chain(kind, DEPTH + 1))
          assert.equal(refused, transport === 'http' ? 400 : 1007)
          assert.equal((await httpRequest(server.port, `/api/rooms/${room}`)).status, 404, 'nothing of the update was applied')
          // At the bound itself the update is accepted.
          assert.equal(await sendHostile(server, 'http', room, chain(kind, DEPTH)), 204)
          await honestClientsWork(server, room)
        } finally {
          await server.stop()
        }
      })
    }
  }

  it('depth built across many updates counts the live document: one level per update is refused past the bound', async () => {
    const server = await startServer({ maxNestingDepth: DEPTH })
    try {
      const room = 'deep-incremental'
      const attacker = new Y.Doc()
      let parent: Y.Map<unknown> = attacker.getMap('root')
      const updates: Uint8Array[] = []
      attacker.on('update', (update: Uint8Array) => updates.push(update))
      for (let level = 1; level <= DEPTH + 2; level++) {
        const child = new Y.Map()
        parent.set('k', child)
        parent = child
      }
      const statuses: number[] = []
      for (const update of updates) statuses.push((await postUpdate(server, room, update)).status)
      // The root map is level 1: levels 2..DEPTH are accepted, the next is refused.
      assert.deepEqual(statuses.slice(0, DEPTH - 1), new Array(DEPTH - 1).fill(204))
      assert.equal(statuses[DEPTH - 1], 400)
      await honestClientsWork(server, room)
    } finally {
      await server.stop()
    }
  })

  it('deep Any and deep JSON content are refused by the validator', async () => {
    const server = await startServer()
    try {
      const doc = new Y.Doc()
      let any: unknown = 1
      for (let i = 0; i < 100; i++) any = [any]
      doc.getArray('a').push([any])
      assert.equal((await postUpdate(server, 'deep-any', Y.encodeStateAsUpdate(doc))).status, 400)
      const text = new Y.Doc()
      let json: unknown = 1
      for (let i = 0; i < 100; i++) json = { k: json }
      text.getText('t').insertEmbed(0, json as object)
      assert.equal((await postUpdate(server, 'deep-json', Y.encodeStateAsUpdate(text))).status, 400)
    } finally {
      await server.stop()
    }
  })

  it('an exception from Yjs in the middle of a transaction: nothing is stored, broadcast or acknowledged; members reload', async () => {
    // Yjs calls observers in its transaction cleanup, after integrating and before emitting
    // 'update': a throw there is the shape of the stack overflow of the report.
    const poison = new Y.Doc()
    poison.getMap('m').set('boom', 'half-applied')
    // The server's document knows 'm' only as a plain AbstractType (nobody called getMap on it).
    const proto = Y.AbstractType.prototype as unknown as { _callObserver(this: Y.AbstractType<unknown>, ...args: unknown[]): void }
    const original = proto._callObserver
    proto._callObserver = function (this: Y.AbstractType<unknown>, ...args: unknown[]) {
      const item = this._map.get('boom')
      if (item !== undefined && !item.deleted) throw new RangeError('Maximum call stack size exceeded (injected)')
      original.apply(this, args)
    }
    const dir = await tempDir()
    dirs.push(dir)
    let server = await startServer({ data: dir.path, keepData: true })
    try {
      const room = 'yjs-throws'
      const watcher = provider(server.url, room)
      await synced(watcher)
      watcher.doc.getText('honest').insert(0, 'before ')
      const h = hocuspocus(server.url, room)
      await hocuspocusSynced(h.provider)
      // Over HTTP: refused, not acknowledged.
      assert.equal((await postUpdate(server, room, Y.encodeStateAsUpdate(poison))).status, 400)
      // Over y-websocket: the sender is closed with 1007; the document was reset and reloads.
      const raw = await RawClient.joined(`${server.url}/${room}`)
      raw.client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(poison)))
      assert.equal(await raw.client.waitClosed(), 1007)
      assert.ok(((await metricValue(server.http, 'weft_room_resets_total')) ?? 0) >= 2)
      // Honest members reconnect and keep editing together.
      await synced(watcher)
      await hocuspocusSynced(h.provider)
      h.doc.getText('honest').insert(0, 'after ')
      await converged([watcher.doc, h.doc], 'members after the reset')
      assert.equal(watcher.doc.getMap('m').has('boom'), false, 'the half-applied update was never broadcast')
      await hocuspocusSynced(h.provider)
      destroy(watcher)
      h.provider.destroy()
      h.socket.destroy()
      const stored = await httpRequest(server.port, `/api/rooms/${room}`)
      assert.equal(stored.status, 200)
      assert.doesNotMatch(stored.body, /half-applied/)
      assert.match(stored.body, /after before/)
      await server.stop()
      proto._callObserver = original
      server = await startServer({ data: dir.path, keepData: true })
      const reloaded = await httpRequest(server.port, `/api/rooms/${room}`)
      assert.equal(reloaded.status, 200)
      assert.doesNotMatch(reloaded.body, /half-applied/)
      assert.match(reloaded.body, /after before/)
    } finally {
      proto._callObserver = original
      await server.stop()
    }
  })

  it('a stored entry that cannot be applied is quarantined; the room loads from the rest and admins see it', async () => {
    const dir = await tempDir()
    dirs.push(dir)
    const room = 'poisoned'
    const good = new Y.Doc()
    const updates: Uint8Array[] = []
    good.on('update', (update: Uint8Array) => updates.push(update))
    good.getText('t').insert(0, 'kept ')
    good.getText('t').insert(5, 'too')
    const store = await LevelStore.open(dir.path)
    await store.append(room, updates[0] as Uint8Array)
    // A truncated update: Yjs throws while reading it.
    const other = new Y.Doc()
    other.getText('t').insert(0, 'a long enough text to be cut in half')
    const whole = Y.encodeStateAsUpdate(other)
    await store.append(room, whole.subarray(0, whole.length - 10))
    await store.append(room, updates[1] as Uint8Array)
    await store.close()
    let server = await startServer({ data: dir.path, keepData: true })
    try {
      const p = provider(server.url, room)
      await withDeadline(synced(p), 'the room to load despite the poisoned entry')
      assert.equal(p.doc.getText('t').toString(), 'kept too')
      destroy(p)
      assert.equal(await metricValue(server.http, 'weft_quarantined_entries_total'), 1)
      const listing = JSON.parse((await httpRequest(server.port, '/api/rooms')).body) as { rooms: Array<{ room: string; quarantined: number }> }
      assert.equal(listing.rooms.find((r) => r.room === room)?.quarantined, 1)
      await server.stop()
      server = await startServer({ data: dir.path, keepData: true })
      const json = await httpRequest(server.port, `/api/rooms/${room}`)
      assert.equal(json.status, 200)
      assert.match(json.body, /kept too/)
      assert.equal(await metricValue(server.http, 'weft_quarantined_entries_total'), 0)
    } finally {
      await server.stop()
    }
  })
})
