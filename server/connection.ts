import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import type { AwarenessEntry } from '../protocol/index.js'
import type { AdmissionTicket } from './admission.js'
import { CloseCode } from './codes.js'
import { SendQueue } from './send-queue.js'
import { systemClock, type Clock } from './token-bucket.js'
import type { SharedFrames, WireFormat } from './wire-format.js'
import type { FrameCompression } from './frame-compression.js'
import { takesSharedDeflate } from './negotiated-deflate.js'
import type { TrafficMeter } from './metrics.js'
import type { ReplyGate, ReplyWaiter } from './reply-gate.js'
import type { ReplyMemory } from './reply-memory.js'
import type { OffLoopReply } from './room.js'

/** The same for every connection of a server: pass one object to all of them. */
export interface ConnectionLimits {
  /** Outbound budget in bytes: what `ws` has buffered plus what weft holds. */
  sendQueueBytes: number
  /** How long the budget may stay exceeded before the connection is closed with 1013. */
  slowConsumerGraceMs: number
  /** Inbound messages per second (sustained); the burst is twice that. */
  inboundMessagesPerSecond: number
  /** Inbound bytes per second (sustained); the burst is the larger of that and one largest frame. */
  inboundBytesPerSecond: number
  maxMessageBytes: number
  /** --compression: shared permessage-deflate frames for sockets that negotiated it (null: off). */
  compression?: FrameCompression | null
  /** --sync-replies-at-once: turns for writing big sync replies, server-wide (absent or null: no limit). */
  replyGate?: ReplyGate | null
  /** --max-sync-reply-bytes[-per-ip]: the memory big sync replies hold, server-wide (absent or null: not counted). */
  replyMemory?: ReplyMemory | null
  /** --send-timeout-ms: a big sync reply its reader takes none of for this long closes the connection with 1013 (absent: never). */
  replyStallMs?: number
}

/** Shared by every connection of a server (one object, no closures per connection). */
export interface ConnectionEvents {
  onSlowConsumer?(): void
  onCoalesced?(count: number): void
  onPause?(): void
  onResume?(): void
  /** The socket closed with `code` (the one weft closed with, or the peer's); before the session hears of it. */
  onClose?(connection: Connection, code: number): void
  /**
   * The connection's outbound bytes (socket buffer plus held) where they change course: weft
   * starts holding data for it, it goes over its budget, the socket drained. Not per frame.
   */
  onQueueBytes?(bytes: number): void
  /** A compressed frame was written to the socket (--compression). */
  onCompressedFrame?(): void
}

/** The protocol session on top of a connection (y-websocket, Hocuspocus). */
export interface ConnectionSession {
  /** A binary frame, in arrival order, once the inbound limits allow it. */
  receive(data: Buffer): void
  /** The socket closed; called once. */
  closed(code: number): void
}

/** The raw stream under the WebSocket, seen through what the connection needs of it. */
export type RawSocket = Pick<Socket, 'bytesRead' | 'on' | 'off'> & Partial<Pick<Socket, 'write' | 'bytesWritten' | 'writableLength' | 'writableNeedDrain'>>

/**
 * Node's stream handle under a socket: `writeQueueSize` is what libuv still has to hand to the
 * kernel. A TLS socket's own handle counts what it encrypted and never goes down; the TCP socket
 * under it (`_parent`) does.
 */
type WithHandle = { _handle?: { writeQueueSize?: unknown } | null; _parent?: WithHandle | null }

/** `WebSocket.OPEN`. */
const OPEN = 1

/** An empty write: its callback runs once everything written before it is out (flushWhenWritten). */
const NOTHING = Buffer.alloc(0)

export type ConnectionState = 'open' | 'closing' | 'closed'

/** Share of the budget past which broadcasts are held and merged instead of sent. */
export const SOFT_MARK_SHARE = 0.25

/**
 * `ws` never compresses: it would deflate per socket, asynchronously, queueing the socket's later
 * frames behind it, and the frames weft writes straight to the TCP stream would overtake them.
 * Compression is weft's own, once per shared payload (frame-compression.ts).
 */
const BINARY = Object.freeze({ binary: true, compress: false })

let nextConnectionId = 1

/** The connection a `ws` socket belongs to: its listeners are shared by every connection. */
const CONNECTION = Symbol('weft connection')

type OwnedSocket = WebSocket & { [CONNECTION]?: Connection }

/** Milliseconds until a budget in debt by `-tokens` is back at zero, refilled at `ratePerSecond`. */
function debtMs(tokens: number, ratePerSecond: number): number {
  return tokens >= 0 ? 0 : Math.ceil((-tokens * 1000) / ratePerSecond)
}

/**
 * The protocol-independent part of one client socket: a bounded send queue, inbound rate limits
 * that pause the socket (TCP pushes back on the sender; nothing is dropped), liveness for
 * heartbeats, and closing once with a code. Protocol sessions (y-websocket, Hocuspocus) sit on top.
 *
 * Idle connections are most of what a server holds, so one is kept small: `ws` listeners shared
 * by every connection (the socket carries its connection under a symbol), limits and events
 * shared likewise, the two inbound budgets as three numbers, liveness read from the socket's byte
 * count instead of listeners, and a send queue only once the reader falls behind.
 */
export class Connection implements ReplyWaiter {
  readonly id = nextConnectionId++
  private stateValue: ConnectionState = 'open'
  /**
   * `raw.bytesRead` at the last heartbeat tick (-1 before the first: a new connection is alive).
   * Any bytes arriving count as life, pongs included, so a long upload is never cut off.
   */
  private bytesReadAtTick = -1
  /** Bytes of big sync replies written since the socket last drained (see sendSyncReply). */
  private syncReplyInFlight = 0
  /** Turns of the reply gate this connection holds (a Hocuspocus socket may write several documents' replies). */
  private replyTurns = 0
  /** Ends the turns when the replies take longer than the gate's turn. */
  private replyTurnTimer: NodeJS.Timeout | null = null
  /** Big sync replies counted in the reply memory: waiting in the send queue, and written but not yet out of the socket. */
  private repliesWaiting: Uint8Array[] | null = null
  private repliesWritten: Uint8Array[] | null = null
  /** Ends the big replies' time on their way when the socket drains (see writeSyncReply); null when none is on its way. */
  private replyDrained: (() => void) | null = null
  /** An empty write is on its way whose callback flushes the send queue (flushWhenWritten). */
  private flushOnWritten = false
  /** Watches a big reply on its way for progress (see watchReplies); null when none is on its way. */
  private stallTimer: NodeJS.Timeout | null = null
  /** What the socket had handed to the kernel at the last look, and when that last grew. */
  private replyProgress = { sent: 0, queued: 0, at: 0 }
  /** Created when the socket's buffer first reaches the soft mark; until then frames go straight to `ws`. */
  private queue: SendQueue | null = null
  /**
   * Inbound budgets, token buckets that may go into debt (a frame that arrived is never refused;
   * the socket pauses until the debt is paid): messages (burst twice the rate) and bytes (burst the
   * larger of the rate and one largest frame), both refilled at `tokensAt` (clock ms).
   */
  private messageTokens: number
  private byteTokens: number
  private tokensAt: number
  private resumeTimer: NodeJS.Timeout | null = null
  /** Frames ws delivered after the socket was paused; handled in order when the limit allows. */
  private backlog: Buffer[] | null = null
  private socketPaused = false
  private session: ConnectionSession | null = null
  closeCode: number | null = null
  /** Counts this connection's messages for its protocol (shared by all connections of it); set by the server. */
  meter: TrafficMeter | null = null
  /** The shared compressed frames, when compression is on and this socket negotiated it. */
  private readonly deflate: FrameCompression | null

  constructor(
    readonly socket: WebSocket,
    /** The raw TCP/TLS stream under the WebSocket. */
    private readonly raw: RawSocket,
    /** The admission slot this connection holds; given back when the socket closes. */
    private readonly ticket: AdmissionTicket,
    private readonly limits: ConnectionLimits,
    private readonly events: ConnectionEvents = {},
    private readonly clock: Clock = systemClock,
  ) {
    this.messageTokens = limits.inboundMessagesPerSecond * 2
    this.byteTokens = Math.max(limits.inboundBytesPerSecond, limits.maxMessageBytes)
    this.tokensAt = clock.now()
    ;(socket as OwnedSocket)[CONNECTION] = this
    socket.on('message', Connection.onMessage)
    socket.on('close', Connection.onClose)
    socket.on('error', ignoreSocketError)
    this.deflate = limits.compression != null && takesSharedDeflate(socket) ? limits.compression : null
  }

  /** Whether frames to this connection may go out compressed. */
  get compressed(): boolean {
    return this.deflate !== null
  }

  /** What the per-address limits count this connection under (ClientAddress.limitKey). */
  get ip(): string {
    return this.ticket.ip
  }

  /** The client's own address, for hooks and logs. */
  get address(): string {
    return this.ticket.address ?? this.ticket.ip
  }

  get state(): ConnectionState {
    return this.stateValue
  }

  /** Bytes this connection costs on the outbound side: socket buffer plus what weft holds. */
  get queuedBytes(): number {
    return this.queue === null ? this.socket.bufferedAmount : this.queue.totalBytes
  }

  /** Bytes weft holds back (merged updates, frames waiting for the socket to drain). */
  get heldBytes(): number {
    return this.queue === null ? 0 : this.queue.heldByteCount
  }

  get paused(): boolean {
    return this.socketPaused
  }

  /** Hands binary frames and the close to `session`; text frames are a protocol error (1002). */
  bind(session: ConnectionSession): void {
    this.session = session
  }

  /** The `message` listener of every socket (`this` is the socket). */
  private static onMessage(this: OwnedSocket, data: Buffer, isBinary: boolean): void {
    this[CONNECTION]?.receive(data, isBinary)
  }

  /** The `close` listener of every socket. */
  private static onClose(this: OwnedSocket, code: number): void {
    this[CONNECTION]?.onSocketClose(code)
  }

  /** Adds what the time since the last refill earned to both budgets, up to their bursts. */
  private refill(): void {
    const now = this.clock.now()
    const elapsed = now - this.tokensAt
    this.tokensAt = now
    if (elapsed <= 0) return
    const { inboundMessagesPerSecond, inboundBytesPerSecond, maxMessageBytes } = this.limits
    this.messageTokens = Math.min(inboundMessagesPerSecond * 2, this.messageTokens + (elapsed * inboundMessagesPerSecond) / 1000)
    this.byteTokens = Math.min(Math.max(inboundBytesPerSecond, maxMessageBytes), this.byteTokens + (elapsed * inboundBytesPerSecond) / 1000)
  }

  /** Milliseconds until neither budget is in debt (0: neither is). */
  private debtMs(): number {
    return Math.max(debtMs(this.messageTokens, this.limits.inboundMessagesPerSecond), debtMs(this.byteTokens, this.limits.inboundBytesPerSecond))
  }

  private onSocketClose(code: number): void {
    this.stateValue = 'closed'
    this.queue?.close()
    this.endReplyTurns()
    this.releaseReplies(this.repliesWaiting)
    this.releaseReplies(this.repliesWritten)
    this.repliesWaiting = null
    this.repliesWritten = null
    if (this.stallTimer !== null) clearTimeout(this.stallTimer)
    this.stallTimer = null
    if (this.resumeTimer !== null) clearTimeout(this.resumeTimer)
    this.backlog = null
    const final = this.closeCode ?? code
    this.ticket.release()
    this.events.onClose?.(this, final)
    this.session?.closed(final)
  }

  private receive(data: Buffer, isBinary: boolean): void {
    // During a drain's close handshake the client's last edits still count; after any other close
    // (a protocol error, a slow consumer) nothing more is read.
    if (this.stateValue === 'closed' || (this.stateValue === 'closing' && this.closeCode !== CloseCode.serviceRestart)) return
    if (!isBinary) {
      this.close(CloseCode.protocolError, 'text frames are not part of the protocol')
      return
    }
    // ws.pause() stops reading the socket, but frames it has already read (up to a socket read)
    // are still delivered: they wait here, so the limit is exact.
    if (this.resumeTimer !== null) {
      ;(this.backlog ??= []).push(data)
      return
    }
    this.charge(data)
  }

  /** Charges the buckets, handles the frame, and pauses when a bucket went into debt. */
  private charge(data: Buffer): void {
    // Charge first, then handle: the frame is here and is never dropped. When a bucket is in debt
    // the socket stops being read until it is paid off, so TCP slows the sender down.
    this.refill()
    this.messageTokens -= 1
    this.byteTokens -= data.length
    const wait = this.debtMs()
    if (wait > 0 && this.resumeTimer === null) {
      if (!this.socketPaused) {
        this.socketPaused = true
        this.socket.pause()
        this.events.onPause?.()
      }
      this.resumeTimer = setTimeout(() => this.resume(), wait)
    }
    this.meter?.received(data)
    this.session?.receive(data)
  }

  private resume(): void {
    this.resumeTimer = null
    if (this.stateValue === 'closed') return
    this.refill()
    const wait = this.debtMs()
    if (wait > 0) {
      this.resumeTimer = setTimeout(() => this.resume(), wait)
      return
    }
    const backlog = this.backlog
    while (backlog !== null && backlog.length > 0) {
      this.charge(backlog.shift() as Buffer)
      if (this.resumeTimer !== null) return // in debt again: still paused
    }
    this.backlog = null
    this.socketPaused = false
    this.socket.resume()
    this.events.onResume?.()
  }

  /**
   * The send queue, created the first time the socket's buffer reaches the soft mark. Before that
   * nothing can be held, so frames go straight to the socket, exactly as the queue would send them.
   */
  private sendQueue(): SendQueue {
    if (this.queue !== null) return this.queue
    const { socket, limits } = this
    const queue = new SendQueue(
      { send: (frame) => this.write(frame), sendExempt: (frame) => this.writeSyncReply(frame), bufferedAmount: () => socket.bufferedAmount, exemptBytes: () => this.syncReplyBytes() },
      { softBytes: Math.floor(limits.sendQueueBytes * SOFT_MARK_SHARE), hardBytes: limits.sendQueueBytes, graceMs: limits.slowConsumerGraceMs },
      {
        onSlowConsumer: () => {
          this.events.onSlowConsumer?.()
          this.close(CloseCode.tryAgainLater, 'slow consumer')
        },
        onCoalesced: (count) => this.events.onCoalesced?.(count),
      },
      this.clock,
    )
    this.queue = queue
    this.events.onQueueBytes?.(socket.bufferedAmount)
    // Held data goes out as the socket drains; the listener goes with the socket.
    this.raw.on('drain', () => {
      queue.flush()
      this.events.onQueueBytes?.(queue.totalBytes)
      this.flushWhenWritten()
    })
    return queue
  }

  /**
   * Held data goes out when the socket drains, but Node emits 'drain' only after a write found the
   * stream at its high-water mark (16 KiB on Node 20, 64 KiB from Node 22), and the soft mark is
   * lower when --send-queue-bytes is under four times that. Then no 'drain' comes, and what the
   * queue holds would wait for the next heartbeat, or be taken for a slow consumer's. So while
   * the queue holds and no 'drain' is due, an empty write goes behind what the socket has, and its
   * callback (everything before it is out) flushes the queue. Again after a flush that sent
   * something, or with bytes still on their way; not for a queue that only waits for a reply's
   * turn on an empty socket (`replyTurn` flushes that).
   */
  private flushWhenWritten(): void {
    const { queue, raw } = this
    if (this.flushOnWritten || queue === null || queue.heldByteCount === 0 || raw.write === undefined || raw.writableNeedDrain !== false) return
    if (this.stateValue !== 'open' || this.socket.readyState !== OPEN) return
    this.flushOnWritten = true
    raw.write(NOTHING, () => {
      this.flushOnWritten = false
      if (this.stateValue !== 'open') return
      const held = queue.heldByteCount
      queue.flush()
      this.events.onQueueBytes?.(queue.totalBytes)
      if (queue.heldByteCount < held || (raw.writableLength ?? 0) > 0) this.flushWhenWritten()
    })
  }

  /** True while frames may bypass the queue: none exists and the socket is below the soft mark. */
  private get direct(): boolean {
    return this.queue === null && this.socket.bufferedAmount < Math.floor(this.limits.sendQueueBytes * SOFT_MARK_SHARE)
  }

  /** After a direct send: a single large frame can take the socket past the budget at once. */
  private checkBudget(): void {
    // flush() of an empty queue only checks the budget (and starts the grace period when over).
    if (this.socket.bufferedAmount - this.syncReplyBytes() > this.limits.sendQueueBytes) {
      this.events.onQueueBytes?.(this.socket.bufferedAmount)
      this.sendQueue().flush()
      this.flushWhenWritten()
    }
  }

  /**
   * What Room.syncReplyOffLoop answered: a reply sent now (null is returned), or one being built,
   * sent once built (the state as a sync reply, then the changes since it was merged) unless the
   * room was unloaded or `wanted()` is false by then; the promise settles when that is decided.
   */
  sendBuiltReply(reply: Uint8Array | Promise<OffLoopReply | null>, wanted: () => boolean = () => true): Promise<void> | null {
    if (reply instanceof Uint8Array) {
      this.sendSyncReply(reply)
      return null
    }
    return reply.then((built) => {
      if (built === null || !wanted()) return
      this.sendSyncReply(built.reply)
      if (built.changesSince !== null) this.send(built.changesSince)
    })
  }

  /**
   * A sync reply: for a joiner with an empty state vector, the whole document. The room encodes it
   * once for every joiner with the same state vector, so a big one costs each connection no memory
   * of its own, yet it can take a reader longer than the grace period to receive: until the socket
   * has drained, its bytes do not count against the slow-consumer mark (what the reader falls
   * behind by meanwhile still does; updates are held and merged as usual). Without this, 150
   * joiners of a 20 MB document were all closed with 1013.
   */
  sendSyncReply(frame: Uint8Array): void {
    if (this.stateValue !== 'open') return
    if (frame.length <= Math.floor(this.limits.sendQueueBytes * SOFT_MARK_SHARE)) {
      this.send(frame)
      return
    }
    this.meter?.sent(frame)
    this.limits.replyMemory?.hold(frame, this.ip)
    ;(this.repliesWaiting ??= []).push(frame)
    // Behind already (another document's reply on a Hocuspocus socket, say), or no turn free:
    // held in order, and still left out of the mark.
    if (!this.direct) {
      this.sendQueue().sendFrame(frame, true)
      this.flushWhenWritten()
      return
    }
    if (!this.writeSyncReply(frame)) {
      this.sendQueue().holdFrame(frame, true)
      this.flushWhenWritten()
      return
    }
    this.checkBudget()
  }

  /**
   * Writes a big sync reply, which the slow-consumer mark leaves out until the socket has drained;
   * false when the server's turns for big replies are all taken (the gate calls replyTurn later).
   */
  private writeSyncReply(frame: Uint8Array): boolean {
    const gate = this.limits.replyGate
    if (gate != null) {
      if (!gate.tryEnter(this)) return false
      this.replyTurns++
      if (this.replyTurnTimer === null) {
        this.replyTurnTimer = setTimeout(() => this.endReplyTurns(), gate.turnMs)
        this.replyTurnTimer.unref()
      }
    }
    if (this.syncReplyInFlight === 0) {
      // A frame this size leaves the stream over its high-water mark: 'drain' follows once it is all written.
      const drained = (): void => {
        this.raw.off('drain', drained)
        this.replyDrained = null
        this.syncReplyInFlight = 0
        this.endReplyTurns()
        this.releaseReplies(this.repliesWritten)
        this.repliesWritten = null
        if (this.stallTimer !== null) clearTimeout(this.stallTimer)
        this.stallTimer = null
      }
      this.raw.on('drain', drained)
      this.replyDrained = drained
      this.watchReplies()
    }
    const waiting = this.repliesWaiting?.indexOf(frame) ?? -1
    if (waiting !== -1) {
      ;(this.repliesWaiting as Uint8Array[]).splice(waiting, 1)
      ;(this.repliesWritten ??= []).push(frame)
    }
    this.syncReplyInFlight += frame.length
    this.write(frame)
    // A reply the stream took below its high-water mark (a small --send-queue-bytes makes small
    // replies big) brings no 'drain': as far as weft can tell it is out. Looked at again after
    // this turn's writes, one of which may still bring a 'drain'.
    const drained = this.replyDrained
    if (drained !== null && this.raw.writableNeedDrain === false) {
      queueMicrotask(() => {
        if (this.replyDrained === drained && this.raw.writableNeedDrain === false) drained()
      })
    }
    return true
  }

  private releaseReplies(replies: readonly Uint8Array[] | null): void {
    const memory = this.limits.replyMemory
    if (replies === null || memory == null) return
    for (const reply of replies) memory.release(reply)
  }

  /**
   * While a big reply is on its way, looks every third of --send-timeout-ms whether the socket
   * handed more of it to the kernel; a reader that took none of it for the whole timeout is closed
   * with 1013 like any slow consumer, and its reply's memory given back. Without this, a reader
   * that stopped reading kept its reply for as long as it stayed connected (a socket still writing
   * counts as alive for the heartbeat). libuv's write queue shows the progress of one big write,
   * which the stream reports only once it is all written (see WithHandle).
   */
  private watchReplies(): void {
    const stallMs = this.limits.replyStallMs
    if (stallMs === undefined || this.stallTimer !== null) return
    this.replyProgress = { ...this.handedToKernel(), at: this.clock.now() }
    const look = (): void => {
      this.stallTimer = null
      if (this.stateValue !== 'open' || this.syncReplyInFlight === 0) return
      const now = this.clock.now()
      const { sent, queued } = this.handedToKernel()
      const last = this.replyProgress
      if (sent > last.sent || queued < last.queued) this.replyProgress = { sent, queued, at: now }
      else this.replyProgress = { sent, queued, at: last.at }
      if (now - this.replyProgress.at >= stallMs) {
        this.events.onSlowConsumer?.()
        this.close(CloseCode.tryAgainLater, 'slow consumer')
        return
      }
      this.stallTimer = setTimeout(look, Math.ceil(stallMs / 3))
      this.stallTimer.unref()
    }
    this.stallTimer = setTimeout(look, Math.ceil(stallMs / 3))
    this.stallTimer.unref()
  }

  /** Bytes whose writes the stream completed, and bytes of the write in progress libuv still holds. */
  private handedToKernel(): { sent: number; queued: number } {
    const raw = this.raw as WithHandle
    const queued = (raw._parent ?? raw)._handle?.writeQueueSize
    return { sent: (this.raw.bytesWritten ?? 0) - (this.raw.writableLength ?? 0), queued: typeof queued === 'number' ? queued : 0 }
  }

  /** The gate has a turn free: the reply held in the send queue asks again. */
  replyTurn(): void {
    if (this.stateValue !== 'open') return
    this.queue?.flush()
    this.flushWhenWritten()
  }

  /** Gives back this connection's turns (its replies are out, took too long, or it closed) and its place in the line. */
  private endReplyTurns(): void {
    const gate = this.limits.replyGate
    if (gate == null) return
    if (this.replyTurnTimer !== null) clearTimeout(this.replyTurnTimer)
    this.replyTurnTimer = null
    if (this.stateValue !== 'open') gate.forget(this)
    const turns = this.replyTurns
    this.replyTurns = 0
    for (let i = 0; i < turns; i++) gate.leave()
  }

  /** True while a big sync reply waits in the send queue or is not yet out of the socket. */
  get syncReplyOnItsWay(): boolean {
    return this.syncReplyInFlight > 0 || (this.queue?.exemptHeldByteCount ?? 0) > 0
  }

  /** Bytes of sync replies the socket may still hold, which the slow-consumer mark leaves out. */
  private syncReplyBytes(): number {
    return this.syncReplyInFlight === 0 ? 0 : Math.min(this.syncReplyInFlight, this.socket.bufferedAmount)
  }

  /** A frame that must arrive as it is, in order. */
  send(frame: Uint8Array): void {
    if (this.stateValue !== 'open') return
    this.meter?.sent(frame)
    if (!this.direct) {
      this.sendQueue().sendFrame(frame)
      this.flushWhenWritten()
      return
    }
    this.write(frame)
    this.checkBudget()
  }

  /** A broadcast document update: the shared frame when the reader keeps up, merged with others when it is behind. */
  sendUpdate(document: string, update: Uint8Array, frames: SharedFrames, format: WireFormat): void {
    if (this.stateValue !== 'open') return
    if (!this.direct) {
      this.meter?.sentBroadcast('update', update.length)
      this.sendQueue().sendUpdate(document, update, frames, format)
      this.flushWhenWritten()
      return
    }
    this.sendShared(frames, format, 'update')
  }

  /**
   * Writes a broadcast's shared frame: the whole WebSocket frame straight to the TCP stream when
   * it can be (ws compresses nothing here and queues nothing, so frames stay in order and count
   * in `bufferedAmount` as ws's own do), else through ws.
   */
  private sendShared(frames: SharedFrames, format: WireFormat, type: 'update' | 'awareness'): void {
    const payload = frames.get(format)
    this.meter?.sentBroadcast(type, payload.length)
    this.write(payload, frames, format)
    this.checkBudget()
  }

  /**
   * Writes one message: compressed when this socket negotiated it and the payload is worth it
   * (deflated once for every socket it goes to), else as the shared plain frame, else through
   * `ws`. All three write to the TCP stream synchronously, in call order, so they can be mixed;
   * what is written counts in `bufferedAmount` (the send queue's budget) at its real size.
   */
  private write(payload: Uint8Array, frames?: SharedFrames, format?: WireFormat): void {
    if (this.raw.write !== undefined && this.socket.readyState === OPEN) {
      const compressed = this.deflate?.wireFrame(payload) ?? null
      if (compressed !== null) {
        this.raw.write(compressed)
        this.events.onCompressedFrame?.()
        return
      }
      if (frames?.wire !== undefined && format !== undefined) {
        this.raw.write(frames.wire(format))
        return
      }
    }
    this.socket.send(payload, BINARY)
  }

  sendAwareness(document: string, entries: readonly AwarenessEntry[], frames: SharedFrames, format: WireFormat): void {
    if (this.stateValue !== 'open') return
    if (!this.direct) {
      this.meter?.sentBroadcast('awareness', 0)
      this.sendQueue().sendAwareness(document, entries, frames, format)
      this.flushWhenWritten()
      return
    }
    this.sendShared(frames, format, 'awareness')
  }

  /**
   * Called by the heartbeat: false when the connection showed no life since the last tick (it is
   * then terminated). A socket still writing out a large transfer counts as alive.
   */
  heartbeat(): boolean {
    if (this.stateValue !== 'open') return true
    this.queue?.flush()
    const bytesRead = this.raw.bytesRead
    const wasAlive = this.bytesReadAtTick === -1 || bytesRead !== this.bytesReadAtTick || this.socket.bufferedAmount > 0 || this.paused
    this.bytesReadAtTick = bytesRead
    if (!wasAlive) {
      this.terminate()
      return false
    }
    try {
      this.socket.ping()
    } catch {
      // The socket closed under us; the close event does the rest.
    }
    return true
  }

  close(code: number, reason: string): void {
    if (this.stateValue !== 'open') return
    this.stateValue = 'closing'
    this.closeCode = code
    this.queue?.close()
    this.endReplyTurns()
    this.socket.close(code, reason)
    // A peer that never answers the close handshake must not hold the socket forever.
    setTimeout(() => this.terminate(), 5_000).unref()
  }

  terminate(): void {
    if (this.stateValue === 'closed') return
    this.stateValue = 'closing'
    this.socket.terminate()
  }
}

/**
 * ws reports protocol violations (bad frames, too-large payloads) here and closes the socket
 * itself with the fitting code (1002, 1009); the close event does the bookkeeping.
 */
function ignoreSocketError(): void {}
