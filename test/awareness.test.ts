import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { WebsocketProvider } from 'y-websocket'
import {
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeQueryAwareness,
  type AwarenessEntry,
} from '../protocol/index.js'
import { awarenessEntries, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

// Awareness (presence) through the server: relay, removal on disconnect, ownership of client IDs,
// query-awareness, and the echo a lone client needs for liveness.

function awarenessFrame(entries: AwarenessEntry[]): Uint8Array {
  return encodeAwareness(encodeAwarenessUpdate(entries))
}

function stateOf(p: WebsocketProvider, clientId: number): unknown {
  return p.awareness.getStates().get(clientId)
}

describe('awareness', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  it('relays a state to the others, and removes it within 1 s of the owner’s destroy()', async () => {
    const room = 'presence'
    const a = provider(server.url, room)
    const b = provider(server.url, room)
    const c = provider(server.url, room)
    try {
      await Promise.all([synced(a), synced(b), synced(c)])
      a.awareness.setLocalStateField('user', { name: 'Ada', color: '#f00' })
      const id = a.doc.clientID
      await until(() => JSON.stringify(stateOf(b, id)) === JSON.stringify({ user: { name: 'Ada', color: '#f00' } }), 'b to see a’s state')
      await until(() => stateOf(c, id) !== undefined, 'c to see a’s state')

      destroy(a)
      // The contract's bound: no ghost cursor lingers for more than a second.
      await until(() => !b.awareness.getStates().has(id) && !c.awareness.getStates().has(id), 'a’s state to be removed at b and c', 1000)
      assert.equal(
        server.server.loadedRoom(room)?.awareness.liveEntries().some((entry) => entry.clientId === id),
        false,
        'the server no longer holds a’s state',
      )
    } finally {
      destroy(a, b, c)
    }
  })

  it('gives a newcomer the states of those already in the room', async () => {
    const room = 'presence-newcomer'
    const a = provider(server.url, room)
    let b: WebsocketProvider | null = null
    try {
      await synced(a)
      a.awareness.setLocalStateField('user', { name: 'first' })
      await until(
        () => server.server.loadedRoom(room)?.awareness.liveEntries().some((e) => e.clientId === a.doc.clientID) === true,
        'server to hold a’s state',
      )
      // a does not change its state again: only the server can tell b about it.
      const late = provider(server.url, room)
      b = late
      await until(() => (stateOf(late, a.doc.clientID) as { user?: { name?: string } } | undefined)?.user?.name === 'first', 'newcomer to see a’s state')
    } finally {
      destroy(a)
      if (b !== null) destroy(b)
    }
  })

  it('does not let a connection change or remove a client ID another connection introduced', async () => {
    const room = 'presence-ownership'
    const a = provider(server.url, room)
    const b = provider(server.url, room)
    let raw: RawClient | null = null
    try {
      await Promise.all([synced(a), synced(b)])
      a.awareness.setLocalStateField('user', { name: 'owner' })
      const id = a.doc.clientID
      const original = JSON.stringify(a.awareness.getLocalState())
      await until(() => JSON.stringify(stateOf(b, id)) === original, 'b to see a’s state')
      const clock = (a.awareness.meta.get(id) as { clock: number }).clock

      const attacker = await RawClient.open(`${server.url}/${room}`)
      raw = attacker
      attacker.send(awarenessFrame([{ clientId: id, clock: clock + 5, state: JSON.stringify({ user: { name: 'impostor' } }) }]))
      attacker.send(awarenessFrame([{ clientId: id, clock: clock + 10, state: 'null' }]))
      // Ordered after both: the attacker's own state. Once b has it, b has heard whatever the
      // server relayed of the two forged entries.
      const markerId = 0x7fff_fff0
      attacker.send(awarenessFrame([{ clientId: markerId, clock: 1, state: JSON.stringify({ marker: true }) }]))
      await until(() => stateOf(b, markerId) !== undefined, 'b to see the attacker’s own state')

      assert.equal(JSON.stringify(stateOf(b, id)), original, 'b still has a’s original state')
      assert.equal(JSON.stringify(a.awareness.getLocalState()), original)
      const onServer = server.server.loadedRoom(room)?.awareness.liveEntries().find((e) => e.clientId === id)
      assert.equal(onServer?.state, original)
      assert.equal(onServer?.clock, clock)
      // Nor did the attacker hear its forgeries echoed as accepted.
      const echoed = attacker.frames.flatMap((frame) => awarenessEntries(frame) ?? []).filter((e) => e.clientId === id && e.clock > clock)
      assert.deepEqual(echoed, [])
      // Refusing is not closing: the attacker's connection is still open (its marker got through).
      assert.equal(attacker.closeCode, null)
    } finally {
      raw?.socket.terminate()
      destroy(a, b)
    }
  })

  it('answers query-awareness with the room’s states', async () => {
    const room = 'presence-query'
    const a = provider(server.url, room)
    let raw: RawClient | null = null
    try {
      await synced(a)
      // In a room without states the answer is an empty update: proof that the query was answered.
      const client = await RawClient.open(`${server.url}/emptyish-${room}`)
      raw = client
      await client.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'server sync step 1')
      const before = client.frames.length
      client.send(encodeQueryAwareness())
      const empty = await client.frame((frame) => client.frames.indexOf(frame) >= before && awarenessEntries(frame) !== null, 'empty answer')
      assert.deepEqual(awarenessEntries(empty), [])
      client.close()
      await client.waitClosed()

      a.awareness.setLocalStateField('user', { name: 'queried' })
      const expected = JSON.stringify(a.awareness.getLocalState())
      await until(
        () => server.server.loadedRoom(room)?.awareness.liveEntries().some((e) => e.clientId === a.doc.clientID) === true,
        'server to hold a’s state',
      )
      const querier = await RawClient.open(`${server.url}/${room}`)
      raw = querier
      await querier.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'server sync step 1')
      // What the server sends a newcomer on its own comes with its sync step 1; skip past it.
      await querier.frame((frame) => awarenessEntries(frame) !== null, 'welcome awareness')
      const seen = querier.frames.length
      querier.send(encodeQueryAwareness())
      const answer = await querier.frame((frame) => querier.frames.indexOf(frame) >= seen && awarenessEntries(frame) !== null, 'query answer')
      const entries = awarenessEntries(answer) ?? []
      const entry = entries.find((e) => e.clientId === a.doc.clientID)
      assert.ok(entry !== undefined, 'the answer has a’s state')
      assert.equal(JSON.stringify(JSON.parse(entry.state)), expected)
    } finally {
      raw?.socket.terminate()
      destroy(a)
    }
  })

  it('echoes a lone client’s own awareness back to it', async () => {
    const room = 'presence-alone'
    const alone = provider(server.url, room)
    try {
      await synced(alone)
      const socket = alone.ws
      assert.ok(socket !== null)
      const received: Uint8Array[] = []
      socket.addEventListener('message', (event: MessageEvent) => {
        received.push(new Uint8Array(event.data as ArrayBuffer))
      })
      alone.awareness.setLocalStateField('cursor', { index: 42 })
      const id = alone.doc.clientID
      await until(
        () =>
          received.some((frame) =>
            (awarenessEntries(frame) ?? []).some((e) => e.clientId === id && (JSON.parse(e.state) as { cursor?: { index?: number } }).cursor?.index === 42),
          ),
        'the lone client to hear its own state',
      )
    } finally {
      destroy(alone)
    }
  })

  it('echoes a raw client’s awareness when it is alone in the room', async () => {
    const raw = await RawClient.open(`${server.url}/presence-alone-raw`)
    try {
      await raw.frame((frame) => decodeYMessage(frame).kind === 'sync-step-1', 'server sync step 1')
      raw.send(awarenessFrame([{ clientId: 31337, clock: 1, state: '{"here":true}' }]))
      const echo = await raw.frame((frame) => (awarenessEntries(frame) ?? []).some((e) => e.clientId === 31337), 'own state echoed')
      assert.deepEqual(awarenessEntries(echo), [{ clientId: 31337, clock: 1, state: '{"here":true}' }])
    } finally {
      raw.socket.terminate()
    }
  })
})
