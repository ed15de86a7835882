import * as Y from 'yjs'
import type { AwarenessEntry } from '../protocol/index.js'
import type { DocumentWriter } from '../persistence/index.js'
import type { Relay, RelayRoomHandlers } from '../cluster/index.js'
import { RemoteInstance, RoomAwareness } from './room-awareness.js'
import { FrameCache, type SharedFrames, type WireFormat } from './wire-format.js'
import type { Logger } from './logger.js'

/** One participant of a room: a y-websocket connection, or one document of a Hocuspocus socket. */
export interface RoomMember {
  readonly format: WireFormat
  /** A document update; `frames.get(format)` is the encoding shared by every member of that format. */
  deliverUpdate(update: Uint8Array, frames: SharedFrames): void
  deliverAwareness(entries: readonly AwarenessEntry[], frames: SharedFrames): void
  /** A Hocuspocus stateless message; members whose protocol has none leave it out. */
  deliverStateless?(payload: string): void
  /** The room is going away under the member (deleted, or failed to load). */
  evict(code: number, reason: string): void
}

export type RoomState = 'loading' | 'active' | 'unloading' | 'unloaded'

/** The lifecycle of a room; anything else is a bug and throws. */
const ROOM_TRANSITIONS: Readonly<Record<RoomState, readonly RoomState[]>> = {
  loading: ['active', 'unloaded'],
  // Straight to unloaded only when the document is deleted: nothing is left to flush.
  active: ['unloading', 'unloaded'],
  // A member arriving while the last writes are flushed takes the room back; nothing is reloaded.
  unloading: ['active', 'unloaded'],
  unloaded: [],
}

export class RoomLoadError extends Error {}

/** The most updates one merged broadcast carries. */
const MAX_BATCH_UPDATES = 512

/** How long a sync reply is kept for more joiners with the same state vector. */
const SYNC_REPLY_CACHE_MS = 2_000

/** Pending broadcasts from more than one origin: every member receives them. */
const MIXED_ORIGINS = Symbol('mixed origins')

/** Origin of updates that came from other instances: stored and relayed locally, never published back. */
const FROM_CLUSTER = Object.freeze({ origin: 'cluster' })

/**
 * One Yjs document and the members editing it. The room has a Y.Doc; it is not one.
 */
export class Room {
  // A fixed guid: Yjs would otherwise draw a random UUID per document (31 getRandomValues calls),
  // which made loading a burst of rooms the main cost of a room flood (issue 12, finding 8).
  readonly doc = new Y.Doc({ gc: true, guid: 'weft-room' })
  readonly awareness = new RoomAwareness()
  private readonly members = new Set<RoomMember>()
  private stateValue: RoomState = 'loading'
  private unloadTimer: NodeJS.Timeout | null = null
  /** An upper bound of the document's encoded size: measured exactly now and then, plus every update applied since. */
  private sizeEstimate = 0
  /** Resolves when the stored document has been applied; rejects when storage failed. */
  readonly loaded: Promise<void>
  /** Whether the cluster relays this room (joined after the local load). */
  private relayed = false
  private readonly remoteOwners = new Map<string, RemoteInstance>()

  constructor(
    readonly name: string,
    private readonly writer: DocumentWriter,
    private readonly registry: RoomRegistry,
    private readonly log: Logger,
  ) {
    this.loaded = this.load()
    // Never an unhandled rejection: members await `loaded` and handle the failure themselves.
    this.loaded.catch(() => {})
    this.doc.on('update', this.onDocUpdate)
  }

  get state(): RoomState {
    return this.stateValue
  }

  get memberCount(): number {
    return this.members.size
  }

  private transition(next: RoomState): void {
    if (!ROOM_TRANSITIONS[this.stateValue].includes(next)) {
      throw new Error(`room ${this.name}: illegal transition ${this.stateValue} -> ${next}`)
    }
    this.stateValue = next
  }

  private async load(): Promise<void> {
    const started = performance.now()
    let stored: Uint8Array | null
    try {
      stored = await this.writer.load(this.name)
    } catch (err) {
      this.log.error({ room: this.name, err }, 'room load failed')
      this.fail(`storage error while loading`)
      throw new RoomLoadError(`room ${this.name} could not be loaded`)
    }
    // Applied with the room as origin: the update handler knows not to store it again.
    if (stored !== null) Y.applyUpdate(this.doc, stored, this)
    this.sizeEstimate = stored?.length ?? 0
    const relay = this.registry.relay
    if (relay !== null) {
      await this.registry.leaving(this.name)
      try {
        const shared = await relay.joinRoom(this.name, stored, this.relayHandlers)
        this.relayed = true
        // What the cluster has and this instance lacked: stored here too, relayed to nobody.
        if (shared !== null) this.applyFromCluster(shared)
      } catch (err) {
        // The relay catches up when Redis is back; the room serves its local copy meanwhile.
        this.log.error({ room: this.name, err }, 'joining the cluster for this room failed')
      }
    }
    this.transition('active')
    this.log.debug({ room: this.name, bytes: stored?.length ?? 0, ms: Math.round(performance.now() - started) }, 'room loaded')
    if (this.members.size === 0) this.scheduleUnload()
  }

  private fail(reason: string): void {
    for (const member of this.members) member.evict(1011, reason)
    this.members.clear()
    this.transition('unloaded')
    this.registry.forget(this)
    this.doc.destroy()
  }

  /**
   * The last sync reply per framing, while the document has not changed since: joiners with the
   * same state vector (a crowd opening a document, all with empty state) share one encoding and
   * one buffer instead of each holding a copy of the whole document.
   */
  private syncReplies: Map<string, { stateVector: Uint8Array; frame: Uint8Array }> | null = null

  /**
   * The framed answer to a sync step 1 with `stateVector`; `framing` names how `frame` wraps the
   * update (equal names must mean equal framing).
   */
  syncReply(stateVector: Uint8Array, framing: string, frame: (update: Uint8Array) => Uint8Array): Uint8Array {
    const store = this.doc.store
    // Structs waiting for a missing dependency change the reply without an update event.
    const cacheable = store.pendingStructs === null && store.pendingDs === null
    const cached = cacheable ? this.syncReplies?.get(framing) : undefined
    if (cached !== undefined && Buffer.compare(cached.stateVector, stateVector) === 0) return cached.frame
    const reply = frame(Y.encodeStateAsUpdate(this.doc, stateVector))
    if (!cacheable) return reply
    if (this.syncReplies === null) {
      this.syncReplies = new Map()
      // Only for a crowd arriving together: a quiet room does not keep a copy of its document.
      const replies = this.syncReplies
      setTimeout(() => {
        if (this.syncReplies === replies) this.syncReplies = null
      }, SYNC_REPLY_CACHE_MS).unref()
    }
    this.syncReplies.set(framing, { stateVector: Uint8Array.from(stateVector), frame: reply })
    return reply
  }

  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    this.syncReplies = null
    if (origin === this) return
    this.sizeEstimate += update.length
    // Durability first: the write is scheduled before anyone hears of the update.
    const write = this.writer.write(this.name, update)
    write.catch((err: unknown) => {
      this.log.error({ room: this.name, err }, 'update could not be stored')
    })
    this.lastWrite = write
    if (this.relayed && origin !== FROM_CLUSTER) this.registry.relay?.publishUpdate(this.name, update)
    this.queueBroadcast(update, origin)
  }

  /**
   * Updates applied and not yet sent to the members. They go out when the current callback is done
   * (a microtask), so what one socket read brought (a burst holds many frames) goes out as one
   * merged update per member instead of one message per update, and nothing waits for other
   * sockets to be read. Stock clients decode one message per frame, so the merge happens inside
   * the update, never by packing messages into a frame.
   */
  private pending: Uint8Array[] = []
  /** The one origin every pending update came from, or MIXED_ORIGINS. */
  private pendingOrigin: unknown = null
  private flushScheduled = false

  private queueBroadcast(update: Uint8Array, origin: unknown): void {
    if (this.members.size === 0) return
    this.pendingOrigin = this.pending.length === 0 || this.pendingOrigin === origin ? origin : MIXED_ORIGINS
    this.pending.push(update)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(this.flushBroadcasts)
    }
  }

  /**
   * Sends what is pending. A member that sent every pending update is left out; when several
   * members contributed, each receives the whole merge, its own part included (applying a known
   * update is a no-op for Yjs, and the reference server echoes every update to its sender too).
   */
  private readonly flushBroadcasts = (): void => {
    this.flushScheduled = false
    const pending = this.pending
    if (pending.length === 0) return
    const origin = this.pendingOrigin
    this.pending = []
    this.pendingOrigin = null
    if (this.stateValue === 'unloaded') return
    // A merged update keeps every struct, and a receiver applies it in one transaction: bounded.
    for (let start = 0; start < pending.length; start += MAX_BATCH_UPDATES) {
      const batch = pending.slice(start, start + MAX_BATCH_UPDATES)
      if (batch.length === 1) {
        this.broadcastUpdate(batch[0] as Uint8Array, origin)
        continue
      }
      let merged: Uint8Array
      try {
        merged = Y.mergeUpdates(batch)
      } catch (err) {
        // Yjs encoded every one of these itself, so this is a bug; the updates still go out, one by one.
        this.log.error({ room: this.name, err, updates: batch.length }, 'merging a burst for broadcast failed')
        for (const update of batch) this.broadcastUpdate(update, origin)
        continue
      }
      this.broadcastUpdate(merged, origin)
      this.registry.onBatched(batch.length)
    }
  }

  /** The durability promise of the last update the doc emitted (read by applyUpdateDurably). */
  private lastWrite: Promise<void> | null = null

  private applyFromCluster(update: Uint8Array): void {
    try {
      Y.applyUpdate(this.doc, update, FROM_CLUSTER)
    } catch (err) {
      this.log.error({ room: this.name, err }, 'an update from the cluster could not be applied')
    }
  }

  private remoteOwner(instanceId: string): RemoteInstance {
    let owner = this.remoteOwners.get(instanceId)
    if (owner === undefined) {
      owner = new RemoteInstance(instanceId)
      this.remoteOwners.set(instanceId, owner)
    }
    return owner
  }

  private readonly relayHandlers: RelayRoomHandlers = {
    onUpdate: (update) => this.applyFromCluster(update),
    onAwareness: (entries, instanceId) => {
      const { accepted } = this.awareness.apply(entries, this.remoteOwner(instanceId))
      if (accepted.length > 0) this.broadcastAwareness(accepted)
    },
    onInstanceGone: (instanceId) => {
      const owner = this.remoteOwners.get(instanceId)
      if (owner === undefined) return
      this.remoteOwners.delete(instanceId)
      const removed = this.awareness.removeOwner(owner)
      if (removed.length > 0) this.broadcastAwareness(removed)
    },
    localAwareness: () => this.awareness.liveEntries((owner) => !(owner instanceof RemoteInstance)),
    localState: () => Y.encodeStateAsUpdate(this.doc),
  }

  /** Sends an update to every member except `except`, encoded once per wire format. */
  private broadcastUpdate(update: Uint8Array, except: unknown): void {
    const frames = new FrameCache((format) => format.update(this.name, update))
    for (const member of this.members) {
      if (member !== except) member.deliverUpdate(update, frames)
    }
  }

  /** Sends awareness entries to every member, encoded once per wire format. */
  private broadcastAwareness(entries: readonly AwarenessEntry[]): void {
    // Pending updates first: a cursor must not arrive before the text it points into.
    this.flushBroadcasts()
    const frames = new FrameCache((format) => format.awareness(this.name, entries))
    for (const member of this.members) member.deliverAwareness(entries, frames)
  }

  /**
   * True when applying `updateBytes` more could grow the document past `--max-document-bytes`.
   * Measures the document only when the cheap estimate is over the limit.
   */
  wouldExceedSizeLimit(updateBytes: number): boolean {
    const limit = this.registry.maxDocumentBytes
    if (this.sizeEstimate + updateBytes <= limit) return false
    this.sizeEstimate = Y.encodeStateAsUpdate(this.doc).length
    return this.sizeEstimate + updateBytes > limit
  }

  /** Applies an update a member sent; the doc's update event stores and relays it. */
  applyUpdate(update: Uint8Array, origin: RoomMember): void {
    Y.applyUpdate(this.doc, update, origin)
  }

  /**
   * Like applyUpdate, and resolves when what the update changed is durable in storage (when it
   * changed nothing, once what is pending for the room is): for acknowledgements that mean "saved".
   */
  applyUpdateDurably(update: Uint8Array, origin: RoomMember): Promise<void> {
    this.lastWrite = null
    Y.applyUpdate(this.doc, update, origin)
    const durable = this.lastWrite ?? this.writer.flush(this.name)
    this.lastWrite = null
    return durable
  }

  /** Applies awareness entries from `owner`; relays what changed to every member, sender included. */
  applyAwareness(entries: readonly AwarenessEntry[], owner: RoomMember): { refused: number } {
    const { accepted, refused } = this.awareness.apply(entries, owner)
    // The sender hears its own awareness back: stock clients count incoming traffic as liveness,
    // and a client alone in a room would otherwise reconnect every 30 s.
    if (accepted.length > 0) {
      this.broadcastAwareness(accepted)
      if (this.relayed) this.registry.relay?.publishAwareness(this.name, accepted)
    }
    return { refused }
  }

  /** Sends a stateless payload to every member that understands one (Hocuspocus), except `except`. */
  broadcastStateless(payload: string, except: RoomMember | null = null): number {
    this.flushBroadcasts()
    let sent = 0
    for (const member of this.members) {
      if (member === except || member.deliverStateless === undefined) continue
      member.deliverStateless(payload)
      sent++
    }
    return sent
  }

  /** Adds a member; cancels a pending unload. Safe in any state but `unloaded`. */
  join(member: RoomMember): void {
    if (this.stateValue === 'unloaded') throw new Error(`room ${this.name} is unloaded`)
    if (this.unloadTimer !== null) {
      clearTimeout(this.unloadTimer)
      this.unloadTimer = null
    }
    if (this.stateValue === 'unloading') this.transition('active')
    this.members.add(member)
  }

  /** Removes a member and its awareness states (broadcast at once: no ghost cursors). */
  leave(member: RoomMember): void {
    if (!this.members.delete(member)) return
    const removed = this.awareness.removeOwner(member)
    if (removed.length > 0) {
      this.broadcastAwareness(removed)
      if (this.relayed) this.registry.relay?.publishAwareness(this.name, removed)
    }
    if (this.members.size === 0 && this.stateValue === 'active') this.scheduleUnload()
  }

  private scheduleUnload(): void {
    if (this.unloadTimer !== null || this.registry.unloadDelayMs < 0) return
    this.unloadTimer = setTimeout(() => {
      this.unloadTimer = null
      void this.unload()
    }, this.registry.unloadDelayMs)
    this.unloadTimer.unref()
  }

  /**
   * Flushes, then unloads if still nobody joined. A member joining during the flush moves the room
   * back to `active` with its document intact (Hocuspocus#971 lost updates in exactly this race).
   */
  async unload(): Promise<void> {
    if (this.stateValue !== 'active' || this.members.size > 0) return
    this.transition('unloading')
    while (true) {
      try {
        await this.writer.flush(this.name)
      } catch (err) {
        this.log.warn({ room: this.name, err }, 'flush before unload failed; room stays loaded')
        if ((this.stateValue as RoomState) === 'unloading') {
          this.transition('active')
          this.scheduleUnload()
        }
        return
      }
      // A member may have joined during the await (TypeScript cannot see that the state moved).
      if ((this.stateValue as RoomState) !== 'unloading') return
      if (!this.writer.hasPending(this.name)) break
    }
    this.transition('unloaded')
    this.registry.forget(this)
    if (this.relayed) this.registry.leaveRelay(this.name)
    this.doc.off('update', this.onDocUpdate)
    this.doc.destroy()
    this.log.debug({ room: this.name }, 'room unloaded')
  }

  /** True when the document holds nothing at all (never written, or not stored anywhere). */
  isEmpty(): boolean {
    const store = this.doc.store
    return store.clients.size === 0 && store.pendingStructs === null && store.pendingDs === null
  }

  /**
   * The document was deleted: members are closed with `code` (4404), the room leaves the cluster
   * and memory without flushing (the deletion supersedes pending writes).
   */
  async deleted(code: number): Promise<void> {
    await this.loaded.catch(() => {})
    for (const member of this.memberList()) member.evict(code, 'document deleted')
    this.members.clear()
    if (this.unloadTimer !== null) clearTimeout(this.unloadTimer)
    this.unloadTimer = null
    if (this.stateValue === 'unloaded') return
    this.transition('unloaded')
    this.registry.forget(this)
    if (this.relayed) this.registry.leaveRelay(this.name)
    this.doc.off('update', this.onDocUpdate)
    this.doc.destroy()
  }

  /** Cancels timers; used when the whole server stops. */
  dispose(): void {
    if (this.unloadTimer !== null) clearTimeout(this.unloadTimer)
    this.unloadTimer = null
  }

  memberList(): RoomMember[] {
    return [...this.members]
  }
}

/** A member that receives nothing: HTTP requests reading or writing a room. */
class QuietMember implements RoomMember {
  readonly format: WireFormat = { name: 'none', update: () => new Uint8Array(), awareness: () => new Uint8Array() }
  deliverUpdate(): void {}
  deliverAwareness(): void {}
  evict(): void {}
}

/** The loaded rooms by name. Connections arriving during a load share that load. */
export class RoomRegistry {
  private readonly rooms = new Map<string, Room>()

  constructor(
    private readonly writer: DocumentWriter,
    private readonly log: Logger,
    /** Milliseconds an empty room stays loaded; negative = never unload (tests). */
    readonly unloadDelayMs: number,
    /** Updates that would grow a document past this many bytes are refused. */
    readonly maxDocumentBytes: number,
    /** Connections (or Hocuspocus documents) one room admits. */
    readonly maxRoomConnections: number,
    /** The cluster, with --redis; null for a single instance. */
    readonly relay: Relay | null = null,
  ) {}

  /** Called with the number of updates each merged broadcast carried (for metrics). */
  onBatched: (updates: number) => void = () => {}

  /** Leaves of the cluster still under way, by room: a room loading again waits for its leave. */
  private readonly leaves = new Map<string, Promise<void>>()

  leaveRelay(name: string): void {
    if (this.relay === null) return
    const leave = this.relay
      .leaveRoom(name)
      .catch((err: unknown) => this.log.warn({ room: name, err }, 'leaving the cluster for this room failed'))
      .finally(() => {
        if (this.leaves.get(name) === leave) this.leaves.delete(name)
      })
    this.leaves.set(name, leave)
  }

  /**
   * Runs `work` with the room loaded and a silent member holding it (so it cannot unload under
   * the work); the room unloads after the usual delay once nobody else is in it.
   */
  async withRoom<T>(name: string, work: (room: Room, member: RoomMember) => T | Promise<T>): Promise<T> {
    const member = new QuietMember()
    const room = this.join(name, member)
    try {
      await room.loaded
      return await work(room, member)
    } finally {
      room.leave(member)
    }
  }

  leaving(name: string): Promise<void> {
    return this.leaves.get(name) ?? Promise.resolve()
  }

  /** Joins `member` to the room, loading it when needed. Await `room.loaded` before syncing. */
  join(name: string, member: RoomMember): Room {
    let room = this.rooms.get(name)
    if (room === undefined) {
      room = new Room(name, this.writer, this, this.log)
      this.rooms.set(name, room)
    }
    room.join(member)
    return room
  }

  get(name: string): Room | undefined {
    return this.rooms.get(name)
  }

  forget(room: Room): void {
    if (this.rooms.get(room.name) === room) this.rooms.delete(room.name)
  }

  get size(): number {
    return this.rooms.size
  }

  all(): IterableIterator<Room> {
    return this.rooms.values()
  }
}
