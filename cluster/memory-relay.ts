import * as Y from 'yjs'
import type { Relay, RelayAwarenessEntry, RelayHealth, RelayRoomHandlers, RelayStats } from './relay.js'
import { missingFrom } from '../crdt/index.js'

/**
 * The in-process stand-in for Redis: several MemoryRelay instances on one bus form a cluster,
 * for unit tests of the server. Delivery is asynchronous (setImmediate), as over a network, and
 * lossless; the bus keeps each room's merged document the way the Redis stream + snapshot do.
 */
export class MemoryBus {
  private readonly docs = new Map<string, Uint8Array>()
  private readonly members = new Map<string, Map<string, { relay: MemoryRelay; handlers: RelayRoomHandlers }>>()

  /** The cluster's copy of a room (null when nothing was published to it). */
  document(room: string): Uint8Array | null {
    return this.docs.get(room) ?? null
  }

  /** @internal */
  join(room: string, relay: MemoryRelay, handlers: RelayRoomHandlers): void {
    const members = this.members.get(room) ?? new Map()
    members.set(relay.instanceId, { relay, handlers })
    this.members.set(room, members)
  }

  /** @internal */
  leave(room: string, relay: MemoryRelay): void {
    this.members.get(room)?.delete(relay.instanceId)
  }

  /** @internal */
  store(room: string, update: Uint8Array): void {
    const doc = this.docs.get(room)
    this.docs.set(room, doc === undefined ? update : Y.mergeUpdates([doc, update]))
  }

  /** @internal Runs `deliver` for every other member of the room, on a later turn of the event loop. */
  broadcast(room: string, from: MemoryRelay, deliver: (handlers: RelayRoomHandlers, relay: MemoryRelay) => void): void {
    setImmediate(() => {
      for (const { relay, handlers } of this.members.get(room)?.values() ?? []) {
        if (relay !== from && !relay.isClosed()) deliver(handlers, relay)
      }
    })
  }
}

export class MemoryRelay implements Relay {
  private readonly rooms = new Set<string>()
  private readonly counters = { published: 0, received: 0, healed: 0, commands: 0, checks: 0, compacted: 0, heldBytes: 0 }
  private closed = false

  constructor(private readonly bus: MemoryBus, readonly instanceId: string) {}

  async joinRoom(room: string, localState: Uint8Array | null, handlers: RelayRoomHandlers): Promise<Uint8Array | null> {
    if (this.closed) throw new Error('relay is closed')
    if (this.rooms.has(room)) throw new Error(`room ${JSON.stringify(room)} is already joined`)
    this.rooms.add(room)
    const cluster = this.bus.document(room)
    this.bus.join(room, this, handlers)
    const missing = localState === null ? null : missingFrom(localState, cluster)
    if (missing !== null) this.publishUpdate(room, missing)
    // Ask the others for their awareness, as the Redis relay does.
    this.bus.broadcast(room, this, (other, relay) => {
      const entries = other.localAwareness()
      if (entries.length > 0) relay.publishAwareness(room, entries)
    })
    return cluster
  }

  async leaveRoom(room: string): Promise<void> {
    this.rooms.delete(room)
    this.bus.leave(room, this)
  }

  publishUpdate(room: string, update: Uint8Array): void {
    if (this.closed) return
    this.counters.published++
    this.bus.store(room, update)
    const publishedAt = Date.now()
    this.bus.broadcast(room, this, (handlers, relay) => {
      relay.counters.received++
      handlers.onUpdate(update, publishedAt)
    })
  }

  publishAwareness(room: string, entries: readonly RelayAwarenessEntry[]): void {
    if (this.closed || entries.length === 0) return
    const copy = entries.map((entry) => ({ ...entry }))
    this.bus.broadcast(room, this, (handlers) => handlers.onAwareness(copy, this.instanceId))
  }

  health(): RelayHealth {
    return this.closed ? { up: false, since: Date.now(), error: 'closed' } : { up: true, lagMs: 0 }
  }

  stats(): RelayStats {
    return { ...this.counters }
  }

  on(_event: 'health', _listener: (health: RelayHealth) => void): void {
    // Always up: there is nothing to report.
  }

  /** Leaves every room, telling the others this instance's clients are gone. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    for (const room of this.rooms) {
      this.bus.broadcast(room, this, (handlers) => handlers.onInstanceGone(this.instanceId))
      this.bus.leave(room, this)
    }
    this.rooms.clear()
    this.closed = true
  }

  /** @internal */
  isClosed(): boolean {
    return this.closed
  }
}
