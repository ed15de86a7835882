/**
 * The sequence part of a log key, shared by both stores so keys look alike everywhere.
 *
 * Fixed width so that string order (LevelDB compares bytes) equals numeric order. Sixteen decimal
 * digits hold Number.MAX_SAFE_INTEGER; at 10 appends a second a room runs out in 28 million years.
 */
const SEQUENCE_DIGITS = 16
const SEQUENCE_PATTERN = /^[0-9]{16}$/

export function formatSequence(sequence: number): string {
  if (!Number.isSafeInteger(sequence) || sequence < 0) throw new RangeError(`log sequence out of range: ${sequence}`)
  return String(sequence).padStart(SEQUENCE_DIGITS, '0')
}

/** The number behind a key `formatSequence` produced; throws on anything else. */
export function parseSequence(key: string): number {
  if (!SEQUENCE_PATTERN.test(key)) throw new RangeError(`not a log key: ${JSON.stringify(key)}`)
  return Number(key)
}
