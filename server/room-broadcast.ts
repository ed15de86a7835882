import * as Y from 'yjs'
import type { AwarenessEntry } from '../protocol/index.js'
import type { Logger } from './logger.js'
import type { RoomMember } from './room.js'
import { FrameCache } from './wire-format.js'

/** The most updates one merged broadcast carries. */
const MAX_BATCH_UPDATES = 512

/** Receives delivery samples: protocol, where the update arrived, its delay (ms) and now. */
export type DeliverySink = (protocol: 'y-websocket' | 'hocuspocus', source: 'local' | 'cluster', ms: number, now: number) => void

/** When the updates of one broadcast arrived (NaN: unknown) and from where. */
interface Arrival {
  at: number
  source: 'local' | 'cluster'
}

/** Where a room's broadcasts report (the RoomRegistry, read at call time: the server sets its hooks after rooms exist). */
export interface BroadcastSink {
  /** Called with the number of updates each merged broadcast carried (for metrics). */
  onBatched(updates: number): void
  /** One delivery sample per protocol per broadcast (for metrics). */
  onDelivered: DeliverySink
}

/** Pending broadcasts from more than one sender: every member receives them. */
const MIXED_SENDERS = Symbol('mixed senders')

/**
 * How a room's updates and awareness reach its members. Updates applied in one callback are held
 * until it is done (a microtask), so what one socket read brought (a burst holds many frames) goes
 * out as one merged update per member instead of one message per update, and nothing waits for
 * other sockets to be read. Stock clients decode one message per frame, so the merge happens
 * inside the update, never by packing messages into a frame.
 */
export class RoomBroadcast {
  private pending: Uint8Array[] = []
  /** The one member every pending update came from (null: none did), or MIXED_SENDERS. */
  private pendingSender: RoomMember | null | typeof MIXED_SENDERS = null
  /** performance.now() of the earliest arrival among the pending updates (NaN: none known), for weft_delivery_seconds. */
  private pendingArrival = NaN
  /** Whether the pending updates all came from the cluster (the delivery sample's `source`). */
  private pendingFromCluster = false
  private flushScheduled = false
  /** Awareness entries not sent yet, the newest per client ID (a later change replaces an earlier one); null: none. */
  private pendingAwareness: Map<number, AwarenessEntry> | null = null
  private awarenessScheduled = false
  private awarenessTimer: NodeJS.Timeout | null = null
  private closed = false

  constructor(
    private readonly room: string,
    private readonly members: ReadonlySet<RoomMember>,
    private readonly log: Logger,
    /** Hears of merged broadcasts and deliveries (shared by every room: no closures per room). */
    private readonly sink: BroadcastSink,
    /**
     * How long awareness changes are gathered before they go out merged (--awareness-flush-ms).
     * A crowd moving cursors otherwise costs one frame per change per member: 500 members at
     * 1 Hz are 250,000 frames a second; gathered for 20 ms, one frame per member per 20 ms.
     * 0 = the changes of one socket read.
     */
    private readonly awarenessFlushMs = 0,
  ) {}

  /** Queues an update for every member but `sender`; `arrivedAt` is when it reached weft (performance.now()). */
  update(update: Uint8Array, sender: RoomMember | null, arrivedAt: number, fromCluster: boolean): void {
    if (this.members.size === 0) return
    const first = this.pending.length === 0
    this.pendingArrival = first || !(arrivedAt >= this.pendingArrival) ? arrivedAt : this.pendingArrival
    this.pendingFromCluster = first ? fromCluster : this.pendingFromCluster && fromCluster
    this.pendingSender = this.pending.length === 0 || this.pendingSender === sender ? sender : MIXED_SENDERS
    this.pending.push(update)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(() => this.flush())
    }
  }

  /**
   * Sends what is pending. A member that sent every pending update is left out; when several
   * members contributed, each receives the whole merge, its own part included (applying a known
   * update is a no-op for Yjs, and the reference server echoes every update to its sender too).
   */
  flush(): void {
    this.flushScheduled = false
    const pending = this.pending
    if (pending.length === 0) return
    const sender = this.pendingSender
    const timing: Arrival = { at: this.pendingArrival, source: this.pendingFromCluster ? 'cluster' : 'local' }
    this.pending = []
    this.pendingSender = null
    if (this.closed) return
    // A merged update keeps every struct, and a receiver applies it in one transaction: bounded.
    for (let start = 0; start < pending.length; start += MAX_BATCH_UPDATES) {
      const batch = pending.slice(start, start + MAX_BATCH_UPDATES)
      if (batch.length === 1) {
        this.send(batch[0] as Uint8Array, sender, timing)
        continue
      }
      let merged: Uint8Array
      try {
        merged = Y.mergeUpdates(batch)
      } catch (err) {
        // Yjs encoded every one of these itself, so this is a bug; the updates still go out, one by one.
        this.log.error({ room: this.room, err, updates: batch.length }, 'merging a burst for broadcast failed')
        for (const update of batch) this.send(update, sender, timing)
        continue
      }
      this.send(merged, sender, timing)
      this.sink.onBatched(batch.length)
    }
  }

  /**
   * Queues awareness entries for every member. They go out merged with the others gathered in
   * the flush window: one frame per member, encoded once per wire format, one entry per client
   * ID — the one a client would keep had it received them one by one (`supersedes`).
   */
  awareness(entries: readonly AwarenessEntry[]): void {
    if (this.closed) return
    const pending = (this.pendingAwareness ??= new Map())
    for (const entry of entries) {
      const held = pending.get(entry.clientId)
      if (held === undefined || supersedes(entry, held)) pending.set(entry.clientId, entry)
    }
    if (this.awarenessScheduled) return
    this.awarenessScheduled = true
    if (this.awarenessFlushMs > 0) this.awarenessTimer = setTimeout(() => this.flushAwareness(), this.awarenessFlushMs)
    else queueMicrotask(() => this.flushAwareness())
  }

  /** Sends the gathered awareness entries. */
  flushAwareness(): void {
    this.awarenessScheduled = false
    this.awarenessTimer = null
    const pending = this.pendingAwareness
    if (this.closed || pending === null || pending.size === 0) return
    const entries = [...pending.values()]
    this.pendingAwareness = null
    // Pending updates first: a cursor must not arrive before the text it points into.
    this.flush()
    const frames = new FrameCache((format) => format.awareness(this.room, entries))
    for (const member of this.members) member.deliverAwareness(entries, frames)
  }

  /** The room is gone: what is pending is dropped, nothing more is sent. */
  close(): void {
    this.closed = true
    this.pending = []
    this.pendingAwareness = null
    if (this.awarenessTimer !== null) clearTimeout(this.awarenessTimer)
    this.awarenessTimer = null
  }

  /**
   * Sends an update to every member except `except`, encoded once per wire format. One delivery
   * sample per protocol present: when the loop has handed the frame to every recipient, so the
   * sample is the broadcast's last recipient of that protocol (its slowest).
   */
  private send(update: Uint8Array, except: RoomMember | null | typeof MIXED_SENDERS, arrival: Arrival): void {
    const frames = new FrameCache((format) => format.update(this.room, update))
    let yWebsocket = false
    let hocuspocus = false
    for (const member of this.members) {
      if (member === except) continue
      member.deliverUpdate(update, frames)
      const format = member.format.name
      if (format === 'y-websocket') yWebsocket = true
      else if (format.startsWith('hocuspocus')) hocuspocus = true
    }
    if (!(arrival.at >= 0) || (!yWebsocket && !hocuspocus)) return
    const now = performance.now()
    if (yWebsocket) this.sink.onDelivered('y-websocket', arrival.source, now - arrival.at, now)
    if (hocuspocus) this.sink.onDelivered('hocuspocus', arrival.source, now - arrival.at, now)
  }
}

/**
 * Whether a client that holds `held` applies `entry` over it, by y-protocols' rule: a higher
 * clock wins, and at an equal clock only a removal does. Merging by arrival alone would let a
 * state re-sent at the clock of its removal undo the removal: a ghost cursor.
 */
function supersedes(entry: AwarenessEntry, held: AwarenessEntry): boolean {
  return entry.clock > held.clock || (entry.clock === held.clock && entry.state === 'null' && held.state !== 'null')
}
