import type { Socket } from 'node:net'
import { CloseCode } from './codes.js'
import type { Connection } from './connection.js'

export interface PreAuthLimits {
  /** Bytes the socket may send (frames, partial frames included) before it is authenticated. */
  preauthBytes: number
  /** Milliseconds it may stay unauthenticated. */
  authTimeoutMs: number
}

/** How long a socket closed for its pre-auth bounds gets to finish the close handshake. */
const CLOSE_GRACE_MS = 1_000

/**
 * Bounds what a Hocuspocus socket costs before any of its documents is authenticated: its upgrade
 * needs no credential (the token comes in the first message), so without this anyone could hold
 * a --max-message-bytes frame half-sent, one byte every few seconds, on every socket (issue 12,
 * finding 6). `ws` buffers a frame until it is complete and its maxPayload is one per server, so
 * the bound is on the raw bytes read, checked as they arrive, whatever the frames declare.
 */
export class PreAuthGuard {
  private readonly startBytes: number
  /** Bytes of inflated messages so far, when the socket negotiated permessage-deflate (--compression). */
  private inflatedBytes = 0
  private readonly inflating: boolean
  private timer: NodeJS.Timeout | null
  private watching = true

  constructor(
    private readonly raw: Socket,
    private readonly connection: Connection,
    private readonly limits: PreAuthLimits,
    private readonly onRefused: (reason: 'bytes' | 'timeout') => void,
  ) {
    this.startBytes = raw.bytesRead
    raw.on('data', this.onData)
    // A compressed frame can inflate a thousandfold: with --compression the bound applies to the
    // inflated messages too, so a few raw kilobytes cannot make weft inflate and hold megabytes.
    this.inflating = connection.socket.extensions !== ''
    if (this.inflating) connection.socket.on('message', this.onMessage)
    this.timer = setTimeout(() => this.refuse('timeout', CloseCode.unauthorized, 'authentication timed out'), limits.authTimeoutMs)
    this.timer.unref()
  }

  private readonly onData = (): void => {
    if (this.raw.bytesRead - this.startBytes > this.limits.preauthBytes) this.refuse('bytes', CloseCode.messageTooBig, 'too much sent before authentication')
  }

  private readonly onMessage = (data: Buffer): void => {
    this.inflatedBytes += data.length
    if (this.inflatedBytes > this.limits.preauthBytes) this.refuse('bytes', CloseCode.messageTooBig, 'too much sent before authentication')
  }

  /** A document was authenticated: the socket's own limits apply from now on. */
  authenticated(): void {
    if (!this.watching) return
    this.stop()
  }

  /** The socket closed. */
  dispose(): void {
    this.stop()
  }

  private stop(): void {
    this.watching = false
    this.raw.off('data', this.onData)
    if (this.inflating) this.connection.socket.off('message', this.onMessage)
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  private refuse(reason: 'bytes' | 'timeout', code: number, text: string): void {
    if (!this.watching) return
    this.stop()
    this.onRefused(reason)
    // Stop reading: whatever the peer still sends stays in the kernel, not in ws's frame buffer.
    this.raw.pause()
    this.connection.close(code, text)
    setTimeout(() => this.connection.terminate(), CLOSE_GRACE_MS).unref()
  }
}
