import type { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import { OPEN_GRANT, type AuthContext, type Authorizer, type Grant } from './access.js'
import type { AdmissionTicket } from './admission.js'
import { withContext } from './authenticate.js'
import { CloseCode } from './codes.js'
import type { WeftOptions } from './config.js'
import { Connection, type ConnectionEvents, type ConnectionLimits } from './connection.js'
import { FrameCompression } from './frame-compression.js'
import { HocuspocusSession, type HocuspocusHooks } from './hocuspocus-session.js'
import type { Revoker } from './revocation.js'
import type { HookRunner } from './hook-runner.js'
import type { ConnectionInfo } from './hooks.js'
import type { Logger } from './logger.js'
import type { ServerMetrics } from './metrics.js'
import { PreAuthGuard } from './preauth-guard.js'
import { ReplyGate } from './reply-gate.js'
import { ReplyMemory } from './reply-memory.js'
import type { RoomRegistry } from './room.js'
import { YWebsocketSession, type PendingLimits } from './ywebsocket-session.js'

/** What a connection may send before its room has loaded: past either bound it is closed with 1013. */
const PENDING_MESSAGES = 1_000
const PENDING_BYTES = 8 * 1024 * 1024
/**
 * Longest turn of one big sync reply at the gate: a reader slower than this gives its turn to the
 * next joiner (its reply goes on). 20 MB reach a reader on loopback in well under a second.
 */
const REPLY_TURN_MS = 1_000

/** Heartbeat ticks per interval; each checks the connections whose id falls in its slice. */
const HEARTBEAT_SLICES = 16

export interface ConnectionRegistryDeps {
  options: Readonly<WeftOptions>
  metrics: ServerMetrics
  log: Logger
  authorizer: Authorizer
  hooks: HookRunner
  /** Sessions that a revocation (POST /api/connections/revoke) may end. */
  revoker: Pick<Revoker, 'track'>
  /** Hocuspocus callbacks of the composition root (stateless messages, room claims). */
  hocuspocus: Omit<HocuspocusHooks, 'opened' | 'closed'>
}

/**
 * The open WebSocket connections: admitting one into its session, forgetting it when it closes
 * (metrics, onConnect/onDisconnect), heartbeats in slices, and closing them all.
 */
export class ConnectionRegistry {
  private readonly connections = new Set<Connection>()
  /** y-websocket connections as hooks see them (Hocuspocus reports each document itself). */
  private readonly infos = new Map<Connection, ConnectionInfo>()
  private heartbeatTimer: NodeJS.Timeout | null = null
  /** The slice of connections (by id) the next heartbeat tick checks. */
  private heartbeatSlice = 0
  /** One of each for all connections: nothing per connection that is the same for every one. */
  private readonly limits: ConnectionLimits
  private readonly events: ConnectionEvents
  private readonly pendingLimits: PendingLimits
  private readonly hocuspocusHooks: HocuspocusHooks
  /** Set by hurry(): a spread close sends everything left at once. */
  private hurried = false
  /** Ends the wait between two batches of a spread close. */
  private wake: (() => void) | null = null

  constructor(private readonly deps: ConnectionRegistryDeps) {
    const { metrics, options, hooks } = deps
    this.limits = Object.freeze({
      sendQueueBytes: options.sendQueueBytes,
      slowConsumerGraceMs: options.slowConsumerGraceMs,
      inboundMessagesPerSecond: options.inboundMessagesPerSecond,
      inboundBytesPerSecond: options.inboundBytesPerSecond,
      maxMessageBytes: options.maxMessageBytes,
      replyGate: options.syncRepliesAtOnce === 0 ? null : new ReplyGate(options.syncRepliesAtOnce, REPLY_TURN_MS, () => metrics.syncReplyWaits.inc()),
      replyMemory: new ReplyMemory(options),
      replyStallMs: options.sendTimeoutMs,
      compression: options.compression
        ? new FrameCompression(options.compressionThresholdBytes, {
            compressed: (input, output) => {
              metrics.compressions.inc()
              metrics.compressionInputBytes.inc(input)
              metrics.compressionOutputBytes.inc(output)
            },
          })
        : null,
    })
    this.events = Object.freeze({
      onSlowConsumer: () => metrics.slowConsumerCloses.inc(),
      onCoalesced: (count: number) => metrics.coalescedUpdates.inc(count),
      onPause: () => metrics.pausedSockets.inc(),
      onResume: () => metrics.pausedSockets.dec(),
      onClose: (connection: Connection, code: number) => this.forget(connection, code),
      onQueueBytes: (bytes: number) => metrics.sendQueueBytes.observe(bytes),
      onCompressedFrame: () => metrics.compressedFramesSent.inc(),
    })
    this.pendingLimits = Object.freeze({ maxPendingMessages: PENDING_MESSAGES, maxPendingBytes: Math.max(options.maxMessageBytes, PENDING_BYTES) })
    this.hocuspocusHooks = Object.freeze({
      ...deps.hocuspocus,
      opened: (document: object, info: ConnectionInfo) => hooks.connected(document, info),
      closed: (document: object, info: ConnectionInfo, code: number) => hooks.disconnected(document, info, code),
    })
  }

  /** The turns big sync replies take (--sync-replies-at-once), shared with big HTTP answers; null: no limit. */
  get replyGate(): ReplyGate | null {
    return this.limits.replyGate ?? null
  }

  /** The memory big sync replies hold (--max-sync-reply-bytes[-per-ip]). */
  get replyMemory(): ReplyMemory {
    return this.limits.replyMemory as ReplyMemory
  }

  get size(): number {
    return this.connections.size
  }

  /** Starts the heartbeat: each tick checks and pings one slice of the connections. */
  start(): void {
    // Every connection once an interval, and never all of them in one loop, which would hold up
    // broadcasts the way a broadcast to everyone does.
    this.heartbeatTimer = setInterval(() => this.heartbeat(), Math.max(1, Math.round(this.deps.options.heartbeatIntervalMs / HEARTBEAT_SLICES)))
    this.heartbeatTimer.unref()
  }

  stop(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer)
    this.heartbeatTimer = null
  }

  /**
   * A socket that passed the upgrade pipeline: a y-websocket session for `room` with `grant`, or
   * (room null) a Hocuspocus session whose documents authenticate one by one with `context`.
   */
  admit(ws: WebSocket, raw: Socket, ticket: AdmissionTicket, rooms: RoomRegistry, room: string | null, grant: Grant | null, context: AuthContext, savedAcks = false): void {
    const { deps } = this
    const connection = new Connection(ws, raw, ticket, this.limits, this.events)
    connection.meter = deps.metrics.traffic[room === null ? 'hocuspocus' : 'y-websocket']
    this.connections.add(connection)
    if (room === null) {
      const preauth = new PreAuthGuard(raw, connection, deps.options, (reason) => deps.metrics.preauthCloses.inc({ reason }))
      deps.revoker.track(connection, new HocuspocusSession(connection, rooms, withContext(deps.authorizer, context), this.pendingLimits, this.hocuspocusHooks, deps.log, preauth), 'hocuspocus')
      return
    }
    const granted = grant ?? OPEN_GRANT
    deps.revoker.track(connection, new YWebsocketSession(connection, room, rooms, this.pendingLimits, granted, deps.log, savedAcks), 'y-websocket')
    const info: ConnectionInfo = { room, protocol: 'y-websocket', subject: granted.subject, remoteAddress: context.remoteAddress }
    this.infos.set(connection, info)
    deps.hooks.connected(connection, info)
  }

  private forget(connection: Connection, code: number): void {
    const { metrics } = this.deps
    this.connections.delete(connection)
    const info = this.infos.get(connection)
    if (info !== undefined) {
      this.infos.delete(connection)
      this.deps.hooks.disconnected(connection, info, code)
    }
    // Everyone left: a spread close has nothing more to wait for.
    if (this.connections.size === 0) this.wake?.()
    if (connection.paused) metrics.pausedSockets.dec()
    metrics.closes.inc({ code: String(code) })
    metrics.window.close(code)
    if (code === CloseCode.protocolError || code === CloseCode.invalidPayload || code === CloseCode.messageTooBig) {
      metrics.malformedMessages.inc({ code: String(code) })
    }
  }

  private heartbeat(): void {
    const slice = this.heartbeatSlice
    this.heartbeatSlice = (slice + 1) % HEARTBEAT_SLICES
    for (const connection of this.connections) {
      if (connection.id % HEARTBEAT_SLICES !== slice) continue
      this.deps.metrics.sendQueueBytes.observe(connection.queuedBytes)
      if (!connection.heartbeat()) this.deps.metrics.heartbeatTerminations.inc()
    }
  }

  /** A copy, so closing them while iterating is safe. */
  list(): Connection[] {
    return [...this.connections]
  }

  /**
   * Closes every connection with 1012, in batches spread over `spreadMs` (never past `deadline`),
   * so clients reconnect to other instances over time, not all at once. Resolves early when
   * everyone left, or at once after hurry().
   */
  async closeSpread(spreadMs: number, deadline: number): Promise<void> {
    const { metrics } = this.deps
    const connections = this.list()
    const batches = Math.min(connections.length, Math.max(1, Math.floor(spreadMs / 50)))
    const perBatch = batches === 0 ? 0 : Math.ceil(connections.length / batches)
    const started = Date.now()
    metrics.drainTotal.set(connections.length)
    metrics.drainClosed.set(0)
    for (let i = 0; i < batches; i++) {
      if (this.connections.size === 0) break // everyone left already: nothing to wait for
      const target = started + (spreadMs * i) / batches + Math.random() * (spreadMs / batches) * 0.5
      // A batch that comes late (a busy event loop) still keeps half a gap from the one before,
      // so late batches never go out together; the drain deadline bounds the total either way.
      const gap = i === 0 ? 0 : (spreadMs / batches) * 0.5
      const wait = Math.min(Math.max(target - Date.now(), gap), Math.max(0, deadline - Date.now() - 1000))
      if (wait > 0 && !this.hurried) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait)
          this.wake = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        this.wake = null
      }
      // Hurried (a second signal, or close() during a drain): everything left goes now.
      const end = this.hurried ? connections.length : (i + 1) * perBatch
      const batch = connections.slice(i * perBatch, end)
      for (const connection of batch) connection.close(CloseCode.serviceRestart, 'service restart')
      metrics.drainClosed.inc(batch.length)
      if (this.hurried) break
    }
  }

  /** A spread close in progress closes everything left now. */
  hurry(): void {
    this.hurried = true
    this.wake?.()
  }

  closeAll(code: number, reason: string): void {
    for (const connection of this.list()) connection.close(code, reason)
  }

  terminateAll(): void {
    for (const connection of this.list()) connection.terminate()
  }
}
