import { createHash, randomBytes } from 'node:crypto'
/**
 * The Redis key layout of the cluster, in one place. `<p>` is --redis-prefix (default `weft`),
 * `<db>` the Redis DB number of --redis.
 *
 *   <p>:epoch                   random token; its disappearance means Redis lost its data
 *   <p>:instance:<id>           heartbeat of one instance (value: ms timestamp), PX 3000; may lapse
 *                               while its messages stand in for it (RedisRelay.beatCovered)
 *   <p>:<db>:ask                pub/sub channel: "who has room R?" and the answers (cluster/ask.ts)
 *   <p>:{<r>}:log               Stream of the room's updates not yet in the snapshot (fields i, u)
 *   <p>:{<r>}:doc               Hash: u = snapshot (one merged update), upto = last stream id it
 *                               covers, v = version (bumped by every compaction)
 *   <p>:{<r>}:last              id of the newest stream entry (what the next message names as prev)
 *   <p>:<db>:{<r>}:ch           pub/sub channel of the room (updates, awareness, queries, goodbyes)
 *   <p>:{<r>}:versions:ids      Sorted set (all scores 0) of the room's version ids: lexicographic
 *                               order is creation order (persistence/version-id.ts), so a page is
 *                               one ZRANGEBYLEX
 *   <p>:{<r>}:versions:info     Hash: version id → description (persistence/version-value.ts
 *                               encodeVersionInfo), the only thing a listing reads
 *   <p>:{<r>}:versions:bytes    sum of the descriptions' `bytes`: the room's version budget in use
 *   <p>:{<r>}:version:<id>      String: one version's stored value, read only to serve that version
 *   <p>:{<r>}:versions          the layout before descriptions (Hash: id → value); moved into the
 *                               keys above the first time a version call touches the room
 *   <p>:revocations             Sorted set of revocations still in force (member: JSON, score: the
 *                               ms time they end); read by an instance whose subscriber reconnects
 *   <p>:<db>:revocations        pub/sub channel: POST /api/connections/revoke (cluster/revocations.ts)
 *
 * With --redis-retention-seconds, a room's keys expire that long after its last edit (refreshed
 * while an instance holds the room loaded); the instances' LevelDB keeps the document.
 *
 * Keys live in one DB, but pub/sub channels are global to the Redis server whatever DB a
 * connection selected: every channel name carries the DB number as well as the prefix, so two
 * deployments that differ in either never hear each other (issue #13).
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

export interface VersionKeys {
  ids: string
  info: string
  bytes: string
  legacy: string
  /** The key of one version's value is this followed by its id. */
  contentPrefix: string
}

export const DEFAULT_REDIS_PREFIX = 'weft'

/** A prefix is part of every key and channel name: a short word, never a glob or a hash tag. */
export const REDIS_PREFIX_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/

/**
 * A new data epoch: its creation time (base 36) and a random token. The relay and the shared state
 * both get-or-create the epoch with such a candidate, and the relay reads the time back to notice a
 * data loss that happened while its instance was down.
 */
export function epochCandidate(): string {
  return `${Date.now().toString(36)}.${randomBytes(12).toString('base64url')}`
}

/**
 * The short form of a data epoch that update messages carry (relay-message.ts): the first 32 bits
 * of its SHA-1, in decimal, as the publish script computes it (redis.sha1hex). Two epochs share a
 * tag once in 2^32; a receiver that sees another tag reads the epoch itself.
 */
export function epochTag(epoch: string): string {
  return String(parseInt(createHash('sha1').update(epoch, 'utf8').digest('hex').slice(0, 8), 16))
}

export function roomTag(room: string): string {
  return Buffer.from(room, 'utf8').toString('base64url')
}

/** The names one deployment uses on one Redis: keys under `<prefix>:`, channels under `<prefix>:<db>:`. */
export class RedisNamespace {
  readonly epochKey: string
  readonly askChannel: string

  constructor(
    readonly prefix: string = DEFAULT_REDIS_PREFIX,
    readonly db = 0,
  ) {
    if (!REDIS_PREFIX_PATTERN.test(prefix)) throw new RangeError(`invalid redis prefix ${JSON.stringify(prefix)}`)
    if (!Number.isSafeInteger(db) || db < 0) throw new RangeError(`invalid redis db ${db}`)
    this.epochKey = this.key('epoch')
    this.askChannel = this.channel('ask')
  }

  key(name: string): string {
    return `${this.prefix}:${name}`
  }

  channel(name: string): string {
    return `${this.prefix}:${this.db}:${name}`
  }

  room(room: string): RoomKeys {
    const tag = `{${roomTag(room)}}`
    return { log: this.key(`${tag}:log`), doc: this.key(`${tag}:doc`), last: this.key(`${tag}:last`), channel: this.channel(`${tag}:ch`) }
  }

  instance(instanceId: string): string {
    return this.key(`instance:${instanceId}`)
  }

  /** Revocations of access (cluster/revocations.ts): the set of those in force and their channel. */
  revocations(): { key: string; channel: string } {
    return { key: this.key('revocations'), channel: this.channel('revocations') }
  }

  versions(room: string): VersionKeys {
    const tag = `{${roomTag(room)}}`
    return {
      ids: this.key(`${tag}:versions:ids`),
      info: this.key(`${tag}:versions:info`),
      bytes: this.key(`${tag}:versions:bytes`),
      legacy: this.key(`${tag}:versions`),
      contentPrefix: this.key(`${tag}:version:`),
    }
  }
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
