import type { AwarenessEntry } from '../protocol/index.js'

/**
 * How a member wants broadcasts framed. A room encodes each broadcast once per format in use and
 * hands the same buffer to every member of that format.
 */
export interface WireFormat {
  readonly name: string
  update(room: string, update: Uint8Array): Uint8Array
  awareness(room: string, entries: readonly AwarenessEntry[]): Uint8Array
}

export interface SharedFrames {
  get(format: WireFormat): Uint8Array
  /** `get(format)` as a whole WebSocket frame (final, binary, unmasked), built once for every recipient. */
  wire?(format: WireFormat): Uint8Array
}

/**
 * A server's binary WebSocket frame around `payload` (RFC 6455 §5.2: FIN, opcode 2, no mask), as
 * `ws` would write it; written straight to the TCP stream it saves each recipient `ws`'s header
 * allocation and two-buffer write. `compressed`: the payload is permessage-deflate data (RFC
 * 7692 §6: RSV1 set on the message's first frame).
 */
export function webSocketFrame(payload: Uint8Array, compressed = false): Uint8Array {
  const length = payload.length
  const headerBytes = length < 126 ? 2 : length < 0x10000 ? 4 : 10
  const frame = Buffer.allocUnsafe(headerBytes + length)
  frame[0] = compressed ? 0xc2 : 0x82
  if (headerBytes === 2) {
    frame[1] = length
  } else if (headerBytes === 4) {
    frame[1] = 126
    frame.writeUInt16BE(length, 2)
  } else {
    frame[1] = 127
    frame.writeBigUInt64BE(BigInt(length), 2)
  }
  frame.set(payload, headerBytes)
  return frame
}

/**
 * Encodes a broadcast at most once per wire format, and only if some member sends it as is (a
 * member that is behind holds the raw update to merge instead).
 */
export class FrameCache implements SharedFrames {
  private format: WireFormat | null = null
  private frame: Uint8Array | null = null
  private others: Map<WireFormat, Uint8Array> | null = null
  private wireFormat: WireFormat | null = null
  private wireFrame: Uint8Array | null = null

  constructor(private readonly encode: (format: WireFormat) => Uint8Array) {}

  get(format: WireFormat): Uint8Array {
    if (format === this.format) return this.frame as Uint8Array
    if (this.format === null) {
      this.format = format
      this.frame = this.encode(format)
      return this.frame
    }
    this.others ??= new Map()
    let frame = this.others.get(format)
    if (frame === undefined) {
      frame = this.encode(format)
      this.others.set(format, frame)
    }
    return frame
  }

  wire(format: WireFormat): Uint8Array {
    if (format === this.wireFormat) return this.wireFrame as Uint8Array
    const frame = webSocketFrame(this.get(format))
    // One format per broadcast is the rule (a room of one protocol); a second one is rebuilt.
    this.wireFormat = format
    this.wireFrame = frame
    return frame
  }
}
