import * as Y from 'yjs'
import type { AwarenessEntry } from '../protocol/index.js'
import type { Clock } from './token-bucket.js'
import type { SharedFrames, WireFormat } from './wire-format.js'

/** Where frames go: a WebSocket, seen through what the queue needs of it. */
export interface FrameSink {
  send(frame: Uint8Array): void
  /** Bytes the socket has accepted but not yet written to the network. */
  bufferedAmount(): number
  /**
   * Of those, bytes the hard mark does not count: a big sync reply on its way (one buffer shared
   * by every joiner, so it costs the connection no memory of its own). Absent: none.
   */
  exemptBytes?(): number
  /**
   * Writes a frame the hard mark leaves out while the socket holds it (see `sendFrame`); false
   * when it cannot go yet (the server's turns for big replies are taken): the queue keeps it, and
   * what follows it, until the owner calls `flush()` again. Absent: `send`.
   */
  sendExempt?(frame: Uint8Array): boolean
}

export interface SendQueueLimits {
  /** Past this many bytes (buffered + held) new broadcasts are held and coalesced instead of sent. */
  softBytes: number
  /** Past this many bytes for longer than `graceMs` the connection is a slow consumer. */
  hardBytes: number
  graceMs: number
}

export interface SendQueueEvents {
  /** Over the hard mark for longer than the grace period: the owner closes with 1013. */
  onSlowConsumer(): void
  /** `count` updates were merged into one. */
  onCoalesced?(count: number): void
}

interface PendingDocument {
  /** How this document's held data is framed when it goes out. */
  format: WireFormat
  updates: Uint8Array[]
  updateBytes: number
  /** Newest entry per client ID: older states of the same client are worthless to a reader who is behind. */
  awareness: Map<number, AwarenessEntry>
  awarenessBytes: number
}

/** Average held update size past which merging is skipped. */
const LARGE_UPDATE_BYTES = 4096

/** Merging is O(total bytes); doing it every few updates keeps the held bytes near the real change size. */
const MERGE_EVERY_UPDATES = 64

/**
 * The outbound side of one connection, bounded in bytes.
 *
 * Below the soft mark every frame goes straight to the socket (the same buffer the room encoded
 * once for all recipients). Above it, document updates are held and merged with `Y.mergeUpdates`
 * and awareness is reduced to the newest state per client, so a slow reader catches up with less
 * data and nothing is dropped. Held data is written out when the socket drains. Over the hard mark
 * for longer than the grace period, the owner is told to close the connection.
 */
export class SendQueue {
  /** Frames that must go out as they are, in order (sync replies, acks, errors). */
  private frames: Array<{ frame: Uint8Array; exempt: boolean }> = []
  private frameBytes = 0
  /** Bytes of held frames the hard mark leaves out (see `sendFrame`). */
  private exemptHeldBytes = 0
  private documents = new Map<string, PendingDocument>()
  private heldBytes = 0
  private overSince: number | null = null
  private overTimer: NodeJS.Timeout | null = null
  private closed = false

  constructor(
    private readonly sink: FrameSink,
    private readonly limits: SendQueueLimits,
    private readonly events: SendQueueEvents,
    private readonly clock: Clock,
  ) {}

  /** Bytes held by weft plus bytes buffered in the socket: what the budget counts. */
  get totalBytes(): number {
    return this.heldBytes + this.sink.bufferedAmount()
  }

  get heldByteCount(): number {
    return this.heldBytes
  }

  /** Bytes of held frames the hard mark leaves out (big sync replies waiting). */
  get exemptHeldByteCount(): number {
    return this.exemptHeldBytes
  }

  private get holding(): boolean {
    return this.heldBytes > 0 || this.sink.bufferedAmount() >= this.limits.softBytes
  }

  /**
   * A frame that must arrive as it is. `exempt`: a buffer shared with other connections (a big
   * sync reply), which costs this one no memory of its own: held or in the socket, the hard mark
   * does not count it.
   */
  sendFrame(frame: Uint8Array, exempt = false): void {
    if (this.closed) return
    if (this.holding || !this.write(frame, exempt)) this.push(frame, exempt)
    this.checkBudget()
  }

  /** Holds `frame` behind whatever is held, without trying to write it now (the owner just did). */
  holdFrame(frame: Uint8Array, exempt = false): void {
    if (this.closed) return
    this.push(frame, exempt)
    this.checkBudget()
  }

  private push(frame: Uint8Array, exempt: boolean): void {
    this.frames.push({ frame, exempt })
    this.frameBytes += frame.length
    this.heldBytes += frame.length
    if (exempt) this.exemptHeldBytes += frame.length
  }

  /** False: an exempt frame that cannot go yet. */
  private write(frame: Uint8Array, exempt: boolean): boolean {
    if (exempt && this.sink.sendExempt !== undefined) return this.sink.sendExempt(frame)
    this.sink.send(frame)
    return true
  }

  /**
   * A document update; `frames` holds the encoding shared by every recipient of the same format,
   * and `format` frames what the queue merges when it has to hold updates.
   */
  sendUpdate(document: string, update: Uint8Array, frames: SharedFrames, format: WireFormat): void {
    if (this.closed) return
    if (!this.holding) {
      this.sink.send(frames.get(format))
    } else {
      const pending = this.pending(document, format)
      pending.updates.push(update)
      pending.updateBytes += update.length
      this.heldBytes += update.length
      if (pending.updates.length >= MERGE_EVERY_UPDATES) this.merge(pending)
    }
    this.checkBudget()
  }

  /** Awareness entries, likewise. */
  sendAwareness(document: string, entries: readonly AwarenessEntry[], frames: SharedFrames, format: WireFormat): void {
    if (this.closed) return
    if (!this.holding) {
      this.sink.send(frames.get(format))
    } else {
      const pending = this.pending(document, format)
      for (const entry of entries) {
        const previous = pending.awareness.get(entry.clientId)
        if (previous !== undefined && previous.clock > entry.clock) continue
        const size = entry.state.length + 16
        if (previous !== undefined) pending.awarenessBytes -= previous.state.length + 16
        pending.awareness.set(entry.clientId, entry)
        pending.awarenessBytes += size
      }
      this.recount()
    }
    this.checkBudget()
  }

  /** Writes held data while the socket is below the soft mark. Call when the socket drains. */
  flush(): void {
    if (this.closed) return
    while (this.frames.length > 0 && this.sink.bufferedAmount() < this.limits.softBytes) {
      const { frame, exempt } = this.frames[0] as { frame: Uint8Array; exempt: boolean }
      if (!this.write(frame, exempt)) break
      this.frames.shift()
      this.frameBytes -= frame.length
      if (exempt) this.exemptHeldBytes -= frame.length
    }
    if (this.frames.length === 0) {
      for (const [document, pending] of this.documents) {
        if (this.sink.bufferedAmount() >= this.limits.softBytes) break
        if (pending.updates.length > 0) {
          this.merge(pending)
          // One merged update, or (large updates are not merged) each held update in order.
          const updates = pending.updates
          pending.updates = []
          pending.updateBytes = 0
          for (const update of updates) this.sink.send(pending.format.update(document, update))
        }
        if (pending.awareness.size > 0) {
          const entries = [...pending.awareness.values()]
          pending.awareness.clear()
          pending.awarenessBytes = 0
          this.sink.send(pending.format.awareness(document, entries))
        }
        this.documents.delete(document)
      }
    }
    this.recount()
    this.checkBudget()
  }

  /** Stops the queue and releases what it held. */
  close(): void {
    this.closed = true
    this.frames = []
    this.exemptHeldBytes = 0
    this.documents.clear()
    this.heldBytes = 0
    this.frameBytes = 0
    if (this.overTimer !== null) clearTimeout(this.overTimer)
    this.overTimer = null
  }

  private pending(document: string, format: WireFormat): PendingDocument {
    let pending = this.documents.get(document)
    if (pending === undefined) {
      pending = { format, updates: [], updateBytes: 0, awareness: new Map(), awarenessBytes: 0 }
      this.documents.set(document, pending)
    }
    return pending
  }

  private merge(pending: PendingDocument): void {
    if (pending.updates.length < 2) return
    // Large updates are mostly new content, which merging cannot shrink, and merging them costs
    // the shared event loop time proportional to their size: they are held as they are.
    if (pending.updateBytes / pending.updates.length > LARGE_UPDATE_BYTES) return
    const count = pending.updates.length
    const merged = Y.mergeUpdates(pending.updates)
    pending.updates = [merged]
    pending.updateBytes = merged.length
    this.recount()
    this.events.onCoalesced?.(count)
  }

  private recount(): void {
    let bytes = this.frameBytes
    for (const pending of this.documents.values()) bytes += pending.updateBytes + pending.awarenessBytes
    this.heldBytes = bytes
  }

  /** What the hard mark counts: held bytes and the socket's, less sync replies held or on their way. */
  private get budgetBytes(): number {
    return this.totalBytes - this.exemptHeldBytes - (this.sink.exemptBytes?.() ?? 0)
  }

  private checkBudget(): void {
    if (this.closed) return
    if (this.budgetBytes <= this.limits.hardBytes) {
      this.overSince = null
      if (this.overTimer !== null) {
        clearTimeout(this.overTimer)
        this.overTimer = null
      }
      return
    }
    if (this.overSince !== null) return
    // Crossing the hard mark: first shrink what can be shrunk (once per crossing; after that the
    // regular merge every few updates keeps the held bytes down without re-merging per broadcast).
    for (const pending of this.documents.values()) this.merge(pending)
    if (this.budgetBytes <= this.limits.hardBytes) return
    this.overSince = this.clock.now()
    this.overTimer = setTimeout(() => this.expire(), this.limits.graceMs)
    this.overTimer.unref()
  }

  private expire(): void {
    this.overTimer = null
    if (this.closed || this.overSince === null) return
    if (this.budgetBytes > this.limits.hardBytes) {
      this.events.onSlowConsumer()
      return
    }
    this.overSince = null
  }
}
