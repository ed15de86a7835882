import { EventEmitter } from 'node:events'
import type { Redis } from 'ioredis'
import * as Y from 'yjs'
import { mergeUpdatesInChunks } from '../persistence/chunked-merge.js'
import { decodeAwarenessUpdate, encodeAwarenessUpdate } from '../protocol/index.js'
import { RedisNamespace, compareStreamIds, epochCandidate, nextStreamId, type RoomKeys } from './keys.js'
import { decodeRelayMessage, encodeRelayMessage, type RelayMessage } from './relay-message.js'
import { openRedisConnection, type CommandObserver } from './redis-connection.js'
import type { RedisPersistence, Relay, RelayAwarenessEntry, RelayHealth, RelayRecovery, RelayRoomHandlers, RelayStats, StoredRooms } from './relay.js'
import { COMPACT_ROOM, ENSURE_EPOCH, PUBLISH_UPDATE, READ_ROOM, type Script } from './scripts.js'
import { PendingAsks, decodeAsk, encodeAsk, type AskMessage } from './ask.js'
import { missingFrom } from './state-diff.js'

const SCRIPTS = [PUBLISH_UPDATE, READ_ROOM, COMPACT_ROOM, ENSURE_EPOCH]

/** The subset of a pino logger the relay writes to. */
export interface RelayLogger {
  debug(obj: object, msg: string): void
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

/** Fault injection for tests: lets a test lose pub/sub messages the way Redis may. */
export interface RelayFaults {
  /** Return true to drop this incoming channel message before the relay sees it. */
  dropMessage?(room: string, message: RelayMessage): boolean
}

/** Timings and budgets of the Redis relay; units are in the names. */
export interface ClusterTuning {
  heartbeatMs: number
  instanceTtlMs: number
  checkMs: number
  compactAfterEntries: number
  heldBytes: number
  maxRetryDelayMs: number
  joinWaitMs: number
  closeMs: number
  retentionMs: number
  republishRoomsPerSecond: number
  askTimeoutMs: number
}

export const CLUSTER_DEFAULTS: Readonly<ClusterTuning> = Object.freeze({
  /** How often the heartbeat key is refreshed. */
  heartbeatMs: 1000,
  /** TTL of the heartbeat key: awareness of a dead instance goes within this plus one check (< 5 s, issue #6). */
  instanceTtlMs: 3000,
  /** How often `last` of every held room, the epoch and the heartbeats of remote instances are read (one pipeline). */
  checkMs: 1000,
  /** Stream length at which the publisher that reaches it folds the stream into the snapshot. */
  compactAfterEntries: 500,
  /** Budget for updates held while Redis is down; past it a room is re-synced from `localState()` instead. */
  heldBytes: 16 * 1024 * 1024,
  /** Reconnect backoff: 50 ms doubling, capped here, with jitter. The cap bounds convergence after a fault clears. */
  maxRetryDelayMs: 1000,
  /** How long `joinRoom` waits for the first connection before serving the room from local state alone. */
  joinWaitMs: 2000,
  /** Deadline of the goodbye messages in `close()`. */
  closeMs: 1000,
  /** A room's keys expire this long after its last edit (refreshed while held); 0 = never (--redis-retention-seconds). */
  retentionMs: 3 * 24 * 3600 * 1000,
  /** Stored rooms re-published per second after Redis lost its data (--republish-rooms-per-second). */
  republishRoomsPerSecond: 100,
  /** How long an ask waits for the other instances' answers before the room is served without them. */
  askTimeoutMs: 2000,
})

/** An epoch younger than this at an instance's first connection may be a loss it slept through: it re-publishes too. */
const RECENT_LOSS_MS = 10 * 60 * 1000
/** Asks of one instance in flight at once; more wait for a slot (new room names cost every instance a lookup). */
const MAX_ASKS = 32
/** Asks answered at once; more wait in line (each is a LevelDB read and maybe a publish). */
const MAX_ANSWERS = 8

export interface RedisRelayOptions extends Partial<ClusterTuning> {
  redisUrl: string
  instanceId: string
  /** --redis-prefix: the namespace of every key and channel (the DB number comes from `redisUrl`). */
  prefix?: string
  logger: RelayLogger
  faults?: RelayFaults
  /** For metrics: each Redis command's name and latency (seconds), failures included. */
  onCommand?: CommandObserver
}

type RoomState = 'joining' | 'active'

interface HeldRoom {
  name: string
  keys: RoomKeys
  handlers: RelayRoomHandlers
  state: RoomState
  /** Id of the newest stream entry applied with nothing missing before it; '' = none yet. */
  lastApplied: string
  /** Messages seen out of order (prev → id), applied but not yet part of the gapless chain. */
  ahead: Map<string, string>
  /** Messages that arrived while joining. */
  buffered: RelayMessage[]
  /** The cluster copy may lack local edits: read it whole and publish the difference. */
  needsFullSync: boolean
  healing: boolean
  compacting: boolean
  /** `lastApplied` at the previous check that found `last` ahead of it. */
  behindAt: string | null
  /** Remote instances whose awareness this room holds. */
  remoteInstances: Set<string>
}

interface ReadResult {
  upto: string
  version: string
  /** Snapshot, then stream entries, in order. */
  updates: Uint8Array[]
  /** Entries by other instances (what counts as healed). */
  foreign: number
  lastId: string
}

const MAX_AHEAD = 1024
/** Updates held per room before they are merged into one. */
const HOLD_MERGE_AT = 64

/**
 * The Redis relay (issue #6). Two connections: `cmd` for scripts, heartbeats and checks, `sub`
 * for the room channels. Nothing queues inside ioredis (no offline queue, no resend): while a
 * connection is down this class decides what happens (updates are held, awareness is dropped and
 * re-sent later), so a dead Redis can never grow memory without bound or replay stale commands.
 */
export class RedisRelay implements Relay {
  readonly instanceId: string
  readonly namespace: RedisNamespace
  private readonly options: Readonly<ClusterTuning>
  private readonly logger: RelayLogger
  private readonly faults: RelayFaults
  private readonly cmd: Redis
  private readonly sub: Redis
  private readonly events = new EventEmitter()
  private readonly rooms = new Map<string, HeldRoom>()
  private readonly channels = new Map<string, string>()
  private readonly held = new Map<string, { updates: Uint8Array[]; bytes: number }>()
  private heldBytes = 0
  private readonly counters = { published: 0, received: 0, healed: 0, commands: 0 }
  private lagMs = 0
  private cmdReady = false
  private subReady = false
  private downSince = Date.now()
  private lastError = 'connecting'
  private reportedUp = false
  private epoch: string | null = null
  /** Remote instances are not declared gone before this time (they may still be reconnecting). */
  private graceUntil = 0
  /** Until then a "no" to an ask is asked again (the others may still be resubscribing after a Redis restart). */
  private askGraceUntil = 0
  private reconciling = false
  private reconcileAgain = false
  private checking = false
  private closed = false
  private closing: Promise<void> | null = null
  /** Resolved at the next time the relay comes up (joins waiting for Redis). */
  private upWaiter: { promise: Promise<void>; resolve(): void } | null = null
  private everUp = false
  private readonly timers: NodeJS.Timeout[] = []
  private stored: StoredRooms | null = null
  private persistence: RedisPersistence = 'unknown'
  private readonly asks = new PendingAsks()
  private asksInFlight = 0
  private readonly askSlots: Array<() => void> = []
  private answering = 0
  private readonly answerQueue: Array<Extract<AskMessage, { kind: 'ask' }>> = []
  private readonly recoveryState = { republishing: false, resyncing: false, losses: 0, republishDone: 0, republishTotal: 0, republished: 0, asks: 0, found: 0, answered: 0 }
  private republishAgain = false
  private askSeq = 0

  constructor(options: RedisRelayOptions) {
    const { redisUrl, instanceId, logger, faults, prefix, onCommand, ...rest } = options
    this.instanceId = instanceId
    this.logger = logger
    this.faults = faults ?? {}
    this.options = Object.freeze({ ...CLUSTER_DEFAULTS, ...stripUndefined(rest) })
    const connect = (role: string): Redis =>
      openRedisConnection(redisUrl, `weft:${instanceId}:${role}`, this.options.maxRetryDelayMs, (err) => this.noteError(err), onCommand)
    this.cmd = connect('cmd')
    this.sub = connect('sub')
    this.namespace = new RedisNamespace(prefix, this.cmd.options.db ?? 0)
    this.watch(this.cmd, 'cmd')
    this.watch(this.sub, 'sub')
    this.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.onChannelMessage(channel.toString('utf8'), message))
    const heartbeat = setInterval(() => this.heartbeat(), this.options.heartbeatMs)
    const check = setInterval(() => void this.check(), this.options.checkMs)
    heartbeat.unref()
    check.unref()
    this.timers.push(heartbeat, check)
    if (this.options.retentionMs > 0) {
      // Keys of held rooms must not expire under their instances: refreshed well within the retention.
      const refresh = setInterval(() => void this.refreshRetention(), Math.max(1000, Math.floor(this.options.retentionMs / 3)))
      refresh.unref()
      this.timers.push(refresh)
    }
  }

  // ---- Relay -------------------------------------------------------------------------------

  async joinRoom(name: string, localState: Uint8Array | null, handlers: RelayRoomHandlers): Promise<Uint8Array | null> {
    if (this.closed) throw new Error('relay is closed')
    if (this.rooms.has(name)) throw new Error(`room ${JSON.stringify(name)} is already joined`)
    const keys = this.namespace.room(name)
    const room: HeldRoom = {
      name, keys, handlers, state: 'joining', lastApplied: '', ahead: new Map(), buffered: [],
      needsFullSync: false, healing: false, compacting: false, behindAt: null, remoteInstances: new Set(),
    }
    this.rooms.set(name, room)
    this.channels.set(keys.channel, name)
    // An instance with nothing of the room waits longer for Redis: serving the room empty would
    // hide it if it exists elsewhere (issue #13). One with a copy serves it after joinWaitMs.
    const nothingHere = localState === null || missingFrom(localState, null) === null
    const deadline = Date.now() + (nothingHere ? this.options.joinWaitMs * 5 : this.options.joinWaitMs)
    let cluster: Uint8Array | null = null
    for (;;) {
      // A room with a copy here waits only for the first connection (an outage later is served locally at once).
      if (!this.isUp() && (nothingHere || !this.everUp)) await Promise.race([this.nextUp(), delay(Math.max(0, deadline - Date.now()))])
      try {
        if (!this.isUp()) throw new Error('redis is down')
        // Subscribe before reading: whatever is published after the read is then buffered, not lost.
        await this.subscribe([keys.channel])
        let read = await this.read(room, '')
        // Redis has nothing of the room: it may have lost it (restarted empty, flushed, retention)
        // while other instances still store it. Their copies are in the stream once one says so.
        if (read.updates.length === 0 && (await this.askCluster(name))) read = await this.read(room, '')
        cluster = read.updates.length === 0 ? null : await mergeUpdatesInChunks(read.updates)
        room.lastApplied = read.lastId
        // From here to activation nothing awaits, so no message can slip between buffer and room.
        const newer: Uint8Array[] = []
        for (const message of room.buffered) {
          if (message.kind !== 'update' || compareStreamIds(message.id, room.lastApplied) <= 0) continue
          if (message.instance !== this.instanceId) newer.push(message.update)
          this.advance(room, message.prev, message.id)
        }
        if (newer.length > 0) cluster = Y.mergeUpdates(cluster === null ? newer : [cluster, ...newer])
        break
      } catch (err) {
        if (nothingHere && !this.closed && this.rooms.get(name) === room && Date.now() < deadline) {
          await delay(100)
          continue
        }
        // Serve from local state; the reconcile after the next connect reads the cluster copy and
        // publishes what this instance has that the cluster lacks.
        this.logger.warn({ room: name, err: errorText(err) }, 'cluster copy unavailable at join; serving local state')
        room.needsFullSync = true
        break
      }
    }
    room.buffered = []
    if (this.rooms.get(name) !== room) return cluster // left while joining
    room.state = 'active'
    if (!room.needsFullSync) {
      if (localState !== null) {
        const missing = missingFrom(localState, cluster)
        if (missing !== null) this.sendUpdate(name, missing)
      }
      this.publishControl(room, { kind: 'query', instance: this.instanceId, ts: Date.now() })
      if (room.ahead.size > 0) void this.heal(room)
    } else {
      this.scheduleReconcile()
    }
    return cluster
  }

  async leaveRoom(name: string): Promise<void> {
    const room = this.rooms.get(name)
    if (room === undefined) return
    this.rooms.delete(name)
    this.channels.delete(room.keys.channel)
    if (this.subReady) {
      this.counters.commands++
      await this.sub.unsubscribe(room.keys.channel).catch(() => undefined)
    }
  }

  publishUpdate(room: string, update: Uint8Array): void {
    if (this.closed) return
    if (!this.isUp()) this.hold(room, update)
    else this.sendUpdate(room, update)
  }

  publishAwareness(name: string, entries: readonly RelayAwarenessEntry[]): void {
    if (this.closed || entries.length === 0 || !this.isUp()) return
    const identities = entries.map((entry) => entry.identity ?? null)
    const message = encodeRelayMessage({ kind: 'awareness', instance: this.instanceId, ts: Date.now(), awareness: encodeAwarenessUpdate(entries), identities })
    this.counters.commands++
    this.cmd.publish(this.namespace.room(name).channel, message).catch((err: unknown) => this.noteError(err))
  }

  setStoredRooms(rooms: StoredRooms): void {
    this.stored = rooms
  }

  recovery(): RelayRecovery {
    return { persistence: this.persistence, ...this.recoveryState }
  }

  health(): RelayHealth {
    return this.isUp() ? { up: true, lagMs: Math.round(this.lagMs) } : { up: false, since: this.downSince, error: this.lastError }
  }

  stats(): RelayStats {
    return { ...this.counters, heldBytes: this.heldBytes }
  }

  on(event: 'health', listener: (health: RelayHealth) => void): void {
    this.events.on(event, listener)
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown()
    return this.closing
  }

  /**
   * Drops both connections and stops every timer without a word to the cluster: what the other
   * instances see when this process is killed (-9). For fault tests; `close()` is the real shutdown.
   */
  abort(): void {
    this.closed = true
    this.closing ??= Promise.resolve()
    for (const timer of this.timers) clearInterval(timer)
    this.cmd.disconnect(false)
    this.sub.disconnect(false)
  }

  // ---- connections -------------------------------------------------------------------------

  private watch(connection: Redis, role: 'cmd' | 'sub'): void {
    connection.on('ready', () => {
      if (role === 'cmd') {
        // Loaded before the relay counts as up, so that a burst of edits after a restart of Redis
        // does not become a burst of NOSCRIPT errors and EVAL fallbacks.
        const pipeline = this.cmd.pipeline()
        for (const script of SCRIPTS) pipeline.script('LOAD', script.lua)
        this.counters.commands += pipeline.length
        pipeline.exec().then(
          () => {
            this.cmdReady = this.cmd.status === 'ready'
            this.updateHealth()
            void this.checkPersistence()
          },
          (err: unknown) => this.noteError(err),
        )
        return
      }
      // Resubscribing is ours (autoResubscribe is off): the relay is up, and catches up, only
      // once every held room's channel is subscribed again.
      const channels = [this.namespace.askChannel, ...this.channels.keys()]
      const subscribed = this.subscribe(channels)
      subscribed.then(
        () => {
          this.subReady = this.sub.status === 'ready'
          this.updateHealth()
        },
        (err: unknown) => this.noteError(err),
      )
    })
    connection.on('close', () => {
      if (role === 'cmd') this.cmdReady = false
      else this.subReady = false
      this.updateHealth()
    })
  }

  private nextUp(): Promise<void> {
    if (this.upWaiter === null) {
      let resolve = (): void => {}
      const promise = new Promise<void>((r) => (resolve = r))
      this.upWaiter = { promise, resolve }
    }
    return this.upWaiter.promise
  }

  private isUp(): boolean {
    return this.cmdReady && this.subReady && !this.closed
  }

  private updateHealth(): void {
    const up = this.isUp()
    if (up === this.reportedUp) return
    this.reportedUp = up
    if (up) {
      this.logger.info({ instance: this.instanceId }, 'redis relay up')
      this.upWaiter?.resolve()
      this.upWaiter = null
      // Instances that lost their connection too get a few heartbeats' time to come back.
      this.graceUntil = Date.now() + this.options.instanceTtlMs
      // A reconnect is likely everyone's (Redis restarted): the others may not be listening to asks yet.
      if (this.everUp) this.askGraceUntil = this.graceUntil
      this.everUp = true
      this.events.emit('up')
      this.heartbeat()
      this.scheduleReconcile()
    } else {
      this.downSince = Date.now()
      if (!this.closed) this.logger.warn({ instance: this.instanceId, err: this.lastError }, 'redis relay down; holding updates')
    }
    this.events.emit('health', this.health())
  }

  private noteError(err: unknown): void {
    const text = errorText(err)
    if (text !== this.lastError) this.logger.debug({ err: text }, 'redis relay error')
    this.lastError = text
  }

  private async subscribe(channels: string[]): Promise<void> {
    this.counters.commands++
    await this.sub.subscribe(...channels)
  }

  private async evalScript(script: Script, keys: string[], args: Array<string | Uint8Array>): Promise<unknown> {
    const argv = args.map((arg) => (typeof arg === 'string' ? arg : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength)))
    this.counters.commands++
    try {
      return await this.cmd.callBuffer('evalsha', script.sha, keys.length, ...keys, ...argv)
    } catch (err) {
      // The script cache is empty after Redis restarted: send the script itself once.
      if (!errorText(err).startsWith('NOSCRIPT')) throw err
      this.counters.commands++
      return await this.cmd.callBuffer('eval', script.lua, keys.length, ...keys, ...argv)
    }
  }

  // ---- publishing --------------------------------------------------------------------------

  private sendUpdate(name: string, update: Uint8Array): void {
    const keys = this.namespace.room(name)
    this.evalScript(PUBLISH_UPDATE, [keys.log, keys.last, keys.doc], [this.instanceId, update, String(Date.now()), keys.channel, String(this.options.retentionMs)]).then(
      (reply) => {
        this.counters.published++
        const length = Number((reply as unknown[])[2])
        const room = this.rooms.get(name)
        if (room !== undefined && length >= this.options.compactAfterEntries && !room.compacting) void this.compact(room)
      },
      (err: unknown) => {
        // Whether it reached Redis is unknown; sending it again is harmless (updates are idempotent).
        this.noteError(err)
        this.hold(name, update)
      },
    )
  }

  private hold(name: string, update: Uint8Array): void {
    const held = this.held.get(name) ?? { updates: [], bytes: 0 }
    held.updates.push(update)
    held.bytes += update.byteLength
    this.heldBytes += update.byteLength
    if (held.updates.length >= HOLD_MERGE_AT) {
      const merged = Y.mergeUpdates(held.updates)
      this.heldBytes += merged.byteLength - held.bytes
      held.updates = [merged]
      held.bytes = merged.byteLength
    }
    this.held.set(name, held)
    if (this.heldBytes > this.options.heldBytes) {
      // Over budget: forget what is held for this room and re-sync it from the local document
      // later. A room not held any more publishes its local state when it next joins.
      this.dropHeld(name)
      const room = this.rooms.get(name)
      if (room !== undefined) room.needsFullSync = true
      this.logger.warn({ room: name, budgetBytes: this.options.heldBytes }, 'held updates over budget; room will re-sync from local state')
    }
  }

  private dropHeld(name: string): void {
    const held = this.held.get(name)
    if (held === undefined) return
    this.heldBytes -= held.bytes
    this.held.delete(name)
  }

  private async flushHeld(): Promise<void> {
    for (const name of [...this.held.keys()]) {
      if (!this.isUp()) return
      const held = this.held.get(name)
      if (held === undefined) continue
      this.dropHeld(name)
      const update = held.updates.length === 1 ? (held.updates[0] as Uint8Array) : await mergeUpdatesInChunks(held.updates)
      this.sendUpdate(name, update)
    }
  }

  private publishControl(room: HeldRoom, message: RelayMessage): void {
    if (!this.isUp()) return
    this.counters.commands++
    this.cmd.publish(room.keys.channel, encodeRelayMessage(message)).catch((err: unknown) => this.noteError(err))
  }

  private resendAwareness(room: HeldRoom): void {
    const entries = room.handlers.localAwareness()
    if (entries.length > 0) this.publishAwareness(room.name, entries)
    this.publishControl(room, { kind: 'query', instance: this.instanceId, ts: Date.now() })
  }

  // ---- receiving ---------------------------------------------------------------------------

  private onChannelMessage(channel: string, bytes: Buffer): void {
    if (channel === this.namespace.askChannel) {
      this.onAskMessage(bytes.toString('utf8'))
      return
    }
    const name = this.channels.get(channel)
    const room = name === undefined ? undefined : this.rooms.get(name)
    if (room === undefined || this.closed) return
    const message = decodeRelayMessage(bytes)
    if (message === null) return
    if (this.faults.dropMessage?.(room.name, message) === true) return
    if (room.state === 'joining') {
      room.buffered.push(message)
      return
    }
    if (message.instance !== this.instanceId) this.lagMs = this.lagMs * 0.8 + Math.max(0, Date.now() - message.ts) * 0.2
    try {
      this.apply(room, message)
    } catch (err) {
      this.logger.error({ room: room.name, err: errorText(err) }, 'room handler failed on a relayed message')
    }
  }

  private apply(room: HeldRoom, message: RelayMessage): void {
    switch (message.kind) {
      case 'update': {
        if (compareStreamIds(message.id, room.lastApplied) <= 0) return
        if (message.instance !== this.instanceId) {
          this.counters.received++
          room.handlers.onUpdate(message.update, message.ts)
        }
        // Own messages carry no news but keep the chain gapless.
        if (!this.advance(room, message.prev, message.id)) void this.heal(room)
        return
      }
      case 'awareness': {
        if (message.instance === this.instanceId) return
        let entries: RelayAwarenessEntry[]
        try {
          entries = decodeAwarenessUpdate(message.awareness)
        } catch {
          return
        }
        const identities = message.identities
        if (identities !== undefined && identities.length === entries.length) entries.forEach((entry, i) => (entry.identity = identities[i] ?? null))
        room.remoteInstances.add(message.instance)
        room.handlers.onAwareness(entries, message.instance)
        return
      }
      case 'query': {
        if (message.instance === this.instanceId) return
        const entries = room.handlers.localAwareness()
        if (entries.length > 0) this.publishAwareness(room.name, entries)
        return
      }
      case 'gone': {
        if (message.instance === this.instanceId || !room.remoteInstances.delete(message.instance)) return
        room.handlers.onInstanceGone(message.instance)
        return
      }
    }
  }

  /** Extends the gapless chain with (prev → id); returns false when something before it is missing. */
  private advance(room: HeldRoom, prev: string, id: string): boolean {
    if (prev !== room.lastApplied) {
      if (room.ahead.size >= MAX_AHEAD) room.ahead.clear()
      room.ahead.set(prev, id)
      return false
    }
    room.lastApplied = id
    this.followAhead(room)
    return true
  }

  private followAhead(room: HeldRoom): void {
    for (let next = room.ahead.get(room.lastApplied); next !== undefined; next = room.ahead.get(room.lastApplied)) {
      room.ahead.delete(room.lastApplied)
      room.lastApplied = next
    }
    for (const [prev, id] of room.ahead) {
      if (compareStreamIds(id, room.lastApplied) <= 0) room.ahead.delete(prev)
    }
  }

  // ---- healing -----------------------------------------------------------------------------

  private read(room: HeldRoom, after: string): Promise<ReadResult> {
    return this.readKeys(room.keys, after)
  }

  private async readKeys(keys: RoomKeys, after: string): Promise<ReadResult> {
    const reply = (await this.evalScript(READ_ROOM, [keys.doc, keys.log], [after])) as [Buffer, Buffer, Buffer | null, Array<[Buffer, Buffer[]]>]
    const [upto, version, snapshot, entries] = reply
    const updates: Uint8Array[] = snapshot === null ? [] : [snapshot]
    let foreign = 0
    let lastId = after
    if (upto.length > 0 && compareStreamIds(upto.toString(), lastId) > 0) lastId = upto.toString()
    for (const [id, fields] of entries) {
      let instance = ''
      for (let i = 0; i + 1 < fields.length; i += 2) {
        const field = (fields[i] as Buffer).toString()
        if (field === 'u') updates.push(fields[i + 1] as Buffer)
        else if (field === 'i') instance = (fields[i + 1] as Buffer).toString('utf8')
      }
      if (instance !== this.instanceId) foreign++
      lastId = id.toString()
    }
    return { upto: upto.toString(), version: version.toString(), updates, foreign, lastId }
  }

  /** Fetches and applies everything after `lastApplied` (a message was lost, or the connection was). */
  private async heal(room: HeldRoom): Promise<void> {
    if (room.healing || room.state !== 'active' || !this.isUp()) return
    room.healing = true
    let progressed = false
    try {
      const from = room.lastApplied
      const read = await this.read(room, from)
      if (this.rooms.get(room.name) !== room) return
      if (read.updates.length > 0) {
        const merged = read.updates.length === 1 ? (read.updates[0] as Uint8Array) : await mergeUpdatesInChunks(read.updates)
        room.handlers.onUpdate(merged)
        this.counters.healed += read.foreign
      }
      if (compareStreamIds(read.lastId, room.lastApplied) > 0) {
        room.lastApplied = read.lastId
        progressed = true
      }
      this.followAhead(room)
      room.behindAt = null
    } catch (err) {
      this.noteError(err)
    } finally {
      room.healing = false
    }
    // A message lost while this read was in flight left a gap behind the messages that followed.
    if (progressed && room.ahead.size > 0) void this.heal(room)
  }

  /** Reads the cluster copy whole, applies it, and publishes what the local document has beyond it. */
  private async fullSync(room: HeldRoom): Promise<void> {
    const read = await this.read(room, '')
    if (this.rooms.get(room.name) !== room) return
    const cluster = read.updates.length === 0 ? null : await mergeUpdatesInChunks(read.updates)
    if (cluster !== null) {
      room.handlers.onUpdate(cluster)
      this.counters.healed += read.foreign
    }
    if (compareStreamIds(read.lastId, room.lastApplied) > 0 || room.lastApplied === '') room.lastApplied = read.lastId
    this.followAhead(room)
    // The local document already holds every update held for this room.
    this.dropHeld(room.name)
    const missing = missingFrom(room.handlers.localState(), cluster)
    if (missing !== null) this.sendUpdate(room.name, missing)
    room.needsFullSync = false
  }

  private async compact(room: HeldRoom): Promise<void> {
    room.compacting = true
    try {
      const read = await this.read(room, '')
      if (read.updates.length === 0 || read.lastId === '' || read.lastId === read.upto) return
      const snapshot = await mergeUpdatesInChunks(read.updates)
      const applied = await this.evalScript(COMPACT_ROOM, [room.keys.doc, room.keys.log], [read.version, snapshot, read.lastId, nextStreamId(read.lastId), String(this.options.retentionMs)])
      this.logger.debug({ room: room.name, upto: read.lastId, bytes: snapshot.byteLength, applied: Number(applied) === 1 }, 'room stream compacted')
    } catch (err) {
      this.noteError(err)
    } finally {
      room.compacting = false
    }
  }

  // ---- periodic work -----------------------------------------------------------------------

  private heartbeat(): void {
    if (!this.cmdReady || this.closed) return
    this.counters.commands++
    this.cmd.set(this.namespace.instance(this.instanceId), String(Date.now()), 'PX', this.options.instanceTtlMs).catch((err: unknown) => this.noteError(err))
  }

  private scheduleReconcile(): void {
    if (this.reconciling) {
      this.reconcileAgain = true
      return
    }
    void this.reconcile()
  }

  /** After a (re)connect or a lost epoch: catch every held room up and send what was held. */
  private async reconcile(): Promise<void> {
    this.reconciling = true
    try {
      do {
        this.reconcileAgain = false
        if (!this.isUp()) return
        await this.checkEpoch()
        for (const room of [...this.rooms.values()]) {
          if (!this.isUp()) return
          if (room.state !== 'active' || this.rooms.get(room.name) !== room) continue
          if (room.needsFullSync) await this.fullSync(room)
          else await this.heal(room)
          this.resendAwareness(room)
        }
        if (![...this.rooms.values()].some((room) => room.needsFullSync)) this.recoveryState.resyncing = false
        await this.flushHeld()
      } while (this.reconcileAgain)
    } catch (err) {
      this.noteError(err)
      this.logger.warn({ err: errorText(err) }, 'redis relay reconcile failed; retrying at the next check')
      this.reconcileAgain = true
    } finally {
      this.reconciling = false
    }
  }

  private async checkEpoch(): Promise<void> {
    // The epoch carries its creation time, so an instance that was down when Redis lost its data
    // still notices the loss when it comes back soon after.
    const candidate = epochCandidate()
    const reply = await this.evalScript(ENSURE_EPOCH, [this.namespace.epochKey], [candidate])
    const epoch = (reply as Buffer).toString()
    const createdAt = parseInt(epoch.split('.')[0] ?? '', 36)
    const recentLoss = this.epoch === null && Number.isFinite(createdAt) && Date.now() - createdAt < RECENT_LOSS_MS
    // A new epoch (this instance's own candidate, another than the one it knew, or one made
    // while it was away) means Redis had no data: every room stored here goes back, not only
    // the loaded ones.
    const lost = epoch === candidate || (this.epoch !== null && epoch !== this.epoch)
    // Just now, the others may not listen to asks yet; a loss slept through is old news to them.
    if (lost) this.askGraceUntil = Date.now() + this.options.instanceTtlMs
    if (lost || recentLoss) this.republishStored()
    if (this.epoch !== null && epoch !== this.epoch) {
      // Redis lost its data (restarted empty, or flushed): every held room republishes its state.
      this.logger.warn({ instance: this.instanceId }, 'redis lost its data; re-publishing every held room')
      this.recoveryState.losses++
      this.recoveryState.resyncing = true
      this.graceUntil = Date.now() + this.options.instanceTtlMs
      for (const room of this.rooms.values()) {
        room.needsFullSync = true
        room.lastApplied = ''
        room.ahead.clear()
      }
    }
    this.epoch = epoch
  }

  /** One pipeline: the epoch, `last` of every held room, the heartbeats of instances whose awareness is held. */
  private async check(): Promise<void> {
    if (!this.isUp() || this.checking) return
    if (this.reconciling) return
    if (this.reconcileAgain) {
      this.scheduleReconcile()
      return
    }
    this.checking = true
    try {
      const rooms = [...this.rooms.values()].filter((room) => room.state === 'active')
      const instances = new Set<string>()
      for (const room of rooms) for (const id of room.remoteInstances) instances.add(id)
      const remote = [...instances]
      const pipeline = this.cmd.pipeline().get(this.namespace.epochKey)
      if (rooms.length > 0) pipeline.mget(...rooms.map((room) => room.keys.last))
      if (remote.length > 0) pipeline.mget(...remote.map((id) => this.namespace.instance(id)))
      this.counters.commands += pipeline.length
      const results = (await pipeline.exec()) ?? []
      for (const [err] of results) if (err) throw err
      const epoch = results[0]?.[1] as string | null
      if (epoch !== this.epoch) {
        this.scheduleReconcile()
        return
      }
      if (rooms.length > 0) {
        const lasts = results[1]?.[1] as Array<string | null>
        rooms.forEach((room, i) => this.checkBehind(room, lasts[i] ?? null))
      }
      if (remote.length > 0 && Date.now() >= this.graceUntil) {
        const beats = results[results.length - 1]?.[1] as Array<string | null>
        remote.forEach((id, i) => {
          if (beats[i] === null) this.instanceGone(id)
        })
      }
      if (this.held.size > 0) await this.flushHeld()
    } catch (err) {
      this.noteError(err)
    } finally {
      this.checking = false
    }
  }

  /**
   * `last` ahead of what was applied twice in a row with no progress in between: the newest
   * message was lost (a gap before a later message would have been noticed when it came).
   */
  private checkBehind(room: HeldRoom, last: string | null): void {
    if (last === null || room.healing || compareStreamIds(last, room.lastApplied) <= 0) {
      room.behindAt = null
      return
    }
    if (room.behindAt === room.lastApplied) void this.heal(room)
    else room.behindAt = room.lastApplied
  }

  private instanceGone(id: string): void {
    this.logger.info({ instance: id }, 'instance heartbeat expired; removing its awareness')
    for (const room of this.rooms.values()) {
      if (!room.remoteInstances.delete(id)) continue
      try {
        room.handlers.onInstanceGone(id)
      } catch (err) {
        this.logger.error({ room: room.name, err: errorText(err) }, 'room handler failed on onInstanceGone')
      }
    }
  }

  // ---- recovery (issue #13) ------------------------------------------------------------------

  /** Reads how the Redis keeps its data; warns once when it keeps none (a restart loses every room's cluster copy). */
  private async checkPersistence(): Promise<void> {
    let aof: boolean | null = null
    let rdb: boolean | null = null
    try {
      this.counters.commands++
      const match = /aof_enabled:(\d)/.exec(await this.cmd.info('persistence'))
      if (match !== null) aof = match[1] === '1'
      this.counters.commands++
      const reply = (await this.cmd.config('GET', 'save')) as string[]
      rdb = (reply[1] ?? '').trim() !== ''
    } catch (err) {
      // CONFIG is often renamed away on managed Redis: what is known stays, the rest is unknown.
      this.noteError(err)
    }
    const mode: RedisPersistence =
      aof === null ? 'unknown' : aof && rdb === true ? 'aof+rdb' : aof ? 'aof' : rdb === true ? 'rdb' : rdb === false ? 'none' : 'unknown'
    if (mode === 'none' && this.persistence !== 'none') {
      this.logger.warn(
        { instance: this.instanceId },
        'redis keeps neither an AOF nor RDB snapshots: a restart empties it, and the instances then re-publish every stored room (see "Redis persistence" in the README)',
      )
    }
    this.persistence = mode
  }

  /**
   * Asks the other instances for a room Redis does not have (cluster/ask.ts). Resolves true once
   * one of them has published it into the room's stream; false when none has it (a new room) or
   * none answered within askTimeoutMs.
   */
  private async askCluster(room: string): Promise<boolean> {
    // Right after Redis came back (or this instance started) the other instances may not have
    // resubscribed yet: a "no" then is not final, so the ask is repeated until the grace ends.
    for (;;) {
      if (await this.askOnce(room)) return true
      if (this.closed || Date.now() >= this.askGraceUntil) return false
      await delay(Math.min(250, Math.max(0, this.askGraceUntil - Date.now())))
    }
  }

  private async askOnce(room: string): Promise<boolean> {
    if (this.asksInFlight >= MAX_ASKS) await new Promise<void>((resolve) => this.askSlots.push(resolve))
    this.asksInFlight++
    const id = `${this.instanceId}:${++this.askSeq}`
    try {
      const answered = this.asks.wait(id, this.options.askTimeoutMs)
      this.counters.commands++
      const receivers = await this.cmd.publish(this.namespace.askChannel, encodeAsk({ kind: 'ask', id, room, from: this.instanceId }))
      // This instance's own subscriber is among the receivers.
      const others = receivers - (this.subReady ? 1 : 0)
      if (others <= 0) {
        this.asks.clear(id)
        return false
      }
      this.recoveryState.asks++
      this.asks.expect(id, others)
      const found = await answered
      if (found) this.recoveryState.found++
      return found
    } catch (err) {
      this.asks.clear(id)
      throw err
    } finally {
      this.asksInFlight--
      this.askSlots.shift()?.()
    }
  }

  private onAskMessage(text: string): void {
    const message = decodeAsk(text)
    if (message === null || message.from === this.instanceId || this.closed) return
    if (message.kind === 'answer') {
      this.asks.answer(message.id, message.from, message.had)
      return
    }
    // Past this backlog the asker's deadline answers for us; the queue never grows without bound.
    if (this.answerQueue.length >= MAX_ASKS * 8) return
    this.answerQueue.push(message)
    this.pumpAnswers()
  }

  private pumpAnswers(): void {
    while (this.answering < MAX_ANSWERS && this.answerQueue.length > 0) {
      const ask = this.answerQueue.shift() as Extract<AskMessage, { kind: 'ask' }>
      this.answering++
      void this.answer(ask).finally(() => {
        this.answering--
        this.pumpAnswers()
      })
    }
  }

  /** Publishes this instance's copy of the room (if it has one) before saying so: the asker reads it next. */
  private async answer(ask: Extract<AskMessage, { kind: 'ask' }>): Promise<void> {
    let had = false
    try {
      const held = this.rooms.get(ask.room)
      const state = held !== undefined && held.state === 'active' ? held.handlers.localState() : await this.stored?.load(ask.room)
      if (state !== undefined && state !== null) had = await this.publishState(ask.room, state)
    } catch (err) {
      this.noteError(err)
      this.logger.warn({ room: ask.room, err: errorText(err) }, 'answering an ask for a room failed')
    }
    if (had) this.recoveryState.answered++
    if (this.closed || !this.cmdReady) return
    this.counters.commands++
    await this.cmd
      .publish(this.namespace.askChannel, encodeAsk({ kind: 'answer', id: ask.id, from: this.instanceId, had }))
      .catch((err: unknown) => this.noteError(err))
  }

  /** Publishes what `state` has that the cluster's copy of `room` lacks; false when `state` is empty. */
  private async publishState(room: string, state: Uint8Array): Promise<boolean> {
    if (missingFrom(state, null) === null) return false
    const keys = this.namespace.room(room)
    const read = await this.readKeys(keys, '')
    const cluster = read.updates.length === 0 ? null : await mergeUpdatesInChunks(read.updates)
    const missing = missingFrom(state, cluster)
    if (missing !== null) {
      await this.evalScript(PUBLISH_UPDATE, [keys.log, keys.last, keys.doc], [this.instanceId, missing, String(Date.now()), keys.channel, String(this.options.retentionMs)])
      this.counters.published++
    }
    return true
  }

  private republishStored(): void {
    if (this.stored === null || this.closed) return
    if (this.recoveryState.republishing) {
      this.republishAgain = true
      return
    }
    void this.republish(this.stored)
  }

  /**
   * Puts every room stored here back into Redis, at most republishRoomsPerSecond, in the
   * background (the instance serves meanwhile; rooms asked for in between come through the ask).
   * Held rooms are left to the reconcile, which re-syncs them whole.
   */
  private async republish(stored: StoredRooms): Promise<void> {
    const progress = this.recoveryState
    progress.republishing = true
    try {
      do {
        this.republishAgain = false
        const rooms = await stored.list()
        progress.republishTotal = rooms.length
        progress.republishDone = 0
        if (rooms.length > 0) this.logger.warn({ instance: this.instanceId, rooms: rooms.length, perSecond: this.options.republishRoomsPerSecond }, 'redis had no data; re-publishing every stored room')
        const gapMs = 1000 / this.options.republishRoomsPerSecond
        const started = Date.now()
        for (const room of rooms) {
          if (this.closed || this.republishAgain) break
          // Paced from the start: one slow room does not lower the rate of the rest.
          const due = started + progress.republishDone * gapMs
          if (due > Date.now()) await delay(due - Date.now())
          if (!this.rooms.has(room)) await this.republishRoom(stored, room)
          progress.republishDone++
          progress.republished++
        }
        if (rooms.length > 0 && !this.republishAgain) this.logger.info({ instance: this.instanceId, rooms: progress.republishDone }, 'stored rooms re-published')
      } while (this.republishAgain && !this.closed)
    } catch (err) {
      this.noteError(err)
      this.logger.error({ err: errorText(err) }, 're-publishing stored rooms failed; rooms missing from redis are found by asking the cluster')
    } finally {
      progress.republishing = false
    }
  }

  /** One room, retried while Redis comes and goes (a few tries: the ask covers what is left). */
  private async republishRoom(stored: StoredRooms, room: string): Promise<void> {
    for (let attempt = 0; attempt < 5 && !this.closed; attempt++) {
      while (!this.isUp() && !this.closed) await delay(100)
      try {
        const state = await stored.load(room)
        if (state !== null) await this.publishState(room, state)
        return
      } catch (err) {
        this.noteError(err)
      }
    }
    this.logger.warn({ room }, 'a stored room could not be re-published')
  }

  /** Held rooms keep their keys: an idle room with clients must not expire under them. */
  private async refreshRetention(): Promise<void> {
    if (!this.isUp()) return
    const rooms = [...this.rooms.values()].filter((room) => room.state === 'active')
    if (rooms.length === 0) return
    const pipeline = this.cmd.pipeline()
    for (const room of rooms) for (const key of [room.keys.log, room.keys.last, room.keys.doc]) pipeline.pexpire(key, this.options.retentionMs)
    this.counters.commands += pipeline.length
    await pipeline.exec().catch((err: unknown) => this.noteError(err))
  }

  // ---- shutdown ----------------------------------------------------------------------------

  private async shutdown(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer)
    this.asks.clear()
    if (this.isUp()) {
      const pipeline = this.cmd.pipeline()
      for (const room of this.rooms.values()) {
        pipeline.publish(room.keys.channel, encodeRelayMessage({ kind: 'gone', instance: this.instanceId, ts: Date.now() }))
      }
      pipeline.del(this.namespace.instance(this.instanceId))
      this.counters.commands += pipeline.length
      await Promise.race([pipeline.exec().catch(() => undefined), delay(this.options.closeMs)])
    }
    this.closed = true
    this.rooms.clear()
    this.channels.clear()
    await Promise.all([quit(this.cmd, this.options.closeMs), quit(this.sub, this.options.closeMs)])
    this.updateHealth()
  }
}

async function quit(connection: Redis, deadlineMs: number): Promise<void> {
  if (connection.status === 'end') return
  const done = connection.status === 'ready' ? connection.quit().then(() => undefined, () => undefined) : Promise.resolve()
  await Promise.race([done, delay(deadlineMs)])
  connection.disconnect(false)
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>
}
