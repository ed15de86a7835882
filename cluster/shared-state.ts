import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Redis } from 'ioredis'
import { VersionLimitError } from '../persistence/errors.js'
import { assertStorableRoomName, type VersionInfo, type VersionLimits, type VersionPageRequest, type VersionRecord, type VersionStore } from '../persistence/store.js'
import { assertVersionId, isVersionId } from '../persistence/version-id.js'
import { decodeVersionInfo, decodeVersionValue, encodeVersionInfo, encodeVersionValue } from '../persistence/version-value.js'
import { RedisNamespace, compareStreamIds, epochCandidate, roomTag, type VersionKeys } from './keys.js'
import { CLUSTER_DEFAULTS, type RelayLogger } from './tuning.js'
import { openRedisConnection, type CommandObserver } from './redis-connection.js'
import { ENSURE_EPOCH, type Script } from './scripts.js'

/**
 * Keys of the shared state, beside the relay's (cluster/keys.ts; `<p>`, `<db>` and `<r>` as there):
 *
 *   <p>:ticket:<sha256>      String, PX = the ticket's lifetime: the ticket's payload. The key
 *                            holds a hash of the ticket, so the key space (KEYS, SCAN, slowlog)
 *                            never shows a redeemable ticket.
 *   <p>:<db>:deletions       pub/sub channel: JSON {id, room, instance} per room deletion
 *   <p>:deletions:log        Stream of the same deletions (fields r = room, i = instance), capped
 *                            at ~DELETION_LOG_LENGTH entries: an instance whose subscriber was
 *                            disconnected reads what it missed from here after reconnecting.
 *   <p>:<db>:versions        pub/sub channel: JSON {room, id, instance} per version stored, so
 *                            the other instances keep a copy (persistence/version-replicas.ts)
 */
export function ticketKey(namespace: RedisNamespace, ticket: string): string {
  return namespace.key(`ticket:${createHash('sha256').update(ticket, 'utf8').digest('base64url')}`)
}

export function deletionsChannel(namespace: RedisNamespace): string {
  return namespace.channel('deletions')
}

export function versionsChannel(namespace: RedisNamespace): string {
  return namespace.channel('versions')
}

export function deletionsLogKey(namespace: RedisNamespace): string {
  return namespace.key('deletions:log')
}
const DELETION_LOG_LENGTH = 10_000
/** Deletion ids remembered to deliver each deletion once, whether it comes by channel, by catch-up or from this instance. */
const DELIVERED_IDS = 1024

function script(lua: string): Script {
  return { name: 'shared-state', lua, sha: createHash('sha1').update(lua).digest('hex') }
}

/**
 * Moves a room's versions from the layout before descriptions (one hash of whole values, which a
 * listing had to read in full) into the current keys, once. Every version script starts with it;
 * on a room already moved it costs one EXISTS. Values are kept byte for byte; the description is
 * the stored header (JSON ending in `}`) with the document's size added.
 * The keys of single versions are built here from a prefix of the same hash tag, so they are in
 * the slot of the declared keys.
 */
const MIGRATE_LEGACY = `
local function migrate(ids, info, bytes, legacy, prefix)
  if redis.call('EXISTS', legacy) == 0 then return end
  local all = redis.call('HGETALL', legacy)
  for i = 1, #all, 2 do
    local id, v = all[i], all[i + 1]
    local a, b, c, d = string.byte(v, 2, 5)
    local n = ((a * 256 + b) * 256 + c) * 256 + d
    local size = #v - 5 - n
    if not redis.call('ZSCORE', ids, id) then
      redis.call('ZADD', ids, 0, id)
      redis.call('HSET', info, id, string.sub(v, 6, 4 + n) .. ',"bytes":' .. size .. '}')
      redis.call('INCRBY', bytes, size)
      redis.call('SET', prefix .. id, v)
    end
  end
  redis.call('DEL', legacy)
end
`

/**
 * Stores one version, checking the room's limits in the same step (ARGV[5] = '' for none: a
 * re-published version is never refused). Replacing a version of the same id counts its size once.
 *   KEYS: ids, info, bytes, legacy, value    ARGV: id, description, value, document bytes, max count, max bytes, value prefix
 *   returns { 'ok' } or { 'count' | 'bytes', versions held, bytes held }
 */
const PUT_VERSION = script(`${MIGRATE_LEGACY}
migrate(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[7])
local old = redis.call('HGET', KEYS[2], ARGV[1])
local oldBytes = 0
if old then oldBytes = cjson.decode(old).bytes end
local held = redis.call('ZCARD', KEYS[1])
local heldBytes = tonumber(redis.call('GET', KEYS[3]) or '0')
local size = tonumber(ARGV[4])
if ARGV[5] ~= '' then
  local count = held
  if not old then count = count + 1 end
  if count > tonumber(ARGV[5]) then return { 'count', held, heldBytes } end
  if heldBytes + size - oldBytes > tonumber(ARGV[6]) then return { 'bytes', held, heldBytes } end
end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCRBY', KEYS[3], size - oldBytes)
redis.call('SET', KEYS[5], ARGV[3])
return { 'ok' }
`)

/**
 * One page of descriptions: never a stored value, so its cost is the page, not the documents.
 *   KEYS: ids, info, bytes, legacy    ARGV: after ('' = from the oldest), limit, value prefix
 *   returns { id, description, id, description, ... }
 */
const LIST_VERSIONS = script(`${MIGRATE_LEGACY}
migrate(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[3])
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local ids = redis.call('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then return {} end
local infos = redis.call('HMGET', KEYS[2], unpack(ids))
local out = {}
for i = 1, #ids do
  out[#out + 1] = ids[i]
  out[#out + 1] = infos[i] or ''
end
return out
`)

/**
 *   KEYS: ids, info, bytes, legacy    ARGV: id, value prefix    returns the stored value or nil
 */
const GET_VERSION = script(`${MIGRATE_LEGACY}
migrate(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2])
return redis.call('GET', ARGV[2] .. ARGV[1])
`)

/**
 * Removes one version (ARGV[1]) or, with ARGV[1] = '', all of the room's.
 *   KEYS: ids, info, bytes, legacy    ARGV: id or '', value prefix
 */
const DELETE_VERSIONS = script(`
if ARGV[1] == '' then
  local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
  for i = 1, #ids do redis.call('DEL', ARGV[2] .. ids[i]) end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  return 1
end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[3], cjson.decode(old).bytes)
redis.call('DEL', ARGV[2] .. ARGV[1])
return 1
`)

/** The four declared keys of every version script. */
function versionScriptKeys(keys: VersionKeys): string[] {
  return [keys.ids, keys.info, keys.bytes, keys.legacy]
}

/**
 * Appends the deletion to the capped log and announces it in one step, so the order on the
 * channel is the log's order. Touches only global keys (the room's keys are deleted before,
 * by one DEL within the room's hash slot), so it also runs on Redis Cluster.
 *   KEYS: deletions log    ARGV: room, instance, max length, channel    returns the entry id
 */
const ANNOUNCE_DELETION = script(`
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[1], 'i', ARGV[2])
redis.call('PUBLISH', ARGV[4], cjson.encode({ id = id, room = ARGV[1], instance = ARGV[2] }))
return id
`)

/** Redis could not be reached (down, reconnecting, timed out) or this object is closed: the HTTP layer answers 503. */
export class RedisUnavailableError extends Error {
  readonly code = 'CLUSTER_REDIS_UNAVAILABLE'
  constructor(cause: unknown) {
    super(`Redis is unavailable: ${errorText(cause)}`, { cause })
  }
}

/** A ticket issued twice: `issueTicket` never replaces a ticket that may already have been handed out. */
export class TicketExistsError extends Error {
  readonly code = 'CLUSTER_TICKET_EXISTS'
  constructor() {
    super('a ticket with this value was already issued')
  }
}

export interface SharedStateOptions {
  redisUrl: string
  instanceId: string
  /** --redis-prefix, as the relay's. */
  prefix?: string
  logger: RelayLogger
  /** Reconnect backoff cap, as the relay's (CLUSTER_DEFAULTS.maxRetryDelayMs). */
  maxRetryDelayMs?: number
  /** How long a call made before the first connection waits for it (as the relay's joinWaitMs); later calls fail at once while Redis is down. */
  firstConnectWaitMs?: number
  /** Deadline of QUIT in `close()`. */
  closeMs?: number
  /** How often the data epoch is read to notice that Redis lost its data (also checked at every reconnect); not used with `epochReads`. */
  epochCheckMs?: number
  /**
   * Reads of the epoch made anyway (the relay's check, every checkMs): when given, the shared state
   * has no timer of its own and reads the epoch only when one of these differs from its own
   * (issue 19: one command fewer per instance per second, and the relay notices a loss as soon).
   */
  epochReads?: EpochReads
  /** For metrics: each Redis command's name and latency (seconds), as the relay's. */
  onCommand?: CommandObserver
}

/** Something that reads the data epoch anyway (RedisRelay.onEpochRead) and tells each value read; null = Redis had none. */
export interface EpochReads {
  onEpochRead(listener: (epoch: string | null) => void): void
}

interface Deletion {
  id: string
  room: string
}

/**
 * What the instances on one Redis share besides the relay: saved versions, WebSocket tickets and
 * room deletions. Two connections of its own (`cmd` for commands, `sub` for the deletion channel),
 * with the relay's settings: nothing queues inside ioredis, so while Redis is down every call
 * rejects at once with RedisUnavailableError instead of waiting for a reconnect.
 *
 * Deletions are delivered to `onRoomDeleted` listeners once per deletion on every instance: the
 * sender delivers its own before `deleteRoom` resolves; the others hear the channel, and a
 * subscriber that was disconnected reads the deletions it missed from `<p>:deletions:log` when it
 * is back (as long as Redis kept its data).
 */
export class RedisSharedState implements VersionStore {
  readonly instanceId: string
  readonly namespace: RedisNamespace
  private readonly logger: RelayLogger
  private readonly cmd: Redis
  private readonly sub: Redis
  private readonly events = new EventEmitter()
  private readonly listeners: Array<(room: string) => void> = []
  /** Insertion-ordered; the oldest are forgotten past DELIVERED_IDS. */
  private readonly delivered = new Set<string>()
  /** Newest deletion id known; where the catch-up after a reconnect of `sub` starts. null = not yet read. */
  private deletionsSeen: string | null = null
  private readonly firstConnectWaitMs: number
  private readonly closeMs: number
  private everReady = false
  private closed = false
  private closing: Promise<void> | null = null
  private lastError = ''
  private readonly epochListeners: Array<(epoch: string) => void> = []
  /** The data epoch (cluster/keys.ts, RedisNamespace.epochKey) last read; null before the first read. */
  private epoch: string | null = null
  private readonly epochTimer: NodeJS.Timeout | null
  private readingEpoch = false
  private readonly deletionsChannel: string
  private readonly deletionsLog: string
  private readonly versionsChannel: string
  private readonly versionListeners: Array<(room: string, id: string) => void> = []

  constructor(options: SharedStateOptions) {
    this.instanceId = options.instanceId
    this.logger = options.logger
    this.firstConnectWaitMs = options.firstConnectWaitMs ?? CLUSTER_DEFAULTS.joinWaitMs
    this.closeMs = options.closeMs ?? CLUSTER_DEFAULTS.closeMs
    const maxRetryDelayMs = options.maxRetryDelayMs ?? CLUSTER_DEFAULTS.maxRetryDelayMs
    const connect = (role: string): Redis =>
      openRedisConnection(options.redisUrl, `weft:${options.instanceId}:shared-${role}`, maxRetryDelayMs, (err) => this.noteError(err), options.onCommand)
    this.cmd = connect('cmd')
    this.sub = connect('sub')
    this.namespace = new RedisNamespace(options.prefix, this.cmd.options.db ?? 0)
    this.deletionsChannel = deletionsChannel(this.namespace)
    this.deletionsLog = deletionsLogKey(this.namespace)
    this.versionsChannel = versionsChannel(this.namespace)
    this.events.setMaxListeners(0)
    this.cmd.on('ready', () => {
      this.everReady = true
      this.events.emit('ready')
      void this.checkEpoch(true)
    })
    if (options.epochReads === undefined) {
      this.epochTimer = setInterval(() => void this.checkEpoch(false), options.epochCheckMs ?? CLUSTER_DEFAULTS.checkMs)
      this.epochTimer.unref()
    } else {
      this.epochTimer = null
      // A read that is not ours: ours (get-or-create) follows only when the epoch is another.
      options.epochReads.onEpochRead((epoch) => {
        if (epoch !== this.epoch && !this.readingEpoch) void this.checkEpoch(false)
      })
    }
    this.sub.on('ready', () => void this.resubscribe())
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === this.versionsChannel) this.onVersionMessage(message)
      else this.onDeletionMessage(channel, message)
    })
  }

  // ---- versions ----------------------------------------------------------------------------

  async putVersion(room: string, version: VersionRecord, limits?: VersionLimits): Promise<void> {
    assertStorableRoomName(room)
    assertVersionId(version.id)
    const keys = this.namespace.versions(room)
    const value = encodeVersionValue(version)
    const info = encodeVersionInfo({ name: version.name, createdAt: version.createdAt, bytes: version.update.byteLength })
    const args = [
      version.id,
      asBuffer(info),
      asBuffer(value),
      String(version.update.byteLength),
      limits === undefined ? '' : String(limits.maxCount),
      limits === undefined ? '' : String(limits.maxBytes),
      keys.contentPrefix,
    ]
    const reply = (await this.command((redis) => this.evalScript(redis, PUT_VERSION, [...versionScriptKeys(keys), keys.contentPrefix + version.id], args))) as Array<Buffer | number>
    const status = String(reply[0])
    if (status === 'ok' || limits === undefined) return
    const held = Number(reply[1])
    const heldBytes = Number(reply[2])
    if (status === 'count') throw new VersionLimitError('count', room, `already holds ${held} versions, the most allowed (--max-versions-per-room ${limits.maxCount})`)
    throw new VersionLimitError('bytes', room, `would hold ${heldBytes + version.update.byteLength} bytes of versions, more than allowed (--max-version-bytes-per-room ${limits.maxBytes})`)
  }

  async listVersions(room: string, page: VersionPageRequest = {}): Promise<VersionInfo[]> {
    assertStorableRoomName(room)
    if (page.after !== undefined && !isVersionId(page.after)) return []
    const keys = this.namespace.versions(room)
    // ZRANGEBYLEX takes a count; "all" is the most a sorted set can hold.
    const limit = String(page.limit ?? 2 ** 32)
    const reply = (await this.command((redis) => this.evalScript(redis, LIST_VERSIONS, versionScriptKeys(keys), [page.after ?? '', limit, keys.contentPrefix]))) as Buffer[]
    const versions: VersionInfo[] = []
    for (let i = 0; i + 1 < reply.length; i += 2) versions.push(decodeVersionInfo((reply[i] as Buffer).toString('utf8'), reply[i + 1] as Buffer))
    return versions
  }

  async getVersion(room: string, id: string): Promise<VersionRecord | null> {
    assertStorableRoomName(room)
    if (!isVersionId(id)) return null
    const keys = this.namespace.versions(room)
    const value = (await this.command((redis) => this.evalScript(redis, GET_VERSION, versionScriptKeys(keys), [id, keys.contentPrefix]))) as Buffer | null
    return value === null ? null : decodeVersionValue(id, value)
  }

  /** Which of `ids` this Redis holds (descriptions only; migrates nothing: a version only in the old layout counts as missing). */
  async hasVersions(room: string, ids: readonly string[]): Promise<boolean[]> {
    assertStorableRoomName(room)
    if (ids.length === 0) return []
    const scores = await this.command((redis) => redis.zmscore(this.namespace.versions(room).ids, ...ids))
    return scores.map((score) => score !== null)
  }

  async deleteVersions(room: string): Promise<void> {
    assertStorableRoomName(room)
    const keys = this.namespace.versions(room)
    await this.command((redis) => this.evalScript(redis, DELETE_VERSIONS, versionScriptKeys(keys), ['', keys.contentPrefix]))
  }

  async deleteVersion(room: string, id: string): Promise<void> {
    assertStorableRoomName(room)
    assertVersionId(id)
    const keys = this.namespace.versions(room)
    await this.command((redis) => this.evalScript(redis, DELETE_VERSIONS, versionScriptKeys(keys), [id, keys.contentPrefix]))
  }

  async announceVersion(room: string, id: string): Promise<void> {
    await this.command((redis) => redis.publish(this.versionsChannel, JSON.stringify({ room, id, instance: this.instanceId })))
  }

  /** Calls `listener` for each version another instance announces (not for this instance's own). */
  onVersionAnnounced(listener: (room: string, id: string) => void): void {
    this.versionListeners.push(listener)
  }

  /** Rooms with versions in the current layout (a room only in the old one is moved when first touched). */
  async listVersionRooms(): Promise<string[]> {
    const rooms = new Set<string>()
    const pattern = `${this.namespace.key('{')}*}:versions:ids`
    let cursor = '0'
    do {
      const [next, keys] = await this.command((redis) => redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000))
      cursor = next
      for (const key of keys) {
        const tag = key.slice(pattern.indexOf('*'), key.length - '}:versions:ids'.length)
        const room = Buffer.from(tag, 'base64url').toString('utf8')
        if (roomTag(room) === tag) rooms.add(room)
      }
    } while (cursor !== '0')
    return [...rooms].sort()
  }

  /**
   * Calls `listener` with Redis's data epoch (cluster/keys.ts, RedisNamespace.epochKey) after every connection
   * and reconnection, and whenever a periodic read finds it changed (Redis restarted empty, or
   * was flushed). A listener that remembers the epoch it last published into knows when what it
   * stored in Redis is gone (persistence/version-replicas.ts `syncEpoch` for versions).
   */
  onEpoch(listener: (epoch: string) => void): void {
    this.epochListeners.push(listener)
  }

  // ---- tickets -----------------------------------------------------------------------------

  /** Rejects with TicketExistsError when the ticket was issued before and has not expired. */
  async issueTicket(ticket: string, payload: string, ttlMs: number): Promise<void> {
    if (ticket.length === 0) throw new RangeError('ticket must not be empty')
    if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new RangeError(`ticket ttlMs must be a positive integer: ${ttlMs}`)
    const reply = await this.command((redis) => redis.set(ticketKey(this.namespace, ticket), payload, 'PX', ttlMs, 'NX'))
    if (reply !== 'OK') throw new TicketExistsError()
  }

  /** The payload, once: GETDEL makes the read and the removal one step, so two instances cannot both redeem it. */
  async redeemTicket(ticket: string): Promise<string | null> {
    if (ticket.length === 0) return null
    return this.command((redis) => redis.getdel(ticketKey(this.namespace, ticket)))
  }

  // ---- room deletion -----------------------------------------------------------------------

  /**
   * Deletes the room's cluster copy (relay stream, snapshot, `last`) and its versions, then tells
   * every instance. When it resolves, this instance's listeners have run. A rejection after the
   * keys were deleted leaves the announcement unsent; calling again is safe (DEL is idempotent).
   */
  async deleteRoom(room: string): Promise<void> {
    assertStorableRoomName(room)
    const keys = this.namespace.room(room)
    const versions = this.namespace.versions(room)
    await this.command((redis) => redis.del(keys.log, keys.doc, keys.last))
    await this.command((redis) => this.evalScript(redis, DELETE_VERSIONS, versionScriptKeys(versions), ['', versions.contentPrefix]))
    const id = (await this.command((redis) =>
      this.evalScript(redis, ANNOUNCE_DELETION, [this.deletionsLog], [room, this.instanceId, String(DELETION_LOG_LENGTH), this.deletionsChannel]),
    )) as Buffer
    this.deliver({ id: id.toString('utf8'), room })
  }

  onRoomDeleted(listener: (room: string) => void): void {
    this.listeners.push(listener)
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  // ---- internals ---------------------------------------------------------------------------

  /**
   * Runs one command on `cmd`. Before the first connection it waits a little for it (a request in
   * the first moments after start should not fail); afterwards, Redis being down fails at once.
   * Errors that Redis itself replied (a bug, not an outage) pass through unchanged.
   */
  private async command<T>(run: (redis: Redis) => Promise<T>): Promise<T> {
    if (this.closed) throw new RedisUnavailableError('shared state is closed')
    if (this.cmd.status !== 'ready' && !this.everReady) await this.firstReady()
    if (this.cmd.status !== 'ready') throw new RedisUnavailableError(`connection ${this.cmd.status}${this.lastError === '' ? '' : `; last error: ${this.lastError}`}`)
    try {
      return await run(this.cmd)
    } catch (err) {
      if (err instanceof Error && err.name === 'ReplyError') throw err
      this.noteError(err)
      throw new RedisUnavailableError(err)
    }
  }

  private firstReady(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.events.off('ready', done)
        resolve()
      }
      const timer = setTimeout(done, this.firstConnectWaitMs)
      timer.unref()
      this.events.on('ready', done)
    })
  }

  private async evalScript(redis: Redis, script: Script, keys: string[], args: Array<string | Buffer>): Promise<unknown> {
    try {
      return await redis.callBuffer('evalsha', script.sha, keys.length, ...keys, ...args)
    } catch (err) {
      // The script cache is empty (first use, or Redis restarted): send the script itself once.
      if (!errorText(err).startsWith('NOSCRIPT')) throw err
      return await redis.callBuffer('eval', script.lua, keys.length, ...keys, ...args)
    }
  }

  /** On every (re)connect of `sub`: subscribe (autoResubscribe is off), then read what was missed while away. */
  private async resubscribe(): Promise<void> {
    try {
      const from = this.deletionsSeen
      await this.sub.subscribe(this.deletionsChannel, this.versionsChannel)
      if (this.closed) return
      if (from === null) {
        // First connection: deletions before this instance started are none of its business.
        const newest = await this.cmdOrNull((redis) => redis.xrevrange(this.deletionsLog, '+', '-', 'COUNT', 1))
        const id = newest?.[0]?.[0]
        if (id !== undefined) this.noteSeen(id)
        else this.deletionsSeen ??= '0-0'
        return
      }
      const missed = await this.cmdOrNull((redis) => redis.xrange(this.deletionsLog, `(${from}`, '+'))
      let delivered = 0
      for (const [id, fields] of missed ?? []) {
        const room = fieldOf(fields, 'r')
        if (room !== null && this.deliver({ id, room })) delivered++
      }
      if (delivered > 0) this.logger.info({ instance: this.instanceId, deletions: delivered }, 'shared state: delivered deletions missed while disconnected')
    } catch (err) {
      this.noteError(err)
      this.logger.warn({ instance: this.instanceId, err: errorText(err) }, 'shared state: subscribing to deletions failed; retrying at the next reconnect')
    }
  }

  /**
   * `sub` is in subscriber mode, so the catch-up reads go over `cmd`, waiting briefly for it: both
   * connections come back after the same outage.
   */
  private async cmdOrNull<T>(run: (redis: Redis) => Promise<T>): Promise<T | null> {
    const deadline = Date.now() + this.firstConnectWaitMs
    while (this.cmd.status !== 'ready') {
      if (this.closed || Date.now() > deadline) return null
      await new Promise((resolve) => setTimeout(resolve, 20).unref())
    }
    return run(this.cmd)
  }

  private onDeletionMessage(channel: string, message: string): void {
    if (channel !== this.deletionsChannel || this.closed) return
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return
    }
    const { id, room } = (parsed ?? {}) as Partial<Deletion>
    if (typeof id !== 'string' || typeof room !== 'string') return
    this.deliver({ id, room })
  }

  private onVersionMessage(message: string): void {
    if (this.closed) return
    let parsed: unknown
    try {
      parsed = JSON.parse(message)
    } catch {
      return
    }
    const { room, id, instance } = (parsed ?? {}) as { room?: unknown; id?: unknown; instance?: unknown }
    if (typeof room !== 'string' || typeof id !== 'string' || instance === this.instanceId || !isVersionId(id)) return
    for (const listener of this.versionListeners) {
      try {
        listener(room, id)
      } catch (err) {
        this.logger.error({ room, err: errorText(err) }, 'onVersionAnnounced listener failed')
      }
    }
  }

  /** Runs the listeners unless this deletion was delivered before; returns whether it ran them. */
  private deliver(deletion: Deletion): boolean {
    if (this.delivered.has(deletion.id) || this.closed) return false
    this.delivered.add(deletion.id)
    if (this.delivered.size > DELIVERED_IDS) {
      const oldest = this.delivered.values().next().value
      if (oldest !== undefined) this.delivered.delete(oldest)
    }
    this.noteSeen(deletion.id)
    for (const listener of this.listeners) {
      try {
        listener(deletion.room)
      } catch (err) {
        this.logger.error({ room: deletion.room, err: errorText(err) }, 'onRoomDeleted listener failed')
      }
    }
    return true
  }

  private noteSeen(id: string): void {
    if (this.deletionsSeen === null || compareStreamIds(id, this.deletionsSeen) > 0) this.deletionsSeen = id
  }

  private noteError(err: unknown): void {
    const text = errorText(err)
    if (text !== this.lastError) this.logger.debug({ err: text }, 'redis shared state error')
    this.lastError = text
  }

  /** The same get-or-create as the relay's, so both agree on one epoch whichever reads first after a loss. */
  private async checkEpoch(connected: boolean): Promise<void> {
    if (this.closed || this.cmd.status !== 'ready') return
    this.readingEpoch = true
    try {
      const reply = (await this.evalScript(this.cmd, ENSURE_EPOCH, [this.namespace.epochKey], [epochCandidate()])) as Buffer
      const epoch = reply.toString('utf8')
      const changed = epoch !== this.epoch
      if (changed && this.epoch !== null) this.logger.warn({ instance: this.instanceId }, 'shared state: redis lost its data')
      this.epoch = epoch
      if ((!changed && !connected) || this.closed) return
      for (const listener of this.epochListeners) {
        try {
          listener(epoch)
        } catch (err) {
          this.logger.error({ err: errorText(err) }, 'onEpoch listener failed')
        }
      }
    } catch (err) {
      this.noteError(err)
    } finally {
      this.readingEpoch = false
    }
  }

  private async shutdown(): Promise<void> {
    this.closed = true
    if (this.epochTimer !== null) clearInterval(this.epochTimer)
    this.events.emit('ready') // releases calls waiting for the first connection; they then reject
    await Promise.all([quit(this.cmd, this.closeMs), quit(this.sub, this.closeMs)])
  }
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

function fieldOf(fields: string[], name: string): string | null {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1] as string
  return null
}

async function quit(connection: Redis, deadlineMs: number): Promise<void> {
  if (connection.status === 'end') return
  const done = connection.status === 'ready' ? connection.quit().then(() => undefined, () => undefined) : Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, deadlineMs)))])
  clearTimeout(timer)
  connection.disconnect(false)
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
