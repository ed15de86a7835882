import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import type { Awareness } from 'y-protocols/awareness'
import {
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeHocuspocusAwareness,
  type AwarenessEntry,
} from '../protocol/index.js'
import { decodeRelayMessage, encodeRelayMessage } from '../cluster/relay-message.js'
import { destroy, RawClient, synced } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until, withDeadline } from './harness/wait.js'

// Issue 12, finding 10: a connection may set or remove only the awareness of client IDs it
// introduced, also across instances, and a departed ID goes back only to its owner's reconnect
// (the same token `sub`), never to a read-only client that claims it with a high clock.

const SECRET = 'presence-ownership-secret-with-at-least-32-bytes'

process.setMaxListeners(64)

function tokenProvider(url: string, room: string, token: string, doc = new Y.Doc(), awareness?: Awareness): WebsocketProvider {
  return new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    maxBackoffTime: 500,
    params: { token },
    ...(awareness === undefined ? {} : { awareness }),
  })
}

function stateOf(awareness: Awareness, clientId: number): { user?: { name?: string } } | undefined {
  return awareness.getStates().get(clientId) as { user?: { name?: string } } | undefined
}

function clockOf(awareness: Awareness, clientId: number): number {
  return (awareness.meta.get(clientId) as { clock: number }).clock
}

const impostor = JSON.stringify({ user: { name: 'impostor' } })

/** Claims `clientId` with a high clock, then sends its own marker state; resolves once `observer` has the marker (so it heard whatever the claim produced). */
async function claim(send: (entries: AwarenessEntry[]) => void, observer: Awareness, clientId: number, clock: number, marker: number): Promise<void> {
  send([{ clientId, clock: clock + 1_000, state: impostor }])
  send([{ clientId: marker, clock: 1, state: JSON.stringify({ marker: true }) }])
  await until(() => observer.getStates().has(marker), 'the observer to see the attacker’s own marker')
}

/**
 * Alice (`a`) and Bob sync, Bob sees Alice's state, then Alice's socket drops and the server
 * removes her state; returns her client ID and her awareness clock from before she left.
 */
async function aliceLeaves(a: WebsocketProvider, b: WebsocketProvider): Promise<{ id: number; clock: number }> {
  await Promise.all([synced(a), synced(b)])
  a.awareness.setLocalStateField('user', { name: 'alice' })
  const id = a.doc.clientID
  await until(() => stateOf(b.awareness, id)?.user?.name === 'alice', 'bob to see alice')
  const clock = clockOf(a.awareness, id)
  a.disconnect()
  await until(() => !b.awareness.getStates().has(id), 'bob to see alice leave')
  return { id, clock }
}

function yAttacker(raw: RawClient): (entries: AwarenessEntry[]) => void {
  return (entries) => raw.send(encodeAwareness(encodeAwarenessUpdate(entries)))
}

async function hocuspocusAttacker(url: string, room: string, token: string): Promise<{ raw: RawClient; send: (entries: AwarenessEntry[]) => void }> {
  const raw = await RawClient.hocuspocusJoined(url, room, token)
  return { raw, send: (entries) => raw.send(encodeHocuspocusAwareness(room, encodeAwarenessUpdate(entries))) }
}

describe('owner identities between instances (relay codec)', () => {
  it('an awareness message may carry one identity per entry, empty for none (byte vectors)', () => {
    const message = encodeRelayMessage({ kind: 'awareness', instance: 'x', ts: 1, awareness: Uint8Array.of(1, 2), identities: ['ab', null] })
    assert.equal(message.toString('latin1'), 'A1:x1:12:\x01\x023:ab\n')
    const decoded = decodeRelayMessage(message)
    assert.ok(decoded?.kind === 'awareness')
    assert.deepEqual(decoded.identities, ['ab', null])
    // Without the field (an instance that does not send it) the identities are unknown.
    const bare = decodeRelayMessage(encodeRelayMessage({ kind: 'awareness', instance: 'x', ts: 1, awareness: Uint8Array.of(1, 2) }))
    assert.ok(bare?.kind === 'awareness')
    assert.equal(bare.identities, undefined)
    assert.equal(decodeRelayMessage(Buffer.concat([message, Buffer.from('1:z')])), null, 'nothing may follow the identities')
  })
})

describe('presence ownership on one instance', () => {
  let server: InProcessServer
  let alice: string
  let bob: string
  let mallory: string
  before(async () => {
    server = await startServer({ authSecret: SECRET })
    alice = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'alice' })
    bob = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'bob' })
    mallory = await signToken({ rooms: ['*'], access: 'read' }, { secret: SECRET, subject: 'mallory' })
  })
  after(async () => {
    await server.stop()
  })

  for (const protocol of ['y-websocket', 'hocuspocus'] as const) {
    it(`${protocol}: a read-only client cannot claim a departed client ID; its owner's reconnect gets it back`, async () => {
      const room = `takeover-${protocol}`
      const a = tokenProvider(server.url, room, alice)
      const b = tokenProvider(server.url, room, bob)
      let attacker: RawClient | null = null
      try {
        const { id, clock } = await aliceLeaves(a, b)

        let send: (entries: AwarenessEntry[]) => void
        if (protocol === 'y-websocket') {
          attacker = await RawClient.open(`${server.url}/${room}?token=${mallory}`)
          send = yAttacker(attacker)
        } else {
          const hp = await hocuspocusAttacker(server.url, room, mallory)
          attacker = hp.raw
          send = hp.send
        }
        const refusedBefore = (await metricValue(server.http, 'weft_awareness_refused_total', '{reason="reserved"}')) ?? 0
        await claim(send, b.awareness, id, clock, 0x7fff_0001)
        assert.equal(b.awareness.getStates().has(id), false, 'bob never saw the impostor under alice’s ID')
        assert.equal(server.server.loadedRoom(room)?.awareness.liveEntries().some((e) => e.clientId === id), false)
        assert.equal(((await metricValue(server.http, 'weft_awareness_refused_total', '{reason="reserved"}')) ?? 0) - refusedBefore, 1)
        assert.equal(attacker.closeCode, null, 'the attempt is ignored, not closed')

        // Alice reconnects (same client ID, a new connection with her token) and moves her cursor.
        a.connect()
        await synced(a)
        a.awareness.setLocalStateField('user', { name: 'alice is back' })
        await until(() => stateOf(b.awareness, id)?.user?.name === 'alice is back', 'bob to see alice’s own state after her reconnect')
        const held = server.server.loadedRoom(room)?.awareness.liveEntries().find((e) => e.clientId === id)
        assert.equal(JSON.parse(held?.state ?? 'null').user.name, 'alice is back')

        // And now that she is back, the attacker cannot overwrite or remove her live state either.
        send([{ clientId: id, clock: clockOf(a.awareness, id) + 1_000, state: 'null' }])
        await claim(send, b.awareness, id, clockOf(a.awareness, id), 0x7fff_0002)
        assert.equal(stateOf(b.awareness, id)?.user?.name, 'alice is back')
      } finally {
        attacker?.socket.terminate()
        destroy(a, b)
      }
    })
  }

  it('a Hocuspocus owner gets its departed ID back; a y-websocket observer sees it', async () => {
    const room = 'takeover-hp-owner'
    const socket = new HocuspocusProviderWebsocket({ url: `${server.url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
    const a = new HocuspocusProvider({ websocketProvider: socket, name: room, document: new Y.Doc(), token: alice })
    a.attach()
    const b = tokenProvider(server.url, room, bob)
    let attacker: RawClient | null = null
    try {
      await synced(b)
      await withDeadline(new Promise<void>((resolve) => (a.isSynced ? resolve() : a.on('synced', () => resolve()))), 'alice’s Hocuspocus provider to sync')
      const awareness = a.awareness as Awareness
      awareness.setLocalStateField('user', { name: 'alice' })
      const id = a.document.clientID
      await until(() => stateOf(b.awareness, id)?.user?.name === 'alice', 'bob to see alice')
      const clock = clockOf(awareness, id)
      socket.disconnect()
      await until(() => !b.awareness.getStates().has(id), 'bob to see alice leave')

      attacker = await RawClient.open(`${server.url}/${room}?token=${mallory}`)
      await claim(yAttacker(attacker), b.awareness, id, clock, 0x7fff_0003)
      assert.equal(b.awareness.getStates().has(id), false)

      void socket.connect()
      await until(() => server.server.loadedRoom(room)?.memberCount === 3, 'alice to be back in the room')
      awareness.setLocalStateField('user', { name: 'alice is back' })
      await until(() => stateOf(b.awareness, id)?.user?.name === 'alice is back', 'bob to see alice again')
    } finally {
      attacker?.socket.terminate()
      a.destroy()
      socket.destroy()
      destroy(b)
    }
  })
})

describe('presence ownership across two instances on one Redis', () => {
  let redis: RedisProcess
  let one: InProcessServer
  let two: InProcessServer
  let alice: string
  let bob: string
  let mallory: string
  before(async () => {
    redis = await startRedis()
    one = await startServer({ authSecret: SECRET, redisUrl: redis.url, instanceId: 'one' })
    two = await startServer({ authSecret: SECRET, redisUrl: redis.url, instanceId: 'two' })
    alice = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'alice' })
    bob = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'bob' })
    mallory = await signToken({ rooms: ['*'], access: 'read' }, { secret: SECRET, subject: 'mallory' })
  })
  after(async () => {
    await Promise.all([one?.stop(), two?.stop()])
    await redis?.dispose()
  })

  it('a client on the second instance can neither overwrite nor remove the live state of a client on the first', async () => {
    const room = 'cluster-live'
    const a = tokenProvider(one.url, room, alice)
    const carol = tokenProvider(one.url, room, bob)
    const b = tokenProvider(two.url, room, bob)
    let attacker: RawClient | null = null
    try {
      await Promise.all([synced(a), synced(b), synced(carol)])
      a.awareness.setLocalStateField('user', { name: 'alice' })
      const id = a.doc.clientID
      await until(() => stateOf(b.awareness, id)?.user?.name === 'alice', 'bob on the second instance to see alice')
      const clock = clockOf(a.awareness, id)

      attacker = await RawClient.open(`${two.url}/${room}?token=${mallory}`)
      const send = yAttacker(attacker)
      send([{ clientId: id, clock: clock + 2_000, state: 'null' }])
      await claim(send, b.awareness, id, clock, 0x7fff_0010)
      await until(() => carol.awareness.getStates().has(0x7fff_0010), 'the marker to reach the first instance')
      assert.equal(stateOf(b.awareness, id)?.user?.name, 'alice', 'the second instance kept alice’s state')
      assert.equal(stateOf(carol.awareness, id)?.user?.name, 'alice', 'the first instance kept alice’s state')
      assert.equal(stateOf(a.awareness, id)?.user?.name, 'alice')
      for (const server of [one, two]) {
        const held = server.server.loadedRoom(room)?.awareness.liveEntries().find((e) => e.clientId === id)
        assert.equal(held?.clock, clock)
      }
    } finally {
      attacker?.socket.terminate()
      destroy(a, b, carol)
    }
  })

  it('a departed ID is reserved on every instance: only its owner gets it back, from either instance', async () => {
    const room = 'cluster-departed'
    const a = tokenProvider(one.url, room, alice)
    const b = tokenProvider(two.url, room, bob)
    let back: WebsocketProvider | null = null
    let attacker: RawClient | null = null
    try {
      const { id, clock } = await aliceLeaves(a, b)

      // Mallory on the second instance, where alice never was.
      attacker = await RawClient.open(`${two.url}/${room}?token=${mallory}`)
      await claim(yAttacker(attacker), b.awareness, id, clock, 0x7fff_0020)
      assert.equal(b.awareness.getStates().has(id), false)
      assert.equal(two.server.loadedRoom(room)?.awareness.liveEntries().some((e) => e.clientId === id), false)

      // Alice comes back through the second instance, with the same client ID and awareness.
      const returning = tokenProvider(two.url, room, alice, a.doc, a.awareness)
      back = returning
      await synced(returning)
      a.awareness.setLocalStateField('user', { name: 'alice via two' })
      await until(() => stateOf(b.awareness, id)?.user?.name === 'alice via two', 'bob to see alice back')
    } finally {
      attacker?.socket.terminate()
      if (back !== null) back.destroy()
      destroy(a, b)
    }
  })
})
