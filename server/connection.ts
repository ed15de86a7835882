import type { Duplex } from 'node:stream'
import type { WebSocket } from 'ws'
import { CloseCode } from './codes.js'

export interface ConnectionLimits {
  /** Outbound budget: what `ws` has buffered for this socket. */
  sendQueueBytes: number
  /** How long the budget may stay exceeded before the connection is closed with 1013. */
  sendQueueGraceMs: number
}

export type ConnectionState = 'open' | 'closing' | 'closed'

let nextConnectionId = 1

/**
 * The protocol-independent part of one client socket: sending within a byte budget, liveness for
 * heartbeats, and closing once with a code. Protocol sessions (y-websocket, Hocuspocus) sit on top.
 */
export class Connection {
  readonly id = nextConnectionId++
  private stateValue: ConnectionState = 'open'
  /** Set by any sign of life (pong, or bytes arriving); cleared by each heartbeat tick. */
  private alive = true
  private overBudgetSince: number | null = null
  closeCode: number | null = null
  onClose: ((code: number) => void) | null = null

  constructor(
    readonly socket: WebSocket,
    /** The raw TCP/TLS stream under the WebSocket: bytes arriving there count as life, so a long upload is never cut off. */
    raw: Duplex,
    readonly ip: string,
    private readonly limits: ConnectionLimits,
  ) {
    socket.on('pong', this.markAlive)
    raw.on('data', this.markAlive)
    socket.on('close', (code: number) => {
      this.stateValue = 'closed'
      raw.off('data', this.markAlive)
      this.onClose?.(this.closeCode ?? code)
    })
    socket.on('error', () => {
      // ws reports protocol violations (bad frames, too-large payloads) here and closes the socket
      // itself with the fitting code (1002, 1009); the close handler above does the bookkeeping.
    })
  }

  get state(): ConnectionState {
    return this.stateValue
  }

  get bufferedBytes(): number {
    return this.socket.bufferedAmount
  }

  private readonly markAlive = (): void => {
    this.alive = true
  }

  /**
   * Queues a frame. The first frame always goes out whatever its size (a big document's sync step
   * 2 must be deliverable); past the budget the connection has `sendQueueGraceMs` to catch up.
   */
  send(frame: Uint8Array): void {
    if (this.stateValue !== 'open') return
    this.socket.send(frame, { binary: true })
    if (this.socket.bufferedAmount > this.limits.sendQueueBytes) {
      const now = Date.now()
      if (this.overBudgetSince === null) this.overBudgetSince = now
      else if (now - this.overBudgetSince > this.limits.sendQueueGraceMs) this.close(CloseCode.tryAgainLater, 'slow consumer')
    } else {
      this.overBudgetSince = null
    }
  }

  /** Called by the heartbeat: true when the connection showed life since the last tick. Pings it. */
  heartbeat(): boolean {
    if (this.stateValue !== 'open') return true
    if (this.overBudgetSince !== null && this.socket.bufferedAmount <= this.limits.sendQueueBytes) this.overBudgetSince = null
    if (this.overBudgetSince !== null && Date.now() - this.overBudgetSince > this.limits.sendQueueGraceMs) {
      this.close(CloseCode.tryAgainLater, 'slow consumer')
      return true
    }
    const wasAlive = this.alive || this.socket.bufferedAmount > 0
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
