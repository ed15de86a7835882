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
}

/**
 * Encodes a broadcast at most once per wire format, and only if some member sends it as is (a
 * member that is behind holds the raw update to merge instead).
 */
export class FrameCache implements SharedFrames {
  private format: WireFormat | null = null
  private frame: Uint8Array | null = null
  private others: Map<WireFormat, Uint8Array> | null = null

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
}
