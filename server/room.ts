import * as Y from 'yjs'
import { validateUpdate, type AwarenessEntry, type AwarenessRead, type UpdateSummary } from '../protocol/index.js'
import { InvalidUpdateError, type DocumentWriter } from '../persistence/index.js'
import type { Relay, RelayRoomHandlers } from '../cluster/index.js'
import { RemoteInstance, RoomAwareness, type AwarenessApplied, type AwarenessLimits, type AwarenessRefusal } from './room-awareness.js'
import { FrameCache, type SharedFrames, type WireFormat } from './wire-format.js'
import type { Logger } from './logger.js'
import { CloseCode } from './codes.js'
import { deepestNewType, dependenciesPresent } from './update-shape.js'

/** One participant of a room: a y-websocket connection, or one document of a Hocuspocus socket. */
export interface RoomMember {
  readonly format: WireFormat
  /** Who the member authenticated as, for awareness ownership (presenceIdentity); null in open mode. */
  readonly identity: string | null
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

/** Why Room.applyUpdate refused an update (the metric label too). */
export type RefusalReason = 'too_deep' | 'missing_dependencies' | 'rejected_by_yjs'

/**
 * An update the room did not apply. For `rejected_by_yjs` the room has also been reset: Yjs threw
 * in the middle of its transaction, so the document was dropped and is reloaded from storage.
 */
export class UpdateRefusedError extends Error {
  constructor(readonly reason: RefusalReason, message: string) {
    super(message)
    this.name = 'UpdateRefusedError'
  }
}

/** Limits on the shape of the updates a room applies (see README, Hostile input). */
export interface UpdateShapeLimits {
  /** Deepest nesting of shared types; a root type is 1. */
  maxNestingDepth: number
  /** Bytes of updates from the cluster that Yjs may hold back waiting for missing clocks. */
  maxPendingBytes: number
}

export const UPDATE_SHAPE_DEFAULTS: Readonly<UpdateShapeLimits> = Object.freeze({ maxNestingDepth: 256, maxPendingBytes: 1024 * 1024 })

/**
 * An exact measurement of the document's size (an encode of all of it) may take at most this
 * share of the time: the next one waits this many times as long as the last one took.
 */
const SIZE_MEASURE_BACKOFF = 20

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
// A fixed guid: Yjs would otherwise draw a random UUID per document (31 getRandomValues calls),
// which made loading a burst of rooms the main cost of a room flood (issue 12, finding 8).
function newRoomDoc(): Y.Doc {
  return new Y.Doc({ gc: true, guid: 'weft-room' })
}

export class Room {
  private docValue = newRoomDoc()
  readonly awareness: RoomAwareness
  private readonly members = new Set<RoomMember>()
  private stateValue: RoomState = 'loading'
  private unloadTimer: NodeJS.Timeout | null = null
  /** An upper bound of the document's encoded size: measured exactly now and then, plus every update applied since. */
  private sizeEstimate = 0
  /** When (performance.now()) an exact measurement may be taken again, to bring sizeEstimate down. */
  private nextMeasureAt = 0
  /** While Y.applyUpdate runs: what the doc emitted, held until Yjs returned without throwing. */
  private emitted: Uint8Array[] | null = null
  /** Log entries set aside at the last load because they could not be applied. */
  quarantined = 0
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
    this.awareness = new RoomAwareness(registry.awarenessLimits)
    this.loaded = this.load()
    // Never an unhandled rejection: members await `loaded` and handle the failure themselves.
    this.loaded.catch(() => {})
    this.docValue.on('update', this.onDocUpdate)
  }

  /** The room's document; replaced only while loading (a stored entry that cannot be applied). */
  get doc(): Y.Doc {
    return this.docValue
  }

  get state(): RoomState {
    return this.stateValue
  }

  get awarenessLimits(): AwarenessLimits {
    return this.registry.awarenessLimits
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
    try {
      await this.loadOnce()
    } catch (err) {
      if (this.stateValue === 'unloaded') throw new RoomLoadError(`room ${this.name} could not be loaded`)
      // Never left "loading": members are closed with 1011 and reconnect; HTTP answers 503.
      this.log.error({ room: this.name, err }, 'room load failed')
      this.fail('the document could not be loaded')
      throw new RoomLoadError(`room ${this.name} could not be loaded`)
    }
  }

  /**
   * The stored document, merged. When it cannot be merged or applied (Yjs throws), the log is
   * applied entry by entry and each entry that fails is quarantined: moved aside in storage,
   * logged and counted, so the room loads from the rest instead of failing for ever.
   */
  private async loadStored(): Promise<Uint8Array | null> {
    try {
      const stored = await this.writer.load(this.name)
      try {
        // Applied with the room as origin: the update handler knows not to store it again.
        if (stored !== null) Y.applyUpdate(this.docValue, stored, this)
        return stored
      } catch (err) {
        this.log.error({ room: this.name, err }, 'the stored document cannot be applied; loading it entry by entry')
      }
    } catch (err) {
      // Storage failures fail the load; only entries Yjs cannot merge are looked at one by one.
      if (!(err instanceof InvalidUpdateError)) throw err
      this.log.error({ room: this.name, err }, 'the stored entries cannot be merged; loading them one by one')
    }
    const { log, pending } = await this.writer.loadEntries(this.name)
    const good: Uint8Array[] = []
    const entries: Array<{ key: string | null; update: Uint8Array }> = [...log, ...pending.map((update) => ({ key: null, update }))]
    this.replaceDoc()
    for (const entry of entries) {
      try {
        Y.applyUpdate(this.docValue, entry.update, this)
        good.push(entry.update)
        continue
      } catch (err) {
        this.log.error({ room: this.name, key: entry.key, bytes: entry.update.length, err }, 'stored entry cannot be applied; quarantined')
      }
      this.quarantined++
      this.registry.onQuarantined()
      if (entry.key !== null) await this.writer.quarantine(this.name, entry.key)
      // The failed apply may have left the document half-changed: rebuilt from the good entries.
      this.replaceDoc()
      for (const update of good) Y.applyUpdate(this.docValue, update, this)
    }
    return good.length === 0 ? null : Y.encodeStateAsUpdate(this.docValue)
  }

  private replaceDoc(): void {
    this.docValue.off('update', this.onDocUpdate)
    this.docValue.destroy()
    this.docValue = newRoomDoc()
    this.docValue.on('update', this.onDocUpdate)
  }

  private async loadOnce(): Promise<void> {
    const started = performance.now()
    const stored = await this.loadStored()
    this.sizeEstimate = stored?.length ?? 0
    const relay = this.registry.relay
    if (relay !== null) {
      await this.registry.leaving(this.name)
      try {
        const shared = await relay.joinRoom(this.name, stored, this.relayHandlers)
        this.relayed = true
        // What the cluster has and this instance lacked: stored here too, relayed to nobody.
        if (shared !== null) this.applyFromCluster(shared)
        if ((this.stateValue as RoomState) === 'unloaded') throw new Error('the document from the cluster could not be applied')
      } catch (err) {
        if ((this.stateValue as RoomState) === 'unloaded') throw err
        // The relay catches up when Redis is back; the room serves its local copy meanwhile.
        this.log.error({ room: this.name, err }, 'joining the cluster for this room failed')
      }
    }
    this.transition('active')
    this.log.debug({ room: this.name, bytes: stored?.length ?? 0, ms: Math.round(performance.now() - started) }, 'room loaded')
    if (this.members.size === 0) this.scheduleUnload()
  }

  private fail(reason: string): void {
    for (const member of this.members) member.evict(CloseCode.internalError, reason)
    this.members.clear()
    this.transition('unloaded')
    this.registry.forget(this)
    this.docValue.off('update', this.onDocUpdate)
    this.docValue.destroy()
  }

  /**
   * Yjs threw in the middle of a transaction: the document may be half-changed and nothing of it
   * was stored, relayed or broadcast. It is dropped; members (but `offender`, whose session closes
   * it with 1007) are closed with 1011 and reconnect to the room loaded afresh from storage, which
   * holds everything acknowledged (the writer's queue included). Never compacted: the registry
   * forgets the room at once, so the snapshot source no longer sees it.
   */
  private reset(err: unknown, offender: unknown): void {
    this.log.error({ room: this.name, err }, 'Yjs failed while applying an update; the room is reloaded from storage')
    this.registry.onReset()
    this.pending = []
    for (const member of this.members) {
      if (member !== offender) member.evict(CloseCode.internalError, 'document reloaded after an internal error')
    }
    this.members.clear()
    if (this.unloadTimer !== null) clearTimeout(this.unloadTimer)
    this.unloadTimer = null
    this.transition('unloaded')
    this.registry.forget(this)
    if (this.relayed) this.registry.leaveRelay(this.name)
    this.docValue.off('update', this.onDocUpdate)
    this.docValue.destroy()
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
    // Yjs emits in its cleanup even when the transaction threw: held until it is known to have returned.
    if (this.emitted !== null) {
      this.emitted.push(update)
      return
    }
    this.commit(update, origin)
  }

  /** Stores, relays and broadcasts what the document emitted; returns the write's durability. */
  private commit(update: Uint8Array, origin: unknown): Promise<void> {
    this.sizeEstimate += update.length
    // Durability first: the write is scheduled before anyone hears of the update.
    const write = this.writer.write(this.name, update)
    write.catch((err: unknown) => {
      this.log.error({ room: this.name, err }, 'update could not be stored')
    })
    if (this.relayed && origin !== FROM_CLUSTER) this.registry.relay?.publishUpdate(this.name, update)
    this.queueBroadcast(update, origin)
    return write
  }

  /**
   * Y.applyUpdate, committing what it emitted only once it returned normally. When Yjs throws the
   * room is reset (see reset) and UpdateRefusedError is thrown. Returns the durability of the
   * last write, or null when the update changed nothing.
   */
  private integrate(update: Uint8Array, origin: unknown): Promise<void> | null {
    if (this.stateValue === 'unloaded') throw new Error(`room ${this.name} is unloaded`)
    const emitted: Uint8Array[] = []
    this.emitted = emitted
    try {
      Y.applyUpdate(this.docValue, update, origin)
    } catch (err) {
      this.emitted = null
      this.reset(err, origin)
      throw new UpdateRefusedError('rejected_by_yjs', `update rejected by Yjs: ${(err as Error).message}`)
    }
    this.emitted = null
    let written: Promise<void> | null = null
    for (const part of emitted) written = this.commit(part, origin)
    return written
  }

  /** Bytes Yjs holds back for missing dependencies (structs and deletions). */
  private pendingBytes(): number {
    const store = this.docValue.store
    return (store.pendingStructs?.update.length ?? 0) + (store.pendingDs?.length ?? 0)
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

  /**
   * Updates from other instances may arrive out of order, so Yjs may hold them pending; within
   * --max-pending-bytes (counted in the size estimate). Past it, or when Yjs throws, the room
   * is reset and reloads from storage and the cluster.
   */
  private applyFromCluster(update: Uint8Array): void {
    if (this.stateValue === 'unloaded') return
    try {
      this.integrate(update, FROM_CLUSTER)
    } catch (err) {
      this.log.error({ room: this.name, err }, 'an update from the cluster could not be applied')
      return
    }
    const pending = this.pendingBytes()
    if (pending > this.registry.shapeLimits.maxPendingBytes) {
      this.registry.onRefused('missing_dependencies')
      this.reset(new Error(`${pending} bytes from the cluster wait for missing dependencies`), null)
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
      // Each entry carries its owner's identity as the other instance relayed it.
      const { accepted, refused } = this.awareness.apply(entries, this.remoteOwner(instanceId))
      this.countRefusals(refused)
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
   * The estimate is an upper bound (stored size at load or at the last compaction, plus every
   * update applied since, plus what Yjs holds pending). Over the limit, the document is encoded to
   * measure it exactly only when the last measurement is old enough (at most 1/SIZE_MEASURE_BACKOFF
   * of the time goes to measuring); meanwhile updates are refused on the estimate, which may be
   * early when recent updates deleted more than they added.
   */
  wouldExceedSizeLimit(updateBytes: number): boolean {
    const limit = this.registry.maxDocumentBytes
    if (this.sizeEstimate + this.pendingBytes() + updateBytes <= limit) return false
    const now = performance.now()
    if (now < this.nextMeasureAt) return true
    this.snapshot()
    this.nextMeasureAt = now + SIZE_MEASURE_BACKOFF * (performance.now() - now)
    return this.sizeEstimate + this.pendingBytes() + updateBytes > limit
  }

  /** The whole document as one update, for compaction; its length is also an exact size measurement. */
  snapshot(): Uint8Array {
    const state = Y.encodeStateAsUpdate(this.docValue)
    this.sizeEstimate = state.length
    return state
  }

  /**
   * Applies an update a member sent (validated by validateUpdate: `summary`). Refuses, with
   * UpdateRefusedError and the document unchanged, an update that would nest shared types deeper
   * than --max-nesting-depth or that depends on clocks the document does not have (Yjs would keep
   * it pending: never stored, yet it would look accepted). Returns the durability of what it
   * changed, or null when it changed nothing.
   */
  applyUpdate(update: Uint8Array, origin: RoomMember, summary: UpdateSummary = validateUpdate(update)): Promise<void> | null {
    if (!dependenciesPresent(this.docValue, summary)) {
      this.registry.onRefused('missing_dependencies')
      throw new UpdateRefusedError('missing_dependencies', 'the update depends on changes this document does not have; sync first')
    }
    const { maxNestingDepth } = this.registry.shapeLimits
    if (summary.types > 0 && deepestNewType(this.docValue, update, maxNestingDepth) > maxNestingDepth) {
      this.registry.onRefused('too_deep')
      throw new UpdateRefusedError('too_deep', `shared types nested deeper than ${maxNestingDepth}`)
    }
    const hadPending = this.pendingBytes() > 0
    let written: Promise<void> | null
    try {
      written = this.integrate(update, origin)
    } catch (err) {
      if (err instanceof UpdateRefusedError) this.registry.onRefused(err.reason)
      throw err
    }
    if (!hadPending && this.pendingBytes() > 0) {
      // Missed by the check above (a cycle of references): what integrated is stored; the rest is
      // dropped, never held unstored, and the sender is not told "saved".
      this.docValue.store.pendingStructs = null
      this.docValue.store.pendingDs = null
      this.registry.onRefused('missing_dependencies')
      throw new UpdateRefusedError('missing_dependencies', 'part of the update depends on changes this document does not have')
    }
    // Webhooks (issue 16): a change that arrived here from a member (never from storage or the
    // cluster); its durability includes the outbox's record of it.
    if (written !== null) {
      const recorded = this.registry.onMemberChange(this.name, origin)
      if (recorded !== undefined) {
        const stored = written
        written = Promise.all([stored, recorded]).then(() => undefined)
      }
    }
    return written
  }

  /**
   * Like applyUpdate, and resolves when what the update changed is durable in storage (when it
   * changed nothing, once what is pending for the room is): for acknowledgements that mean "saved".
   */
  applyUpdateDurably(update: Uint8Array, origin: RoomMember, summary?: UpdateSummary): Promise<void> {
    return this.applyUpdate(update, origin, summary) ?? this.writer.flush(this.name)
  }

  /**
   * Applies what a member's awareness message holds; relays what changed to every member, sender
   * included. Entries over a bound or for client IDs the member does not own are ignored and counted.
   */
  applyAwareness(read: AwarenessRead, owner: RoomMember): AwarenessApplied {
    const applied = this.awareness.apply(read.entries, owner, owner.identity)
    const { accepted, refused } = applied
    if (read.unread > 0) refused.set('message-entries', (refused.get('message-entries') ?? 0) + read.unread)
    if (read.oversized > 0) refused.set('state-bytes', (refused.get('state-bytes') ?? 0) + read.oversized)
    this.countRefusals(refused)
    // The sender hears its own awareness back: stock clients count incoming traffic as liveness,
    // and a client alone in a room would otherwise reconnect every 30 s.
    if (accepted.length > 0) {
      this.broadcastAwareness(accepted)
      if (this.relayed) this.registry.relay?.publishAwareness(this.name, accepted)
    }
    return applied
  }

  private countRefusals(refused: ReadonlyMap<AwarenessRefusal, number>): void {
    for (const [reason, count] of refused) this.registry.onAwarenessRefused(reason, count)
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
    this.docValue.off('update', this.onDocUpdate)
    this.docValue.destroy()
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
    this.docValue.off('update', this.onDocUpdate)
    this.docValue.destroy()
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
  readonly identity = null
  /** The request's subject, for the webhook feed (see server/webhooks/member-origin.ts). */
  readonly grant: { readonly subject: string | null }
  constructor(subject: string | null) {
    this.grant = { subject }
  }
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
    readonly relay: Relay | null,
    readonly shapeLimits: Readonly<UpdateShapeLimits>,
    readonly awarenessLimits: AwarenessLimits,
  ) {}

  /** Called with the number of updates each merged broadcast carried (for metrics). */
  onBatched: (updates: number) => void = () => {}
  /** Called for each update a room refused for its shape, and why (for metrics). */
  onRefused: (reason: RefusalReason) => void = () => {}
  /** Called for each stored entry a load set aside (for metrics). */
  onQuarantined: () => void = () => {}
  /** Called when a room was reset after Yjs threw (for metrics). */
  onReset: () => void = () => {}
  /** Called after an update from a member (client or HTTP request) changed a room: the webhook outbox's feed. */
  onMemberChange: (room: string, member: RoomMember) => Promise<void> | undefined = () => undefined

  /** Called with awareness entries a room refused, by reason (for metrics). */
  onAwarenessRefused: (reason: AwarenessRefusal, count: number) => void = () => {}

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
  async withRoom<T>(name: string, work: (room: Room, member: RoomMember) => T | Promise<T>, subject: string | null = null): Promise<T> {
    const member = new QuietMember(subject)
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
