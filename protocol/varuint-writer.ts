/** Bytes a lib0 varuint of `value` occupies; values must be non-negative safe integers. */
export function varUintSize (value: number): number {
  let size = 1
  while (value >= 0x80) {
    value = Math.floor(value / 128)
    size++
  }
  return size
}

/** Writes `value` at `pos` and returns the position after it. Division, not >>>, so values above 2^31 survive. */
export function writeVarUint (target: Uint8Array, pos: number, value: number): number {
  while (value >= 0x80) {
    target[pos++] = (value % 128) | 0x80
    value = Math.floor(value / 128)
  }
  target[pos++] = value
  return pos
}

/**
 * `prefix` (y-websocket's [type, subType?], a Hocuspocus header), then `payload` as lib0
 * var-bytes (varuint length, bytes), in one exactly sized array: this runs once per broadcast,
 * so no growable encoder and no second copy. Every y-websocket type and sub-type is below 128
 * and therefore its own one-byte varuint.
 */
export function framePayload (prefix: ArrayLike<number>, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(prefix.length + varUintSize(payload.length) + payload.length)
  frame.set(prefix)
  frame.set(payload, writeVarUint(frame, prefix.length, payload.length))
  return frame
}

export function assertVarUint (value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} must be a non-negative safe integer, got ${value}`)
}
