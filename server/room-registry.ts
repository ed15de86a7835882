import type { DocumentWriter } from '../persistence/index.js'
import type { Relay } from '../cluster/index.js'
import type { AwarenessLimits, AwarenessRefusal } from './room-awareness.js'
import type { ReplyMemory } from './reply-memory.js'
import type { WireFormat } from './wire-format.js'
import type { Logger } from './logger.js'
import type { UpdateOrigin } from './hooks.js'
import type { DeliverySink } from './room-broadcast.js'
import { NO_ROOM_EVENTS, type RoomEvents } from './room-events.js'
import { Room, type RoomMember, type UpdateShapeLimits } from './room.js'
import type { RefusalReason } from './update-source.js'

/** A member that receives nothing: HTTP requests reading or writing a room. */
class QuietMember implements RoomMember {
  readonly identity = null
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
    /** What rooms tell the application (the hook runner); nobody listens by default. */
    readonly events: RoomEvents = NO_ROOM_EVENTS,
  ) {}

  /** How long a room gathers awareness changes before sending them merged (--awareness-flush-ms); 0 = those of one socket read. */
  awarenessFlushMs = 0
  /** Shortest time between two answers to a client's repeated sync step 1 or query-awareness (--repeat-answer-interval-ms). */
  repeatAnswerIntervalMs = 1_000
  /** Called with the number of updates each merged broadcast carried (for metrics). */
  onBatched: (updates: number) => void = () => {}
  /**
   * Called after an update from a client or an HTTP request changed a room, with its origin: the
   * webhook outbox's feed. A promise it returns is part of the update's durability.
   */
  onOutsideChange: (room: string, origin: UpdateOrigin) => Promise<void> | undefined = () => undefined
  /** Called with one delivery sample per protocol per broadcast (for weft_delivery_seconds). */
  onDelivered: DeliverySink = () => {}
  /** Called for each update a room refused for its shape, and why (for metrics). */
  onRefused: (reason: RefusalReason) => void = () => {}
  /** Called for each stored entry a load set aside (for metrics). */
  onQuarantined: () => void = () => {}
  /** Called when a room was reset after Yjs threw (for metrics). */
  onReset: () => void = () => {}

  /** Called for each sync step 1 answered later than it came (see SyncAsks; for metrics). */
  onSyncAskDeferred: () => void = () => {}
  /** The memory big sync replies hold (--max-sync-reply-bytes[-per-ip]); null: not bounded. */
  replyMemory: ReplyMemory | null = null
  /** Past this many bytes a sync reply is big (a quarter of --send-queue-bytes): it needs reply memory. */
  bigReplyBytes = Infinity

  /** Called with awareness entries a room refused, by reason (for metrics). */
  onAwarenessRefused: (reason: AwarenessRefusal, count: number) => void = () => {}

  /**
   * Rooms without members and when each unloads (performance.now()). Every room waits the same
   * delay, so insertion order is unload order, and one timer, set for the first of them, serves
   * all: an empty room costs a map entry, not a Timeout and its closure.
   */
  private readonly idle = new Map<Room, number>()
  private idleTimer: NodeJS.Timeout | null = null

  /** Unloads `room` after unloadDelayMs unless cancelled (a member joined); nothing when unloading is off. */
  scheduleUnload(room: Room): void {
    if (this.unloadDelayMs < 0 || this.idle.has(room)) return
    this.idle.set(room, performance.now() + this.unloadDelayMs)
    if (this.idleTimer === null) this.armIdleTimer(this.unloadDelayMs)
  }

  cancelUnload(room: Room): void {
    if (!this.idle.delete(room) || this.idle.size > 0 || this.idleTimer === null) return
    clearTimeout(this.idleTimer)
    this.idleTimer = null
  }

  private armIdleTimer(ms: number): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer)
    this.idleTimer = setTimeout(() => this.unloadIdle(), ms)
    this.idleTimer.unref()
  }

  /** Unloads every room whose time has come; sets the timer for the next one. */
  private unloadIdle(): void {
    this.idleTimer = null
    const now = performance.now()
    for (const [room, at] of this.idle) {
      if (at > now) {
        this.armIdleTimer(at - now)
        return
      }
      this.idle.delete(room)
      void room.unload()
    }
  }

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

  /**
   * True when the room admits no more members (--max-room-connections). The one place the cap is
   * decided: the y-websocket upgrade and each Hocuspocus document ask here.
   */
  isFull(name: string): boolean {
    return (this.rooms.get(name)?.memberCount ?? 0) >= this.maxRoomConnections
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
