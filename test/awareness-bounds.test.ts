import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, before, describe, it, type TestContext } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import {
  decodeAwarenessUpdate,
  decodeHocuspocusMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodeHocuspocusAwareness,
  encodeHocuspocusQueryAwareness,
  encodeQueryAwareness,
  encodeSyncStep1,
  readAwarenessUpdate,
  type AwarenessEntry,
} from '../protocol/index.js'
import { DEFAULTS } from '../server/config.js'
import { ProtocolError } from '../protocol/index.js'
import { awarenessLimits, RemoteInstance, RoomAwareness, type AwarenessLimits } from '../server/room-awareness.js'
import * as awarenessProtocol from 'y-protocols/awareness'
import { envNumber, randomBytes, rngFor } from './harness/fuzz.js'
import { awarenessEntries, destroy, provider, RawClient, synced } from './harness/clients.js'
import { describeLive, whileLive } from './harness/live-probe.js'
import { metricValue } from './harness/metrics.js'
import { spawnWeft, startServer, type InProcessServer, type WeftProcess } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until, withDeadline } from './harness/wait.js'

// Issue 12, finding 2: awareness entries and bytes are bounded per message, per connection and per
// room, departed clients leave nothing but a small expiring reservation, and a read-only flood
// neither stalls the process nor grows its memory.

const LIMITS = awarenessLimits(DEFAULTS)

function hex(text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(text.replace(/\s+/g, ''), 'hex'))
}

describe('readAwarenessUpdate (byte vectors)', () => {
  const limits = { maxEntriesPerMessage: 2, maxStateBytes: 4 }

  it('reads entries within the bounds like decodeAwarenessUpdate', () => {
    // 2 entries: client 1 clock 2 state `{}`, client 3 clock 4 state `null`.
    const bytes = hex('02 01 02 02 7b7d 03 04 04 6e756c6c')
    assert.deepEqual(readAwarenessUpdate(bytes, limits), { entries: decodeAwarenessUpdate(bytes), unread: 0, oversized: 0 })
  })

  it('leaves entries past maxEntriesPerMessage unread, even malformed ones', () => {
    // 3 entries, the third's state is not JSON: never looked at.
    const bytes = hex('03 01 01 01 30 02 01 01 31 03 01 01 7b')
    const read = readAwarenessUpdate(bytes, limits)
    assert.deepEqual(read.entries.map((e) => e.clientId), [1, 2])
    assert.equal(read.unread, 1)
    assert.throws(() => decodeAwarenessUpdate(bytes), /not valid JSON/)
  })

  it('skips a state over maxStateBytes unread and counts it', () => {
    // client 5's state `"abcd"` is 6 bytes; client 6's `1` is 1 byte.
    const bytes = hex('02 05 01 06 2261626364 22 06 01 01 31')
    const read = readAwarenessUpdate(bytes, limits)
    assert.deepEqual(read.entries, [{ clientId: 6, clock: 1, state: '1' }])
    assert.equal(read.oversized, 1)
  })

  it('still refuses a malformed entry it reads (1007)', () => {
    assert.throws(() => readAwarenessUpdate(hex('01 01 01 01 7b'), limits), (err: Error & { closeCode?: number }) => err.closeCode === 1007)
    assert.throws(() => readAwarenessUpdate(hex('01 01 01 05 7b'), limits), (err: Error & { closeCode?: number }) => err.closeCode === 1007)
  })
})

describe('RoomAwareness bounds', () => {
  it('holds a room of 10,000 users with one cursor each under the defaults; echoes cost nothing', () => {
    const room = new RoomAwareness(LIMITS)
    const members = Array.from({ length: 10_000 }, () => ({}))
    const cursor = (i: number): string => JSON.stringify({ user: { name: `user ${i}`, color: '#30bced' }, cursor: { anchor: { type: { client: 1, clock: i }, item: { client: 2, clock: i }, assoc: 0 }, head: { type: { client: 1, clock: i }, item: { client: 2, clock: i }, assoc: 0 } } })
    members.forEach((member, i) => {
      const { accepted, refused } = room.apply([{ clientId: 1_000 + i, clock: 1, state: cursor(i) }], member, `user-${i}`)
      assert.equal(accepted.length, 1)
      assert.equal(refused.size, 0)
    })
    assert.equal(room.size, 10_000)
    // A stock provider echoes every state it heard: nothing changes, nothing is counted as refused.
    const echo = room.apply(room.liveEntries(), members[0] as object, 'user-0')
    assert.equal(echo.accepted.length, 0)
    assert.equal(echo.refused.size, 0)
    for (const member of members) room.removeOwner(member)
    assert.equal(room.size, 0)
    assert.equal(room.bytes, 0)
  })

  it('drops departed clients: only a bounded reservation is left, and it expires', () => {
    let now = 0
    const room = new RoomAwareness({ ...LIMITS, maxRoomEntries: 50, reclaimMs: 1_000 }, () => now)
    for (let i = 0; i < 200; i++) {
      const member = {}
      room.apply([{ clientId: i, clock: 1, state: '{"x":1}' }], member, null)
      room.removeOwner(member)
    }
    assert.equal(room.size, 0)
    assert.ok(room.reservedCount <= 50, `reservations are bounded (${room.reservedCount})`)
    now = 5_000
    room.removeOwner(((): object => {
      const member = {}
      room.apply([{ clientId: 9_999, clock: 1, state: '1' }], member, null)
      return member
    })())
    assert.equal(room.reservedCount, 1, 'expired reservations went with the next departure')
  })

  it('refuses past each bound and says why', () => {
    const room = new RoomAwareness({ ...LIMITS, maxClientsPerConnection: 2, maxRoomEntries: 3, maxRoomBytes: 40 })
    const a = {}
    const b = {}
    const first = room.apply([1, 2, 3].map((clientId) => ({ clientId, clock: 1, state: '{"a":1}' })), a, null)
    assert.deepEqual(first.accepted.map((e) => e.clientId), [1, 2])
    assert.equal(first.refused.get('connection-clients'), 1)
    const second = room.apply([{ clientId: 4, clock: 1, state: '"0123456789012345678901234567890"' }, { clientId: 5, clock: 1, state: '1' }], b, null)
    assert.equal(second.refused.get('room-bytes'), 1)
    assert.deepEqual(second.accepted.map((e) => e.clientId), [5])
    const third = room.apply([{ clientId: 6, clock: 1, state: '1' }], {}, null)
    assert.equal(third.refused.get('room-entries'), 1)
    // Many entries for one owned ID in one message go out once, with the newest state.
    const burst = room.apply(Array.from({ length: 50 }, (_, i) => ({ clientId: 1, clock: 2 + i, state: `{"n":${i}}` })), a, null)
    assert.deepEqual(burst.accepted, [{ clientId: 1, clock: 51, state: '{"n":49}', identity: null }])
  })
})

const SEED = envNumber('WEFT_FUZZ_SEED', Math.floor(Math.random() * 2 ** 31))

describe(`awareness properties (seed ${SEED}; replay with WEFT_FUZZ_SEED)`, () => {
  it('readAwarenessUpdate on random and mutated bytes: a ProtocolError or entries y-protocols applies', () => {
    for (let index = 0; index < 3_000; index++) {
      const rng = rngFor(SEED, index, 0xa3a3)
      let bytes: Uint8Array
      if (rng.chance(0.3)) bytes = randomBytes(rng, rng.int(40))
      else {
        const entries = Array.from({ length: rng.int(6) }, () => ({ clientId: rng.int(2 ** 32), clock: rng.int(100), state: rng.pick(['null', '{}', '{"a":[1,2]}', '"x"', '1']) }))
        bytes = encodeAwarenessUpdate(entries)
        for (let m = rng.int(3); m > 0 && bytes.length > 0; m--) bytes[rng.int(bytes.length)] = rng.int(256)
      }
      let read
      try {
        read = readAwarenessUpdate(bytes, { maxEntriesPerMessage: 1 + rng.int(5), maxStateBytes: 1 + rng.int(12) })
      } catch (err) {
        assert.ok(err instanceof ProtocolError, `case ${index}: ${(err as Error).message}`)
        continue
      }
      const peer = new awarenessProtocol.Awareness(new Y.Doc())
      awarenessProtocol.applyAwarenessUpdate(peer, encodeAwarenessUpdate(read.entries), 'fuzz')
      peer.destroy()
    }
  })

  it('random members, instances and identities never break ownership or a bound', () => {
    for (let index = 0; index < 200; index++) {
      const rng = rngFor(SEED, index, 0x0a0a)
      let now = 0
      const limits: AwarenessLimits = { maxEntriesPerMessage: 8, maxStateBytes: 64, maxClientsPerConnection: 1 + rng.int(3), maxRoomEntries: 2 + rng.int(8), maxRoomBytes: 20 + rng.int(100), reclaimMs: rng.pick([0, 1_000, 60_000]) }
      const room = new RoomAwareness(limits, () => now)
      const owners: object[] = [{}, {}, {}, new RemoteInstance('r1'), new RemoteInstance('r2')]
      const identities = ['alice', 'bob', null]
      // Who introduced each client ID, as the model sees it: the room must agree.
      const model = new Map<number, { owner: object; state: string; at: number }>()
      for (let step = 0; step < 150; step++) {
        now += rng.int(5_000)
        const owner = rng.pick(owners)
        if (rng.chance(0.08)) {
          for (const entry of room.removeOwner(owner)) {
            assert.equal(model.get(entry.clientId)?.owner, owner)
            model.delete(entry.clientId)
          }
          continue
        }
        const entries = Array.from({ length: 1 + rng.int(4) }, () => ({ clientId: rng.int(12), clock: rng.int(20), state: rng.chance(0.2) ? 'null' : JSON.stringify({ s: 'x'.repeat(rng.int(30)) }) }))
        const before = new Map([...room.liveEntries()].map((e) => [e.clientId, e]))
        const { accepted } = room.apply(entries, owner, rng.pick(identities))
        for (const entry of accepted) {
          const held = model.get(entry.clientId)
          // Only the owner changes a live state, unless its owner left it unrenewed for 30 s.
          if (held !== undefined && held.owner !== owner) assert.ok(now - held.at >= 30_000, `case ${index}: a live state renewed ${now - held.at} ms ago changed owner`)
          if (entry.state === 'null') model.delete(entry.clientId)
          else model.set(entry.clientId, { owner, state: entry.state, at: now })
          const previous = before.get(entry.clientId)
          if (previous !== undefined) assert.ok(entry.clock > previous.clock || (entry.clock === previous.clock && entry.state === 'null'))
        }
        const live = room.liveEntries()
        assert.equal(live.length, model.size, `case ${index}: the room holds what the model holds`)
        for (const entry of live) assert.equal(model.get(entry.clientId)?.state, entry.state)
        assert.ok(room.size <= limits.maxRoomEntries)
        assert.ok(room.bytes <= limits.maxRoomBytes)
        assert.ok(room.reservedCount <= limits.maxRoomEntries)
        for (const member of owners.slice(0, 3)) {
          const mine = [...model.values()].filter((held) => held.owner === member).length
          assert.ok(mine <= limits.maxClientsPerConnection, `case ${index}: a connection owns ${mine}`)
        }
      }
    }
  })
})

// ---- the flood over real sockets, against a separate weft process --------------------------

const SECRET = 'awareness-bounds-secret-with-at-least-32-bytes'
const FRAMES = 3
const IDS_PER_FRAME = 100_000

/**
 * The flood's awareness updates, written byte by byte (no entry objects: two million of them
 * would leave this process a garbage collection to do while it measures the server).
 */
function floodUpdates(): Uint8Array[] {
  const updates: Uint8Array[] = []
  for (let f = 0; f < FRAMES; f++) {
    const bytes: number[] = []
    const varUint = (n: number): void => {
      while (n >= 0x80) {
        bytes.push((n & 0x7f) | 0x80)
        n = Math.floor(n / 128)
      }
      bytes.push(n)
    }
    varUint(IDS_PER_FRAME)
    for (let i = 0; i < IDS_PER_FRAME; i++) {
      varUint(1_000_000 + f * IDS_PER_FRAME + i)
      bytes.push(1, 2, 0x7b, 0x7d) // clock 1, state `{}`
    }
    updates.push(Uint8Array.from(bytes))
  }
  return updates
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /VmRSS:\s+(\d+) kB/.exec(status)
  assert.ok(match !== null)
  return Number(match[1]) * 1024
}

/**
 * Sends frame after frame, letting this process's event loop turn in between: a stall of the test
 * itself (masking megabytes in one go) is not the server's.
 */
async function sendYielding(raw: RawClient, frames: Uint8Array[]): Promise<void> {
  for (const frame of frames) {
    raw.send(frame)
    await new Promise((resolve) => setImmediate(resolve))
  }
}

function hpAwareness(frame: Uint8Array, room: string): AwarenessEntry[] | null {
  try {
    const message = decodeHocuspocusMessage(frame)
    return message.kind === 'awareness' && message.document === room ? decodeAwarenessUpdate(message.update) : null
  } catch {
    return null
  }
}

describe('a read-only awareness flood (issue 12, finding 2)', () => {
  let weft: WeftProcess
  let yFrames: Uint8Array[]
  let hpFrames: Uint8Array[]
  let readToken: string
  let writeToken: string

  before(async () => {
    // Defaults for every bound (inbound pacing included: 8 MiB/s spreads the 14 MB over ~2 s).
    weft = await spawnWeft(['--data', 'memory', '--auth-secret', SECRET])
    const updates = floodUpdates()
    yFrames = updates.map((update) => encodeAwareness(update))
    hpFrames = updates.map((update) => encodeHocuspocusAwareness('flood-hp', update))
    readToken = await signToken({ rooms: ['*'], access: 'read' }, { secret: SECRET, subject: 'mallory' })
    writeToken = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'alice' })
    // A running server, not a cold one: the first connections of a process pay for lazy loading
    // and a cold JIT, which is not what is measured here.
    const warm = provider(weft.url, 'warm-up', new Y.Doc(), { connect: false })
    warm.params = { token: writeToken }
    warm.connect()
    await synced(warm)
    warm.awareness.setLocalStateField('user', { name: 'warm' })
    const raw = await RawClient.open(`${weft.url}/warm-up?token=${readToken}`)
    raw.send(encodeAwareness(yFrames[0]?.subarray(1) ?? new Uint8Array([0])))
    raw.send(encodeQueryAwareness())
    await raw.frame((frame) => (awarenessEntries(frame) ?? []).some((e) => e.clientId === warm.doc.clientID), 'the warm-up answer')
    raw.close()
    await raw.waitClosed()
    destroy(warm)
  })
  after(async () => {
    weft.kill('SIGTERM')
    await withDeadline(weft.exited, 'weft to stop')
  })

  /**
   * Floods `room` through `attack` (which resolves once the server has read every frame and
   * answers with the room's live entries), then a stock client joins; the process stays
   * responsive and its memory bounded throughout, and the flood left (almost) nothing behind.
   */
  async function floodCase(t: TestContext, room: string, attack: () => Promise<{ live: AwarenessEntry[]; leave: () => Promise<void> }>): Promise<void> {
    const rssBefore = await rssBytes(weft.child.pid as number)
    const refusedBefore = (await metricValue(weft.http, 'weft_awareness_refused_total', '{reason="message-entries"}')) ?? 0
    let live: AwarenessEntry[] = []
    // Responsive throughout: no /health/live probe fails or hangs, and one sent after the flood,
    // and one after the newcomer's join, are answered (how fast is measured in bench/).
    const { live: probes } = await whileLive(weft.port, async (probe) => {
      const flood = await attack()
      live = flood.live
      await probe.answer('/health/live after the flood was read')
      await flood.leave()
      // A newcomer after the flood: it gets the room's states (none left) and its own cursor works.
      const newcomer = provider(weft.url, room, new Y.Doc(), { connect: false })
      newcomer.params = { token: writeToken }
      try {
        newcomer.connect()
        await synced(newcomer)
        newcomer.awareness.setLocalStateField('user', { name: 'newcomer' })
        await until(() => newcomer.awareness.getStates().size === 1, 'the newcomer to see only itself')
      } finally {
        destroy(newcomer)
      }
    })
    t.diagnostic(describeLive(probes))
    const rssAfter = await rssBytes(weft.child.pid as number)
    assert.ok(live.length <= DEFAULTS.awarenessMaxClientsPerConnection, `the room holds at most the flooder's own quota (${live.length})`)
    assert.ok(rssAfter - rssBefore < 150 * 1024 * 1024, `RSS grew ${((rssAfter - rssBefore) / 2 ** 20).toFixed(0)} MiB`)
    const refused = (await metricValue(weft.http, 'weft_awareness_refused_total', '{reason="message-entries"}')) ?? 0
    assert.ok(refused - refusedBefore >= FRAMES * (IDS_PER_FRAME - DEFAULTS.awarenessMaxEntriesPerMessage), `entries past the per-message bound are counted (${refused - refusedBefore})`)
    assert.ok(((await metricValue(weft.http, 'weft_awareness_refused_total', '{reason="connection-clients"}')) ?? 0) > 0)
  }

  it('y-websocket: 3 frames of 100,000 client IDs leave at most 4 states, /health/live answers throughout, RSS bounded', async (t) => {
    const room = 'flood-y'
    await floodCase(t, room, async () => {
      const raw = await RawClient.open(`${weft.url}/${room}?token=${readToken}`)
      raw.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
      await sendYielding(raw, yFrames)
      // Answered after every flood frame was read: frames of one socket are handled in order.
      const seen = raw.frames.length
      raw.send(encodeQueryAwareness())
      const answer = await raw.frame((frame) => raw.frames.indexOf(frame) >= seen && awarenessEntries(frame) !== null, 'the query answer', 20_000)
      assert.equal(raw.closeCode, null, 'the flooder is not closed: its entries are ignored')
      return {
        live: awarenessEntries(answer) ?? [],
        leave: async () => {
          raw.close()
          await raw.waitClosed()
        },
      }
    })
  })

  it('Hocuspocus: the same flood in awareness messages of one document', async (t) => {
    const room = 'flood-hp'
    await floodCase(t, room, async () => {
      const raw = await RawClient.hocuspocusJoined(weft.url, room, readToken)
      await sendYielding(raw, hpFrames)
      const seen = raw.frames.length
      raw.send(encodeHocuspocusQueryAwareness(room))
      const answer = await raw.frame((frame) => raw.frames.indexOf(frame) >= seen && hpAwareness(frame, room) !== null, 'the query answer', 20_000)
      assert.equal(raw.closeCode, null)
      return {
        live: hpAwareness(answer, room) ?? [],
        leave: async () => {
          raw.close()
          await raw.waitClosed()
        },
      }
    })
  })
})

// ---- bounds as settings, with stock providers --------------------------------------------------

describe('awareness bounds as settings', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer({ awarenessMaxRoomEntries: 3, awarenessMaxStateBytes: 256, awarenessMaxClientsPerConnection: 1 })
  })
  after(async () => {
    await server.stop()
  })

  it('stock providers of both protocols see each other’s cursors; clients past the room bound are ignored, not closed', async () => {
    const room = 'bounded-room'
    const a = provider(server.url, room)
    const socket = new HocuspocusProviderWebsocket({ url: `${server.url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
    const hp = new HocuspocusProvider({ websocketProvider: socket, name: room, document: new Y.Doc() })
    hp.attach()
    const raws: RawClient[] = []
    try {
      await synced(a)
      await withDeadline(new Promise<void>((resolve) => (hp.isSynced ? resolve() : hp.on('synced', () => resolve()))), 'the Hocuspocus provider to sync')
      a.awareness.setLocalStateField('user', { name: 'y' })
      hp.awareness?.setLocalStateField('user', { name: 'hp' })
      const hpId = hp.document.clientID
      await until(() => a.awareness.getStates().has(hpId) && hp.awareness?.getStates().has(a.doc.clientID) === true, 'both to see each other')

      // The third state fits; the fourth and fifth do not (the room holds 3).
      for (const clientId of [70_001, 70_002, 70_003]) {
        const raw = await RawClient.open(`${server.url}/${room}`)
        raws.push(raw)
        raw.send(encodeAwareness(encodeAwarenessUpdate([{ clientId, clock: 1, state: '{"raw":true}' }])))
      }
      await until(() => a.awareness.getStates().has(70_001), 'the third state to arrive')
      // A second ID from the same connection, and a state over 256 bytes: ignored too.
      const extra = raws[0] as RawClient
      extra.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: 70_010, clock: 1, state: '{}' }])))
      extra.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: 70_001, clock: 2, state: JSON.stringify({ big: 'x'.repeat(300) }) }])))
      const marker = raws[0] as RawClient
      marker.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: 70_001, clock: 3, state: '{"marker":1}' }])))
      await until(() => (a.awareness.getStates().get(70_001) as { marker?: number } | undefined)?.marker === 1, 'the marker after the refused entries')
      const ids = [...a.awareness.getStates().keys()].sort()
      assert.deepEqual(ids, [a.doc.clientID, hpId, 70_001].sort())
      assert.equal(server.server.loadedRoom(room)?.awareness.size, 3)
      for (const raw of raws) assert.equal(raw.closeCode, null)
      const refused = async (reason: string): Promise<number> => (await metricValue(server.http, 'weft_awareness_refused_total', `{reason="${reason}"}`)) ?? 0
      assert.ok((await refused('room-entries')) >= 2)
      assert.ok((await refused('connection-clients')) >= 1)
      assert.ok((await refused('state-bytes')) >= 1)

      // Everyone leaves: nothing of them stays in the room.
      for (const raw of raws) {
        raw.close()
        await raw.waitClosed()
      }
      await until(() => server.server.loadedRoom(room)?.awareness.size === 2, 'the raw clients’ states to go')
      // Room for newcomers again.
      const late = await RawClient.open(`${server.url}/${room}`)
      raws.push(late)
      late.send(encodeAwareness(encodeAwarenessUpdate([{ clientId: 70_100, clock: 1, state: '{"late":true}' }])))
      await until(() => a.awareness.getStates().has(70_100), 'a newcomer’s state once there is room')
    } finally {
      for (const raw of raws) raw.socket.terminate()
      hp.destroy()
      socket.destroy()
      destroy(a)
    }
  })
})
