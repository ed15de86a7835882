import { EventEmitter } from 'node:events'
import type { Redis } from 'ioredis'
import * as Y from 'yjs'
import { mergeUpdatesInChunks, missingFrom } from '../crdt/index.js'
import { decodeAwarenessUpdate, encodeAwarenessUpdate } from '../protocol/index.js'
import { ClusterAsks } from './cluster-asks.js'
import { RedisNamespace, epochCandidate, epochTag } from './keys.js'
import { OutageBuffer } from './outage-buffer.js'
import { decodeRelayMessage, encodeRelayMessage, type RelayMessage } from './relay-message.js'
import { RelayRoom } from './relay-room.js'
import { RoomStreams, type CompactionWrite, type StreamRead, type TickRead } from './room-streams.js'
import { CLUSTER_DEFAULTS, type ClusterTuning, type RelayFaults, type RelayLogger } from './tuning.js'
import { openRedisConnection, type CommandObserver } from './redis-connection.js'
import type { RedisPersistence, Relay, RelayAwarenessEntry, RelayHealth, RelayRecovery, RelayRoomHandlers, RelayStats, StoredRooms } from './relay.js'

/** An epoch younger than this at an instance's first connection may be a loss it slept through: it re-publishes too. */
const RECENT_LOSS_MS = 10 * 60 * 1000

export interface RedisRelayOptions extends Partial<ClusterTuning> {
  redisUrl: string
  instanceId: string
  /** --redis-prefix: the namespace of every key and channel (the DB number comes from `redisUrl`). */
  prefix?: string
  logger: RelayLogger
  faults?: RelayFaults
  /** For metrics: each Redis command's name and latency (seconds), failures included. */
  onCommand?: CommandObserver
  /** For tests: called at each check, with whether it sent a command (false: nothing needed reading). */
  onCheck?: (sent: boolean) => void
}

/**
 * The Redis relay (issue #6). Two connections: `cmd` for scripts, heartbeats and checks, `sub`
 * for the room channels. On a timer, each instance sends at most one command a tick (heartbeat and
 * check in one script, CHECK_TICK), none when the traffic on its rooms already proves what the
 * tick would read (`planCheck`), and the shared state reads the epoch through it (onEpochRead).
 * Nothing queues inside ioredis (no offline queue, no resend): while a connection is down this
 * class decides what happens (updates are held, awareness is dropped and re-sent later), so a
 * dead Redis can never grow memory without bound or replay stale commands.
 */
export class RedisRelay implements Relay {
  readonly instanceId: string
  readonly namespace: RedisNamespace
  private readonly options: Readonly<ClusterTuning>
  private readonly logger: RelayLogger
  private readonly faults: RelayFaults
  private readonly onCheck: (sent: boolean) => void
  private readonly cmd: Redis
  private readonly sub: Redis
  private readonly streams: RoomStreams
  private readonly events = new EventEmitter()
  private readonly rooms = new Map<string, RelayRoom>()
  private readonly channels = new Map<string, string>()
  /** Local updates not yet published, while Redis is down or a publish failed. */
  private readonly outage: OutageBuffer
  private readonly counters = { published: 0, received: 0, healed: 0, commands: 0, checks: 0, compacted: 0 }
  private lagMs = 0
  private cmdReady = false
  private subReady = false
  private downSince = Date.now()
  private lastError = 'connecting'
  private reportedUp = false
  private epoch: string | null = null
  /** The tag of `epoch` that update messages carry (keys.ts epochTag). */
  private epochTagKnown: string | null = null
  /** Remote instances are not declared gone before this time (they may still be reconnecting). */
  private graceUntil = 0
  private reconciling = false
  private reconcileAgain = false
  private checking = false
  /** When this instance last wrote its heartbeat, and last sent a check (which writes it too); ms. */
  private lastBeatAt = 0
  private lastCheckAt = 0
  /** When the epoch was last read (a check that sent its command, or a reconcile); ms. */
  private lastEpochReadAt = 0
  /**
   * When an update of another instance last carried the known epoch's tag (relayedEpoch); ms. Only
   * for the backstop: it is not a read of this instance's, so it does not make a publish that
   * found another epoch older news (publishedEpoch).
   */
  private epochRelayedAt = 0
  /** An update with no predecessor came for a room whose chain had one: Redis may have lost its data; the next check reads the epoch. */
  private lossSuspected = false
  /** When each remote instance was last heard from on a room channel (ms, this clock): a sign of life in place of its heartbeat key. */
  private readonly heardAtMs = new Map<string, number>()
  private closed = false
  /** Local updates not published yet, per room: those of the current task, published merged by `flushOutgoing`. */
  private readonly outgoing = new Map<string, Uint8Array[]>()
  private outgoingScheduled = false
  private closing: Promise<void> | null = null
  /** Resolved at the next time the relay comes up (joins waiting for Redis). */
  private upWaiter: { promise: Promise<void>; resolve(): void } | null = null
  private everUp = false
  private readonly timers: NodeJS.Timeout[] = []
  private stored: StoredRooms | null = null
  private persistence: RedisPersistence = 'unknown'
  private readonly asks: ClusterAsks
  private readonly recoveryState = { republishing: false, resyncing: false, losses: 0, republishDone: 0, republishTotal: 0, republished: 0, asks: 0, found: 0, answered: 0 }
  private republishAgain = false

  constructor(options: RedisRelayOptions) {
    const { redisUrl, instanceId, logger, faults, prefix, onCommand, onCheck, ...rest } = options
    this.instanceId = instanceId
    this.logger = logger
    this.faults = faults ?? {}
    this.onCheck = onCheck ?? (() => {})
    this.options = Object.freeze({ ...CLUSTER_DEFAULTS, ...stripUndefined(rest) })
    this.outage = new OutageBuffer(this.options.heldBytes)
    const connect = (role: string): Redis =>
      openRedisConnection(redisUrl, `weft:${instanceId}:${role}`, this.options.maxRetryDelayMs, (err) => this.noteError(err), onCommand)
    this.cmd = connect('cmd')
    this.sub = connect('sub')
    this.namespace = new RedisNamespace(prefix, this.cmd.options.db ?? 0)
    this.streams = new RoomStreams(this.cmd, instanceId, this.options.retentionMs, this.options.compactAfterEntries, this.counters)
    this.asks = new ClusterAsks(
      {
        instanceId,
        publish: (text) => {
          this.counters.commands++
          return this.cmd.publish(this.namespace.askChannel, text)
        },
        subscribed: () => this.subReady,
        canAnswer: () => this.cmdReady,
        isClosed: () => this.closed,
        publishCopy: (room) => this.publishCopy(room),
        noteError: (err) => this.noteError(err),
      },
      this.options.askTimeoutMs,
      logger,
      this.recoveryState,
    )
    this.watch(this.cmd, 'cmd')
    this.watch(this.sub, 'sub')
    this.sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.onChannelMessage(channel.toString('utf8'), message))
    // One timer for the heartbeat and the check: a tick that does both is one command (issue 19).
    const tick = setInterval(() => this.tick(), this.tickMs())
    tick.unref()
    this.timers.push(tick)
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
    const room = new RelayRoom(name, keys, handlers)
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
        if (read.updates.length === 0 && (await this.asks.ask(name))) read = await this.read(room, '')
        cluster = read.updates.length === 0 ? null : await mergeUpdatesInChunks(read.updates)
        room.chain.startAt(read.lastId)
        // From here to activation nothing awaits, so no message can slip between buffer and room.
        const newer: Uint8Array[] = []
        for (const message of room.buffered) {
          if (message.kind !== 'update' || room.chain.covers(message.id)) continue
          if (message.instance !== this.instanceId) newer.push(message.update)
          room.chain.advance(message.prev, message.id)
        }
        if (newer.length > 0) cluster = Y.mergeUpdates(cluster === null ? newer : [cluster, ...newer])
        break
      } catch (err) {
        if (nothingHere && !this.closed && !room.hasLeft && Date.now() < deadline) {
          await delay(100)
          continue
        }
        // Serve from local state; the reconcile after the next connect reads the cluster copy and
        // publishes what this instance has that the cluster lacks.
        this.logger.warn({ room: name, err: errorText(err) }, 'cluster copy unavailable at join; serving local state')
        room.markStale()
        break
      }
    }
    if (room.hasLeft) return cluster // left while joining
    room.activate()
    if (room.state.kind === 'following') {
      if (localState !== null) {
        const missing = missingFrom(localState, cluster)
        if (missing !== null) this.sendUpdate(name, missing)
      }
      this.publishControl(room, { kind: 'query', instance: this.instanceId, ts: Date.now() })
      if (room.chain.hasGap) void this.heal(room)
    } else {
      this.scheduleReconcile()
    }
    return cluster
  }

  async leaveRoom(name: string): Promise<void> {
    const room = this.rooms.get(name)
    if (room === undefined) return
    room.leave()
    this.rooms.delete(name)
    this.channels.delete(room.keys.channel)
    if (this.subReady) {
      this.counters.commands++
      await this.sub.unsubscribe(room.keys.channel).catch(() => undefined)
    }
  }

  publishUpdate(room: string, update: Uint8Array): void {
    if (this.closed) return
    if (!this.isUp()) {
      this.hold(room, update)
      return
    }
    // A room's updates of the current task (a burst a client sent in one socket read, which the
    // room broadcasts merged too) become one update and one EVALSHA: Redis commands per edit stay
    // at most 1, and are one per merged burst. Flushed in a microtask queued before the room's
    // broadcast: the command is on its way to Redis, and the other instances at work on it, while
    // this one still writes the burst to its own members. (Flushed after the turn, the other
    // instances' members waited for this instance's whole fan-out and every other socket read
    // of the turn before Redis even heard of the update.)
    const pending = this.outgoing.get(room)
    if (pending === undefined) this.outgoing.set(room, [update])
    else pending.push(update)
    if (!this.outgoingScheduled) {
      this.outgoingScheduled = true
      queueMicrotask(this.flushOutgoing)
    }
  }

  publishAwareness(name: string, entries: readonly RelayAwarenessEntry[]): void {
    if (this.closed || entries.length === 0 || !this.isUp()) return
    const identities = entries.map((entry) => entry.identity ?? null)
    const sentAt = Date.now()
    const message = encodeRelayMessage({ kind: 'awareness', instance: this.instanceId, ts: sentAt, awareness: encodeAwarenessUpdate(entries), identities })
    this.counters.commands++
    this.cmd.publish(this.namespace.room(name).channel, message).then(
      () => this.rooms.get(name)?.noteSent(sentAt),
      (err: unknown) => this.noteError(err),
    )
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
    return { ...this.counters, heldBytes: this.outage.bytes }
  }

  on(event: 'health', listener: (health: RelayHealth) => void): void {
    this.events.on(event, listener)
  }

  /**
   * Calls `listener` with every data epoch this relay reads (each check, and each reconcile after
   * a connection or a loss); null when Redis had none. The shared state follows the epoch through
   * these reads instead of reading it on a timer of its own (cluster/shared-state.ts EpochReads).
   */
  onEpochRead(listener: (epoch: string | null) => void): void {
    this.events.on('epoch', listener)
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
        this.streams.loadScripts().then(
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
      if (this.everUp) this.asks.graceUntil = this.graceUntil
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

  // ---- publishing --------------------------------------------------------------------------

  private readonly flushOutgoing = (): void => {
    this.outgoingScheduled = false
    // After abort() (a kill -9 stand-in) nothing more leaves this instance.
    if (this.closed || this.outgoing.size === 0) {
      this.outgoing.clear()
      return
    }
    const rooms = [...this.outgoing]
    this.outgoing.clear()
    for (const [name, updates] of rooms) {
      const update = updates.length === 1 ? (updates[0] as Uint8Array) : Y.mergeUpdates(updates)
      // Redis may have gone down since they were queued: held like any update of an outage.
      if (this.isUp()) this.sendUpdate(name, update)
      else this.hold(name, update)
    }
  }

  private sendUpdate(name: string, update: Uint8Array): void {
    const sentAt = Date.now()
    const owner = this.rooms.get(name)
    const carried = owner?.takeCompaction() ?? null
    this.streams.publish(this.namespace.room(name), this.namespace.epochKey, update, carried).then(
      ({ prev, epoch, folded, whole }) => {
        this.counters.published++
        this.publishedEpoch(epoch, sentAt)
        if (owner !== undefined && carried !== null) this.compacted(owner, carried, folded === true)
        const room = this.rooms.get(name)
        if (room === undefined) return
        room.noteSent(sentAt)
        if (prev === '' && room.chain.lastApplied !== '') this.suspectLoss(room, 'publish')
        if (whole !== null && !room.jobs.compacting) void this.compact(room, whole)
      },
      (err: unknown) => {
        // Whether it reached Redis is unknown; sending it again is harmless (updates are idempotent).
        this.noteError(err)
        if (owner !== undefined && carried !== null) this.keepCompaction(owner, carried)
        this.hold(name, update)
      },
    )
  }

  /**
   * A publish read the epoch in the same command: as good as a check's read, so the check's
   * every-epochCheckMs read is not due while this instance publishes, and another epoch (or none)
   * is a loss noticed at once. Not while a reconcile is setting the epoch itself, nor for a
   * publish sent before the epoch was last read (what it found is older news).
   */
  private publishedEpoch(epoch: string | null, sentAt: number): void {
    if (this.reconciling || this.epoch === null || sentAt < this.lastEpochReadAt) return
    if (epoch === this.epoch) {
      this.lastEpochReadAt = sentAt
      return
    }
    this.tellEpoch(epoch)
    this.scheduleReconcile()
  }

  /**
   * An update of another instance carried the tag of the epoch its publish found: the same tag
   * proves the epoch as a read of this instance's own would, so the check's every-epochCheckMs
   * read is not due while others publish either (an instance that only receives). Another tag is
   * a loss, or older news from before one: the next check reads the epoch. Older instances send
   * no tag; then the check reads it as before.
   */
  private relayedEpoch(tag: string): void {
    if (this.reconciling || this.epochTagKnown === null) return
    if (tag === this.epochTagKnown) {
      this.epochRelayedAt = Date.now()
      return
    }
    if (!this.lossSuspected) this.logger.debug({ instance: this.instanceId }, 'a relayed update names another data epoch; reading it at the next check')
    this.lossSuspected = true
  }

  private hold(name: string, update: Uint8Array): void {
    if (this.outage.hold(name, update)) return
    // Over budget: what was held for this room is forgotten; it re-syncs from the local document
    // later. A room not held any more publishes its local state when it next joins.
    this.rooms.get(name)?.markStale()
    this.logger.warn({ room: name, budgetBytes: this.options.heldBytes }, 'held updates over budget; room will re-sync from local state')
  }

  private async flushHeld(): Promise<void> {
    for (const name of this.outage.roomNames()) {
      if (!this.isUp()) return
      const updates = this.outage.take(name)
      if (updates === undefined) continue
      const update = updates.length === 1 ? (updates[0] as Uint8Array) : await mergeUpdatesInChunks(updates)
      this.sendUpdate(name, update)
    }
  }

  private publishControl(room: RelayRoom, message: RelayMessage): void {
    if (!this.isUp()) return
    const sentAt = Date.now()
    this.counters.commands++
    this.cmd.publish(room.keys.channel, encodeRelayMessage(message)).then(
      () => room.noteSent(sentAt),
      (err: unknown) => this.noteError(err),
    )
  }

  private resendAwareness(room: RelayRoom): void {
    const entries = room.handlers.localAwareness()
    if (entries.length > 0) this.publishAwareness(room.name, entries)
    this.publishControl(room, { kind: 'query', instance: this.instanceId, ts: Date.now() })
  }

  // ---- receiving ---------------------------------------------------------------------------

  private onChannelMessage(channel: string, bytes: Buffer): void {
    if (channel === this.namespace.askChannel) {
      this.asks.onMessage(bytes.toString('utf8'))
      return
    }
    const name = this.channels.get(channel)
    const room = name === undefined ? undefined : this.rooms.get(name)
    if (room === undefined || this.closed) return
    const message = decodeRelayMessage(bytes)
    if (message === null) return
    if (this.faults.dropMessage?.(room.name, message) === true) return
    if (message.instance !== this.instanceId) {
      // Any message but a goodbye proves its sender alive now (planCheck).
      if (message.kind === 'gone') this.heardAtMs.delete(message.instance)
      else this.heardAtMs.set(message.instance, Date.now())
      if (message.kind === 'update' && message.epochTag !== undefined) this.relayedEpoch(message.epochTag)
    }
    if (room.buffer(message)) return
    if (message.instance !== this.instanceId) this.lagMs = this.lagMs * 0.8 + Math.max(0, Date.now() - message.ts) * 0.2
    try {
      this.apply(room, message)
    } catch (err) {
      this.logger.error({ room: room.name, err: errorText(err) }, 'room handler failed on a relayed message')
    }
  }

  private apply(room: RelayRoom, message: RelayMessage): void {
    switch (message.kind) {
      case 'update': {
        if (room.chain.covers(message.id)) return
        if (message.prev === '' && room.chain.lastApplied !== '') this.suspectLoss(room, 'relayed update')
        if (message.instance !== this.instanceId) {
          this.counters.received++
          room.handlers.onUpdate(message.update, message.ts)
        }
        // Own messages carry no news but keep the chain gapless.
        if (!room.chain.advance(message.prev, message.id)) void this.heal(room)
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

  // ---- healing -----------------------------------------------------------------------------

  private read(room: RelayRoom, after: string): Promise<StreamRead> {
    return this.streams.read(room.keys, after)
  }

  /** Fetches and applies everything after `lastApplied` (a message was lost, or the connection was). */
  private async heal(room: RelayRoom): Promise<void> {
    if (room.jobs.healing || !room.isActive || !this.isUp()) return
    room.jobs.healing = true
    let progressed = false
    try {
      const from = room.chain.lastApplied
      const read = await this.read(room, from)
      if (room.hasLeft) return
      if (read.updates.length > 0) {
        const merged = read.updates.length === 1 ? (read.updates[0] as Uint8Array) : await mergeUpdatesInChunks(read.updates)
        room.handlers.onUpdate(merged)
        this.counters.healed += read.foreign
      }
      progressed = room.chain.catchUp(read.lastId)
      room.chain.healed()
    } catch (err) {
      this.noteError(err)
    } finally {
      room.jobs.healing = false
    }
    // A message lost while this read was in flight left a gap behind the messages that followed.
    if (progressed && room.chain.hasGap) void this.heal(room)
  }

  /** Reads the cluster copy whole, applies it, and publishes what the local document has beyond it. */
  private async fullSync(room: RelayRoom): Promise<void> {
    const read = await this.read(room, '')
    if (room.hasLeft) return
    const cluster = read.updates.length === 0 ? null : await mergeUpdatesInChunks(read.updates)
    if (cluster !== null) {
      room.handlers.onUpdate(cluster)
      this.counters.healed += read.foreign
    }
    room.chain.catchUp(read.lastId)
    // The local document already holds every update held for this room.
    this.outage.drop(room.name)
    const missing = missingFrom(room.handlers.localState(), cluster)
    if (missing !== null) this.sendUpdate(room.name, missing)
    room.synced()
  }

  /**
   * Merges the room as a publish returned it (PUBLISH_UPDATE: its stream reached a multiple of
   * compactAfterEntries) into one snapshot, for the next publish of this room to carry: under
   * traffic a compaction costs no command of its own. A room that stays quiet for
   * compactWaitMs gets it alone (COMPACT_ROOM).
   */
  private async compact(room: RelayRoom, read: StreamRead): Promise<void> {
    if (read.updates.length === 0 || read.lastId === '' || read.lastId === read.upto) return
    room.jobs.compacting = true
    let snapshot: Uint8Array
    try {
      snapshot = await mergeUpdatesInChunks(read.updates)
    } catch (err) {
      this.noteError(err)
      room.jobs.compacting = false
      return
    }
    if (room.hasLeft || this.closed) return
    const alone: CompactionWrite = { version: read.version, snapshot, upto: read.lastId }
    room.compaction = alone
    await delay(this.options.compactWaitMs)
    // Taken by a publish meanwhile (and maybe followed by the next one's), or dropped because the room was left.
    if (room.compaction !== alone || this.closed) return
    room.compaction = null
    try {
      this.compacted(room, alone, await this.streams.compact(room.keys, alone))
    } catch (err) {
      this.noteError(err)
      this.keepCompaction(room, alone)
    }
  }

  /**
   * A compaction whose write failed on its way (Redis down or refusing writes) waits again for the
   * room's next publish (the held updates bring one once Redis answers), not for the stream's next
   * multiple of compactAfterEntries. It holds one snapshot of the room meanwhile, as while it waits
   * for compactWaitMs. Writing it late is safe: the version check and the stream's first entry
   * refuse it when the room moved on.
   */
  private keepCompaction(room: RelayRoom, compaction: CompactionWrite): void {
    // No other compaction of the room starts meanwhile (jobs.compacting stays set until it is written).
    if (room.hasLeft || this.closed) {
      this.compacted(room, compaction, false)
      return
    }
    this.logger.debug({ room: room.name, upto: compaction.upto }, 'room stream compaction kept for the next publish')
    room.compaction = compaction
  }

  /** A compaction's write was sent (carried by a publish, or alone): the room may compact again. */
  private compacted(room: RelayRoom, compaction: CompactionWrite, applied: boolean): void {
    this.logger.debug({ room: room.name, upto: compaction.upto, bytes: compaction.snapshot.byteLength, applied }, 'room stream compacted')
    if (applied) this.counters.compacted++
    room.jobs.compacting = false
  }

  // ---- periodic work -----------------------------------------------------------------------

  private tickMs(): number {
    return Math.min(this.options.heartbeatMs, this.options.checkMs)
  }

  /**
   * Every min(heartbeatMs, checkMs). A check that is due also refreshes the heartbeat, in the same
   * command (CHECK_TICK). A heartbeat due without a check (one still running, a reconcile in
   * progress, Redis half up, or heartbeatMs shorter than checkMs) is a SET of its own, so nothing
   * the check waits for can let the heartbeat lapse, unless this instance's messages stand in for
   * it (`beatCovered`).
   */
  private tick(): void {
    if (this.closed || !this.cmdReady) return
    const now = Date.now()
    // Half a tick of slack: intervals fire a little late or early; with equal settings every tick does both.
    const slack = this.tickMs() / 2
    if (now - this.lastCheckAt >= this.options.checkMs - slack && this.startCheck()) return
    if (now - this.lastBeatAt >= this.options.heartbeatMs - slack && !this.beatCovered(now)) this.heartbeat()
  }

  /** Runs a check unless it must wait; true when it did (a command it sends carries the heartbeat). */
  private startCheck(): boolean {
    if (!this.isUp() || this.checking || this.reconciling) return false
    if (this.reconcileAgain) {
      this.scheduleReconcile()
      return false
    }
    const plan = this.planCheck(Date.now())
    this.lastCheckAt = Date.now()
    this.onCheck(plan !== null)
    if (plan !== null) {
      this.counters.checks++
      void this.check(plan)
    }
    return true
  }

  /**
   * What this check must read, or null when the traffic already proved all of it (issue 19: under
   * steady edits the timers cost no command at all):
   *
   * - `last` of a room only when its chain did not move since the previous check
   *   (StreamChain.movedSinceTick: a lost final message is still healed at the second check).
   * - The heartbeat of a remote instance whose awareness is held only when it was not heard from
   *   within instanceTtlMs: a message received is as good a sign of life as its key, and lapses as
   *   fast, so a dead instance still goes within instanceTtlMs (plus delivery) and one check.
   * - The epoch whenever a command goes anyway; else when no held room moved, when a stream
   *   started over (`suspectLoss`: what the next update of every room shows after a FLUSHALL) or
   *   a relayed update named another epoch (`relayedEpoch`), and at least every epochCheckMs in
   *   case those tell-tales were lost too, unless this instance's publishes or another's relayed
   *   updates proved the epoch within it. A Redis that restarted empty is noticed at the reconnect.
   * - This instance's heartbeat whenever a command goes anyway, else unless `beatCovered`.
   * - Always a check while updates are held (a publish failed with Redis up): it sends them.
   */
  private planCheck(now: number): { rooms: RelayRoom[]; remote: string[] } | null {
    const active = [...this.rooms.values()].filter((room) => room.isActive)
    // Every room's chain is asked, once a check: the answer is "since the previous check".
    const moved = active.map((room) => room.chain.movedSinceTick())
    const rooms = active.filter((_room, i) => moved[i] !== true)
    const instances = new Set<string>()
    for (const room of active) for (const id of room.remoteInstances) instances.add(id)
    for (const [id, at] of this.heardAtMs) if (now - at >= this.options.instanceTtlMs && !instances.has(id)) this.heardAtMs.delete(id)
    const remote = [...instances].filter((id) => !(now - (this.heardAtMs.get(id) ?? -Infinity) < this.options.instanceTtlMs))
    const epochDue = this.lossSuspected || rooms.length === active.length || now - Math.max(this.lastEpochReadAt, this.epochRelayedAt) >= this.options.epochCheckMs
    // Updates held after a failed publish are sent by the check (flushHeld), whatever the traffic.
    if (rooms.length === 0 && remote.length === 0 && !epochDue && this.outage.isEmpty && this.beatCovered(now)) return null
    return { rooms, remote }
  }

  /**
   * Whether this instance's messages stand in for its heartbeat now: in every held room where it
   * has local awareness (the only rooms where others hold its awareness and so read its heartbeat),
   * two of its messages reached the channel within the last heartbeatMs. Then every instance
   * holding its awareness heard from it within heartbeatMs of this tick even if one message was
   * lost, so between two signs of life it sees at most 2 × heartbeatMs plus how late the next tick
   * is plus delivery; it counts an instance alive for instanceTtlMs after hearing from it
   * (`planCheck`), so with instanceTtlMs ≥ 3 × heartbeatMs (the defaults: 1 s, 3 s) a live
   * instance never looks dead while its ticks come less than heartbeatMs late (with the key
   * alone: 2 × heartbeatMs). A dead one sends nothing more and is gone from the others within
   * instanceTtlMs and one check of its last message, as with its key alone. Shorter TTLs: every
   * tick writes the heartbeat.
   */
  private beatCovered(now: number): boolean {
    if (this.options.instanceTtlMs < 3 * this.options.heartbeatMs) return false
    const since = now - this.options.heartbeatMs
    for (const room of this.rooms.values()) {
      if (room.sentTwiceSince(since)) continue
      if (room.handlers.localAwareness().length > 0) return false
    }
    return true
  }

  private heartbeat(): void {
    if (!this.cmdReady || this.closed) return
    this.lastBeatAt = Date.now()
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
          if (!room.isActive) continue
          if (room.isStale) await this.fullSync(room)
          else await this.heal(room)
          this.resendAwareness(room)
        }
        if (![...this.rooms.values()].some((room) => room.isStale)) this.recoveryState.resyncing = false
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
    const epoch = await this.streams.ensureEpoch(this.namespace.epochKey, candidate)
    const createdAt = parseInt(epoch.split('.')[0] ?? '', 36)
    const recentLoss = this.epoch === null && Number.isFinite(createdAt) && Date.now() - createdAt < RECENT_LOSS_MS
    // A new epoch (this instance's own candidate, another than the one it knew, or one made
    // while it was away) means Redis had no data: every room stored here goes back, not only
    // the loaded ones.
    const lost = epoch === candidate || (this.epoch !== null && epoch !== this.epoch)
    // Just now, the others may not listen to asks yet; a loss slept through is old news to them.
    if (lost) this.asks.graceUntil = Date.now() + this.options.instanceTtlMs
    if (lost || recentLoss) this.republishStored()
    if (this.epoch !== null && epoch !== this.epoch) {
      // Redis lost its data (restarted empty, or flushed): every held room republishes its state.
      this.logger.warn({ instance: this.instanceId }, 'redis lost its data; re-publishing every held room')
      this.recoveryState.losses++
      this.recoveryState.resyncing = true
      this.graceUntil = Date.now() + this.options.instanceTtlMs
      for (const room of this.rooms.values()) {
        room.markStale()
        room.chain.reset()
      }
    }
    this.epoch = epoch
    this.epochTagKnown = epochTag(epoch)
    this.lastEpochReadAt = Date.now()
    this.lossSuspected = false
    this.tellEpoch(epoch)
  }

  /**
   * A room's stream started over under this instance (an update with no predecessor, while the
   * chain had one): Redis lost its data, or at least this room's keys. The next check reads the
   * epoch whatever the traffic; a room deleted or expired costs one needless read.
   */
  private suspectLoss(room: RelayRoom, seenIn: string): void {
    if (!this.lossSuspected) this.logger.debug({ room: room.name, seenIn }, 'a room stream started over; reading the epoch at the next check')
    this.lossSuspected = true
  }

  private tellEpoch(epoch: string | null): void {
    try {
      this.events.emit('epoch', epoch)
    } catch (err) {
      this.logger.error({ err: errorText(err) }, 'epoch listener failed')
    }
  }

  /**
   * One command (CHECK_TICK): refreshes the heartbeat and reads the epoch, `last` of the rooms
   * and the heartbeats of the instances that `planCheck` chose.
   */
  private async check(plan: { rooms: RelayRoom[]; remote: string[] }): Promise<void> {
    this.checking = true
    const sentAt = Date.now()
    this.lastBeatAt = sentAt
    // Cleared before the read: a stream seen starting over while it is out asks for another.
    const suspected = this.lossSuspected
    this.lossSuspected = false
    try {
      const { rooms, remote } = plan
      const heartbeat = { key: this.namespace.instance(this.instanceId), ttlMs: this.options.instanceTtlMs }
      let read: TickRead
      try {
        read = await this.streams.tick(heartbeat, this.namespace.epochKey, rooms.map((room) => room.keys), remote.map((id) => this.namespace.instance(id)))
      } catch (err) {
        if (suspected) this.lossSuspected = true
        throw err
      }
      this.lastEpochReadAt = sentAt
      this.tellEpoch(read.epoch)
      if (read.epoch !== this.epoch) {
        this.scheduleReconcile()
        return
      }
      rooms.forEach((room, i) => {
        if (room.isActive) this.checkBehind(room, read.lasts[i] ?? null)
      })
      if (remote.length > 0 && Date.now() >= this.graceUntil) {
        remote.forEach((id, i) => {
          // A message that came while the command was out proves it alive after all.
          if (read.alive[i] === false && !((this.heardAtMs.get(id) ?? 0) >= sentAt)) this.instanceGone(id)
        })
      }
      if (!this.outage.isEmpty) await this.flushHeld()
    } catch (err) {
      this.noteError(err)
    } finally {
      this.checking = false
    }
  }

  /** `last` stayed ahead of the room's chain since the previous check: its newest message was lost. */
  private checkBehind(room: RelayRoom, last: string | null): void {
    if (room.chain.stalledBehind(last, room.jobs.healing)) void this.heal(room)
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

  /** Answers an ask (cluster-asks.ts): publishes this instance's copy of `room`, the live one of a held room first. */
  private async publishCopy(room: string): Promise<boolean> {
    const held = this.rooms.get(room)
    const state = held !== undefined && held.isActive ? held.handlers.localState() : await this.stored?.load(room)
    return state !== undefined && state !== null ? this.publishState(room, state) : false
  }

  /** Publishes what `state` has that the cluster's copy of `room` lacks; false when `state` is empty. */
  private async publishState(room: string, state: Uint8Array): Promise<boolean> {
    if (missingFrom(state, null) === null) return false
    const keys = this.namespace.room(room)
    const read = await this.streams.read(keys, '')
    const cluster = read.updates.length === 0 ? null : await mergeUpdatesInChunks(read.updates)
    const missing = missingFrom(state, cluster)
    if (missing !== null) {
      await this.streams.publish(keys, this.namespace.epochKey, missing)
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
    // Unknown until the stored rooms are listed: a total left from an earlier re-publish is stale.
    progress.republishTotal = 0
    progress.republishDone = 0
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
    const rooms = [...this.rooms.values()].filter((room) => room.isActive)
    if (rooms.length === 0) return
    const pipeline = this.cmd.pipeline()
    for (const room of rooms) for (const key of [room.keys.log, room.keys.last, room.keys.doc]) pipeline.pexpire(key, this.options.retentionMs)
    this.counters.commands += pipeline.length
    await pipeline.exec().catch((err: unknown) => this.noteError(err))
  }

  // ---- shutdown ----------------------------------------------------------------------------

  private async shutdown(): Promise<void> {
    // Updates of the current turn go out before the goodbye, on the same connection.
    this.flushOutgoing()
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
    for (const room of this.rooms.values()) room.leave()
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
