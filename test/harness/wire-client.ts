// A WebSocket client on a bare TCP socket that records every frame as it came over the wire (RSV1
// bit, opcode, payload as sent), so a test can see whether the server compressed it. `ws` as a
// client inflates transparently and hides that.

import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'
import { constants, inflateRawSync } from 'node:zlib'
import { until, withDeadline } from './wait.js'

export interface WireFrame {
  rsv1: boolean
  opcode: number
  /** The payload as it was on the wire (compressed when rsv1). */
  payload: Buffer
}

/** RFC 7692 §7.2.2: the receiver appends the four octets the sender removed, then inflates. */
export function inflateMessage(payload: Uint8Array): Buffer {
  return inflateRawSync(Buffer.concat([payload, Buffer.from([0x00, 0x00, 0xff, 0xff])]), { finishFlush: constants.Z_SYNC_FLUSH })
}

export class WireClient {
  readonly frames: WireFrame[] = []
  /** Bytes received after the handshake (frame headers included). */
  bytesReceived = 0
  /** The server's Sec-WebSocket-Extensions answer ('' when none). */
  extensions = ''
  closeCode: number | null = null
  private buffer = Buffer.alloc(0)
  private upgraded = false

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', () => {})
  }

  /** Connects to `url` (ws://host:port/path), offering permessage-deflate with `offer` ('' offers nothing). */
  static async open(url: string, offer = 'permessage-deflate; client_max_window_bits'): Promise<WireClient> {
    const { hostname, port, pathname } = new URL(url)
    const socket = connect(Number(port), hostname)
    const client = new WireClient(socket)
    const key = randomBytes(16).toString('base64')
    const head = [`GET ${pathname} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13']
    if (offer !== '') head.push(`Sec-WebSocket-Extensions: ${offer}`)
    socket.write(head.join('\r\n') + '\r\n\r\n')
    await until(() => client.upgraded, `the upgrade of ${url}`)
    return client
  }

  /** Sends one binary message, masked as a client must; `rsv1`: `payload` is already deflated. */
  send(payload: Uint8Array, rsv1 = false): void {
    const length = payload.length
    const header = length < 126 ? Buffer.alloc(2) : length < 0x10000 ? Buffer.alloc(4) : Buffer.alloc(10)
    header[0] = rsv1 ? 0xc2 : 0x82
    if (length < 126) header[1] = 0x80 | length
    else if (length < 0x10000) {
      header[1] = 0x80 | 126
      header.writeUInt16BE(length, 2)
    } else {
      header[1] = 0x80 | 127
      header.writeBigUInt64BE(BigInt(length), 2)
    }
    const mask = randomBytes(4)
    const masked = Buffer.from(payload)
    for (let i = 0; i < masked.length; i++) masked[i] = (masked[i] as number) ^ (mask[i & 3] as number)
    this.socket.write(Buffer.concat([header, mask, masked]))
  }

  /** The payloads of binary messages, inflated when compressed. */
  messages(): Buffer[] {
    return this.frames.filter((f) => f.opcode === 2).map((f) => (f.rsv1 ? inflateMessage(f.payload) : f.payload))
  }

  waitClosed(timeoutMs = 10_000): Promise<void> {
    return withDeadline(new Promise<void>((resolve) => (this.socket.destroyed ? resolve() : this.socket.once('close', () => resolve()))), 'the socket to close', timeoutMs)
  }

  /** Stops reading the socket (TCP pushes back on the server); `resume()` reads on. */
  pause(): void {
    this.socket.pause()
  }

  resume(): void {
    this.socket.resume()
  }

  close(): void {
    this.socket.destroy()
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk])
    if (!this.upgraded) {
      const end = this.buffer.indexOf('\r\n\r\n')
      if (end === -1) return
      const head = this.buffer.subarray(0, end).toString('latin1')
      if (!head.startsWith('HTTP/1.1 101')) {
        this.socket.destroy()
        throw new Error(`upgrade refused: ${head.split('\r\n')[0]}`)
      }
      this.extensions = /^sec-websocket-extensions: (.*)$/im.exec(head)?.[1]?.trim() ?? ''
      this.buffer = this.buffer.subarray(end + 4)
      this.upgraded = true
    }
    this.bytesReceived += this.upgraded ? chunk.length : 0
    for (;;) {
      if (this.buffer.length < 2) return
      const first = this.buffer[0] as number
      let length = (this.buffer[1] as number) & 0x7f
      let offset = 2
      if (length === 126) {
        if (this.buffer.length < 4) return
        length = this.buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (this.buffer.length < 10) return
        length = Number(this.buffer.readBigUInt64BE(2))
        offset = 10
      }
      if (this.buffer.length < offset + length) return
      const frame = { rsv1: (first & 0x40) !== 0, opcode: first & 0x0f, payload: Buffer.from(this.buffer.subarray(offset, offset + length)) }
      this.buffer = this.buffer.subarray(offset + length)
      this.frames.push(frame)
      if (frame.opcode === 8) this.closeCode = frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005
    }
  }
}
