import { createHash } from 'node:crypto'
import * as Y from 'yjs'
import { framePayload, varUintSize, writeVarUint } from '../protocol/varuint-writer.js'
import { encodeAwarenessUpdate, validateUpdate, type AwarenessEntry, type AwarenessRead, type UpdateSummary } from '../protocol/index.js'
import { InvalidUpdateError, type DocumentWriter } from '../persistence/index.js'
import type { RelayRoomHandlers } from '../cluster/index.js'
import { RemoteInstance, RoomAwareness, type AwarenessApplied, type AwarenessLimits, type AwarenessRefusal } from './room-awareness.js'
import type { SharedFrames, WireFormat } from './wire-format.js'
import type { Logger } from './logger.js'
import { CloseCode } from './codes.js'
import { deepestNewType, dependenciesPresent } from './update-shape.js'
import { boundStringItems, claimHeadroom, updateChangesDocument } from '../crdt/index.js'
import { encodeFramedState, encodeState } from './framed-state.js'
import { ReplyReservation } from './reply-memory.js'
import { RoomBroadcast } from './room-broadcast.js'
import { notify } from './room-events.js'
import type { RoomRegistry } from './room-registry.js'
import { CLUSTER_SOURCE, STORAGE_SOURCE, UpdateRefusedError, UpdateSource, type ApplyOutcome } from './update-source.js'

export { RoomRegistry } from './room-registry.js'
export type { RoomEvents } from './room-events.js'
export { UpdateSource, type ApplyOutcome, type RefusalReason } from './update-source.js'

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

/**
 * A full-state reply for a document estimated this big or bigger is encoded into its frame's
 * buffer, and a full state for anything else (HTTP, versions, compaction) into one buffer sized up
 * front (framed-state.ts); smaller ones are encoded, then framed (two short copies).
 */
const PRESIZED_REPLY_BYTES = 256 * 1024

/** How long a sync reply is kept for more joiners with the same state vector. */
const SYNC_REPLY_CACHE_MS = 2_000

/**
 * A merged whole state is followed by the document's changes since it was merged, up to this many
 * updates and bytes (merged into one update frame on the event loop, so they stay small); past
 * either, the next joiner's state is merged afresh (Room.syncReplyOffLoop).
 */
const STATE_TAIL_MAX_UPDATES = 256
const STATE_TAIL_MAX_BYTES = 256 * 1024

/** What sharedState asks syncReply for: the whole state (an empty state vector), with no header. */
const EMPTY_STATE_VECTOR = Uint8Array.of(0)
const NO_PREFIX = new Uint8Array(0)
/** The framing name of sharedState's replies. */
const STATE_FRAMING = 'state'

/** Framings of a room's awareness snapshot kept at once (y-websocket, and Hocuspocus names). */
const MAX_AWARENESS_FRAMINGS = 4

/**
 * Edits an application makes to the doc itself (seeding it in onLoad): stored, relayed and
 * broadcast like any update, but not reported back to the application as a change.
 */
const APPLICATION_EDIT = Symbol('application edit')

/**
 * Bytes a merged whole state leaves free in front of it (DocumentWriter.load): the first framing
 * of it writes its header there instead of copying the state behind one, which for 20 MB took
 * 55–60 ms of the event loop (a fresh buffer's pages zeroed and faulted in). Room for a
 * y-websocket header and a Hocuspocus one with the longest room name.
 */
const FRAME_HEADROOM = 1024

/**
 * The frame made in a state's headroom, by framing: a headroom is claimed once, and the room keeps
 * the state (loadedState) longer than its cached reply, so the next joiner after the cache expired
 * copied the state behind a new header (37 ms of the event loop at the start of bench scenario
 * 13's storm, 20 MB). The frame holds no memory of its own: it is the state's buffer.
 */
const headroomFrames = new WeakMap<Uint8Array, { framing: string; frame: Uint8Array }>()

/**
 * `prefix` (named `framing`), then `state` as var-bytes: in the state's headroom when it has some
 * free, or the frame made there before for the same framing, else copied (framePayload).
 */
function frameState(framing: string, prefix: Uint8Array, state: Uint8Array): Uint8Array {
  const made = headroomFrames.get(state)
  if (made !== undefined && made.framing === framing) return made.frame
  const frame = claimHeadroom(state, prefix.length + varUintSize(state.length))
  if (frame === null) return framePayload(prefix, state)
  frame.set(prefix)
  writeVarUint(frame, prefix.length, state.length)
  headroomFrames.set(state, { framing, frame })
  return frame
}

/**
 * Calls `drop` once `usedAt()` is SYNC_REPLY_CACHE_MS in the past, looking again whenever it was
 * used meanwhile; stops looking when `kept()` turns false (the cache was replaced or dropped).
 */
function dropWhenIdle(usedAt: () => number, kept: () => boolean, drop: () => void): void {
  const look = (): void => {
    if (!kept()) return
    const idleMs = performance.now() - usedAt()
    if (idleMs >= SYNC_REPLY_CACHE_MS) drop()
    else setTimeout(look, SYNC_REPLY_CACHE_MS - idleMs).unref()
  }
  look()
}

/** The state vector of a client that has nothing: it asks for the whole document. */
function isEmptyStateVector(stateVector: Uint8Array): boolean {
  return stateVector.length === 1 && stateVector[0] === 0
}

const TOO_LARGE: ApplyOutcome = Object.freeze({ kind: 'tooLarge' })

/** A whole-state reply merged from storage (Room.syncReplyOffLoop), and the document's changes since. */
interface StateBuild {
  /** Room.docChanges when it started: the state holds every change until then. */
  changes: number
  /** The merged state; null when storage could not be read. */
  state: Promise<Uint8Array | null>
  /** The framed reply per framing, made once for every ask that shares the build. */
  frames: Map<string, Uint8Array>
  /** Its place in the reply memory until the replies are held, shared by every ask like the reply. */
  reservation: ReplyReservation
  /**
   * Every update the document committed since it started, in order: an ask made later gets the
   * state, then the first of these it needs. Appended while `tailOpen`; never shortened, since
   * asks made earlier still read their part.
   */
  tail: Uint8Array[]
  tailBytes: number
  /** False once the tail reached STATE_TAIL_MAX_UPDATES or STATE_TAIL_MAX_BYTES: no later ask shares the build. */
  tailOpen: boolean
  /** The first `count` updates of the tail merged into one frame, per framing (the last made). */
  tailFrames: Map<string, { count: number; frame: Uint8Array }>
  /** When an ask last shared it: a merged build is kept while asks keep coming (SYNC_REPLY_CACHE_MS). */
  usedAt: number
  /** The merge has ended (`state` is settled). */
  done: boolean
}

/** A whole-state reply built off the event loop: the state's frame, then the document's changes since it was merged (an update frame), if any. */
export interface OffLoopReply {
  reply: Uint8Array
  changesSince: Uint8Array | null
}

/**
 * One Yjs document and the members editing it. The room has a Y.Doc; it is not one.
 */
// A fixed guid: Yjs would otherwise draw a random UUID per document (31 getRandomValues calls),
// which made loading a burst of rooms the main cost of a room flood (issue 12, finding 8).
// One gcFilter for every room instead of Yjs's default closure per document. And no `load` and
// `sync` listeners: Y.Doc registers three (with two sets, their closures and the promises
// whenLoaded and whenSynced resolve through) for a provider to emit those events, and no
// provider ever emits them on a server's document; they were about 1 KB of every loaded room
// (issue 19, 10,000 rooms with one connection each). whenLoaded and whenSynced stay pending, as
// they always did here.
function newRoomDoc(): Y.Doc {
  const doc = new Y.Doc({ gc: true, guid: 'weft-room', gcFilter: collectEverything })
  const observers = (doc as unknown as { _observers?: Map<string, unknown> })._observers
  observers?.delete('load')
  observers?.delete('sync')
  // Appending to a big text must not copy all of it per update (crdt/bounded-string-items.ts).
  boundStringItems(doc)
  return doc
}

function collectEverything(): boolean {
  return true
}

export class Room {
  private docValue = newRoomDoc()
  readonly awareness: RoomAwareness
  private readonly members = new Set<RoomMember>()
  private stateValue: RoomState = 'loading'
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
  /** The other instances whose clients have awareness states here (with --redis; created on first use). */
  private remoteOwners: Map<string, RemoteInstance> | null = null
  private readonly broadcast: RoomBroadcast
  /** Updates committed since load, local and from the cluster (the status page's per-room rate). */
  updatesCommitted = 0

  /** An upper bound of the document's encoded size, without encoding it (the status page's sizes). */
  get estimatedBytes(): number {
    return this.sizeEstimate
  }
  /** A stored event is queued: the writes of one storage batch resolve together and say so once. */
  private storedQueued = false

  constructor(
    readonly name: string,
    private readonly writer: DocumentWriter,
    private readonly registry: RoomRegistry,
    private readonly log: Logger,
  ) {
    this.awareness = new RoomAwareness(registry.awarenessLimits)
    this.broadcast = new RoomBroadcast(name, this.members, log, registry, registry.awarenessFlushMs)
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
      // With headroom: the first joiners' reply is this state with its header written in front (syncReply).
      const stored = await this.writer.load(this.name, FRAME_HEADROOM)
      try {
        // STORAGE_SOURCE: the update handler knows not to store it again.
        if (stored !== null) this.applyStored(stored)
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
        Y.applyUpdate(this.docValue, entry.update, STORAGE_SOURCE)
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
      for (const update of good) Y.applyUpdate(this.docValue, update, STORAGE_SOURCE)
    }
    return good.length === 0 ? null : Y.encodeStateAsUpdate(this.docValue)
  }

  /**
   * Stored bytes into the document without the update listener (which ignores storage's updates):
   * with no listener Yjs does not encode the transaction, ~200 ms of event loop for 20 MB.
   */
  private applyStored(update: Uint8Array): void {
    this.docValue.off('update', this.onDocUpdate)
    try {
      Y.applyUpdate(this.docValue, update, STORAGE_SOURCE)
    } finally {
      this.docValue.on('update', this.onDocUpdate)
    }
  }

  private replaceDoc(): void {
    this.docValue.off('update', this.onDocUpdate)
    this.docValue.destroy()
    this.docValue = newRoomDoc()
    this.docValue.on('update', this.onDocUpdate)
    this.snapshotDigestValue = null
    this.docChanges++
    this.stateBuild = null
  }

  private async loadOnce(): Promise<void> {
    const started = performance.now()
    const stored = await this.loadStored()
    this.sizeEstimate = stored?.length ?? 0
    // The document as loaded: the first joiners' full-state reply, until the document changes.
    this.loadedState = stored
    const relay = this.registry.relay
    if (relay !== null) {
      await this.registry.leaving(this.name)
      try {
        const shared = await relay.joinRoom(this.name, stored, this.relayHandlers())
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
    // The application's turn (onLoad), before any member syncs: what it writes is in their first sync.
    try {
      await this.registry.events.loaded(this, this.docValue)
    } catch (err) {
      this.log.error({ room: this.name, event: 'loaded', err }, 'room event handler failed')
    }
    if ((this.stateValue as RoomState) === 'unloaded') throw new Error('the room was reset while the application loaded it')
    this.transition('active')
    this.log.debug({ room: this.name, bytes: stored?.length ?? 0, ms: Math.round(performance.now() - started) }, 'room loaded')
    if (this.members.size === 0) this.scheduleUnload()
  }

  private fail(reason: string): void {
    for (const member of this.members) member.evict(CloseCode.internalError, reason)
    this.members.clear()
    this.discard()
  }

  /** Leaves memory (and the cluster): the one way into `unloaded`. */
  private discard(): void {
    this.registry.cancelUnload(this)
    this.transition('unloaded')
    this.broadcast.close()
    this.registry.forget(this)
    if (this.relayed) this.registry.leaveRelay(this.name)
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
  private reset(err: unknown, offender: RoomMember | null): void {
    this.log.error({ room: this.name, err }, 'Yjs failed while applying an update; the room is reloaded from storage')
    this.registry.onReset()
    for (const member of this.members) {
      if (member !== offender) member.evict(CloseCode.internalError, 'document reloaded after an internal error')
    }
    this.members.clear()
    this.discard()
  }

  /**
   * The last sync reply per framing, while the document has not changed since: joiners with the
   * same state vector (a crowd opening a document, all with empty state) share one encoding and
   * one buffer instead of each holding a copy of the whole document.
   */
  private syncReplies: Map<string, { stateVector: Uint8Array; frame: Uint8Array }> | null = null
  /** When a cached reply was last used: the cache lives while joiners keep coming. */
  private syncRepliesUsedAt = 0
  /**
   * The document's whole state as storage gave it (when the room loaded, or merged for a big reply
   * since: see syncReplyOffLoop), while the document is unchanged: a full-state reply without encoding.
   */
  private loadedState: Uint8Array | null = null
  /** Changes of the document so far (its update events): what a whole-state build started at. */
  private docChanges = 0
  /** The whole state last merged off the event loop, and the changes since (see syncReplyOffLoop); null when none is kept. */
  private stateBuild: StateBuild | null = null
  /** Reads waiting for the merge that runs to end before they start theirs (see sharedStateOffLoop). */
  private queuedStateRead: Promise<Uint8Array> | null = null
  /** Every live awareness state as a framed message per framing, while awareness.version is `awarenessFramesVersion`. */
  private awarenessFrames: Map<string, Uint8Array> | null = null
  private awarenessFramesVersion = -1
  /** SHA-1 of the document's snapshot (state vector and delete set), while the document is unchanged since. */
  private snapshotDigestValue: Buffer | null = null

  /**
   * Whether a query-awareness is answered, for an asker last answered at `lastAnsweredAt`
   * (performance.now(); -Infinity: never). One answer per --repeat-answer-interval-ms: the asker
   * has had every state since its last answer (each change is broadcast to it), so an earlier
   * question is answered by what is on its way. Asking 500 times a second for a room holding
   * 8 MiB of states once took 7 GB and 47 CPU-seconds in 6 s; refused ones are counted.
   */
  answersAwarenessQuery(lastAnsweredAt: number, now: number): boolean {
    if (now - lastAnsweredAt >= this.registry.repeatAnswerIntervalMs) return true
    this.registry.onAwarenessRefused('query-repeated', 1)
    return false
  }

  /**
   * Every live awareness state as one message, `prefix` then the awareness update as var-bytes
   * (`framing` names the prefix), for a newcomer or a query-awareness answer; null when there is
   * none. While no state changes, every member with the same framing gets the same buffer: a
   * crowd of joiners, or a client asking again and again, costs neither an encoding nor a copy of
   * up to --awareness-max-room-bytes each.
   */
  awarenessSnapshot(framing: string, prefix: Uint8Array): Uint8Array | null {
    if (this.awareness.size === 0) return null
    if (this.awarenessFramesVersion !== this.awareness.version) {
      this.awarenessFrames = null
      this.awarenessFramesVersion = this.awareness.version
    }
    const cached = this.awarenessFrames?.get(framing)
    if (cached !== undefined) return cached
    const frame = framePayload(prefix, encodeAwarenessUpdate(this.awareness.liveEntries()))
    // A Hocuspocus client names its document as it likes: a few framings are kept, not one per name.
    const frames = (this.awarenessFrames ??= new Map())
    if (frames.size < MAX_AWARENESS_FRAMINGS) frames.set(framing, frame)
    return frame
  }

  /**
   * Whether the reply to a sync step 1 with `stateVector` may be built now, for a connection of
   * `ip`: a reply already built (the cached one) or a small one always may; a big one only while
   * --max-sync-reply-bytes[-per-ip] admit it (see ReplyMemory), else the ask waits. Its size is
   * predicted from the clocks the state vector lacks, as a share of the document's size. `waiter`
   * (one per asking connection and document) takes its place in line while it waits.
   */
  mayBuildSyncReply(stateVector: Uint8Array, framing: string, ip: string, waiter?: object): boolean {
    const memory = this.registry.replyMemory
    // A document smaller than a big reply cannot make one (its delete set is part of its size).
    if (memory === null || this.sizeEstimate <= this.registry.bigReplyBytes) return true
    if (this.cachedSyncReply(stateVector, framing) !== undefined) return true
    // A whole state being merged, or merged and followed by the changes since: shared like a cached reply.
    if (this.stateBuild !== null && this.extendsToNow(this.stateBuild) && this.buildsReplyOffLoop(stateVector, framing)) return true
    const predicted = this.predictedReplyBytes(stateVector)
    return predicted <= this.registry.bigReplyBytes || memory.admits(ip, predicted, waiter)
  }

  /** The reply to `stateVector` with `framing` if it is built and still valid (see syncReply). */
  private cachedSyncReply(stateVector: Uint8Array, framing: string): Uint8Array | undefined {
    const store = this.doc.store
    if (store.pendingStructs !== null || store.pendingDs !== null) return undefined
    const cached = this.syncReplies?.get(framing)
    return cached !== undefined && Buffer.compare(cached.stateVector, stateVector) === 0 ? cached.frame : undefined
  }

  /** About how many bytes the reply to `stateVector` takes: the document's size times the share of its clocks the vector lacks. */
  private predictedReplyBytes(stateVector: Uint8Array): number {
    const has = Y.decodeStateVector(stateVector)
    let total = 0
    let missing = 0
    for (const [client, structs] of this.doc.store.clients) {
      const last = structs[structs.length - 1]
      if (last === undefined) continue
      const clock = last.id.clock + last.length
      total += clock
      missing += Math.max(0, clock - (has.get(client) ?? 0))
    }
    return total === 0 ? 0 : Math.ceil((this.sizeEstimate * missing) / total)
  }

  /**
   * The framed answer to a sync step 1 with `stateVector`: `prefix` (the protocol's header), then
   * the update as var-bytes; `framing` names the prefix (equal names must mean equal prefixes).
   */
  syncReply(stateVector: Uint8Array, framing: string, prefix: Uint8Array): Uint8Array {
    const cached = this.cachedSyncReply(stateVector, framing)
    if (cached !== undefined) {
      this.syncRepliesUsedAt = performance.now()
      return cached
    }
    const store = this.doc.store
    // Structs waiting for a missing dependency change the reply without an update event.
    const cacheable = store.pendingStructs === null && store.pendingDs === null
    const empty = isEmptyStateVector(stateVector)
    let reply: Uint8Array
    if (empty && cacheable && this.loadedState !== null) reply = frameState(framing, prefix, this.loadedState)
    else if (empty && this.presizeHint !== null) reply = encodeFramedState(this.doc, stateVector, prefix, this.presizeHint)
    else reply = framePayload(prefix, Y.encodeStateAsUpdate(this.doc, stateVector))
    this.loadedState = null
    if (cacheable) this.cacheSyncReply(framing, stateVector, reply)
    return reply
  }

  /** Keeps `reply` for more joiners with the same state vector and framing, while the document stays as it is. */
  private cacheSyncReply(framing: string, stateVector: Uint8Array, reply: Uint8Array): void {
    if (this.syncReplies === null) {
      this.syncReplies = new Map()
      this.syncRepliesUsedAt = performance.now()
      // Only for a crowd arriving together (or a steady stream of joiners): a quiet room does not keep a copy of its document.
      const replies = this.syncReplies
      dropWhenIdle(() => this.syncRepliesUsedAt, () => this.syncReplies === replies, () => (this.syncReplies = null))
    }
    this.syncReplies.set(framing, { stateVector: Uint8Array.from(stateVector), frame: reply })
  }

  /**
   * syncReply, except for the whole state of a big document when no reply to it is cached: that
   * is merged from storage by the writer's merge workers (see DocumentWriter.load) instead of
   * encoded on the event loop, which took 100–200 ms for 20 MB and held every room of the process
   * up while it ran (the first joiner of a crowd, and the first after each change). Storage holds
   * every change the document has (each is written before anyone hears of it), so the merge is
   * the document as of its start; the room keeps every change committed since (the build's tail)
   * and a later ask gets the merged state, then those changes as one update frame. Asks share one
   * merge and one frame per protocol while the tail stays within STATE_TAIL_MAX_UPDATES and
   * STATE_TAIL_MAX_BYTES and asks keep coming (SYNC_REPLY_CACHE_MS); then the next ask starts
   * another merge. A document edited while joiners stream in is so merged once per so many
   * changes, not once per joiner. What changes after an ask reaches the asker as a broadcast: it
   * is a member already. Resolves to null when the room was unloaded meanwhile; falls back to
   * syncReply when storage fails. A Hocuspocus provider is also synced by the acknowledgement of
   * its own step 2: the session holds its acknowledgements until the reply is sent
   * (HocuspocusDocument.replySent).
   */
  syncReplyOffLoop(stateVector: Uint8Array, framing: string, prefix: Uint8Array, format: WireFormat, ip: string): Uint8Array | Promise<OffLoopReply | null> {
    if (!this.buildsReplyOffLoop(stateVector, framing)) return this.syncReply(stateVector, framing, prefix)
    let build = this.stateBuild
    if (build === null || !this.extendsToNow(build)) build = this.stateBuild = this.startStateBuild()
    const shared = build
    shared.usedAt = performance.now()
    // The changes the merged state lacks for this ask; later ones reach the asker as broadcasts.
    const count = this.docChanges - shared.changes
    const reply = shared.state.then((state): OffLoopReply | null => {
      if (this.stateValue === 'unloaded') return null
      if (state === null) return { reply: this.syncReply(stateVector, framing, prefix), changesSince: null }
      let frame = shared.frames.get(framing)
      if (frame === undefined) {
        frame = frameState(framing, prefix, state)
        shared.frames.set(framing, frame)
        // Unchanged since: joiners after these get the same buffer, and other framings this state.
        if (shared.changes === this.docChanges) {
          this.cacheSyncReply(framing, EMPTY_STATE_VECTOR, frame)
          this.loadedState = state
        }
      }
      return { reply: frame, changesSince: count === 0 ? null : this.tailFrame(shared, count, framing, format) }
    })
    // The ask was admitted for this size (mayBuildSyncReply): held until the asker holds the reply,
    // which it does in the same run of microtasks, so no other ask is admitted in between.
    const memory = this.registry.replyMemory
    if (memory !== null) {
      memory.hold(shared.reservation, ip)
      const release = (): void => memory.release(shared.reservation)
      reply.then(release, release)
    }
    return reply
  }

  private buildsReplyOffLoop(stateVector: Uint8Array, framing: string): boolean {
    if (!isEmptyStateVector(stateVector) || this.loadedState !== null || this.cachedSyncReply(stateVector, framing) !== undefined) return false
    const store = this.doc.store
    if (store.pendingStructs !== null || store.pendingDs !== null) return false
    return this.writer.mergesOffLoop(this.sizeEstimate)
  }

  /** Whether `build`'s state and tail hold the document as it is now: every change since it started went through commit. */
  private extendsToNow(build: StateBuild): boolean {
    return build.tailOpen && build.changes + build.tail.length === this.docChanges
  }

  private startStateBuild(): StateBuild {
    const state = this.writer.load(this.name, FRAME_HEADROOM).catch((err: unknown) => {
      this.log.warn({ room: this.name, err }, 'the whole state could not be read from storage; it is encoded on the event loop')
      return null
    })
    const build: StateBuild = {
      changes: this.docChanges,
      state,
      frames: new Map(),
      reservation: new ReplyReservation(this.sizeEstimate),
      tail: [],
      tailBytes: 0,
      tailOpen: true,
      tailFrames: new Map(),
      usedAt: performance.now(),
      done: false,
    }
    void state.then((merged) => {
      build.done = true
      if (this.stateBuild !== build) return
      if (merged === null) {
        this.stateBuild = null
        return
      }
      // Its state and frames are a document's size each: kept while asks keep sharing it.
      dropWhenIdle(() => build.usedAt, () => this.stateBuild === build, () => (this.stateBuild = null))
    })
    return build
  }

  /** A change committed while `build` is the room's: part of its tail, or the end of its sharing. */
  private extendTail(build: StateBuild, update: Uint8Array): void {
    if (build.tail.length >= STATE_TAIL_MAX_UPDATES || build.tailBytes + update.length > STATE_TAIL_MAX_BYTES) {
      build.tailOpen = false
      return
    }
    build.tail.push(update)
    build.tailBytes += update.length
  }

  /** The first `count` updates of `build`'s tail as one update frame in `format`, made once per framing and count. */
  private tailFrame(build: StateBuild, count: number, framing: string, format: WireFormat): Uint8Array {
    const made = build.tailFrames.get(framing)
    if (made?.count === count) return made.frame
    const updates = build.tail.slice(0, count)
    const frame = format.update(this.name, updates.length === 1 ? (updates[0] as Uint8Array) : Y.mergeUpdates(updates))
    build.tailFrames.set(framing, { count, frame })
    return frame
  }

  /**
   * Every change of the document passes here. The origin says which effects run: the stored
   * document being loaded runs none; anything else is stored, relayed unless it came from the
   * cluster, broadcast to every member but its sender, and reported to the application unless the
   * application made it.
   */
  private readonly onDocUpdate = (update: Uint8Array, origin: unknown): void => {
    this.docChanges++
    this.syncReplies = null
    this.loadedState = null
    this.snapshotDigestValue = null
    if (origin instanceof UpdateSource && origin.origin.kind === 'storage') return
    // Yjs emits in its cleanup even when the transaction threw: held until it is known to have returned.
    if (this.emitted !== null) {
      this.emitted.push(update)
      return
    }
    // A change made on the document directly (not through apply): it arrives now.
    this.commit(update, origin instanceof UpdateSource ? origin : APPLICATION_EDIT, performance.now())
  }

  /** Stores, relays and broadcasts what the document emitted; returns the write's durability. */
  private commit(update: Uint8Array, source: UpdateSource | typeof APPLICATION_EDIT, arrivedAt: number): Promise<void> {
    this.sizeEstimate += update.length
    this.updatesCommitted++
    const build = this.stateBuild
    if (build?.tailOpen === true) this.extendTail(build, update)
    // Durability first: the write is scheduled before anyone hears of the update.
    const write = this.writer.write(this.name, update)
    const [stored, failed] = (this.writeHandlers ??= [() => this.writeStored(), (err: unknown) => this.writeFailed(err)])
    write.then(stored, failed)
    const origin = source === APPLICATION_EDIT ? null : source.origin
    if (this.relayed && origin?.kind !== 'cluster') this.registry.relay?.publishUpdate(this.name, update)
    this.broadcast.update(update, source === APPLICATION_EDIT ? null : source.member, arrivedAt, origin?.kind === 'cluster')
    if (origin !== null) notify(this.log, this.name, 'changed', () => this.registry.events.changed(this, update, origin))
    return write
  }

  /** The two callbacks of every write, made at the room's first write (most rooms are only read). */
  private writeHandlers: [() => void, (err: unknown) => void] | null = null

  private writeStored(): void {
    if (this.storedQueued) return
    this.storedQueued = true
    queueMicrotask(() => {
      this.storedQueued = false
      notify(this.log, this.name, 'stored', () => this.registry.events.stored(this))
    })
  }

  private writeFailed(err: unknown): void {
    this.log.error({ room: this.name, err }, 'update could not be stored')
  }

  /**
   * Y.applyUpdate, committing what it emitted only once it returned normally. When Yjs throws the
   * room is reset (see reset) and UpdateRefusedError is thrown. Returns the durability of the
   * last write, or null when the update changed nothing.
   */
  private integrate(update: Uint8Array, source: UpdateSource, arrivedAt = performance.now()): Promise<void> | null {
    if (this.stateValue === 'unloaded') throw new Error(`room ${this.name} is unloaded`)
    const emitted: Uint8Array[] = []
    this.emitted = emitted
    try {
      Y.applyUpdate(this.docValue, update, source)
    } catch (err) {
      this.emitted = null
      this.reset(err, source.member)
      throw new UpdateRefusedError('rejected_by_yjs', `update rejected by Yjs: ${(err as Error).message}`)
    }
    this.emitted = null
    let written: Promise<void> | null = null
    for (const part of emitted) written = this.commit(part, source, arrivedAt)
    return written
  }

  /** Bytes Yjs holds back for missing dependencies (structs and deletions). */
  private pendingBytes(): number {
    const store = this.docValue.store
    return (store.pendingStructs?.update.length ?? 0) + (store.pendingDs?.length ?? 0)
  }

  /**
   * Updates from other instances may arrive out of order, so Yjs may hold them pending; within
   * --max-pending-bytes (counted in the size estimate). Past it, or when Yjs throws, the room
   * is reset and reloads from storage and the cluster.
   */
  private applyFromCluster(update: Uint8Array, publishedAt?: number): void {
    if (this.stateValue === 'unloaded') return
    try {
      // The origin's wall clock (ms) on this process's performance.now() timeline; NaN when unknown.
      this.integrate(update, CLUSTER_SOURCE, publishedAt === undefined ? NaN : publishedAt - performance.timeOrigin)
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
    const owners = (this.remoteOwners ??= new Map())
    let owner = owners.get(instanceId)
    if (owner === undefined) {
      owner = new RemoteInstance(instanceId)
      owners.set(instanceId, owner)
    }
    return owner
  }

  /** What the cluster calls for this room; made when the room joins the cluster (only with --redis). */
  private relayHandlers(): RelayRoomHandlers {
    return {
      onUpdate: (update, publishedAt) => this.applyFromCluster(update, publishedAt),
      onAwareness: (entries, instanceId) => {
        // Each entry carries its owner's identity as the other instance relayed it.
        const { accepted, refused } = this.awareness.apply(entries, this.remoteOwner(instanceId))
        this.countRefusals(refused)
        if (accepted.length > 0) this.broadcast.awareness(accepted)
      },
      onInstanceGone: (instanceId) => {
        const owner = this.remoteOwners?.get(instanceId)
        if (owner === undefined) return
        this.remoteOwners?.delete(instanceId)
        const removed = this.awareness.removeOwner(owner)
        if (removed.length > 0) this.broadcast.awareness(removed)
      },
      localAwareness: () => this.awareness.liveEntries((owner) => !(owner instanceof RemoteInstance)),
      localState: () => this.encodeState(),
    }
  }

  /**
   * True when applying `updateBytes` more could grow the document past `--max-document-bytes`.
   * The estimate is an upper bound (stored size at load or at the last compaction, plus every
   * update applied since, plus what Yjs holds pending). Over the limit, the document is encoded to
   * measure it exactly only when the last measurement is old enough (at most 1/SIZE_MEASURE_BACKOFF
   * of the time goes to measuring); meanwhile updates are refused on the estimate, which may be
   * early when recent updates deleted more than they added.
   */
  private wouldExceedSizeLimit(updateBytes: number): boolean {
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
    const state = this.encodeState()
    this.sizeEstimate = state.length
    return state
  }

  /**
   * The whole document as one update (the bytes of Y.encodeStateAsUpdate). A big one is encoded
   * into a buffer sized from the size estimate: one buffer instead of the encoder's doubling ones
   * and their copy.
   */
  encodeState(): Uint8Array {
    const hint = this.presizeHint
    return hint === null ? Y.encodeStateAsUpdate(this.docValue) : encodeState(this.docValue, hint)
  }

  /**
   * The whole document as one update, like encodeState, but shared with the full-state sync
   * replies while the document is unchanged: a crowd of readers (HTTP GETs of a big document, say)
   * costs one encoding and one buffer, and a room just loaded answers with its stored state.
   * The bytes must not be changed.
   */
  sharedState(): Uint8Array {
    const frame = this.syncReply(EMPTY_STATE_VECTOR, STATE_FRAMING, NO_PREFIX)
    // The frame is the state as var-bytes: skip its length.
    let start = 0
    while (((frame[start] as number) & 0x80) !== 0) start++
    return frame.subarray(start + 1)
  }

  /**
   * sharedState, except for a big document with no encoding of it at hand: its state is then
   * merged from storage on the merge worker, as for a joiner (see syncReplyOffLoop), instead of
   * encoded on the event loop, where a 20 MB document took 100–200 ms while every room of the
   * process waited (an HTTP client reading a document that is being edited asked for that after
   * every change). One update is wanted, not a state and the changes since, so a merge is shared
   * only while no change came since it started; one that lacks changes is waited for, and the
   * reads that waited share the next merge, which starts when it ends. A room so has at most one
   * merge running and one waiting for reads, however many readers ask. The state is the
   * document as of the call or later, never earlier.
   */
  sharedStateOffLoop(): Uint8Array | Promise<Uint8Array> {
    if (!this.buildsReplyOffLoop(EMPTY_STATE_VECTOR, STATE_FRAMING)) return this.sharedState()
    const build = this.stateBuild
    // The document as it is now, with no changes after the state.
    const current = build !== null && this.extendsToNow(build) && build.tail.length === 0
    if (build !== null && !current && !build.done) {
      this.queuedStateRead ??= build.state.then(() => {
        this.queuedStateRead = null
        return this.sharedStateOffLoop()
      })
      return this.queuedStateRead
    }
    const shared = current ? build : (this.stateBuild = this.startStateBuild())
    shared.usedAt = performance.now()
    return shared.state.then((state) => state ?? this.sharedState())
  }

  /**
   * SHA-1 of the document's snapshot (its state vector and delete set): what HTTP ETags are made
   * of. Computed once per change of the document: a fragmented document's snapshot takes
   * milliseconds per 0.5 MB to build, and every conditional GET asks for it.
   */
  snapshotDigest(): Buffer {
    return (this.snapshotDigestValue ??= createHash('sha1').update(Y.encodeSnapshot(Y.snapshot(this.docValue))).digest())
  }

  /** The buffer size a whole-state encoding starts with (the estimate plus an eighth); null for a document too small to bother. */
  private get presizeHint(): number | null {
    return this.sizeEstimate < PRESIZED_REPLY_BYTES ? null : this.sizeEstimate + (this.sizeEstimate >> 3)
  }

  /**
   * The one way an update from outside the instance (a client, an HTTP request) gets into the
   * document; `summary` is what validateUpdate read from it (the protocol parsed it already).
   * In order: the sender's access, --max-document-bytes, the update's shape (nesting deeper than
   * --max-nesting-depth, clocks the document does not have: Yjs would hold it pending, never
   * stored yet looking accepted), then Yjs itself. Applied, it is stored, relayed, broadcast and
   * reported (see onDocUpdate). Never throws for what the update holds: the outcome says.
   */
  apply(update: Uint8Array, source: UpdateSource, summary: UpdateSummary = validateUpdate(update)): ApplyOutcome {
    if (!source.mayWrite) return { kind: 'readOnly', changesDocument: updateChangesDocument(this.docValue, update) }
    if (this.wouldExceedSizeLimit(update.length)) return TOO_LARGE
    let written: Promise<void> | null
    try {
      written = this.integrateChecked(update, source, summary)
    } catch (err) {
      if (err instanceof UpdateRefusedError) {
        this.registry.onRefused(err.reason)
        return { kind: 'refused', reason: err.reason, message: err.message }
      }
      return { kind: 'refused', reason: 'unavailable', message: (err as Error).message }
    }
    if (written !== null) return { kind: 'applied', durable: written }
    // Nothing changed: durable once what is pending for the room is; asked of the writer only
    // by a protocol whose answer waits for storage.
    const { writer, name } = this
    return {
      kind: 'applied',
      get durable() {
        return writer.flush(name)
      },
    }
  }

  /** Shape checks, then integrate; throws UpdateRefusedError. */
  private integrateChecked(update: Uint8Array, source: UpdateSource, summary: UpdateSummary): Promise<void> | null {
    if (!dependenciesPresent(this.docValue, summary)) {
      throw new UpdateRefusedError('missing_dependencies', 'the update depends on changes this document does not have; sync first')
    }
    const { maxNestingDepth } = this.registry.shapeLimits
    if (summary.types > 0 && deepestNewType(this.docValue, update, maxNestingDepth) > maxNestingDepth) {
      throw new UpdateRefusedError('too_deep', `shared types nested deeper than ${maxNestingDepth}`)
    }
    const hadPending = this.pendingBytes() > 0
    const written = this.integrate(update, source)
    if (!hadPending && this.pendingBytes() > 0) {
      // Missed by the check above (a cycle of references): what integrated is stored; the rest is
      // dropped, never held unstored, and the sender is not told "saved".
      this.docValue.store.pendingStructs = null
      this.docValue.store.pendingDs = null
      throw new UpdateRefusedError('missing_dependencies', 'part of the update depends on changes this document does not have')
    }
    // Webhooks (issue 16): a change that arrived here from a client or an HTTP request (never from
    // storage or the cluster); its durability includes the outbox's record of it.
    if (written !== null) {
      const recorded = this.registry.onOutsideChange(this.name, source.origin)
      if (recorded !== undefined) {
        const stored = written
        return Promise.all([stored, recorded]).then(() => undefined)
      }
    }
    return written
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
      this.broadcast.awareness(accepted)
      if (this.relayed) this.registry.relay?.publishAwareness(this.name, accepted)
    }
    return applied
  }

  private countRefusals(refused: ReadonlyMap<AwarenessRefusal, number>): void {
    for (const [reason, count] of refused) this.registry.onAwarenessRefused(reason, count)
  }

  /** Sends a stateless payload to every member that understands one (Hocuspocus), except `except`. */
  broadcastStateless(payload: string, except: RoomMember | null = null): number {
    this.broadcast.flush()
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
    this.registry.cancelUnload(this)
    if (this.stateValue === 'unloading') this.transition('active')
    this.members.add(member)
  }

  /** Removes a member and its awareness states (sent with the next awareness flush, --awareness-flush-ms: no ghost cursors). */
  leave(member: RoomMember): void {
    if (!this.members.delete(member)) return
    const removed = this.awareness.removeOwner(member)
    if (removed.length > 0) {
      this.broadcast.awareness(removed)
      if (this.relayed) this.registry.relay?.publishAwareness(this.name, removed)
    }
    if (this.members.size === 0 && this.stateValue === 'active') this.scheduleUnload()
  }

  /** Unloads the room after --unload-delay unless a member joins first (one timer for all rooms: RoomRegistry). */
  private scheduleUnload(): void {
    this.registry.scheduleUnload(this)
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
    this.discard()
    this.log.debug({ room: this.name }, 'room unloaded')
    notify(this.log, this.name, 'unloaded', () => this.registry.events.unloaded(this))
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
    this.registry.cancelUnload(this)
    if (this.stateValue === 'unloaded') return
    this.discard()
    notify(this.log, this.name, 'unloaded', () => this.registry.events.unloaded(this))
  }

  /** Cancels timers; used when the whole server stops. */
  dispose(): void {
    this.registry.cancelUnload(this)
  }

  memberList(): RoomMember[] {
    return [...this.members]
  }
}

