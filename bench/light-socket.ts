/**
 * The load generator's light clients' WebSocket client: RFC 6455 over a plain TCP socket, with the
 * one thing `ws` cannot do: a message longer than `wholeBytes` is not gathered. Its bytes are
 * counted as they arrive and dropped; the listener gets its first `prefixBytes` (enough to
 * classify it) and its whole length once its last byte has come.
 *
 * Why: in the join storm (scenario 13) each of 150 joiners receives a 20 MB sync reply that a light
 * client only needs to have received. `ws` gathers each into a fresh 20 MB buffer: 3 GB of new
 * pages over the two load processes on one core, and the time until all synced measured those
 * processes (about 7 s for weft), not the server (about 2 s, counted with this client).
 *
 * `FrameReader` is the byte state machine and never touches a socket; `LightSocket` is the part of
 * `ws`'s client API the load worker uses (`send`, `close`, `terminate`, `readyState`,
 * `bufferedAmount`, `open` / `message` / `error` / `close` events). No extensions, no
 * subprotocols, client frames masked as the RFC requires.
 */
import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { connect, type Socket } from 'node:net'

const OP_CONTINUATION = 0x0
const OP_TEXT = 0x1
const OP_BINARY = 0x2
const OP_CLOSE = 0x8
const OP_PING = 0x9
const OP_PONG = 0xa
const HANDSHAKE_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
/** A server's handshake response larger than this is refused (it is a few hundred bytes). */
const MAX_RESPONSE_HEAD = 16 * 1024

export interface ReaderEvents {
  /** A data message: the whole of it, or its first bytes when it was longer than `wholeBytes`. */
  message: (data: Buffer, length: number) => void
  /** A control frame (close, ping, pong) with its payload, always whole (125 bytes at most). */
  control: (opcode: number, payload: Buffer) => void
}

/** RFC 6455 frames from a server, as chunks arrive. Throws on a frame no server may send. */
export class FrameReader {
  private head = Buffer.alloc(0)
  /** Bytes of the current frame's payload still to come; -1 while its header is read. */
  private remaining = -1
  private opcode = 0
  private fin = false
  /** The data message being read (its first frame came, its last not yet): its length so far, and what is kept of it. */
  private inMessage = false
  private messageLength = 0
  private kept: Buffer[] = []
  private keptBytes = 0
  private control: Buffer[] = []

  constructor (private readonly wholeBytes: number, private readonly prefixBytes: number, private readonly events: ReaderEvents) {}

  push (chunk: Buffer): void {
    let data = chunk
    while (data.length > 0) {
      if (this.remaining < 0) {
        const rest = this.readHeader(data)
        if (rest === null) return
        data = rest
        if (this.remaining === 0) this.endFrame()
        continue
      }
      const take = Math.min(this.remaining, data.length)
      this.payload(data.subarray(0, take))
      this.remaining -= take
      data = data.subarray(take)
      if (this.remaining === 0) this.endFrame()
    }
  }

  /** Reads a frame header from what is held plus `data`; returns the bytes after it, or null to wait for more. */
  private readHeader (data: Buffer): Buffer | null {
    const head = this.head.length === 0 ? data : Buffer.concat([this.head, data])
    if (head.length < 2) {
      this.head = Buffer.from(head)
      return null
    }
    const first = head[0] as number
    const second = head[1] as number
    if ((second & 0x80) !== 0) throw new Error('a server frame is masked')
    if ((first & 0x70) !== 0) throw new Error('a frame has reserved bits set (no extension was negotiated)')
    let length = second & 0x7f
    let offset = 2
    if (length === 126) {
      if (head.length < 4) return this.wait(head)
      length = head.readUInt16BE(2)
      offset = 4
    } else if (length === 127) {
      if (head.length < 10) return this.wait(head)
      length = Number(head.readBigUInt64BE(2))
      offset = 10
    }
    this.head = Buffer.alloc(0)
    this.fin = (first & 0x80) !== 0
    this.opcode = first & 0x0f
    this.remaining = length
    if (this.opcode >= OP_CLOSE) {
      if (length > 125 || !this.fin) throw new Error('a control frame is fragmented or longer than 125 bytes')
      this.control = []
    } else if (this.opcode === OP_CONTINUATION) {
      if (!this.inMessage) throw new Error('a continuation frame without a message')
    } else if (this.opcode === OP_TEXT || this.opcode === OP_BINARY) {
      if (this.inMessage) throw new Error('a new message before the last one\'s final frame')
      this.inMessage = true
      this.messageLength = 0
      this.kept = []
      this.keptBytes = 0
    } else {
      throw new Error(`unknown opcode ${this.opcode}`)
    }
    return head.subarray(offset)
  }

  private wait (head: Buffer): null {
    this.head = Buffer.from(head)
    return null
  }

  private payload (bytes: Buffer): void {
    if (this.opcode >= OP_CLOSE) {
      this.control.push(bytes)
      return
    }
    this.messageLength += bytes.length
    // Gathered whole while it may still be at most wholeBytes long; past that, only the prefix is kept.
    const limit = this.messageLength + this.remaining - bytes.length > this.wholeBytes ? this.prefixBytes : this.wholeBytes
    if (this.keptBytes >= limit) return
    const piece = bytes.subarray(0, limit - this.keptBytes)
    // The chunk is the socket's; a copy outlives it.
    this.kept.push(Buffer.from(piece))
    this.keptBytes += piece.length
  }

  private endFrame (): void {
    this.remaining = -1
    if (this.opcode >= OP_CLOSE) {
      this.events.control(this.opcode, Buffer.concat(this.control))
      return
    }
    if (!this.fin) return
    const length = this.messageLength
    let data = Buffer.concat(this.kept)
    // A fragmented message first thought small can turn out long: keep its prefix only.
    if (length > this.wholeBytes && data.length > this.prefixBytes) data = data.subarray(0, this.prefixBytes)
    this.inMessage = false
    this.messageLength = 0
    this.kept = []
    this.keptBytes = 0
    this.events.message(data, length)
  }
}

/** One client frame: FIN, the opcode, the length, a random mask and the masked payload. */
export function clientFrame (opcode: number, payload: Uint8Array): Buffer {
  const length = payload.length
  const lengthBytes = length < 126 ? 0 : length < 0x10000 ? 2 : 8
  const frame = Buffer.allocUnsafe(2 + lengthBytes + 4 + length)
  frame[0] = 0x80 | opcode
  if (lengthBytes === 0) frame[1] = 0x80 | length
  else if (lengthBytes === 2) {
    frame[1] = 0x80 | 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 0x80 | 127
    frame.writeBigUInt64BE(BigInt(length), 2)
  }
  const maskAt = 2 + lengthBytes
  randomBytes(4).copy(frame, maskAt)
  for (let i = 0; i < length; i++) frame[maskAt + 4 + i] = (payload[i] as number) ^ (frame[maskAt + (i & 3)] as number)
  return frame
}

export interface LightSocketOptions {
  localAddress?: string
  /** Messages up to this long are delivered whole. */
  wholeBytes: number
  /** Of a longer message, this many first bytes are delivered, with its length. */
  prefixBytes: number
}

/** `ws`'s readyState values. */
export const CONNECTING = 0
export const OPEN = 1
export const CLOSING = 2
export const CLOSED = 3

type Listener = (...args: never[]) => void

export class LightSocket {
  readyState = CONNECTING
  private readonly events = new EventEmitter()
  private readonly socket: Socket
  private readonly reader: FrameReader
  private response = Buffer.alloc(0)
  private closeSent = false

  constructor (url: string, options: LightSocketOptions) {
    const target = new URL(url)
    if (target.protocol !== 'ws:') throw new Error(`LightSocket speaks ws: only, not ${target.protocol}`)
    const key = randomBytes(16).toString('base64')
    const accept = createHash('sha1').update(key + HANDSHAKE_GUID).digest('base64')
    this.reader = new FrameReader(options.wholeBytes, options.prefixBytes, {
      message: (data, length) => this.emit('message', data, length),
      control: (opcode, payload) => this.onControl(opcode, payload),
    })
    this.socket = connect({ host: target.hostname, port: Number(target.port || 80), localAddress: options.localAddress })
    this.socket.setNoDelay(true)
    this.socket.on('connect', () => {
      this.socket.write(
        `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    })
    this.socket.on('data', (chunk: Buffer) => {
      try {
        if (this.readyState === CONNECTING) this.onResponse(chunk, accept)
        else this.reader.push(chunk)
      } catch (error) {
        this.fail(error as Error)
      }
    })
    this.socket.on('error', (error) => this.emit('error', error))
    this.socket.on('close', () => {
      this.readyState = CLOSED
      this.emit('close')
    })
  }

  on (event: 'open' | 'close', listener: () => void): this
  on (event: 'message', listener: (data: Buffer, length: number) => void): this
  on (event: 'error', listener: (error: Error) => void): this
  on (event: string, listener: Listener): this {
    this.events.on(event, listener as (...args: unknown[]) => void)
    return this
  }

  once (event: 'close', listener: () => void): this {
    this.events.once(event, listener)
    return this
  }

  private emit (event: string, ...args: unknown[]): void {
    this.events.emit(event, ...args)
  }

  /** Bytes written but not yet handed to the kernel, like `ws`'s. */
  get bufferedAmount (): number {
    return this.socket.writableLength
  }

  send (data: Uint8Array): void {
    if (this.readyState !== OPEN) return
    this.socket.write(clientFrame(OP_BINARY, data))
  }

  /** Stops reading (the `slow` role's stall); `resume` reads again. */
  pause (): void {
    this.socket.pause()
  }

  resume (): void {
    this.socket.resume()
  }

  /** The closing handshake: a close frame (1000), then the server's, then the TCP close. */
  close (): void {
    if (this.readyState === CONNECTING) {
      this.terminate()
      return
    }
    if (this.readyState !== OPEN) return
    this.readyState = CLOSING
    this.sendClose()
  }

  terminate (): void {
    this.readyState = this.readyState === CLOSED ? CLOSED : CLOSING
    this.socket.destroy()
  }

  private onResponse (chunk: Buffer, accept: string): void {
    this.response = Buffer.concat([this.response, chunk])
    const end = this.response.indexOf('\r\n\r\n')
    if (end < 0) {
      if (this.response.length > MAX_RESPONSE_HEAD) throw new Error('the handshake response has no end')
      return
    }
    const lines = this.response.subarray(0, end).toString('latin1').split('\r\n')
    const rest = this.response.subarray(end + 4)
    this.response = Buffer.alloc(0)
    if (!/^HTTP\/1\.1 101 /.test(lines[0] ?? '')) throw new Error(`the server answered the upgrade with ${lines[0] ?? 'nothing'}`)
    const header = lines.find((line) => line.toLowerCase().startsWith('sec-websocket-accept:'))
    if (header?.slice(header.indexOf(':') + 1).trim() !== accept) throw new Error('the server\'s Sec-WebSocket-Accept is wrong')
    this.readyState = OPEN
    this.emit('open')
    if (rest.length > 0 && this.readyState === OPEN) this.reader.push(rest)
  }

  private onControl (opcode: number, payload: Buffer): void {
    if (opcode === OP_PING) {
      if (this.readyState === OPEN) this.socket.write(clientFrame(OP_PONG, payload))
    } else if (opcode === OP_CLOSE) {
      this.readyState = CLOSING
      this.sendClose()
      this.socket.end()
    }
  }

  private sendClose (): void {
    if (this.closeSent) return
    this.closeSent = true
    this.socket.write(clientFrame(OP_CLOSE, Uint8Array.of(0x03, 0xe8)))
  }

  private fail (error: Error): void {
    this.emit('error', error)
    this.terminate()
  }
}
