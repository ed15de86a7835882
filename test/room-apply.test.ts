import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import * as Y from 'yjs'
import { MemoryBus, MemoryRelay } from '../cluster/index.js'
import { DocumentWriter, MemoryStore } from '../persistence/index.js'
import { DEFAULTS } from '../server/config.js'
import type { UpdateOrigin } from '../server/hooks.js'
import { awarenessLimits } from '../server/room-awareness.js'
import { RoomRegistry, UpdateSource, type Room, type RoomEvents, type RoomMember } from '../server/room.js'
import { textUpdate } from './harness/clients.js'
import { until } from './harness/wait.js'

// Issue 15: Room.apply, the one entry point of an update, on real rooms with an in-process cluster
// (MemoryBus) and a memory store: the outcome of each kind, the typed origin each instance reports,
// and which effects run for which origin.

/** A member that records the updates it is sent. */
class RecordingMember implements RoomMember {
  readonly identity = null
  readonly format = { name: 'recording', update: () => new Uint8Array(), awareness: () => new Uint8Array() }
  readonly updates: Uint8Array[] = []
  deliverUpdate(update: Uint8Array): void {
    this.updates.push(update)
  }
  deliverAwareness(): void {}
  evict(): void {}
}

interface Instance {
  registry: RoomRegistry
  writer: DocumentWriter
  relay: MemoryRelay
  changes: UpdateOrigin[]
}

function instance(bus: MemoryBus, id: string, limits: { maxDocumentBytes?: number; maxNestingDepth?: number } = {}): Instance {
  const changes: UpdateOrigin[] = []
  const events: RoomEvents = {
    changed: (_room: Room, _update: Uint8Array, origin: UpdateOrigin) => {
      changes.push(origin)
    },
    stored: () => {},
    loaded: () => Promise.resolve(),
    unloaded: () => {},
  }
  const writer = new DocumentWriter(new MemoryStore(), { persistWindowMs: 0 })
  const relay = new MemoryRelay(bus, id)
  const shape = { maxNestingDepth: limits.maxNestingDepth ?? 256, maxPendingBytes: 1024 * 1024 }
  const registry = new RoomRegistry(writer, pino({ level: 'silent' }), -1, limits.maxDocumentBytes ?? 1024 * 1024, 100, relay, shape, awarenessLimits(DEFAULTS), events)
  return { registry, writer, relay, changes }
}

const alice = (member: RoomMember, mayWrite = true): UpdateSource => new UpdateSource({ kind: 'client', protocol: 'y-websocket', subject: 'alice' }, member, mayWrite)

async function joined(registry: RoomRegistry, room: string, ...members: RoomMember[]): Promise<Room> {
  let joinedRoom: Room | null = null
  for (const member of members) joinedRoom = registry.join(room, member)
  await (joinedRoom as Room).loaded
  return joinedRoom as Room
}

describe('Room.apply', () => {
  it('applies a client update: stored (durable from the writer), broadcast to all but its sender, relayed once; the other instance reports it as from the cluster and does not publish it back', async () => {
    const bus = new MemoryBus()
    const a = instance(bus, 'a')
    const b = instance(bus, 'b')
    const sender = new RecordingMember()
    const neighbour = new RecordingMember()
    const remote = new RecordingMember()
    try {
      const roomA = await joined(a.registry, 'path', sender, neighbour)
      const roomB = await joined(b.registry, 'path', remote)
      const hello = textUpdate('hello')
      const outcome = roomA.apply(hello, alice(sender))
      assert.equal(outcome.kind, 'applied')
      assert.equal(a.writer.hasPending('path'), true, 'the write is queued before the outcome is returned')
      await (outcome as { durable: Promise<void> }).durable
      assert.equal(a.writer.hasPending('path'), false, 'durable resolved once the write reached the store')
      await until(() => neighbour.updates.length === 1, 'the neighbour to receive the update')
      await until(() => remote.updates.length === 1, 'the other instance to receive the update')
      assert.equal(sender.updates.length, 0, 'never echoed to its sender')
      assert.equal(roomB.doc.getText('t').toString(), 'hello')
      await until(() => !b.writer.hasPending('path'), 'the other instance to store it')
      assert.deepEqual(a.changes, [{ kind: 'client', protocol: 'y-websocket', subject: 'alice' }])
      assert.deepEqual(b.changes, [{ kind: 'cluster', instance: null }])
      assert.equal(a.relay.stats().published, 1)
      assert.equal(b.relay.stats().published, 0, 'an update from the cluster is not published back')
      // Applying what the room has changes nothing: applied, durable once the room's writes are.
      const again = roomA.apply(hello, alice(sender))
      assert.equal(again.kind, 'applied')
      await (again as { durable: Promise<void> }).durable
      assert.equal(a.changes.length, 1, 'no change reported for an update that changed nothing')
    } finally {
      await a.writer.close()
      await b.writer.close()
    }
  })

  it('answers readOnly, tooLarge and refused without changing the document, storing or reporting anything', async () => {
    const bus = new MemoryBus()
    const update = textUpdate('a sentence long enough to pass a tiny size limit')
    const small = instance(bus, 'small', { maxDocumentBytes: update.length - 1, maxNestingDepth: 2 })
    const member = new RecordingMember()
    try {
      const room = await joined(small.registry, 'refusals', member)
      assert.deepEqual(room.apply(update, alice(member, false)), { kind: 'readOnly', changesDocument: true })
      assert.deepEqual(room.apply(update, alice(member)), { kind: 'tooLarge' })

      const nested = new Y.Doc()
      const inner = new Y.Map<unknown>()
      const deeper = new Y.Map<unknown>()
      nested.getMap('m').set('x', inner)
      inner.set('y', deeper)
      const tooDeep = room.apply(Y.encodeStateAsUpdate(nested), alice(member))
      assert.equal(tooDeep.kind, 'refused')
      assert.equal(tooDeep.kind === 'refused' && tooDeep.reason, 'too_deep')

      // The second edit of a client whose first edit the room never saw.
      const author = new Y.Doc()
      author.getText('t').insert(0, 'a')
      const before = Y.encodeStateVector(author)
      author.getText('t').insert(1, 'b')
      const dependent = room.apply(Y.encodeStateAsUpdate(author, before), alice(member))
      assert.equal(dependent.kind === 'refused' && dependent.reason, 'missing_dependencies')

      assert.equal(room.isEmpty(), true, 'nothing was applied')
      assert.equal(small.writer.hasPending('refusals'), false, 'nothing was stored')
      assert.deepEqual(small.changes, [], 'nothing was reported')
      // A read-only sync step 2 that repeats what the room has is harmless.
      assert.deepEqual(room.apply(Y.encodeStateAsUpdate(room.doc), alice(member, false)), { kind: 'readOnly', changesDocument: false })
    } finally {
      await small.writer.close()
    }
  })
})
