/**
 * The messages instances exchange on a room's pub/sub channel. Pure: bytes in, messages out.
 *
 * A message is one kind byte followed by fields, each a netstring head `<decimal length>:` and
 * that many bytes. Netstrings because the update message is built inside the publish Lua script,
 * where string concatenation with `#s` is all there is, and because instance ids and updates may
 * hold any byte.
 *
 *   U prev id instance ts update     a document update; prev/id are stream ids ('' = none before)
 *   A instance ts awareness [ids]    an awareness update (y-protocols encoding); `ids`, when present,
 *                                    holds each entry's owner identity, one line each ('' = none)
 *   Q instance ts                    "re-send your local awareness for this room"
 *   G instance ts                    every client of that instance left the room (graceful close)
 *
 * `ts` is the publisher's clock in ms (decimal): for the lag figure, and for updates also the
 * origin's arrival time in weft_delivery_seconds{source="cluster"} (it is taken in the same tick
 * as the update arrived and was applied there).
 *
 * An update's `ts` may end in `.<epoch tag>`: the tag (keys.ts `epochTag`) of the data epoch the
 * publish script found, so that an instance that only receives learns the epoch from the traffic
 * instead of reading it (issue 19). Carried inside `ts` because instances of two versions share
 * the channel during a rolling upgrade: an older instance reads `99.1234` as 99 ms and a fraction,
 * where a field of its own would make it drop the message as malformed.
 */
export type RelayMessage =
  | { kind: 'update'; prev: string; id: string; instance: string; ts: number; update: Uint8Array; epochTag?: string }
  | { kind: 'awareness'; instance: string; ts: number; awareness: Uint8Array; identities?: ReadonlyArray<string | null> }
  | { kind: 'query'; instance: string; ts: number }
  | { kind: 'gone'; instance: string; ts: number }

const KIND_BYTES = { update: 0x55, awareness: 0x41, query: 0x51, gone: 0x47 } as const // U A Q G
const COLON = 0x3a
const MAX_LENGTH_DIGITS = 10
const DIGITS = /^[0-9]+$/

function field(bytes: Uint8Array): Buffer[] {
  return [Buffer.from(`${bytes.length}:`, 'latin1'), Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)]
}

function text(value: string): Uint8Array {
  return Buffer.from(value, 'utf8')
}

/** Encodes the messages JavaScript publishes (update messages are built by the publish script, in the same layout). */
export function encodeRelayMessage(message: RelayMessage): Buffer {
  const parts: Buffer[] = [Buffer.of(KIND_BYTES[message.kind])]
  const add = (bytes: Uint8Array): void => {
    parts.push(...field(bytes))
  }
  if (message.kind === 'update') {
    add(text(message.prev))
    add(text(message.id))
  }
  add(text(message.instance))
  add(text(message.kind === 'update' && message.epochTag !== undefined ? `${message.ts}.${message.epochTag}` : String(message.ts)))
  if (message.kind === 'update') add(message.update)
  if (message.kind === 'awareness') {
    add(message.awareness)
    if (message.identities !== undefined) add(text(message.identities.map((identity) => identity ?? '').join('\n')))
  }
  return Buffer.concat(parts)
}

/** Decodes a channel message; null for anything malformed or of an unknown kind (a newer instance's), which is ignored. */
export function decodeRelayMessage(bytes: Uint8Array): RelayMessage | null {
  let pos = 1
  const next = (): Uint8Array | null => {
    const colon = bytes.indexOf(COLON, pos)
    if (colon < 0 || colon === pos || colon - pos > MAX_LENGTH_DIGITS) return null
    let length = 0
    for (let i = pos; i < colon; i++) {
      const digit = (bytes[i] as number) - 0x30
      if (digit < 0 || digit > 9) return null
      length = length * 10 + digit
    }
    const start = colon + 1
    if (start + length > bytes.length) return null
    pos = start + length
    return bytes.subarray(start, pos)
  }
  const str = (): string | null => {
    const value = next()
    return value === null ? null : Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8')
  }
  const kind = bytes[0]
  if (kind === KIND_BYTES.update) {
    const prev = str()
    const id = str()
    const instance = str()
    const ts = str()
    const update = next()
    if (prev === null || id === null || instance === null || ts === null || update === null || pos !== bytes.length) return null
    const dot = ts.indexOf('.')
    if (dot < 0) return { kind: 'update', prev, id, instance, ts: Number(ts), update }
    const epochTag = ts.slice(dot + 1)
    return { kind: 'update', prev, id, instance, ts: Number(ts.slice(0, dot)), update, ...(DIGITS.test(epochTag) ? { epochTag } : {}) }
  }
  if (kind === KIND_BYTES.awareness || kind === KIND_BYTES.query || kind === KIND_BYTES.gone) {
    const instance = str()
    const ts = str()
    if (instance === null || ts === null) return null
    if (kind === KIND_BYTES.awareness) {
      const awareness = next()
      if (awareness === null) return null
      if (pos === bytes.length) return { kind: 'awareness', instance, ts: Number(ts), awareness }
      const ids = str()
      if (ids === null || pos !== bytes.length) return null
      const identities = ids.split('\n').map((identity) => (identity === '' ? null : identity))
      return { kind: 'awareness', instance, ts: Number(ts), awareness, identities }
    }
    if (pos !== bytes.length) return null
    return { kind: kind === KIND_BYTES.query ? 'query' : 'gone', instance, ts: Number(ts) }
  }
  return null
}
