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

export function assertVarUint (value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} must be a non-negative safe integer, got ${value}`)
}
