import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { OutageBuffer } from '../cluster/outage-buffer.js'
import type { RelayMessage } from '../cluster/relay-message.js'
import { RelayRoom } from '../cluster/relay-room.js'
import { RedisNamespace } from '../cluster/keys.js'
import { StreamChain } from '../cluster/stream-chain.js'

// The parts RedisRelay is built from, without Redis: the behaviour over real Redis is in
// cluster-relay, cluster-faults and cluster-recovery.

const handlers = { onUpdate() {}, onAwareness() {}, onInstanceGone() {}, localState: () => new Uint8Array([0, 0]), localAwareness: () => [] }
const newRoom = (): RelayRoom => new RelayRoom('r', new RedisNamespace(undefined, 0).room('r'), handlers)
/** Read through a function: assert.equal narrows what it checks, and the state changes between checks. */
const kindOf = (room: RelayRoom): string => room.state.kind
const query: RelayMessage = { kind: 'query', instance: 'other', ts: 1 }

function pushes(count: number, client = 1): Uint8Array[] {
  const doc = new Y.Doc()
  doc.clientID = client
  const updates: Uint8Array[] = []
  doc.on('update', (update: Uint8Array) => updates.push(update))
  for (let i = 0; i < count; i++) doc.getArray('a').push([i])
  return updates
}

describe('StreamChain', () => {
  it('extends the chain in order and reports a message after a gap', () => {
    const chain = new StreamChain()
    chain.startAt('1-0')
    assert.equal(chain.advance('1-0', '2-0'), true)
    assert.equal(chain.lastApplied, '2-0')
    assert.equal(chain.covers('1-5'), true)
    assert.equal(chain.covers('3-0'), false)
    // 3-0 was lost: 4-0 names it as its predecessor.
    assert.equal(chain.advance('3-0', '4-0'), false)
    assert.equal(chain.lastApplied, '2-0')
    assert.equal(chain.hasGap, true)
    // The lost message turns up: the chain runs through to the one seen ahead.
    assert.equal(chain.advance('2-0', '3-0'), true)
    assert.equal(chain.lastApplied, '4-0')
    assert.equal(chain.hasGap, false)
  })

  it('catches up to a read and keeps only the messages ahead of it', () => {
    const chain = new StreamChain()
    chain.advance('5-0', '6-0')
    chain.advance('8-0', '9-0')
    assert.equal(chain.catchUp('5-0'), true)
    assert.equal(chain.lastApplied, '6-0', 'joined the message seen ahead')
    assert.equal(chain.hasGap, true)
    assert.equal(chain.catchUp('9-0'), true)
    assert.equal(chain.hasGap, false, 'what the read covered is dropped')
    assert.equal(chain.catchUp('7-0'), false, 'an older read moves nothing')
    assert.equal(chain.lastApplied, '9-0')
  })

  it('calls the stream stalled only when its last stayed ahead through two checks without progress', () => {
    const chain = new StreamChain()
    chain.startAt('1-0')
    assert.equal(chain.stalledBehind('2-0', false), false, 'first sighting')
    assert.equal(chain.stalledBehind('2-0', false), true, 'second, no progress')
    chain.healed()
    assert.equal(chain.stalledBehind('2-0', false), false, 'a heal starts the count again')
    chain.advance('1-0', '2-0')
    assert.equal(chain.stalledBehind('3-0', false), false, 'progress in between')
    assert.equal(chain.stalledBehind('3-0', true), false, 'a read in flight does not count')
    assert.equal(chain.stalledBehind('3-0', false), false)
    assert.equal(chain.stalledBehind(null, false), false, 'no stream')
    assert.equal(chain.stalledBehind('2-0', false), false, 'not ahead')
  })

  it('lets a check skip reading `last` only after the chain moved, and heals at the first read that finds it still behind', () => {
    const chain = new StreamChain()
    chain.startAt('1-0')
    assert.equal(chain.movedSinceTick(), false, 'the first check reads')
    chain.advance('1-0', '2-0')
    assert.equal(chain.movedSinceTick(), true, 'moved: skipped')
    assert.equal(chain.movedSinceTick(), false, 'still since: read')
    // The message after 2-0 was lost: the read finds `last` ahead with no progress since the skipped check.
    assert.equal(chain.stalledBehind('3-0', false), true, 'healed at the first read after the skip')
    chain.catchUp('3-0')
    chain.healed()
    chain.advance('5-0', '6-0')
    assert.equal(chain.movedSinceTick(), false, 'a gap is no movement: read')
    assert.equal(chain.stalledBehind('6-0', false), false, 'first sighting after a read')
  })

  it('starts over after a reset', () => {
    const chain = new StreamChain()
    chain.startAt('4-0')
    chain.advance('6-0', '7-0')
    chain.reset()
    assert.equal(chain.lastApplied, '')
    assert.equal(chain.hasGap, false)
    assert.equal(chain.covers('1-0'), false)
  })
})

describe('OutageBuffer', () => {
  it('holds updates per room, counts their bytes, and gives them back once', () => {
    const buffer = new OutageBuffer(1024 * 1024)
    const [a, b] = pushes(2)
    buffer.hold('x', a as Uint8Array)
    buffer.hold('y', b as Uint8Array)
    assert.equal(buffer.bytes, (a as Uint8Array).byteLength + (b as Uint8Array).byteLength)
    assert.deepEqual(buffer.roomNames(), ['x', 'y'])
    assert.deepEqual(buffer.take('x'), [a])
    assert.equal(buffer.take('x'), undefined)
    buffer.drop('y')
    assert.equal(buffer.isEmpty, true)
    assert.equal(buffer.bytes, 0)
  })

  it('merges a long run of updates into one with the same content', () => {
    const buffer = new OutageBuffer(1024 * 1024)
    const updates = pushes(64)
    for (const update of updates) buffer.hold('x', update)
    const held = buffer.take('x') as Uint8Array[]
    assert.equal(held.length, 1)
    const doc = new Y.Doc()
    Y.applyUpdate(doc, held[0] as Uint8Array)
    assert.deepEqual(doc.getArray('a').toArray(), [...Array(64).keys()])
  })

  it('over its budget drops the room that went over, and only that room', () => {
    const [small, big] = [pushes(1, 1)[0] as Uint8Array, pushes(1, 2)[0] as Uint8Array]
    const buffer = new OutageBuffer(small.byteLength + big.byteLength - 1)
    assert.equal(buffer.hold('kept', small), true)
    assert.equal(buffer.hold('over', big), false)
    assert.deepEqual(buffer.roomNames(), ['kept'])
    assert.equal(buffer.bytes, small.byteLength)
  })
})

describe('RelayRoom states', () => {
  it('buffers while joining, then follows', () => {
    const room = newRoom()
    assert.equal(kindOf(room), 'joining')
    assert.equal(room.isActive, false)
    assert.equal(room.buffer(query), true)
    assert.deepEqual(room.buffered, [query])
    room.activate()
    assert.equal(kindOf(room), 'following')
    assert.equal(room.isActive, true)
    assert.equal(room.buffer(query), false, 'an active room applies messages at once')
    assert.deepEqual(room.buffered, [])
  })

  it('a room marked stale while joining activates stale; a full sync makes it follow', () => {
    const room = newRoom()
    room.markStale()
    assert.equal(kindOf(room), 'joining')
    assert.equal(room.isStale, true)
    room.activate()
    assert.equal(kindOf(room), 'stale')
    assert.equal(room.isActive, true)
    room.synced()
    assert.equal(kindOf(room), 'following')
    assert.equal(room.isStale, false)
    room.markStale()
    assert.equal(kindOf(room), 'stale')
  })

  it('left is final', () => {
    for (const prepare of [(_: RelayRoom) => {}, (r: RelayRoom) => r.activate(), (r: RelayRoom) => (r.activate(), r.markStale())]) {
      const room = newRoom()
      prepare(room)
      room.leave()
      room.activate()
      room.markStale()
      room.synced()
      assert.equal(kindOf(room), 'left')
      assert.equal(room.hasLeft, true)
      assert.equal(room.isActive, false)
      assert.equal(room.buffer(query), false)
    }
  })
})
