/**
 * The embedding application's hooks (issue 15), each with real clients: the stock y-websocket and
 * Hocuspocus providers and HTTP requests against a weft server in this process.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { MemoryStore, StoreClosedError, type ConnectionInfo, type UpdateOrigin, type WeftHooks } from '../server/index.js'
import { destroy, hocuspocusProvider, provider, synced, textUpdate } from './harness/clients.js'
import { httpBytes } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startRedis } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { eventually, until } from './harness/wait.js'

const SECRET = 'hooks-test-secret-0123456789abcdefghijkl'

const token = (subject: string): Promise<string> => signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject })

/** The text of `field` in a document made of the stored log. */
async function storedText(store: MemoryStore, room: string, field = 'text'): Promise<string> {
  const doc = new Y.Doc()
  for (const { update } of await store.readLog(room)) Y.applyUpdate(doc, update)
  return doc.getText(field).toString()
}

/** What an update alone, applied to an empty document, puts in `field`. */
function textOf(update: Uint8Array, field: string): string {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return doc.getText(field).toString()
}

const servers: InProcessServer[] = []
async function serve(options: Parameters<typeof startServer>[0]): Promise<InProcessServer> {
  const weft = await startServer(options)
  servers.push(weft)
  return weft
}
after(async () => {
  await Promise.all(servers.map((weft) => weft.stop()))
})

describe('hooks', () => {
  it('onLoad seeds a new document before any client sees it, and the seed is stored', async () => {
    const loads: string[] = []
    const hooks: WeftHooks = {
      onLoad(room, doc) {
        loads.push(room)
        if (doc.store.clients.size === 0) doc.getText('text').insert(0, `welcome to ${room}`)
      },
    }
    const store = new MemoryStore()
    const weft = await serve({ hooks, store })
    const client = provider(weft.url, 'seeded')
    try {
      await synced(client)
      assert.equal(client.doc.getText('text').toString(), 'welcome to seeded', 'the first sync carries the seed')
      assert.deepEqual(loads, ['seeded'])
      await eventually(async () => (await storedText(store, 'seeded')) === 'welcome to seeded', 'the seed to be stored')
      await weft.server.close()
      await assert.rejects(store.readLog('seeded'), StoreClosedError, 'weft closes the store it was handed')
    } finally {
      destroy(client)
    }
  })

  it('onChange reports each update with its origin: client (both protocols) or http, with the subject', async () => {
    const changes: Array<{ room: string; update: Uint8Array; origin: UpdateOrigin }> = []
    const weft = await serve({ authSecret: SECRET, hooks: { onChange: (room, update, origin) => void changes.push({ room, update, origin }) } })
    const alice = provider(weft.url, 'changes-y', new Y.Doc(), { params: { token: await token('alice') } })
    const carol = hocuspocusProvider(weft.url, 'changes-hp', await token('carol'))
    try {
      await synced(alice)
      alice.doc.getText('text').insert(0, 'from alice')
      await until(() => carol.provider.isSynced, 'the Hocuspocus provider to sync')
      carol.doc.getText('text').insert(0, 'from carol')
      const posted = await httpBytes(weft.http, 'POST', '/api/rooms/changes-http/updates', {
        headers: { authorization: `Bearer ${await token('bob')}`, 'content-type': 'application/octet-stream' },
        body: textUpdate('from bob'),
      })
      assert.equal(posted.status, 204)
      const find = (room: string) => changes.find((change) => change.room === room)
      await until(() => find('changes-y') !== undefined && find('changes-hp') !== undefined && find('changes-http') !== undefined, 'a change of each origin')
      assert.deepEqual(find('changes-y')?.origin, { kind: 'client', protocol: 'y-websocket', subject: 'alice' })
      assert.deepEqual(find('changes-hp')?.origin, { kind: 'client', protocol: 'hocuspocus', subject: 'carol' })
      assert.deepEqual(find('changes-http')?.origin, { kind: 'http', subject: 'bob' })
      assert.equal(textOf((find('changes-y') as { update: Uint8Array }).update, 'text'), 'from alice')
      assert.equal(textOf((find('changes-hp') as { update: Uint8Array }).update, 'text'), 'from carol')
      assert.equal(textOf((find('changes-http') as { update: Uint8Array }).update, 't'), 'from bob')
    } finally {
      destroy(alice)
      carol.destroy()
    }
  })

  it('onChange on another instance of a cluster reports the cluster as the origin', async () => {
    const redis = await startRedis()
    try {
      const changes: Array<{ instance: string; origin: UpdateOrigin }> = []
      const instance = (id: string) => serve({ redisUrl: redis.url, instanceId: id, roomUnloadDelayMs: -1, hooks: { onChange: (_room, _update, origin) => void changes.push({ instance: id, origin }) } })
      const [a, b] = await Promise.all([instance('hooks-a'), instance('hooks-b')])
      const onA = provider(a.url, 'clustered')
      const onB = provider(b.url, 'clustered')
      try {
        await Promise.all([synced(onA), synced(onB)])
        onA.doc.getText('text').insert(0, 'across')
        await until(() => onB.doc.getText('text').toString() === 'across', 'the edit to reach the other instance')
        await until(() => changes.some((change) => change.instance === 'hooks-b'), 'onChange on the other instance')
        assert.deepEqual(changes.find((change) => change.instance === 'hooks-a')?.origin, { kind: 'client', protocol: 'y-websocket', subject: null })
        assert.equal(changes.find((change) => change.instance === 'hooks-b')?.origin.kind, 'cluster')
      } finally {
        destroy(onA, onB)
        await Promise.all([a.stop(), b.stop()])
      }
    } finally {
      await redis.dispose()
    }
  })

  it('onStored comes only once the write reached storage, after the onChange of that update', async () => {
    /** A store whose appends wait until the test opens the gate. */
    class GatedStore extends MemoryStore {
      entered = 0
      opened = false
      private release: () => void = () => {}
      private readonly gate = new Promise<void>((resolve) => (this.release = resolve))
      open(): void {
        this.opened = true
        this.release()
      }
      override async append(room: string, update: Uint8Array): Promise<string> {
        this.entered++
        await this.gate
        return super.append(room, update)
      }
    }
    const store = new GatedStore()
    const events: Array<{ hook: string; opened: boolean; stored: string }> = []
    const weft = await serve({
      store,
      hooks: {
        onChange: () => void events.push({ hook: 'onChange', opened: store.opened, stored: '' }),
        onStored: async (room) => void events.push({ hook: 'onStored', opened: store.opened, stored: await storedText(store, room) }),
      },
    })
    const client = provider(weft.url, 'gated')
    try {
      await synced(client)
      client.doc.getText('text').insert(0, 'kept')
      await until(() => store.entered > 0 && events.some((event) => event.hook === 'onChange'), 'the change to be reported and its write to start')
      assert.deepEqual(events.map((event) => event.hook), ['onChange'], 'no onStored while the write waits')
      store.open()
      await until(() => events.some((event) => event.hook === 'onStored'), 'onStored')
      const stored = events.find((event) => event.hook === 'onStored')
      assert.deepEqual(stored, { hook: 'onStored', opened: true, stored: 'kept' })
      assert.equal(events[0]?.hook, 'onChange')
    } finally {
      destroy(client)
    }
  })

  it('onUnload comes when the room left memory, with everything stored', async () => {
    const store = new MemoryStore()
    const events: string[] = []
    let storedAtUnload = ''
    const weft = await serve({
      store,
      roomUnloadDelayMs: 50,
      hooks: {
        onLoad: (room) => void events.push(`load ${room}`),
        onStored: (room) => void events.push(`stored ${room}`),
        onUnload: async (room) => {
          events.push(`unload ${room}`)
          storedAtUnload = await storedText(store, room)
        },
      },
    })
    const client = provider(weft.url, 'unloading')
    try {
      await synced(client)
      client.doc.getText('text').insert(0, 'before unload')
      await until(() => events.includes('stored unloading'), 'the edit to be stored')
    } finally {
      destroy(client)
    }
    await until(() => events.includes('unload unloading'), 'onUnload')
    assert.equal(storedAtUnload, 'before unload')
    assert.equal(weft.server.loadedRoom('unloading'), undefined, 'the room is out of memory')
    assert.equal(events[0], 'load unloading')
    assert.equal(events.at(-1), 'unload unloading')
  })

  it('onConnect and onDisconnect for a y-websocket connection and a Hocuspocus document, in that order', async () => {
    const events: Array<{ hook: string; info: ConnectionInfo; code?: number }> = []
    const weft = await serve({
      authSecret: SECRET,
      hooks: {
        onConnect: (info) => void events.push({ hook: 'onConnect', info }),
        onDisconnect: (info, code) => void events.push({ hook: 'onDisconnect', info, code }),
      },
    })
    const dave = provider(weft.url, 'connect-y', new Y.Doc(), { params: { token: await token('dave') } })
    await synced(dave)
    const erin = hocuspocusProvider(weft.url, 'connect-hp', await token('erin'))
    await until(() => erin.provider.isSynced, 'the Hocuspocus provider to sync')
    assert.deepEqual(events.map((event) => [event.hook, event.info]), [
      ['onConnect', { room: 'connect-y', protocol: 'y-websocket', subject: 'dave', remoteAddress: '127.0.0.1' }],
      ['onConnect', { room: 'connect-hp', protocol: 'hocuspocus', subject: 'erin', remoteAddress: '127.0.0.1' }],
    ])
    destroy(dave)
    erin.destroy()
    await until(() => events.length === 4, 'both disconnects')
    const disconnects = events.slice(2)
    assert.deepEqual(disconnects.map((event) => event.info.room).sort(), ['connect-hp', 'connect-y'])
    for (const event of disconnects) {
      assert.equal(event.hook, 'onDisconnect')
      assert.equal(typeof event.code, 'number')
    }
  })

  it('a hook that throws is logged and counted; the edit still reaches everyone and storage', async () => {
    const store = new MemoryStore()
    const weft = await serve({
      store,
      hooks: {
        onChange: () => {
          throw new Error('the application failed')
        },
        onStored: () => Promise.reject(new Error('the application failed again')),
        onConnect: () => {
          throw new Error('and again')
        },
      },
    })
    const a = provider(weft.url, 'throwing')
    const b = provider(weft.url, 'throwing')
    try {
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'survives')
      await until(() => b.doc.getText('text').toString() === 'survives', 'the edit to reach the other client')
      await eventually(async () => (await storedText(store, 'throwing')) === 'survives', 'the edit to be stored')
      const failures = async (hook: string): Promise<number> => (await metricValue(weft.http, 'weft_hook_failures_total', `{hook="${hook}",reason="error"}`)) ?? 0
      await eventually(async () => (await failures('onStored')) >= 1, 'the onStored failure to be counted')
      assert.ok((await failures('onChange')) >= 1, 'onChange failure counted')
      assert.ok((await failures('onStored')) >= 1, 'onStored failure counted')
      assert.equal(await failures('onConnect'), 2, 'one per connection')
      assert.equal(weft.server.state, 'serving')
    } finally {
      destroy(a, b)
    }
  })

  it('a hook that hangs is cut off after hookTimeoutMs and counted; the room goes on', async () => {
    const never = new Promise<void>(() => {})
    const store = new MemoryStore()
    const weft = await serve({ store, hookTimeoutMs: 200, hooks: { onLoad: () => never, onChange: () => never } })
    const a = provider(weft.url, 'hanging')
    const b = provider(weft.url, 'hanging')
    try {
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'one')
      await until(() => b.doc.getText('text').toString() === 'one', 'the first edit to reach the other client')
      b.doc.getText('text').insert(3, ' two')
      await until(() => a.doc.getText('text').toString() === 'one two', 'the second edit, while onChange still hangs')
      const timeouts = async (hook: string): Promise<number> => (await metricValue(weft.http, 'weft_hook_failures_total', `{hook="${hook}",reason="timeout"}`)) ?? 0
      assert.equal(await timeouts('onLoad'), 1)
      await eventually(async () => (await storedText(store, 'hanging')) === 'one two', 'both edits stored')
      // Each onChange is cut off in turn: the queue moves on instead of holding every later call.
      await eventually(async () => (await timeouts('onChange')) >= 2, 'both onChange calls to time out')
    } finally {
      destroy(a, b)
    }
  })
})
