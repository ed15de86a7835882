import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'
import type { AwarenessEntry } from '../protocol/index.js'
import { CloseCode } from './codes.js'
import { SendQueue } from './send-queue.js'
import { TokenBucket, systemClock, type Clock } from './token-bucket.js'
import type { SharedFrames, WireFormat } from './wire-format.js'

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
}

export interface ConnectionEvents {
  onSlowConsumer?(): void
  onCoalesced?(count: number): void
  onPause?(): void
  onResume?(): void
}

export type ConnectionState = 'open' | 'closing' | 'closed'

/** Share of the budget past which broadcasts are held and merged instead of sent. */
const SOFT_MARK_SHARE = 0.25

let nextConnectionId = 1

/**
 * The protocol-independent part of one client socket: a bounded send queue, inbound rate limits
 * that pause the socket (TCP pushes back on the sender; nothing is dropped), liveness for
 * heartbeats, and closing once with a code. Protocol sessions (y-websocket, Hocuspocus) sit on top.
 */
export class Connection {
  readonly id = nextConnectionId++
  private stateValue: ConnectionState = 'open'
  /** Set by any sign of life (pong, or bytes arriving); cleared by each heartbeat tick. */
  private alive = true
  private readonly queue: SendQueue
  private readonly messageBucket: TokenBucket
  private readonly byteBucket: TokenBucket
  private resumeTimer: NodeJS.Timeout | null = null
  /** Frames ws delivered after the socket was paused; handled in order when the limit allows. */
  private backlog: Buffer[] = []
  private socketPaused = false
  private messageHandler: ((data: Buffer) => void) | null = null
  closeCode: number | null = null
  private readonly closeHandlers: Array<(code: number) => void> = []

  constructor(
    readonly socket: WebSocket,
    /** The raw TCP/TLS stream under the WebSocket: bytes arriving there count as life, so a long upload is never cut off. */
    private readonly raw: Duplex,
    readonly ip: string,
    limits: ConnectionLimits,
    private readonly events: ConnectionEvents = {},
    clock: Clock = systemClock,
  ) {
    this.queue = new SendQueue(
      { send: (frame) => socket.send(frame, { binary: true }), bufferedAmount: () => socket.bufferedAmount },
      { softBytes: Math.floor(limits.sendQueueBytes * SOFT_MARK_SHARE), hardBytes: limits.sendQueueBytes, graceMs: limits.slowConsumerGraceMs },
      {
        onSlowConsumer: () => {
          this.events.onSlowConsumer?.()
          this.close(CloseCode.tryAgainLater, 'slow consumer')
        },
        onCoalesced: (count) => this.events.onCoalesced?.(count),
      },
      clock,
    )
    this.messageBucket = new TokenBucket(limits.inboundMessagesPerSecond, limits.inboundMessagesPerSecond * 2, clock)
    this.byteBucket = new TokenBucket(limits.inboundBytesPerSecond, Math.max(limits.inboundBytesPerSecond, limits.maxMessageBytes), clock)
    socket.on('pong', this.markAlive)
    raw.on('data', this.markAlive)
    raw.on('drain', this.flush)
    socket.on('message', (data: Buffer, isBinary: boolean) => this.receive(data, isBinary))
    socket.on('close', (code: number) => {
      this.stateValue = 'closed'
      raw.off('data', this.markAlive)
      raw.off('drain', this.flush)
      this.queue.close()
      if (this.resumeTimer !== null) clearTimeout(this.resumeTimer)
      this.backlog = []
      const final = this.closeCode ?? code
      for (const handler of this.closeHandlers) handler(final)
    })
    socket.on('error', () => {
      // ws reports protocol violations (bad frames, too-large payloads) here and closes the socket
      // itself with the fitting code (1002, 1009); the close handler above does the bookkeeping.
    })
  }

  get state(): ConnectionState {
    return this.stateValue
  }

  /** Bytes this connection costs on the outbound side: socket buffer plus what weft holds. */
  get queuedBytes(): number {
    return this.queue.totalBytes
  }

  get paused(): boolean {
    return this.socketPaused
  }

  onClose(handler: (code: number) => void): void {
    this.closeHandlers.push(handler)
  }

  /** The session's handler for binary frames; text frames are a protocol error (1002). */
  onMessage(handler: (data: Buffer) => void): void {
    this.messageHandler = handler
  }

  private readonly markAlive = (): void => {
    this.alive = true
  }

  private readonly flush = (): void => {
    this.queue.flush()
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
      this.backlog.push(data)
      return
    }
    this.charge(data)
  }

  /** Charges the buckets, handles the frame, and pauses when a bucket went into debt. */
  private charge(data: Buffer): void {
    // Charge first, then handle: the frame is here and is never dropped. When a bucket is in debt
    // the socket stops being read until it is paid off, so TCP slows the sender down.
    const wait = Math.max(this.messageBucket.take(1), this.byteBucket.take(data.length))
    if (wait > 0 && this.resumeTimer === null) {
      if (!this.socketPaused) {
        this.socketPaused = true
        this.socket.pause()
        this.events.onPause?.()
      }
      this.resumeTimer = setTimeout(this.resume, wait)
    }
    this.messageHandler?.(data)
  }

  private readonly resume = (): void => {
    this.resumeTimer = null
    if (this.stateValue === 'closed') return
    const wait = Math.max(this.messageBucket.waitFor(0), this.byteBucket.waitFor(0))
    if (wait > 0) {
      this.resumeTimer = setTimeout(this.resume, wait)
      return
    }
    while (this.backlog.length > 0) {
      this.charge(this.backlog.shift() as Buffer)
      if (this.resumeTimer !== null) return // in debt again: still paused
    }
    this.socketPaused = false
    this.socket.resume()
    this.events.onResume?.()
  }

  /** A frame that must arrive as it is, in order. */
  send(frame: Uint8Array): void {
    if (this.stateValue !== 'open') return
    this.queue.sendFrame(frame)
  }

  /** A broadcast document update: the shared frame when the reader keeps up, merged with others when it is behind. */
  sendUpdate(document: string, update: Uint8Array, frames: SharedFrames, format: WireFormat): void {
    if (this.stateValue !== 'open') return
    this.queue.sendUpdate(document, update, frames, format)
  }

  sendAwareness(document: string, entries: readonly AwarenessEntry[], frames: SharedFrames, format: WireFormat): void {
    if (this.stateValue !== 'open') return
    this.queue.sendAwareness(document, entries, frames, format)
  }

  /**
   * Called by the heartbeat: false when the connection showed no life since the last tick (it is
   * then terminated). A socket still writing out a large transfer counts as alive.
   */
  heartbeat(): boolean {
    if (this.stateValue !== 'open') return true
    this.queue.flush()
    const wasAlive = this.alive || this.socket.bufferedAmount > 0 || this.paused
    this.alive = false
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
    this.queue.close()
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
