import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Redis } from 'ioredis'
import { assertStorableRoomName, type VersionInfo, type VersionRecord, type VersionStore } from '../persistence/store.js'
import { assertVersionId, isVersionId } from '../persistence/version-id.js'
import { decodeVersionValue, encodeVersionValue, versionInfoFromHeader } from '../persistence/version-value.js'
import { RedisNamespace, compareStreamIds, roomTag } from './keys.js'
import { CLUSTER_DEFAULTS, type RelayLogger } from './redis-relay.js'
import { openRedisConnection } from './redis-connection.js'
import type { Script } from './scripts.js'

/**
 * Keys of the shared state, beside the relay's (cluster/keys.ts; `<p>`, `<db>` and `<r>` as there):
 *
 *   <p>:{<r>}:versions       Hash: version id → stored version (persistence/version-value.ts)
 *   <p>:ticket:<sha256>      String, PX = the ticket's lifetime: the ticket's payload. The key
 *                            holds a hash of the ticket, so the key space (KEYS, SCAN, slowlog)
 *                            never shows a redeemable ticket.
 *   <p>:<db>:deletions       pub/sub channel: JSON {id, room, instance} per room deletion
 *   <p>:deletions:log        Stream of the same deletions (fields r = room, i = instance), capped
 *                            at ~DELETION_LOG_LENGTH entries: an instance whose subscriber was
 *                            disconnected reads what it missed from here after reconnecting.
 */
export function versionsKey(namespace: RedisNamespace, room: string): string {
  return namespace.key(`{${roomTag(room)}}:versions`)
}

export function ticketKey(namespace: RedisNamespace, ticket: string): string {
  return namespace.key(`ticket:${createHash('sha256').update(ticket, 'utf8').digest('base64url')}`)
}

export function deletionsChannel(namespace: RedisNamespace): string {
  return namespace.channel('deletions')
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
 * Each version's id, header and total length, read inside Redis: a listing never ships the
 * documents. The header layout is persistence/version-value.ts (format byte, u32 BE length, JSON).
 *   KEYS: versions    returns { id, header, value length, id, header, value length, ... }
 */
const LIST_VERSIONS = script(`
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  local a, b, c, d = string.byte(v, 2, 5)
  local n = ((a * 256 + b) * 256 + c) * 256 + d
  out[#out + 1] = all[i]
  out[#out + 1] = string.sub(v, 6, 5 + n)
  out[#out + 1] = #v
end
return out
`)

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
  private readonly deletionsChannel: string
  private readonly deletionsLog: string

  constructor(options: SharedStateOptions) {
    this.instanceId = options.instanceId
    this.logger = options.logger
    this.firstConnectWaitMs = options.firstConnectWaitMs ?? CLUSTER_DEFAULTS.joinWaitMs
    this.closeMs = options.closeMs ?? CLUSTER_DEFAULTS.closeMs
    const maxRetryDelayMs = options.maxRetryDelayMs ?? CLUSTER_DEFAULTS.maxRetryDelayMs
    const connect = (role: string): Redis =>
      openRedisConnection(options.redisUrl, `weft:${options.instanceId}:shared-${role}`, maxRetryDelayMs, (err) => this.noteError(err))
    this.cmd = connect('cmd')
    this.sub = connect('sub')
    this.namespace = new RedisNamespace(options.prefix, this.cmd.options.db ?? 0)
    this.deletionsChannel = deletionsChannel(this.namespace)
    this.deletionsLog = deletionsLogKey(this.namespace)
    this.events.setMaxListeners(0)
    this.cmd.on('ready', () => {
      this.everReady = true
      this.events.emit('ready')
    })
    this.sub.on('ready', () => void this.resubscribe())
    this.sub.on('message', (channel: string, message: string) => this.onDeletionMessage(channel, message))
  }

  // ---- versions ----------------------------------------------------------------------------

  /** Overwrites a version stored under the same id, as the local stores do. */
  async putVersion(room: string, version: VersionRecord): Promise<void> {
    assertStorableRoomName(room)
    assertVersionId(version.id)
    const value = encodeVersionValue(version)
    await this.command((redis) => redis.hset(versionsKey(this.namespace, room), version.id, Buffer.from(value.buffer, value.byteOffset, value.byteLength)))
  }

  async listVersions(room: string): Promise<VersionInfo[]> {
    assertStorableRoomName(room)
    const reply = (await this.command((redis) => this.evalScript(redis, LIST_VERSIONS, [versionsKey(this.namespace, room)], []))) as Array<Buffer | number>
    const versions: VersionInfo[] = []
    for (let i = 0; i + 2 < reply.length; i += 3) {
      versions.push(versionInfoFromHeader((reply[i] as Buffer).toString('utf8'), reply[i + 1] as Buffer, Number(reply[i + 2])))
    }
    // A hash has no order; ids are fixed-width, time-ordered ASCII (persistence/version-id.ts).
    return versions.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  async getVersion(room: string, id: string): Promise<VersionRecord | null> {
    assertStorableRoomName(room)
    if (!isVersionId(id)) return null
    const value = await this.command((redis) => redis.hgetBuffer(versionsKey(this.namespace, room), id))
    return value === null ? null : decodeVersionValue(id, value)
  }

  async deleteVersions(room: string): Promise<void> {
    assertStorableRoomName(room)
    await this.command((redis) => redis.del(versionsKey(this.namespace, room)))
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
    await this.command((redis) => redis.del(keys.log, keys.doc, keys.last, versionsKey(this.namespace, room)))
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

  private async evalScript(redis: Redis, script: Script, keys: string[], args: string[]): Promise<unknown> {
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
      await this.sub.subscribe(this.deletionsChannel)
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

  private async shutdown(): Promise<void> {
    this.closed = true
    this.events.emit('ready') // releases calls waiting for the first connection; they then reject
    await Promise.all([quit(this.cmd, this.closeMs), quit(this.sub, this.closeMs)])
  }
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
