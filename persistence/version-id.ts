import { randomBytes } from 'node:crypto'

/**
 * Version ids: `<9 base-36 digits of ms timestamp><4 base-36 digits of a per-process counter><10 hex random>`,
 * 23 characters of [0-9a-z].
 *
 * Fixed width, so string order (LevelDB's byte order, and the sort the Redis store applies) is
 * creation order: nine base-36 digits hold timestamps until the year 5188. The counter keeps ids
 * made by one process in the same millisecond in call order; the 40 random bits keep ids made by
 * different instances in the same millisecond apart.
 */
const TIMESTAMP_DIGITS = 9
const COUNTER_DIGITS = 4
const COUNTER_MODULUS = 36 ** COUNTER_DIGITS
let counter = 0

export function newVersionId(now: number = Date.now()): string {
  if (!Number.isSafeInteger(now) || now < 0) throw new RangeError(`version timestamp out of range: ${now}`)
  const timestamp = now.toString(36).padStart(TIMESTAMP_DIGITS, '0')
  counter = (counter + 1) % COUNTER_MODULUS
  return timestamp + counter.toString(36).padStart(COUNTER_DIGITS, '0') + randomBytes(5).toString('hex')
}

/**
 * What the stores accept as a version id: newVersionId's output and any other short id of URL-safe
 * characters. The id becomes part of a LevelDB key and a Redis hash field, so it must never hold
 * the key separator (U+0000); `getVersion` answers null for anything else instead of looking it up.
 */
const VERSION_ID_PATTERN = /^[0-9A-Za-z_-]{1,128}$/

export function isVersionId(id: string): boolean {
  return VERSION_ID_PATTERN.test(id)
}

export function assertVersionId(id: string): void {
  if (!isVersionId(id)) throw new RangeError(`not a version id: ${JSON.stringify(id.slice(0, 64))}`)
}
