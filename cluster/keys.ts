/**
 * The Redis key layout of the cluster, in one place.
 *
 *   weft:epoch                 random token; its disappearance means Redis lost its data
 *   weft:instance:<id>         heartbeat of one instance (value: ms timestamp), PX 3000
 *   weft:{<r>}:log             Stream of the room's updates not yet in the snapshot (fields i, u)
 *   weft:{<r>}:doc             Hash: u = snapshot (one merged update), upto = last stream id it
 *                              covers, v = version (bumped by every compaction)
 *   weft:{<r>}:last            id of the newest stream entry (what the next message names as prev)
 *   weft:{<r>}:ch              pub/sub channel of the room (updates, awareness, queries, goodbyes)
 *   weft:{<r>}:versions:ids    Sorted set (all scores 0) of the room's version ids: lexicographic
 *                              order is creation order (persistence/version-id.ts), so a page is
 *                              one ZRANGEBYLEX
 *   weft:{<r>}:versions:info   Hash: version id → description (persistence/version-value.ts
 *                              encodeVersionInfo), the only thing a listing reads
 *   weft:{<r>}:versions:bytes  sum of the descriptions' `bytes`: the room's version budget in use
 *   weft:{<r>}:version:<id>    String: one version's stored value, read only to serve that version
 *   weft:{<r>}:versions        the layout before descriptions (Hash: id → value); moved into the
 *                              keys above the first time a version call touches the room
 *
 * `<r>` is the base64url of the room name's UTF-8 bytes: room names may hold `{`, `}`, `:`, spaces
 * and any non-control character, none of which can appear in base64url, so no room's keys can
 * collide with another's and the braces form a Redis Cluster hash tag that keeps one room's keys
 * in one slot (the scripts touch several of them at once).
 */
export interface RoomKeys {
  log: string
  doc: string
  last: string
  channel: string
}

export const EPOCH_KEY = 'weft:epoch'

export function roomTag(room: string): string {
  return Buffer.from(room, 'utf8').toString('base64url')
}

export function roomKeys(room: string): RoomKeys {
  const prefix = `weft:{${roomTag(room)}}`
  return { log: `${prefix}:log`, doc: `${prefix}:doc`, last: `${prefix}:last`, channel: `${prefix}:ch` }
}

export interface VersionKeys {
  ids: string
  info: string
  bytes: string
  legacy: string
  /** The key of one version's value is this followed by its id. */
  contentPrefix: string
}

export function versionKeys(room: string): VersionKeys {
  const prefix = `weft:{${roomTag(room)}}`
  return { ids: `${prefix}:versions:ids`, info: `${prefix}:versions:info`, bytes: `${prefix}:versions:bytes`, legacy: `${prefix}:versions`, contentPrefix: `${prefix}:version:` }
}

export function instanceKey(instanceId: string): string {
  return `weft:instance:${instanceId}`
}

/** A Redis Stream id, `<ms>-<seq>`. Both parts fit a JS number exactly (ms < 2^53, seq < 2^53 in practice). */
interface StreamId {
  ms: number
  seq: number
}

function parseStreamId(id: string): StreamId {
  const dash = id.indexOf('-')
  if (dash <= 0) throw new RangeError(`not a stream id: ${JSON.stringify(id)}`)
  return { ms: Number(id.slice(0, dash)), seq: Number(id.slice(dash + 1)) }
}

/** Orders stream ids; '' (nothing applied yet) sorts before every id. */
export function compareStreamIds(a: string, b: string): number {
  if (a === b) return 0
  if (a === '') return -1
  if (b === '') return 1
  const x = parseStreamId(a)
  const y = parseStreamId(b)
  return x.ms !== y.ms ? Math.sign(x.ms - y.ms) : Math.sign(x.seq - y.seq)
}

/** The smallest id after `id`: XTRIM MINID keeps ids >= its argument, so this trims up to and including `id`. */
export function nextStreamId(id: string): string {
  const { ms, seq } = parseStreamId(id)
  return `${ms}-${seq + 1}`
}
