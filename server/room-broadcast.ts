import * as Y from 'yjs'
import type { AwarenessEntry } from '../protocol/index.js'
import type { Logger } from './logger.js'
import type { RoomMember } from './room.js'
import { FrameCache } from './wire-format.js'

/** The most updates one merged broadcast carries. */
const MAX_BATCH_UPDATES = 512

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
  private flushScheduled = false
  private closed = false

  constructor(
    private readonly room: string,
    private readonly members: ReadonlySet<RoomMember>,
    private readonly log: Logger,
    /** Called with the number of updates each merged broadcast carried (for metrics). */
    private readonly onBatched: (updates: number) => void,
  ) {}

  /** Queues an update for every member but `sender`. */
  update(update: Uint8Array, sender: RoomMember | null): void {
    if (this.members.size === 0) return
    this.pendingSender = this.pending.length === 0 || this.pendingSender === sender ? sender : MIXED_SENDERS
    this.pending.push(update)
    if (!this.flushScheduled) {
      this.flushScheduled = true
      queueMicrotask(this.flush)
    }
  }

  /**
   * Sends what is pending. A member that sent every pending update is left out; when several
   * members contributed, each receives the whole merge, its own part included (applying a known
   * update is a no-op for Yjs, and the reference server echoes every update to its sender too).
   */
  readonly flush = (): void => {
    this.flushScheduled = false
    const pending = this.pending
    if (pending.length === 0) return
    const sender = this.pendingSender
    this.pending = []
    this.pendingSender = null
    if (this.closed) return
    // A merged update keeps every struct, and a receiver applies it in one transaction: bounded.
    for (let start = 0; start < pending.length; start += MAX_BATCH_UPDATES) {
      const batch = pending.slice(start, start + MAX_BATCH_UPDATES)
      if (batch.length === 1) {
        this.send(batch[0] as Uint8Array, sender)
        continue
      }
      let merged: Uint8Array
      try {
        merged = Y.mergeUpdates(batch)
      } catch (err) {
        // Yjs encoded every one of these itself, so this is a bug; the updates still go out, one by one.
        this.log.error({ room: this.room, err, updates: batch.length }, 'merging a burst for broadcast failed')
        for (const update of batch) this.send(update, sender)
        continue
      }
      this.send(merged, sender)
      this.onBatched(batch.length)
    }
  }

  /** Sends awareness entries to every member, encoded once per wire format. */
  awareness(entries: readonly AwarenessEntry[]): void {
    // Pending updates first: a cursor must not arrive before the text it points into.
    this.flush()
    const frames = new FrameCache((format) => format.awareness(this.room, entries))
    for (const member of this.members) member.deliverAwareness(entries, frames)
  }

  /** The room is gone: what is pending is dropped, nothing more is sent. */
  close(): void {
    this.closed = true
    this.pending = []
  }

  /** Sends an update to every member except `except`, encoded once per wire format. */
  private send(update: Uint8Array, except: RoomMember | null | typeof MIXED_SENDERS): void {
    const frames = new FrameCache((format) => format.update(this.room, update))
    for (const member of this.members) {
      if (member !== except) member.deliverUpdate(update, frames)
    }
  }
}
