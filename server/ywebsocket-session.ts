import * as Y from 'yjs'
import {
  decodeYMessage,
  encodeAwareness,
  encodeAwarenessUpdate,
  encodePermissionDenied,
  encodeSyncStep1,
  encodeSyncUpdate,
  encodeWeftStored,
  readAwarenessUpdate,
  ProtocolError,
  validateStateVector,
  validateUpdate,
  type AwarenessEntry,
  type AwarenessRead,
} from '../protocol/index.js'
import { AWARENESS_PREFIX, SYNC_STEP2_PREFIX } from '../protocol/ywebsocket.js'
import { allows, type Grant } from './access.js'
import { CloseCode } from './codes.js'
import { presenceIdentity } from './room-awareness.js'
import { SyncAsks } from './sync-asks.js'
import type { Connection, ConnectionSession } from './connection.js'
import type { Logger } from './logger.js'
import { UpdateSource, type ApplyOutcome, type Room, type RoomMember, type RoomRegistry } from './room.js'
import type { SharedFrames, WireFormat } from './wire-format.js'

/** y-websocket framing: one message per frame, no document name (the URL names the room). */
export const yWebsocketFormat: WireFormat = {
  name: 'y-websocket',
  update: (_room, update) => encodeSyncUpdate(update),
  awareness: (_room, entries) => encodeAwareness(encodeAwarenessUpdate(entries)),
}

/** The room's awareness snapshot in y-websocket framing (Room.awarenessSnapshot). */
const AWARENESS_FRAMING = 'y-websocket'
/** The answer to a query-awareness in a room without states. */
const NO_AWARENESS = encodeAwareness(encodeAwarenessUpdate([]))

export interface PendingLimits {
  /** Frames held while the room loads, at most. */
  maxPendingMessages: number
  /** Bytes held while the room loads, at most. */
  maxPendingBytes: number
}

/**
 * One y-websocket connection bound to one room. Nothing is answered before the room has loaded
 * (y-websocket#81: a client that syncs against an empty document overwrites data); frames arriving
 * meanwhile are held within `PendingLimits`.
 */
export class YWebsocketSession implements RoomMember, ConnectionSession {
  private readonly room: Room
  private pending: Uint8Array[] | null = []
  private pendingBytes = 0
  private readonly expiry: NodeJS.Timeout | null
  readonly identity: string | null
  /** Carried with every update this connection sends. */
  private readonly source: UpdateSource
  /** `stored` acknowledgements (asked for with ?weft-saved=1); null for everyone else. */
  private readonly acks: StoredAcks | null
  /** performance.now() of the last answer to a query-awareness. */
  private awarenessAnsweredAt = -Infinity
  /** When this connection's sync step 1s are answered; made at the first (a connection that never asks costs none). */
  private syncAsks: SyncAsks | null = null

  constructor(
    private readonly connection: Connection,
    roomName: string,
    private readonly registry: RoomRegistry,
    /** Shared by every session of a server. */
    private readonly limits: PendingLimits,
    private readonly grant: Grant,
    private readonly log: Logger,
    savedAcks = false,
  ) {
    this.acks = savedAcks ? new StoredAcks(connection) : null
    this.identity = presenceIdentity(grant.subject)
    this.source = new UpdateSource({ kind: 'client', protocol: 'y-websocket', subject: grant.subject }, this, allows(grant.access, 'write'))
    this.room = registry.join(roomName, this)
    this.expiry = grant.expiresAt === null ? null : setTimeout(() => connection.close(CloseCode.unauthorized, 'access token expired'), Math.max(0, grant.expiresAt - Date.now()))
    this.expiry?.unref()
    connection.bind(this)
    this.room.loaded.then(
      () => this.start(),
      () => {
        // Room.fail() has already evicted every member with 1011.
      },
    )
  }

  /**
   * POST /api/connections/revoke: closes the connection with 4403 when `revoked` covers its grant
   * (the provider reconnects, and its token is checked again); 1 when it did.
   */
  revoke(revoked: (grant: Grant, room: string) => boolean): number {
    if (this.connection.state !== 'open' || !revoked(this.grant, this.room.name)) return 0
    this.connection.close(CloseCode.forbidden, 'access revoked')
    return 1
  }

  /** The same for every y-websocket member (a prototype getter: nothing stored per session). */
  get format(): WireFormat {
    return yWebsocketFormat
  }

  closed(): void {
    if (this.expiry !== null) clearTimeout(this.expiry)
    this.syncAsks?.close()
    this.room.leave(this)
  }

  private start(): void {
    if (this.connection.state !== 'open') return
    const doc = this.room.doc
    this.connection.send(encodeSyncStep1(Y.encodeStateVector(doc)))
    const states = this.room.awarenessSnapshot(AWARENESS_FRAMING, AWARENESS_PREFIX)
    if (states !== null) this.connection.send(states)
    const held = this.pending ?? []
    this.pending = null
    this.pendingBytes = 0
    for (const frame of held) {
      if (this.connection.state !== 'open') return
      this.handle(frame)
    }
  }

  receive(data: Buffer): void {
    if (this.pending !== null) {
      this.pendingBytes += data.length
      if (this.pending.length >= this.limits.maxPendingMessages || this.pendingBytes > this.limits.maxPendingBytes) {
        this.connection.close(CloseCode.tryAgainLater, 'too much sent before the document loaded')
        return
      }
      this.pending.push(data)
      return
    }
    this.handle(data)
  }

  /** When this connection's sync step 1s are answered (see SyncAsks), made at its first. */
  private newSyncAsks(): SyncAsks {
    const waiter = {}
    return new SyncAsks(
      {
        answer: (stateVector) => {
          const reply = this.room.syncReplyOffLoop(stateVector, 'y-websocket', SYNC_STEP2_PREFIX, yWebsocketFormat, this.connection.ip)
          this.connection.sendBuiltReply(reply)?.catch((err: unknown) => this.failed(err))
        },
        replyOnItsWay: () => this.connection.syncReplyOnItsWay,
        mayBuild: (stateVector) => this.room.mayBuildSyncReply(stateVector, 'y-websocket', this.connection.ip, waiter),
        onDeferred: () => this.registry.onSyncAskDeferred(),
        settled: () => this.registry.replyMemory?.forget(waiter),
      },
      this.registry.repeatAnswerIntervalMs,
    )
  }

  private handle(frame: Uint8Array): void {
    try {
      const message = decodeYMessage(frame)
      switch (message.kind) {
        case 'sync-step-1':
          validateStateVector(message.stateVector)
          this.syncAsks ??= this.newSyncAsks()
          this.syncAsks.ask(message.stateVector)
          break
        case 'sync-step-2':
        case 'sync-update':
          this.applyUpdate(message.update)
          break
        case 'awareness':
          this.applyAwareness(readAwarenessUpdate(message.update, this.room.awarenessLimits))
          break
        case 'query-awareness': {
          const now = performance.now()
          if (!this.room.answersAwarenessQuery(this.awarenessAnsweredAt, now)) break
          this.awarenessAnsweredAt = now
          this.connection.send(this.room.awarenessSnapshot(AWARENESS_FRAMING, AWARENESS_PREFIX) ?? NO_AWARENESS)
          break
        }
        case 'auth-denied':
        case 'weft-stored':
          // Only servers send these; a client sending one is ignored, as y-protocols does.
          break
      }
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.log.info({ room: this.room.name, conn: this.connection.id, code: err.closeCode, reason: err.message }, 'malformed message')
        this.connection.close(err.closeCode, err.message.slice(0, 100))
        return
      }
      this.failed(err)
    }
  }

  private failed(err: unknown): void {
    this.log.error({ room: this.room.name, conn: this.connection.id, err }, 'message handling failed')
    this.connection.close(CloseCode.internalError, 'internal error')
  }

  private applyUpdate(update: Uint8Array): void {
    // Parse the whole update before Yjs sees it: a truncated or crafted update must neither hang
    // the process (yjs#479, yjs#498) nor leave the document half-applied.
    const outcome = this.room.apply(update, this.source, validateUpdate(update))
    // Counted before the outcome: the count is the client's too, frame for frame.
    this.acks?.received(outcome)
    switch (outcome.kind) {
      case 'applied':
        // y-websocket has no acknowledgement: nothing waits for storage, unless the client asked.
        return
      case 'readOnly':
        // Read access syncs too: a step 2 that only repeats what the room has is harmless. Anything
        // new is refused and the client told; the document never changes.
        if (outcome.changesDocument) {
          this.log.info({ room: this.room.name, conn: this.connection.id }, 'write refused: read-only access')
          this.connection.send(encodePermissionDenied('read-only access: the update was refused'))
        }
        return
      case 'tooLarge':
        // Refused and told (y-protocols permission-denied); the connection stays, so the client can
        // still read and the rest of the room carries on.
        this.log.warn({ room: this.room.name, conn: this.connection.id, bytes: update.length }, 'update refused: document size limit')
        this.connection.send(encodePermissionDenied('update refused: the document would exceed the size limit'))
        return
      case 'refused':
        throw new ProtocolError(CloseCode.invalidPayload, `update rejected by Yjs: ${outcome.message}`)
    }
  }

  private applyAwareness(read: AwarenessRead): void {
    this.room.applyAwareness(read, this)
  }

  // Before the room has loaded nothing is relayed: the sync step 2 that answers the client's
  // step 1 carries everything.
  deliverUpdate(update: Uint8Array, frames: SharedFrames): void {
    if (this.pending === null) this.connection.sendUpdate(this.room.name, update, frames, yWebsocketFormat)
  }

  deliverAwareness(entries: readonly AwarenessEntry[], frames: SharedFrames): void {
    if (this.pending === null) this.connection.sendAwareness(this.room.name, entries, frames, yWebsocketFormat)
  }

  evict(code: number, reason: string): void {
    this.connection.close(code, reason)
  }
}

/**
 * weft's opt-in `stored` acknowledgement: the n-th update frame (sync step 2 or update) of the
 * connection is acknowledged with encodeWeftStored(n) once it and every earlier one are in
 * storage. Cumulative and in order, so a burst of updates stored together gets one frame. An
 * update that is refused (read-only, size limit) or could not be stored ends the acknowledgements
 * of this connection: the client's change is not saved, and a later count must not say it is.
 */
class StoredAcks {
  private count = 0
  private stored = 0
  private sent = 0
  /** Resolves once every counted update before the newest is stored; stays pending once broken. */
  private chain: Promise<void> = Promise.resolve()
  private broken = false
  private flushQueued = false

  constructor(private readonly connection: Connection) {}

  received(outcome: ApplyOutcome): void {
    const n = ++this.count
    if (this.broken) return
    let durable: Promise<void>
    if (outcome.kind === 'applied') durable = outcome.durable
    else if (outcome.kind === 'readOnly' && !outcome.changesDocument) durable = Promise.resolve()
    else {
      this.broken = true
      return
    }
    this.chain = this.chain.then(() => durable).then(
      () => this.storedThrough(n),
      () => {
        this.broken = true
        // Never settles: nothing after an unstored update is acknowledged.
        return new Promise<void>(() => {})
      },
    )
  }

  private storedThrough(n: number): void {
    if (this.broken) return
    this.stored = n
    if (this.flushQueued) return
    this.flushQueued = true
    // Updates stored by one write resolve together: one acknowledgement for all of them.
    queueMicrotask(() => {
      this.flushQueued = false
      if (this.stored > this.sent && this.connection.state === 'open') {
        this.sent = this.stored
        this.connection.send(encodeWeftStored(this.sent))
      }
    })
  }
}
