/**
 * Issue 19 (cursor storm): a room gathers awareness changes for --awareness-flush-ms and sends
 * them merged, one frame per member, the newest state per client ID. Checked with raw clients that
 * count the awareness frames they receive, and with stock providers that must still see every
 * state and every removal.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { encodeAwareness, encodeAwarenessUpdate } from '../protocol/index.js'
import { awarenessEntries, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

function cursorFrame(clientId: number, clock: number, position: number): Uint8Array {
  return encodeAwareness(encodeAwarenessUpdate([{ clientId, clock, state: JSON.stringify({ cursor: position }) }]))
}

/** The awareness frames `client` received, and the newest state per client ID they carried. */
function received(client: RawClient): { frames: number; states: Map<number, string> } {
  let frames = 0
  const states = new Map<number, string>()
  for (const frame of client.frames) {
    const entries = awarenessEntries(frame)
    if (entries === null) continue
    frames++
    for (const entry of entries) states.set(entry.clientId, entry.state)
  }
  return { frames, states }
}

async function crowd(url: string, room: string, count: number): Promise<RawClient[]> {
  const clients: RawClient[] = []
  for (let i = 0; i < count; i++) clients.push((await RawClient.joined(`${url}/${room}`)).client)
  return clients
}

describe('awareness gathered per flush window', () => {
  let gathered: InProcessServer
  let perRead: InProcessServer
  before(async () => {
    gathered = await startServer({ awarenessFlushMs: 200 })
    perRead = await startServer({ awarenessFlushMs: 0 })
  })
  after(async () => {
    await gathered?.stop()
    await perRead?.stop()
  })

  it('30 cursors moved within the window reach an observer in a few frames, each at its newest position', async () => {
    const movers = await crowd(gathered.url, 'storm', 30)
    const observer = (await RawClient.joined(`${gathered.url}/storm`)).client
    try {
      movers.forEach((mover, i) => {
        // Three moves each: only the last position may survive the merge.
        for (let clock = 1; clock <= 3; clock++) mover.send(cursorFrame(1000 + i, clock, clock * 10 + i))
      })
      await until(() => received(observer).states.size === 30 && [...received(observer).states.values()].every((state, i) => state === JSON.stringify({ cursor: 30 + i })), 'every newest cursor at the observer')
      const { frames } = received(observer)
      // 90 changes; without merging the observer gets 90 frames. A window of 200 ms holds them all
      // unless the machine is very slow; allow a few windows.
      assert.ok(frames >= 1 && frames <= 6, `${frames} awareness frames for 90 changes`)
    } finally {
      for (const client of [...movers, observer]) client.socket.close()
    }
  })

  it('a state re-sent at the clock of its removal does not undo the removal inside a window', async () => {
    const [mover] = await crowd(gathered.url, 'ghost', 1)
    const observer = (await RawClient.joined(`${gathered.url}/ghost`)).client
    try {
      const state = (text: string | null): Uint8Array => encodeAwareness(encodeAwarenessUpdate([{ clientId: 3000, clock: 1, state: JSON.stringify(text === null ? null : { cursor: text }) }]))
      mover?.send(state('here'))
      mover?.send(state(null))
      mover?.send(state('here'))
      mover?.send(cursorFrame(3001, 1, 1))
      await until(() => received(observer).states.has(3001), 'the marker cursor at the observer')
      // What a client keeps, applying the entries one by one by y-protocols' rule: no state for 3000.
      assert.equal(received(observer).states.get(3000) ?? 'null', 'null')
    } finally {
      mover?.socket.close()
      observer.socket.close()
    }
  })

  it('with --awareness-flush-ms 0 every socket read goes out on its own', async () => {
    const movers = await crowd(perRead.url, 'reads', 10)
    const observer = (await RawClient.joined(`${perRead.url}/reads`)).client
    try {
      for (const [i, mover] of movers.entries()) {
        mover.send(cursorFrame(2000 + i, 1, i))
        await until(() => received(observer).states.has(2000 + i), `cursor ${i} at the observer`)
      }
      assert.equal(received(observer).frames, 10)
    } finally {
      for (const client of [...movers, observer]) client.socket.close()
    }
  })

  it('stock providers see each other’s states and the removal when one leaves', async () => {
    const a = provider(gathered.url, 'stock')
    const b = provider(gathered.url, 'stock')
    try {
      await Promise.all([synced(a), synced(b)])
      a.awareness.setLocalStateField('user', { name: 'Ada' })
      b.awareness.setLocalStateField('user', { name: 'Bo' })
      await until(() => b.awareness.getStates().get(a.doc.clientID)?.user?.name === 'Ada' && a.awareness.getStates().get(b.doc.clientID)?.user?.name === 'Bo', 'both states across')
      const id = a.doc.clientID
      destroy(a)
      await until(() => !b.awareness.getStates().has(id), 'a’s state removed at b', 2_000)
    } finally {
      destroy(a, b)
    }
  })
})
