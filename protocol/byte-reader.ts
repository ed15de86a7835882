import { ProtocolError } from './errors.js'

// A varuint above this cannot be represented exactly as a JS number, and lib0 would silently
// return a rounded (or NaN) value for it.
const MAX_VARUINT = Number.MAX_SAFE_INTEGER
// 8 groups of 7 bits already exceed 2^53; a longer varuint is either out of range or padded
// with zero groups, and lib0 never writes padding.
const MAX_VARUINT_BYTES = 8

// fatal: lib0 decodes strings with a fatal TextDecoder, so Yjs throws on invalid UTF-8 and we
// must reject it before Yjs sees it. ignoreBOM keeps a leading U+FEFF in the text, as lib0 does.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * A cursor over one Uint8Array that never reads outside it. Every bound is checked against
 * the view's own length: a Buffer from ws may be a window into a larger pooled ArrayBuffer,
 * and lib0's decoder reads through `arr.buffer`, so it can see bytes that belong to someone else.
 * Every failure is a ProtocolError carrying the close code chosen by the owner of the reader.
 */
export class ByteReader {
  private pos = 0

  constructor (private readonly bytes: Uint8Array, private readonly closeCode: 1002 | 1007) {}

  get offset (): number {
    return this.pos
  }

  get remaining (): number {
    return this.bytes.length - this.pos
  }

  fail (message: string): never {
    throw new ProtocolError(this.closeCode, `${message} at byte ${this.pos}`)
  }

  readUint8 (): number {
    const byte = this.bytes[this.pos]
    if (byte === undefined) this.fail('unexpected end of data')
    this.pos++
    return byte
  }

  readVarUint (): number {
    let value = 0
    let multiplier = 1
    for (let i = 0; i < MAX_VARUINT_BYTES; i++) {
      const byte = this.readUint8()
      value += (byte & 0x7f) * multiplier
      if (byte < 0x80) {
        if (value > MAX_VARUINT) this.fail('varuint exceeds 2^53')
        return value
      }
      multiplier *= 128
    }
    return this.fail('varuint exceeds 2^53')
  }

  /** lib0's signed varint: sign in bit 6 of the first byte, 6 value bits there, then 7 per byte. */
  readVarInt (): number {
    let byte = this.readUint8()
    const negative = (byte & 0x40) !== 0
    let value = byte & 0x3f
    let multiplier = 64
    for (let i = 1; (byte & 0x80) !== 0; i++) {
      if (i >= MAX_VARUINT_BYTES) this.fail('varint exceeds 2^53')
      byte = this.readUint8()
      value += (byte & 0x7f) * multiplier
      multiplier *= 128
    }
    if (value > MAX_VARUINT) this.fail('varint exceeds 2^53')
    return negative ? -value : value
  }

  /** Returns a view into the same memory, not a copy. */
  readBytes (length: number): Uint8Array {
    if (length > this.remaining) this.fail(`length ${length} runs past the end`)
    const view = this.bytes.subarray(this.pos, this.pos + length)
    this.pos += length
    return view
  }

  readVarBytes (): Uint8Array {
    return this.readBytes(this.readVarUint())
  }

  readVarString (): string {
    return this.readString(this.readVarUint())
  }

  /** A UTF-8 string whose byte length the caller has already read. */
  readString (length: number): string {
    const bytes = this.readBytes(length)
    try {
      return utf8.decode(bytes)
    } catch {
      return this.fail('string is not valid UTF-8')
    }
  }

  /**
   * Reads an element count and refuses it unless the remaining bytes could hold that many
   * elements of at least `minBytesEach` bytes. Checking before the loop means a forged count
   * can never make a caller allocate or spin for more than the input pays for.
   */
  readCount (minBytesEach: number, what: string): number {
    const count = this.readVarUint()
    if (count * minBytesEach > this.remaining) this.fail(`${what} count ${count} exceeds the remaining bytes`)
    return count
  }

  expectEnd (what: string): void {
    if (this.pos !== this.bytes.length) this.fail(`${this.remaining} trailing bytes after ${what}`)
  }
}
