import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as Y from 'yjs'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { randomUUID } from 'node:crypto'
import { WebSocketServer, type WebSocket } from 'ws'
import { createRelay, RedisSharedState, type Relay } from '../cluster/index.js'
import { pathOfTarget, roomFromPath } from '../protocol/index.js'
import { DocumentWriter, openStore, ReplicatedVersions, type StorageHealth, type VersionStore } from '../persistence/index.js'
import { CloseCode, HttpError, type HttpErrorCode } from './codes.js'
import { resolveOptions, type WeftOptions } from './config.js'
import { JwtAuthorizer, OPEN_GRANT, openAccess, roomInScope, type AccessDecision, type Authorizer, type Grant } from './access.js'
import { HttpApi } from './http-api.js'
import { serveApiDescription, serveHomePage } from './home-page.js'
import { rawError, RETRY_AFTER_SECONDS, sendError, sendJson } from './http-response.js'
import { MemoryTickets, Tickets } from './tickets.js'
import { Admission, BodyBudget, ClaimedTicket, ClientAddress, PendingConnections, RoomQuota, type AdmissionTicket } from './admission.js'
import { PreAuthGuard } from './preauth-guard.js'
import { HocuspocusSession, type HocuspocusHooks, type StatelessEvent } from './hocuspocus-session.js'
import { Connection, type ConnectionEvents, type ConnectionLimits } from './connection.js'
import { createLogger, type Logger } from './logger.js'
import { ServerMetrics } from './metrics.js'
import { RoomRegistry } from './room.js'
import { awarenessLimits } from './room-awareness.js'
import { YWebsocketSession, type PendingLimits } from './ywebsocket-session.js'
import { LevelOutboxStore, MemoryOutboxStore, originOfMember, WebhookOutbox } from './webhooks/index.js'

export type ServerState = 'starting' | 'serving' | 'draining' | 'stopped'

const SERVER_TRANSITIONS: Readonly<Record<ServerState, readonly ServerState[]>> = {
  starting: ['serving', 'draining', 'stopped'],
  serving: ['draining', 'stopped'],
  draining: ['stopped'],
  stopped: [],
}

export interface CreateServerOptions extends Partial<WeftOptions> {
  /** A pino logger to use instead of the JSON stdout logger built from `logLevel`. */
  logger?: Logger
}

export interface DrainResult {
  /** Rooms whose last writes could not be stored before the deadline. */
  unsaved: string[]
}

/** What a connection may send before its room has loaded: past either bound it is closed with 1013. */
const PENDING_MESSAGES = 1_000
const PENDING_BYTES = 8 * 1024 * 1024

/** How long a hurried shutdown may take to close sockets and flush. */
const HURRIED_SHUTDOWN_MS = 1_000

/** Heartbeat ticks per interval; each checks the connections whose id falls in its slice. */
const HEARTBEAT_SLICES = 16

/** Errors on a socket weft has not handed to ws yet (an upgrade waiting for its authorization). */
function destroySocket(this: Duplex): void {
  this.destroy()
}

/**
 * One weft instance: HTTP endpoints, WebSocket upgrades, rooms and storage.
 * `starting → serving → draining → stopped`; `drain()` and `close()` are idempotent.
 */
export class WeftServer {
  readonly options: Readonly<WeftOptions>
  readonly log: Logger
  readonly metrics = new ServerMetrics()
  private stateValue: ServerState = 'starting'
  private httpServer: HttpServer | HttpsServer | null = null
  private ownsHttpServer = false
  private readonly wss: WebSocketServer
  private writer: DocumentWriter | null = null
  private rooms: RoomRegistry | null = null
  private relay: Relay | null = null
  private shared: RedisSharedState | null = null
  private versions: VersionStore | null = null
  /** With --redis: versions in LevelDB and in Redis (persistence/version-replicas.ts). */
  private replicas: ReplicatedVersions | null = null
  private tickets: Tickets | null = null
  private api: HttpApi | null = null
  /** With --webhook-url: the durable outbox of signed events (server/webhooks/). */
  private webhooks: WebhookOutbox | null = null
  private startPromise: Promise<void> | null = null
  private drainPromise: Promise<DrainResult> | null = null
  /** Set when close() arrives during a drain: the rest of the drain goes at once. */
  private hurried = false
  private hurry: (() => void) | null = null
  private heartbeatTimer: NodeJS.Timeout | null = null
  /** The slice of connections (by id) the next heartbeat tick checks. */
  private heartbeatSlice = 0
  private readonly connections = new Set<Connection>()
  private readonly admission: Admission
  private readonly roomQuota: RoomQuota
  private readonly bodies: BodyBudget
  private pending: PendingConnections | null = null
  private readonly authorizer: Authorizer
  private readonly clientAddress: ClientAddress
  private storageHealth: StorageHealth = { ok: true }
  /** One of each for all connections: nothing per connection that is the same for every one. */
  private readonly connectionLimits: ConnectionLimits
  private readonly connectionEvents: ConnectionEvents
  private readonly pendingLimits: PendingLimits
  private readonly hocuspocusHooks: HocuspocusHooks

  constructor(options: CreateServerOptions = {}) {
    const { logger, ...settings } = options
    this.options = resolveOptions(settings)
    this.log = logger ?? createLogger(this.options.logLevel)
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.options.maxMessageBytes,
      // Yjs updates are already compact binary; compression would cost CPU per recipient.
      perMessageDeflate: false,
      clientTracking: false,
    })
    // Handshakes ws itself refuses (bad key, version or method) still get the contract's JSON errors.
    this.wss.on('wsClientError', (err: Error, socket: Duplex) => {
      const code: HttpErrorCode = err.message === 'Invalid HTTP method' ? 'method_not_allowed' : 'bad_request'
      this.refuseUpgrade(socket, code, err.message, 'bad_handshake')
    })
    this.metrics.storageUp.set(1)
    this.admission = new Admission(this.options)
    this.roomQuota = new RoomQuota(this.options)
    this.bodies = new BodyBudget(this.options)
    this.authorizer = this.options.authSecret === null ? openAccess : new JwtAuthorizer(this.options.authSecret)
    this.clientAddress = new ClientAddress(this.options.trustedProxies)
    const { metrics, options: resolved } = this
    this.connectionLimits = Object.freeze({
      sendQueueBytes: resolved.sendQueueBytes,
      slowConsumerGraceMs: resolved.slowConsumerGraceMs,
      inboundMessagesPerSecond: resolved.inboundMessagesPerSecond,
      inboundBytesPerSecond: resolved.inboundBytesPerSecond,
      maxMessageBytes: resolved.maxMessageBytes,
    })
    this.connectionEvents = Object.freeze({
      onSlowConsumer: () => metrics.slowConsumerCloses.inc(),
      onCoalesced: (count: number) => metrics.coalescedUpdates.inc(count),
      onPause: () => metrics.pausedSockets.inc(),
      onResume: () => metrics.pausedSockets.dec(),
      onClose: (connection: Connection, code: number) => this.forgetConnection(connection, code),
    })
    this.pendingLimits = Object.freeze({ maxPendingMessages: PENDING_MESSAGES, maxPendingBytes: Math.max(resolved.maxMessageBytes, PENDING_BYTES) })
    this.hocuspocusHooks = Object.freeze({
      onStateless: (event: StatelessEvent) => this.emitStateless(event),
      maxDocumentsPerSocket: resolved.maxDocumentsPerConnection,
      claimRoom: (ip: string, room: string) => this.claimRoom(ip, room, 'hocuspocus')?.reason ?? null,
      releaseRoom: (ip: string, room: string) => this.roomQuota.release(ip, room),
      onTooManyDocuments: () => metrics.roomLimitRefusals.inc({ limit: 'per_connection', protocol: 'hocuspocus' }),
    })
  }

  get state(): ServerState {
    return this.stateValue
  }

  private transition(next: ServerState): void {
    if (!SERVER_TRANSITIONS[this.stateValue].includes(next)) throw new Error(`server: illegal transition ${this.stateValue} -> ${next}`)
    this.stateValue = next
    this.log.debug({ state: next }, 'server state')
  }

  /** Opens storage. Called by `listen` and `attach`; safe to call more than once. */
  start(): Promise<void> {
    this.startPromise ??= this.open()
    return this.startPromise
  }

  private async open(): Promise<void> {
    const store = await openStore(this.options.data)
    const writer = new DocumentWriter(store, {
      persistWindowMs: this.options.persistWindowMs,
      logger: this.log,
    })
    writer.on('health', (health) => {
      this.storageHealth = health
      this.metrics.storageUp.set(health.ok ? 1 : 0)
      if (health.ok) this.log.info('storage recovered')
      else this.log.error({ error: health.error }, 'storage failing')
    })
    this.writer = writer
    if (this.options.redisUrl !== null) {
      const relay = createRelay({
        redisUrl: this.options.redisUrl,
        instanceId: this.options.instanceId ?? randomUUID(),
        prefix: this.options.redisPrefix,
        retentionMs: this.options.redisRetentionSeconds * 1000,
        republishRoomsPerSecond: this.options.republishRoomsPerSecond,
        logger: this.log.child({ part: 'relay' }),
      })
      relay.setStoredRooms({ list: async () => (await writer.listRooms()).map((stored) => stored.room), load: (room) => writer.load(room) })
      relay.on('health', (health) => {
        if (this.stateValue === 'draining' || this.stateValue === 'stopped') return
        if (health.up) this.log.info('redis relay up')
        else this.log.error({ error: health.error }, 'redis relay down; serving local clients, holding updates until it is back')
      })
      this.relay = relay
      this.metrics.observeRelay(relay)
    }
    this.versions = store
    this.tickets = new Tickets(new MemoryTickets())
    if (this.options.redisUrl !== null) {
      const shared = new RedisSharedState({ redisUrl: this.options.redisUrl, instanceId: this.relay?.instanceId ?? randomUUID(), prefix: this.options.redisPrefix, logger: this.log.child({ part: 'shared' }) })
      shared.onRoomDeleted((room) => {
        this.deleteLocally(room).catch((err: unknown) => this.log.error({ room, err }, 'deleting a room failed'))
      })
      this.shared = shared
      const replicas = new ReplicatedVersions({
        local: store,
        shared,
        republishBytesPerSecond: this.options.versionRepublishBytesPerSecond,
        logger: this.log.child({ part: 'versions' }),
        onRepublished: () => this.metrics.versionsRepublished.inc(),
        onCopied: () => this.metrics.versionsCopied.inc(),
      })
      shared.onVersionAnnounced((room, id) => replicas.noteVersion(room, id))
      shared.onEpoch((epoch) => {
        replicas.syncEpoch(epoch).catch((err: unknown) => this.log.warn({ err }, 're-publishing versions failed; retried at the next connection to Redis'))
      })
      this.replicas = replicas
      this.versions = replicas
      this.tickets = new Tickets(shared)
    }
    const { options } = this
    this.rooms = new RoomRegistry(writer, this.log, options.roomUnloadDelayMs, options.maxDocumentBytes, options.maxRoomConnections, this.relay, {
      maxNestingDepth: options.maxNestingDepth,
      maxPendingBytes: options.maxPendingBytes,
    }, awarenessLimits(options))
    const rooms = this.rooms
    rooms.onBatched = (count) => this.metrics.batchedUpdates.inc(count)
    rooms.onRefused = (reason) => this.metrics.updateRefusals.inc({ reason })
    rooms.onQuarantined = () => this.metrics.quarantinedEntries.inc()
    rooms.onReset = () => this.metrics.roomResets.inc()
    rooms.onAwarenessRefused = (reason, count) => this.metrics.awarenessRefused.inc({ reason }, count)
    this.webhooks = await this.openWebhooks(writer, rooms)
    writer.setSnapshotSource((name) => {
      // A room Yjs broke is forgotten at once (Room.reset): only a sound document is snapshotted.
      const room = rooms.get(name)
      return room !== undefined && room.state === 'active' ? room.snapshot() : null
    })
    this.api = new HttpApi({
      rooms: this.rooms,
      writer,
      versions: this.versions as VersionStore,
      authorizer: this.authorizer,
      tickets: this.tickets as Tickets,
      deleteRoom: (room) => this.deleteRoom(room),
      sendStateless: (room, payload) => this.sendStateless(room, payload),
      maxBodyBytes: this.options.maxMessageBytes,
      log: this.log,
      allowOrigins: this.options.allowOrigins,
      addressOf: (req) => this.clientAddress.of(req),
      bodies: this.bodies,
      bodyTimeoutMs: this.options.bodyTimeoutMs,
      claimRoom: (ip, room) => this.claimRoom(ip, room, 'http'),
      releaseRoom: (ip, room) => this.roomQuota.release(ip, room),
      onRefused: (reason) => this.metrics.httpRefusals.inc({ reason }),
      versionLimits: { maxCount: this.options.maxVersionsPerRoom, maxBytes: this.options.maxVersionBytesPerRoom },
      versionsPerMinutePerRoom: this.options.versionsPerMinutePerRoom,
      onVersion: (outcome) => (outcome === 'created' ? this.metrics.versionsCreated.inc() : this.metrics.versionRefusals.inc({ reason: outcome })),
      webhooks: this.webhooks,
    })
    // Each tick checks and pings one slice of the connections: every connection once an interval,
    // and never all of them in one loop, which would hold up broadcasts the way a broadcast to
    // everyone does.
    this.heartbeatTimer = setInterval(() => this.heartbeat(), Math.max(1, Math.round(this.options.heartbeatIntervalMs / HEARTBEAT_SLICES)))
    this.heartbeatTimer.unref()
    if (this.options.authSecret === null && this.options.allowOrigins === null) {
      this.log.warn('open mode: no --auth-secret and no --allow-origin; anyone who can reach this port can read and edit every document')
    }
    if (this.stateValue === 'starting') this.transition('serving')
  }

  /**
   * The webhook outbox (issue 16), in <data>/webhooks (its own LevelDB beside the documents), or in
   * memory with `--data memory`. Fed by the changes members make here: changes that came from
   * other instances are theirs to report, so each change is one event cluster-wide.
   */
  private async openWebhooks(writer: DocumentWriter, rooms: RoomRegistry): Promise<WebhookOutbox | null> {
    const { options } = this
    if (options.webhookUrls === null || options.webhookUrls.length === 0 || options.webhookSecret === null) return null
    const store = options.data === 'memory' ? new MemoryOutboxStore() : await LevelOutboxStore.open(join(options.data, 'webhooks'))
    const outbox = await WebhookOutbox.open(
      {
        urls: options.webhookUrls,
        secret: options.webhookSecret,
        debounceMs: options.webhookDebounceMs,
        maxWaitMs: options.webhookMaxWaitMs,
        maxAgeMs: options.webhookMaxAgeSeconds * 1000,
        timeoutMs: options.webhookTimeoutMs,
        retryMinMs: options.webhookRetryMinMs,
        maxEntries: options.webhookMaxEntries,
        maxBytes: options.webhookMaxBytes,
      },
      {
        store,
        stateVector: async (name) => {
          const room = rooms.get(name)
          if (room !== undefined && room.state === 'active') return Y.encodeStateVector(room.doc)
          const stored = await writer.load(name)
          return stored === null ? null : Y.encodeStateVectorFromUpdate(stored)
        },
        log: this.log.child({ part: 'webhooks' }),
      },
    )
    // Issue 15 replaces this feed with the public onChange hook, which carries the UpdateOrigin.
    rooms.onMemberChange = (room, member) => outbox.recordChange(room, originOfMember(member), Date.now())
    this.metrics.observeWebhooks(outbox)
    return outbox
  }

  /** Listens on `options.host`/`options.port` with weft's own HTTP(S) server. */
  async listen(): Promise<AddressInfo> {
    await this.start()
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handleRequest(req, res)
    const server =
      this.options.tlsCert !== null && this.options.tlsKey !== null
        ? createHttpsServer({ cert: readFileSync(this.options.tlsCert), key: readFileSync(this.options.tlsKey) }, handler)
        : createHttpServer(handler)
    this.ownsHttpServer = true
    // Requests Node's parser refuses (raw control or non-ASCII bytes in the target, broken
    // headers) still get the contract's JSON error, not Node's empty 400.
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (err.code === 'ECONNRESET' || !socket.writable) socket.destroy()
      else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') socket.end(rawError('request_timeout', 'the request did not arrive in time'))
      else socket.end(rawError('bad_request', 'malformed HTTP request'))
    })
    this.limitSlowClients(server)
    this.attach(server)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    const address = server.address() as AddressInfo
    // Operators and scripts wait for this line (the contract), so it is printed at any level but silent.
    const announce = this.log.level === 'silent' ? this.log : this.log.child({}, { level: 'info' })
    announce.info({ port: address.port, host: address.address }, 'listening')
    return address
  }

  /**
   * Time and number bounds on connections that have not sent a whole request (slow headers), and
   * on requests whose body trickles in. Only for weft's own server: an embedding server keeps its own.
   */
  private limitSlowClients(server: HttpServer | HttpsServer): void {
    const { options, metrics } = this
    server.headersTimeout = options.headersTimeoutMs
    // The whole request, body included: the body's own deadline answers 408 first; this is the backstop.
    server.requestTimeout = options.headersTimeoutMs + options.bodyTimeoutMs + 1_000
    server.keepAliveTimeout = 5_000
    const pending = new PendingConnections(options, (ip) => this.clientAddress.isTrusted(ip), (reason) => metrics.httpRefusals.inc({ reason }))
    this.pending = pending
    // With TLS the request's socket is the TLS socket; the handshake has its own timeout.
    if ('setSecureContext' in server) {
      server.on('secureConnection', (socket: Socket) => pending.accept(socket))
      ;(server as HttpsServer & { handshakeTimeout?: number }).handshakeTimeout = options.headersTimeoutMs
    } else server.on('connection', (socket: Socket) => pending.accept(socket))
    server.on('request', (req: IncomingMessage) => pending.done(req.socket as Socket))
    server.on('upgrade', (req: IncomingMessage) => pending.done(req.socket as Socket))
  }

  /** Handles WebSocket upgrades of an existing HTTP(S) server. Other requests stay the caller's (see `handleRequest`). */
  attach(server: HttpServer | HttpsServer): void {
    if (this.httpServer !== null) throw new Error('weft is already attached to a server')
    this.httpServer = server
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head))
    void this.start().catch((err: unknown) => this.log.error({ err }, 'storage could not be opened'))
  }

  address(): AddressInfo | null {
    const address = this.httpServer?.address()
    return address !== null && typeof address === 'object' ? address : null
  }

  /** weft's HTTP endpoints, for use from an embedding server's request handler. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const target = req.url ?? '/'
    const url = { pathname: pathOfTarget(target) }
    if (this.api !== null && this.api.handles(url.pathname)) {
      if (this.stateValue !== 'serving') {
        sendError(res, 'unavailable', `server is ${this.stateValue}`)
        return
      }
      void this.api.handle(req, res, url.pathname, target.slice(url.pathname.length + 1))
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (url.pathname.startsWith('/health/') || url.pathname === '/metrics') {
        sendError(res, 'method_not_allowed', `${req.method} is not allowed on ${url.pathname}`)
      } else sendError(res, 'not_found', `no route for ${req.method} ${url.pathname}`)
      return
    }
    switch (url.pathname) {
      case '/':
        serveHomePage(req, res, this.options.hocuspocusPath)
        return
      case '/openapi.yaml':
        serveApiDescription(res)
        return
      case '/health/live':
        sendJson(res, 200, { status: 'live' })
        return
      case '/health/ready': {
        const ready = this.stateValue === 'serving' && this.storageHealth.ok
        // Redis being down does not make an instance unready: it still serves its own clients
        // (and holds their updates for the cluster); taking every instance out would be an outage.
        const redis = this.relay === null ? 'none' : this.relay.health().up ? 'up' : 'down'
        const recovery = this.relay?.recovery?.()
        // Progress of a re-publish after Redis lost its data: the instance serves meanwhile.
        const republish = recovery?.republishing === true || recovery?.resyncing === true ? { republish: { done: recovery.republishDone, total: recovery.republishTotal } } : {}
        const detail = { state: this.stateValue, storage: this.storageHealth.ok ? 'ok' : 'failing', redis, ...republish }
        if (ready) sendJson(res, 200, { status: 'ready', ...detail })
        else {
          const why = this.stateValue !== 'serving' ? `server is ${this.stateValue}` : 'storage is failing'
          sendJson(res, 503, { error: 'unavailable', message: why, status: 'unavailable', ...detail }, { 'retry-after': RETRY_AFTER_SECONDS })
        }
        return
      }
      case '/metrics':
        this.serveMetrics(req, res)
        return
      default:
        sendError(res, 'not_found', `no route for GET ${url.pathname}`)
    }
  }

  private serveMetrics(req: IncomingMessage, res: ServerResponse): void {
    const token = this.options.metricsToken
    if (token !== null && req.headers.authorization !== `Bearer ${token}`) {
      sendError(res, 'unauthorized', 'metrics need a bearer token')
      return
    }
    this.metrics.connections.set(this.connections.size)
    this.metrics.roomsLoaded.set(this.rooms?.size ?? 0)
    this.metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType })
        res.end(text)
      },
      (err: unknown) => {
        this.log.error({ err }, 'metrics failed')
        sendError(res, 'internal_error', 'metrics could not be collected')
      },
    )
  }

  /** Claims a room for an address (RoomQuota); null when granted, else the refusal (counted). */
  private claimRoom(ip: string, room: string, protocol: 'ywebsocket' | 'hocuspocus' | 'http') {
    const rooms = this.rooms
    const refusal = this.roomQuota.claim(ip, room, rooms?.get(room) !== undefined, rooms?.size ?? 0)
    if (refusal !== null) this.metrics.roomLimitRefusals.inc({ limit: refusal.limit, protocol })
    return refusal
  }

  private refuseUpgrade(socket: Duplex, code: HttpErrorCode, message: string, result: string): void {
    this.metrics.upgrades.inc({ result })
    // The client sees only a failed connection; this line tells the operator why. The reasons are
    // fixed texts and the URL is left out: neither can carry a token or ticket.
    this.log.info({ result, status: HttpError[code], reason: message, remoteAddress: (socket as Socket).remoteAddress }, 'upgrade refused')
    socket.end(rawError(code, message))
  }


  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', destroySocket)
    this.upgrade(req, socket, head).catch((err: unknown) => {
      this.log.error({ err }, 'upgrade failed')
      this.refuseUpgrade(socket, 'internal_error', 'internal error', 'error')
    })
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if (this.stateValue !== 'serving' || this.rooms === null) {
      this.refuseUpgrade(socket, 'unavailable', this.stateValue === 'draining' ? 'server is draining' : 'server is not ready', 'unavailable')
      return
    }
    const allowed = this.options.allowOrigins
    const origin = req.headers.origin
    if (allowed !== null && (origin === undefined || !allowed.includes(origin))) {
      // Cross-site WebSocket hijacking: a page elsewhere must not ride on a user's cookies or network.
      this.refuseUpgrade(socket, 'forbidden', 'origin not allowed', 'origin')
      return
    }
    const target = req.url ?? '/'
    const path = pathOfTarget(target)
    const hocuspocus = servesHocuspocus(path, this.options.hocuspocusPath)
    const room = hocuspocus ? null : roomFromPath(path)
    if (!hocuspocus && room === null) {
      this.refuseUpgrade(socket, 'invalid_room', 'room names are 1 to 512 bytes of UTF-8 without control characters', 'invalid_room')
      return
    }
    // Admission first, the credential after: a refusal for capacity must not use up a single-use ticket.
    const ip = this.clientAddress.of(req)
    const verdict = this.admission.tryAdmit(ip, room === null ? 0 : (this.rooms.get(room)?.memberCount ?? 0))
    if (!verdict.admitted) {
      this.refuseUpgrade(socket, verdict.error, verdict.message, verdict.result)
      return
    }
    let ticket: AdmissionTicket = verdict.ticket
    if (room !== null) {
      const refusal = this.claimRoom(ip, room, 'ywebsocket')
      if (refusal !== null) {
        ticket.release()
        this.refuseUpgrade(socket, refusal.error, refusal.reason, 'room_limit')
        return
      }
      ticket = new ClaimedTicket(ticket, this.roomQuota, room)
    }
    // A peer that goes away during the checks below or mid-handshake (or a handshake ws answers
    // with 400 itself) gives the slot back; once admitted, the connection holds it and gives it back.
    const slot = ticket
    const release = (): void => slot.release()
    socket.once('close', release)
    // y-websocket carries its credential on the URL and is checked before the upgrade; the
    // Hocuspocus provider sends it per document inside the socket.
    let grant: Grant | null = null
    if (room !== null) {
      const query = new URLSearchParams(target.length > path.length ? target.slice(path.length + 1) : '')
      const credential = query.get('ticket')
      const decision = credential !== null && this.tickets !== null ? await this.redeemTicket(credential, room) : await this.authorizer.authorize(query.get('token'), room)
      if (!decision.ok) {
        ticket.release()
        this.refuseUpgrade(socket, decision.status === 401 ? 'unauthorized' : 'forbidden', decision.reason, decision.status === 401 ? 'unauthorized' : 'forbidden')
        return
      }
      grant = decision.grant
      if (this.stateValue !== 'serving') {
        ticket.release()
        this.refuseUpgrade(socket, 'unavailable', 'server is draining', 'unavailable')
        return
      }
    }
    this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      if (this.stateValue !== 'serving') {
        ws.close(CloseCode.serviceRestart, 'service restart')
        return
      }
      // ws handles the socket's errors and close from here on: nothing of the handshake stays
      // attached to a socket that may live for days.
      socket.off('close', release)
      socket.off('error', destroySocket)
      this.metrics.upgrades.inc({ result: 'accepted' })
      // Upgrades come from Node's HTTP(S) server: the stream is a net.Socket (a TLSSocket with TLS).
      this.admit(ws, socket as Socket, slot, room, grant)
    })
  }

  private admit(ws: WebSocket, raw: Socket, ticket: AdmissionTicket, roomName: string | null, grant: Grant | null): void {
    const rooms = this.rooms as RoomRegistry
    const connection = new Connection(ws, raw, ticket, this.connectionLimits, this.connectionEvents)
    this.connections.add(connection)
    if (roomName === null) {
      const preauth = new PreAuthGuard(raw, connection, this.options, (reason) => this.metrics.preauthCloses.inc({ reason }))
      new HocuspocusSession(connection, rooms, this.authorizer, this.pendingLimits, this.hocuspocusHooks, this.log, preauth)
      return
    }
    new YWebsocketSession(connection, roomName, rooms, this.pendingLimits, grant ?? OPEN_GRANT, this.log)
  }

  private forgetConnection(connection: Connection, code: number): void {
    const { metrics } = this
    this.connections.delete(connection)
    if (this.stateValue === 'draining' && this.connections.size === 0) this.hurry?.()
    if (connection.paused) metrics.pausedSockets.dec()
    metrics.closes.inc({ code: String(code) })
    if (code === CloseCode.protocolError || code === CloseCode.invalidPayload || code === CloseCode.messageTooBig) {
      metrics.malformedMessages.inc({ code: String(code) })
    }
  }

  private async redeemTicket(ticket: string, room: string): Promise<AccessDecision> {
    let grant: Grant | null
    try {
      grant = await (this.tickets as Tickets).redeem(ticket)
    } catch {
      return { ok: false, status: 401, reason: 'tickets are unavailable right now' }
    }
    if (grant === null) return { ok: false, status: 401, reason: 'the ticket is unknown, used or expired' }
    if (!roomInScope(grant, room)) return { ok: false, status: 403, reason: 'the ticket does not cover this room' }
    return { ok: true, grant }
  }

  /**
   * Deletes a room's document: on every instance with --redis (each closes its clients with 4404
   * and deletes its stored copy), here only otherwise.
   */
  async deleteRoom(name: string): Promise<void> {
    if (this.shared !== null) {
      await this.shared.deleteRoom(name)
      return
    }
    await this.deleteLocally(name)
  }

  private async deleteLocally(name: string): Promise<void> {
    const room = this.rooms?.get(name)
    if (room !== undefined) await room.deleted(CloseCode.documentDeleted)
    await this.writer?.deleteRoom(name)
    // With --redis the deleting instance removed the Redis copy before announcing the deletion.
    if (this.replicas !== null) await this.replicas.deleteLocalVersions(name)
    else await this.versions?.deleteVersions(name)
    this.log.info({ room: name }, 'room deleted')
  }

  private readonly statelessListeners = new Set<(event: StatelessEvent) => void>()

  private emitStateless(event: StatelessEvent): void {
    for (const listener of this.statelessListeners) {
      try {
        listener(event)
      } catch (err) {
        this.log.error({ err }, 'stateless listener threw')
      }
    }
  }

  /** Listens for Hocuspocus stateless messages clients send; returns a function that stops listening. */
  onStateless(listener: (event: StatelessEvent) => void): () => void {
    this.statelessListeners.add(listener)
    return () => this.statelessListeners.delete(listener)
  }

  /** Sends a Hocuspocus stateless message to every connection of a loaded room; returns how many got it. */
  sendStateless(room: string, payload: string): number {
    return this.rooms?.get(room)?.broadcastStateless(payload) ?? 0
  }

  private heartbeat(): void {
    const slice = this.heartbeatSlice
    this.heartbeatSlice = (slice + 1) % HEARTBEAT_SLICES
    for (const connection of this.connections) {
      if (connection.id % HEARTBEAT_SLICES !== slice) continue
      this.metrics.sendQueueBytes.observe(connection.queuedBytes)
      if (!connection.heartbeat()) this.metrics.heartbeatTerminations.inc()
    }
  }

  /**
   * Graceful drain: readiness turns 503 and upgrades are refused at once; connections are closed
   * with 1012 spread over the drain window so clients do not all reconnect at the same instant;
   * every room is flushed. Resolves with the rooms that could not be saved by the deadline.
   */
  drain(): Promise<DrainResult> {
    this.drainPromise ??= this.runDrain()
    return this.drainPromise
  }

  private async runDrain(): Promise<DrainResult> {
    if (this.stateValue === 'stopped') return { unsaved: [] }
    const deadline = Date.now() + this.options.drainSeconds * 1000
    this.transition('draining')
    this.log.info({ connections: this.connections.size, drainSeconds: this.options.drainSeconds }, 'draining')
    await this.startPromise?.catch(() => {})
    // Spread the closes over the first half of the window (the rest is for the final flush), so
    // clients reconnect to other instances over time, not all at once. Everyone leaving early
    // ends the drain early (see admit's close handler).
    const connections = [...this.connections]
    const spreadMs = this.options.drainSeconds * 1000 * 0.5
    const batches = Math.min(connections.length, Math.max(1, Math.floor(spreadMs / 50)))
    const perBatch = batches === 0 ? 0 : Math.ceil(connections.length / batches)
    const started = Date.now()
    this.metrics.drainTotal.set(connections.length)
    this.metrics.drainClosed.set(0)
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
          this.hurry = () => {
            clearTimeout(timer)
            resolve()
          }
        })
        this.hurry = null
      }
      // Hurried (a second signal, or close() during a drain): everything left goes now.
      const end = this.hurried ? connections.length : (i + 1) * perBatch
      const batch = connections.slice(i * perBatch, end)
      for (const connection of batch) connection.close(CloseCode.serviceRestart, 'service restart')
      this.metrics.drainClosed.inc(batch.length)
      if (this.hurried) break
    }
    return this.shutdown(this.hurried ? Math.min(deadline, Date.now() + HURRIED_SHUTDOWN_MS) : deadline)
  }

  /** Closes everything now: connections with 1012 (1001 is not in the contract), then flush and close storage. */
  async close(): Promise<DrainResult> {
    if (this.drainPromise !== null) {
      this.hurried = true
      this.hurry?.()
      return this.drainPromise
    }
    if (this.stateValue === 'stopped') return { unsaved: [] }
    this.drainPromise = (async () => {
      if (this.stateValue !== 'draining') this.transition('draining')
      await this.startPromise?.catch(() => {})
      for (const connection of this.connections) connection.close(CloseCode.serviceRestart, 'service restart')
      return this.shutdown(Date.now() + Math.max(1000, this.options.drainSeconds * 1000))
    })()
    return this.drainPromise
  }

  private async shutdown(deadline: number): Promise<DrainResult> {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer)
    this.pending?.close()
    // Wait for the close handshakes (bounded), so updates that arrived meanwhile are applied first.
    while (this.connections.size > 0 && Date.now() < deadline - 500) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    for (const connection of this.connections) connection.terminate()
    // Before storage closes: the last gathered changes read their state vector.
    await this.webhooks?.close(deadline - 500).catch((err: unknown) => this.log.warn({ err }, 'closing the webhook outbox failed'))
    this.replicas?.close()
    await this.shared?.close().catch((err: unknown) => this.log.warn({ err }, 'closing the shared state failed'))
    if (this.relay !== null) {
      // Says goodbye (other instances drop this one's awareness at once) and stops heartbeats.
      await this.relay.close().catch((err: unknown) => this.log.warn({ err }, 'closing the redis relay failed'))
    }
    let unsaved: string[] = []
    if (this.writer !== null) {
      const result = await this.writer.close({ deadlineMs: Math.max(100, deadline - Date.now()) })
      unsaved = result.unsaved
    }
    if (this.rooms !== null) for (const room of this.rooms.all()) room.dispose()
    if (this.ownsHttpServer && this.httpServer !== null) {
      const server = this.httpServer
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      // Keep-alive HTTP sockets would hold close() open; upgraded sockets are already ours and gone.
      server.closeAllConnections()
      await closed
    }
    this.wss.close()
    this.transition('stopped')
    if (unsaved.length > 0) this.log.error({ rooms: unsaved }, 'stopped with unsaved rooms')
    else this.log.info('stopped')
    return { unsaved }
  }

  /** For tests and the HTTP API: the loaded room, if any. */
  loadedRoom(name: string) {
    return this.rooms?.get(name)
  }
}

/**
 * The Hocuspocus protocol is served on its path and on `<path>/<anything>`, so an application can
 * put the document name in the URL and a load balancer can route by room. Not below the default
 * `/`: `//<room>` is what a y-websocket provider whose server URL ends in `/` asks for, and it
 * stays that y-websocket room.
 */
export function servesHocuspocus(path: string, hocuspocusPath: string): boolean {
  if (path === hocuspocusPath) return true
  if (hocuspocusPath === '/') return false
  return path.startsWith(hocuspocusPath.endsWith('/') ? hocuspocusPath : `${hocuspocusPath}/`)
}

/** Creates a weft server; `listen()` or `attach(httpServer)` to start it. */
export function createServer(options: CreateServerOptions = {}): WeftServer {
  return new WeftServer(options)
}
