import * as Y from 'yjs'
import {
  decodeHocuspocusMessage,
  encodeAwarenessUpdate,
  encodeHocuspocusAuthenticated,
  encodeHocuspocusAwareness,
  encodeHocuspocusClose,
  encodeHocuspocusPermissionDenied,
  encodeHocuspocusPing,
  encodeHocuspocusStateless,
  encodeHocuspocusSyncStatus,
  encodeHocuspocusSyncStep1,
  encodeHocuspocusSyncUpdate,
  isValidRoomName,
  parseHocuspocusRoutingKey,
  readAwarenessUpdate,
  ProtocolError,
  validateStateVector,
  validateUpdate,
  type AwarenessEntry,
  type HocuspocusMessage,
} from '../protocol/index.js'
import { hocuspocusAwarenessPrefix, hocuspocusSyncStep2Prefix } from '../protocol/hocuspocus.js'
import { allows, type Authorizer, type Grant } from './access.js'
import { CloseCode } from './codes.js'
import { presenceIdentity } from './room-awareness.js'
import { SyncAsks } from './sync-asks.js'
import type { Connection, ConnectionSession } from './connection.js'
import type { Logger } from './logger.js'
import type { ConnectionInfo } from './hooks.js'
import type { PendingLimits } from './ywebsocket-session.js'
import { UpdateSource, type Room, type RoomMember, type RoomRegistry } from './room.js'
import type { SharedFrames, WireFormat } from './wire-format.js'

/** Hocuspocus framing for members whose document key is the room name: shared by all of them. */
export const hocuspocusFormat: WireFormat = {
  name: 'hocuspocus',
  update: (room, update) => encodeHocuspocusSyncUpdate(room, update),
  awareness: (room, entries) => encodeHocuspocusAwareness(room, encodeAwarenessUpdate(entries)),
}

/** Framing for a `name\0session` key: every frame must carry the full key, so nothing is shared. */
function sessionFormat(key: string): WireFormat {
  return {
    name: `hocuspocus:${key}`,
    update: (_room, update) => encodeHocuspocusSyncUpdate(key, update),
    awareness: (_room, entries) => encodeHocuspocusAwareness(key, encodeAwarenessUpdate(entries)),
  }
}

/**
 * The provider closes a socket that received nothing for 30 s (messageReconnectTimeout); a ping
 * well inside that keeps idle sockets open.
 */
const KEEPALIVE_MS = 10_000

/** The state vector of a client that has nothing. */
const EMPTY_STATE_VECTOR = Uint8Array.of(0)

/**
 * One timer pings every open Hocuspocus socket of the process: a timer per socket would cost each
 * idle socket a timer object and a closure. A socket's first ping comes within KEEPALIVE_MS.
 */
class KeepaliveGroup {
  private readonly sessions = new Set<HocuspocusSession>()
  private timer: NodeJS.Timeout | null = null

  add(session: HocuspocusSession): void {
    this.sessions.add(session)
    if (this.timer !== null) return
    this.timer = setInterval(() => this.ping(), KEEPALIVE_MS)
    this.timer.unref()
  }

  delete(session: HocuspocusSession): void {
    this.sessions.delete(session)
    if (this.sessions.size > 0 || this.timer === null) return
    clearInterval(this.timer)
    this.timer = null
  }

  private ping(): void {
    const frame = encodeHocuspocusPing()
    for (const session of this.sessions) session.connection.send(frame)
  }
}

const keepalive = new KeepaliveGroup()

export interface StatelessEvent {
  room: string
  payload: string
  /** The sender's grant subject, when authenticated. */
  subject: string | null
}

export interface HocuspocusHooks {
  onStateless(event: StatelessEvent): void
  /** Documents a socket may hold at once. */
  maxDocumentsPerSocket: number
  /** Claims a room for the socket's address (see RoomQuota); null when granted, else the denial's text. */
  claimRoom(ip: string, room: string): string | null
  releaseRoom(ip: string, room: string): void
  /** A document refused for the per-socket bound. */
  onTooManyDocuments(): void
  /** A document was authenticated and joined its room (onConnect); `document` identifies it until `closed`. */
  opened(document: object, info: ConnectionInfo): void
  /** That document left its room (onDisconnect): the socket's close code, or the document's own. */
  closed(document: object, info: ConnectionInfo, code: number): void
}

/** What the session tells the pre-authentication guard (see PreAuthGuard). */
export interface PreAuthWatch {
  authenticated(): void
  dispose(): void
}

type DocumentState = 'authenticating' | 'loading' | 'ready' | 'closed'

/** One document of a Hocuspocus socket: the room member. */
class HocuspocusDocument implements RoomMember {
  readonly format: WireFormat
  state: DocumentState = 'authenticating'
  authStarted = false
  expiry: NodeJS.Timeout | null = null
  room: Room | null = null
  grant: Grant | null = null
  /** Carried with every update of this document; set with the grant. */
  source: UpdateSource | null = null
  /** True while the document holds a room claim for the socket's address. */
  claimed = false
  /** Set with the claim: what onConnect was told, and onDisconnect will be. */
  info: ConnectionInfo | null = null
  /** Frames held until the document is authenticated and its room loaded, with their sizes. */
  held: Array<{ message: HocuspocusMessage; bytes: number }> = []

  constructor(
    readonly key: string,
    readonly roomName: string,
    private readonly session: HocuspocusSession,
  ) {
    this.format = key === roomName ? hocuspocusFormat : sessionFormat(key)
  }

  /** presenceIdentity of the grant, once authenticated (awareness is only handled after that). */
  identity: string | null = null
  /** performance.now() of the last answer to a query-awareness. */
  awarenessAnsweredAt = -Infinity
  /** When its sync step 1s are answered; made at the first. */
  syncAsks: SyncAsks | null = null
  /**
   * Set while the first sync step 1 of this document waits for its reply to be sent (the ask
   * waits for reply memory, or the reply is merged off the event loop); resolves when it is sent
   * or the document closes. Acknowledgements wait for it: the provider counts as synced once its
   * own step 2 is acknowledged, which must not come before the document it asked for.
   */
  replySent: { done: Promise<void>; resolve(): void } | null = null
  /** A reply was sent: later step 1s (a provider syncing again) hold nothing back. */
  private replied = false

  /** The first sync step 1 is asked: acknowledgements wait for its reply from now on. */
  awaitReply(): void {
    if (this.replySent !== null || this.replied) return
    let resolve = (): void => {}
    const done = new Promise<void>((r) => (resolve = r))
    this.replySent = { done, resolve }
  }

  /** The reply is sent (or will never be): acknowledgements go out. */
  replyDone(): void {
    this.replied = true
    this.replySent?.resolve()
    this.replySent = null
  }

  /** What precedes an awareness update in this document's Awareness frame; made at the first use. */
  private awarenessPrefix: Uint8Array | null = null

  /** Every live awareness state of the room as this document's Awareness frame; null when there is none. */
  awarenessSnapshot(): Uint8Array | null {
    if (this.room === null) return null
    this.awarenessPrefix ??= hocuspocusAwarenessPrefix(this.key)
    return this.room.awarenessSnapshot(`hocuspocus:${this.key}`, this.awarenessPrefix)
  }

  get readOnly(): boolean {
    return this.grant === null || !allows(this.grant.access, 'write')
  }

  deliverUpdate(update: Uint8Array, frames: SharedFrames): void {
    if (this.state === 'ready') this.session.connection.sendUpdate(this.key, update, frames, this.format)
  }

  deliverAwareness(entries: readonly AwarenessEntry[], frames: SharedFrames): void {
    if (this.state === 'ready') this.session.connection.sendAwareness(this.key, entries, frames, this.format)
  }

  deliverStateless(payload: string): void {
    if (this.state === 'ready') this.session.connection.send(encodeHocuspocusStateless(this.key, payload))
  }

  evict(code: number, reason: string): void {
    // One document going away (deleted) does not end the socket's other documents. After an
    // internal error (load failed, document reloaded) the provider must reconnect to sync again,
    // and it only does that for a closed socket.
    if (code === CloseCode.internalError) this.session.connection.close(code, reason)
    else this.session.closeDocument(this, reason, code)
  }
}

/**
 * A socket's documents by key, in the order they were opened. Most sockets hold one document, so
 * a Map (about 200 bytes) is made only when a second one arrives.
 */
class DocumentTable {
  private single: HocuspocusDocument | null = null
  private many: Map<string, HocuspocusDocument> | null = null

  get(key: string): HocuspocusDocument | undefined {
    if (this.many !== null) return this.many.get(key)
    return this.single?.key === key ? this.single : undefined
  }

  set(key: string, document: HocuspocusDocument): void {
    if (this.many !== null) this.many.set(key, document)
    else if (this.single === null || this.single.key === key) this.single = document
    else {
      this.many = new Map([[this.single.key, this.single], [key, document]])
      this.single = null
    }
  }

  delete(key: string): void {
    if (this.many !== null) this.many.delete(key)
    else if (this.single?.key === key) this.single = null
  }

  get size(): number {
    return this.many !== null ? this.many.size : this.single === null ? 0 : 1
  }

  /** A copy: documents may be closed while it is walked. */
  list(): HocuspocusDocument[] {
    if (this.many !== null) return [...this.many.values()]
    return this.single === null ? [] : [this.single]
  }

  clear(): void {
    this.single = null
    this.many = null
  }
}

/**
 * One socket speaking the Hocuspocus provider protocol: many documents, each authenticated on its
 * own and joined to its room. The socket's send queue, limits and heartbeats are the connection
 * core's; a document costs a map entry and a room membership.
 */
export class HocuspocusSession implements ConnectionSession {
  private readonly documents = new DocumentTable()
  private heldMessages = 0
  private heldBytes = 0
  /** Keys denied on this socket: a later successful token is a retry whose step 1 was dropped. Created at the first denial. */
  private denied: Set<string> | null = null

  constructor(
    readonly connection: Connection,
    private readonly registry: RoomRegistry,
    private readonly authorizer: Authorizer,
    private readonly limits: PendingLimits,
    private readonly hooks: HocuspocusHooks,
    private readonly log: Logger,
    /** Bounds bytes and time until the first document is authenticated; null when nothing is watched. */
    private readonly preauth: PreAuthWatch | null = null,
  ) {
    connection.bind(this)
    keepalive.add(this)
  }

  closed(code: number): void {
    keepalive.delete(this)
    this.preauth?.dispose()
    for (const document of this.documents.list()) {
      if (document.expiry !== null) clearTimeout(document.expiry)
      document.syncAsks?.close()
      document.state = 'closed'
      document.room?.leave(document)
      this.unclaim(document, code)
    }
    this.documents.clear()
  }

  receive(frame: Uint8Array): void {
    let message: HocuspocusMessage
    try {
      message = decodeHocuspocusMessage(frame)
    } catch (err) {
      this.fail(err)
      return
    }
    if (message.kind === 'ping' || message.kind === 'pong') return // liveness is counted by the connection
    const document = this.documents.get(message.document)
    if (message.kind === 'auth-token') {
      // A second token for a document already authenticating or open is ignored: the provider
      // sends a new one only after a denial, and a denial forgets the document.
      if (document === undefined || (document.state === 'authenticating' && !document.authStarted)) void this.open(message.document, message.token)
      return
    }
    if (message.kind === 'close' && (document === undefined || document.state !== 'ready')) {
      // A provider detaching (after a denial, before its retry) closes a document the server does
      // not hold open: nothing to hold; the token that follows starts it afresh.
      if (document !== undefined) this.forget(document)
      return
    }
    if (document === undefined) {
      // The provider always sends its token first; anything else for an unknown document is
      // held under the same bound as pre-auth frames, waiting for that token.
      if (!this.hold(frame.length)) return
      const fresh = this.create(message.document)
      if (fresh === null) {
        this.release(frame.length)
        return
      }
      fresh.held.push({ message, bytes: frame.length })
      return
    }
    if (document.state !== 'ready') {
      if (!this.hold(frame.length)) return
      document.held.push({ message, bytes: frame.length })
      return
    }
    this.handle(document, message)
  }

  /** Counts a frame held before its document is ready; past the bound the socket gets 1013. */
  private hold(bytes: number): boolean {
    this.heldMessages++
    this.heldBytes += bytes
    if (this.heldMessages > this.limits.maxPendingMessages || this.heldBytes > this.limits.maxPendingBytes) {
      this.connection.close(CloseCode.tryAgainLater, 'too much sent before authentication')
      return false
    }
    return true
  }

  private create(key: string): HocuspocusDocument | null {
    const { documentName } = parseHocuspocusRoutingKey(key)
    if (!isValidRoomName(documentName)) {
      this.connection.send(encodeHocuspocusPermissionDenied(key, 'invalid document name'))
      return null
    }
    if (this.documents.size >= this.hooks.maxDocumentsPerSocket) {
      this.hooks.onTooManyDocuments()
      this.connection.send(encodeHocuspocusPermissionDenied(key, 'too many documents on one connection'))
      return null
    }
    const document = new HocuspocusDocument(key, documentName, this)
    this.documents.set(key, document)
    return document
  }

  private async open(key: string, token: string): Promise<void> {
    const existing = this.documents.get(key)
    const document = existing ?? this.create(key)
    if (document === null) return
    document.authStarted = true
    const decision = await this.authorizer.authorize(this.authorizer.open ? null : token, document.roomName)
    if (document.state === 'closed' || this.connection.state !== 'open') return
    if (!decision.ok) {
      this.connection.send(encodeHocuspocusPermissionDenied(key, decision.reason))
      // Bounded like the documents themselves: a client cannot grow it by asking for many names.
      this.denied ??= new Set()
      if (this.denied.size < this.hooks.maxDocumentsPerSocket) this.denied.add(key)
      // Forget the document, so the provider's retry with a new token starts afresh.
      this.forget(document)
      return
    }
    // Authenticated: the socket is past its pre-auth bounds, even if this room is refused below.
    this.preauth?.authenticated()
    if (this.registry.isFull(document.roomName)) {
      this.connection.send(encodeHocuspocusPermissionDenied(key, 'room is full'))
      this.forget(document)
      return
    }
    const refused = this.hooks.claimRoom(this.connection.ip, document.roomName)
    if (refused !== null) {
      this.connection.send(encodeHocuspocusPermissionDenied(key, refused))
      this.forget(document)
      return
    }
    document.claimed = true
    document.grant = decision.grant
    document.source = new UpdateSource({ kind: 'client', protocol: 'hocuspocus', subject: decision.grant.subject }, document, allows(decision.grant.access, 'write'))
    document.info = { room: document.roomName, protocol: 'hocuspocus', subject: decision.grant.subject, remoteAddress: this.connection.address }
    this.hooks.opened(document, document.info)
    document.identity = presenceIdentity(decision.grant.subject)
    const expiresAt = decision.grant.expiresAt
    if (expiresAt !== null) {
      // Only this document ends at expiry; the shared socket's other documents have their own tokens.
      document.expiry = setTimeout(() => this.closeDocument(document, 'access token expired', CloseCode.unauthorized), Math.max(0, expiresAt - Date.now()))
      document.expiry.unref()
    }
    this.connection.send(encodeHocuspocusAuthenticated(key, allows(decision.grant.access, 'write') ? 'read-write' : 'readonly'))
    document.state = 'loading'
    document.room = this.registry.join(document.roomName, document)
    try {
      await document.room.loaded
    } catch {
      return // the room evicted its members
    }
    if ((document.state as DocumentState) !== 'loading') return
    document.state = 'ready'
    const states = document.awarenessSnapshot()
    if (states !== null) this.connection.send(states)
    const held = document.held
    document.held = []
    if (this.denied !== null && this.denied.delete(key) && !held.some(({ message }) => message.kind === 'sync-step-1')) {
      // A retry after a denial: the provider sent its step 1 only on socket open, and it was dropped.
      // Answered as a step 1 with an empty state vector: the whole document, shared with the
      // room's other full-state replies, a sync reply like any other (a turn, no slow-consumer count).
      document.awaitReply()
      this.syncAsksOf(document, document.room).ask(EMPTY_STATE_VECTOR)
      this.connection.send(encodeHocuspocusSyncStep1(key, Y.encodeStateVector(document.room.doc)))
    }
    for (const { message, bytes } of held) {
      this.release(bytes)
      if ((document.state as DocumentState) !== 'ready' || this.connection.state !== 'open') return
      this.handle(document, message)
    }
  }

  private release(bytes: number): void {
    this.heldMessages--
    this.heldBytes -= bytes
  }

  /** When `document`'s sync step 1s are answered (see SyncAsks), made at its first. */
  private syncAsksOf(document: HocuspocusDocument, room: Room): SyncAsks {
    if (document.syncAsks !== null) return document.syncAsks
    const waiter = {}
    document.syncAsks = new SyncAsks(
      {
        answer: (stateVector) => {
          if (document.state === 'closed') return
          const reply = room.syncReplyOffLoop(stateVector, `hocuspocus:${document.key}`, hocuspocusSyncStep2Prefix(document.key), document.format, this.connection.ip)
          const sent = this.connection.sendBuiltReply(reply, () => document.state !== 'closed')
          if (sent === null) document.replyDone()
          else sent.catch((err: unknown) => this.fail(err)).finally(() => document.replyDone())
        },
        replyOnItsWay: () => this.connection.syncReplyOnItsWay,
        mayBuild: (stateVector) => room.mayBuildSyncReply(stateVector, `hocuspocus:${document.key}`, this.connection.ip, waiter),
        onDeferred: () => this.registry.onSyncAskDeferred(),
        settled: () => this.registry.replyMemory?.forget(waiter),
      },
      this.registry.repeatAnswerIntervalMs,
    )
    return document.syncAsks
  }

  /** `code`: what onDisconnect hears; 1000 when the client closed the document itself. */
  private forget(document: HocuspocusDocument, code: number = CloseCode.normal): void {
    if (document.expiry !== null) clearTimeout(document.expiry)
    document.expiry = null
    document.syncAsks?.close()
    document.replyDone()
    for (const { bytes } of document.held) this.release(bytes)
    document.held = []
    document.state = 'closed'
    document.room?.leave(document)
    this.unclaim(document, code)
    this.documents.delete(document.key)
  }

  private unclaim(document: HocuspocusDocument, code: number): void {
    if (!document.claimed) return
    document.claimed = false
    this.hooks.releaseRoom(this.connection.ip, document.roomName)
    if (document.info !== null) this.hooks.closed(document, document.info, code)
  }

  closeDocument(document: HocuspocusDocument, reason: string, code: number): void {
    if (document.state === 'closed') return
    this.forget(document, code)
    this.connection.send(encodeHocuspocusClose(document.key, reason))
    this.log.debug({ room: document.roomName, conn: this.connection.id, code }, 'hocuspocus document closed by the server')
  }

  /**
   * POST /api/connections/revoke: each document whose grant `revoked` covers gets the
   * permission-denied message (the stock provider emits `authenticationFailed`) and is forgotten;
   * a socket left with no document is closed with 4403 (the provider reconnects and sends its
   * token again, which is checked again). Returns how many documents were ended.
   */
  revoke(revoked: (grant: Grant, room: string) => boolean): number {
    let ended = 0
    for (const document of this.documents.list()) {
      if (document.grant === null || document.state === 'closed' || !revoked(document.grant, document.roomName)) continue
      this.forget(document)
      this.connection.send(encodeHocuspocusPermissionDenied(document.key, 'access revoked'))
      ended++
    }
    if (ended > 0 && this.documents.size === 0) this.connection.close(CloseCode.forbidden, 'access revoked')
    return ended
  }

  private handle(document: HocuspocusDocument, message: HocuspocusMessage): void {
    const room = document.room as Room
    try {
      switch (message.kind) {
        case 'sync-step-1':
          validateStateVector(message.stateVector)
          document.awaitReply()
          this.syncAsksOf(document, room).ask(message.stateVector)
          // The provider's own step 2 answers this; its ack is what clears its unsynced counter.
          if (!message.reply) this.connection.send(encodeHocuspocusSyncStep1(document.key, Y.encodeStateVector(room.doc)))
          break
        case 'sync-step-2':
        case 'sync-update':
          this.applyUpdate(document, room, message.update)
          break
        case 'awareness':
          room.applyAwareness(readAwarenessUpdate(message.update, room.awarenessLimits), document)
          break
        case 'query-awareness': {
          const now = performance.now()
          if (!room.answersAwarenessQuery(document.awarenessAnsweredAt, now)) break
          document.awarenessAnsweredAt = now
          this.connection.send(document.awarenessSnapshot() ?? encodeHocuspocusAwareness(document.key, encodeAwarenessUpdate([])))
          break
        }
        case 'stateless':
          this.hooks.onStateless({ room: document.roomName, payload: message.payload, subject: document.grant?.subject ?? null })
          break
        case 'broadcast-stateless':
          if (document.readOnly) break
          room.broadcastStateless(message.payload, document)
          break
        case 'close':
          this.forget(document)
          break
        case 'auth-token':
        case 'ping':
        case 'pong':
          break
      }
    } catch (err) {
      this.fail(err)
    }
  }

  private applyUpdate(document: HocuspocusDocument, room: Room, update: Uint8Array): void {
    const summary = validateUpdate(update)
    const key = document.key
    const outcome = room.apply(update, document.source as UpdateSource, summary)
    switch (outcome.kind) {
      case 'readOnly':
        // Readonly providers keep sending their edits; refused ones get SyncStatus(0), a step 2
        // that repeats what the room has gets SyncStatus(1) so the provider can reach "synced".
        this.acknowledge(document, Promise.resolve(), !outcome.changesDocument)
        return
      case 'tooLarge':
        this.connection.send(encodeHocuspocusSyncStatus(key, false))
        this.log.warn({ room: room.name, conn: this.connection.id, bytes: update.length }, 'update refused: document size limit')
        return
      case 'refused':
        throw new ProtocolError(CloseCode.invalidPayload, `update rejected by Yjs: ${outcome.message}`)
      case 'applied':
        break
    }
    // Acknowledged only once the update is in storage: "no unsynced changes" means saved.
    this.acknowledge(document, outcome.durable.catch((err: unknown) => {
      this.log.error({ room: room.name, err }, 'update could not be stored; not acknowledged')
      throw err
    }), true)
  }

  /**
   * SyncStatus once `durable` settles (`applied`, or false when it rejects), and not before the
   * reply to the document's pending sync step 1 is sent (HocuspocusDocument.replySent).
   */
  private acknowledge(document: HocuspocusDocument, durable: Promise<void>, applied: boolean): void {
    const key = document.key
    const pending = document.replySent?.done
    const ready = pending === undefined ? durable : pending.then(() => durable)
    ready.then(
      () => this.connection.send(encodeHocuspocusSyncStatus(key, applied)),
      () => this.connection.send(encodeHocuspocusSyncStatus(key, false)),
    )
  }

  private fail(err: unknown): void {
    if (err instanceof ProtocolError) {
      this.log.info({ conn: this.connection.id, code: err.closeCode, reason: err.message }, 'malformed hocuspocus message')
      this.connection.close(err.closeCode, err.message.slice(0, 100))
      return
    }
    this.log.error({ conn: this.connection.id, err }, 'hocuspocus message handling failed')
    this.connection.close(CloseCode.internalError, 'internal error')
  }
}
