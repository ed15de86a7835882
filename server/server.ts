import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { readFileSync } from 'node:fs'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import * as Y from 'yjs'
import { hostname } from 'node:os'
import { WebSocketServer } from 'ws'
import { deflateNegotiation } from './negotiated-deflate.js'
import { createRelay, RedisSharedState, type RedisRelay, type Relay } from '../cluster/index.js'
import { pathOfTarget } from '../protocol/index.js'
import { DocumentWriter, openStore, ReplicatedVersions, type LocalVersionStore, type StorageHealth, type Store, type VersionStore } from '../persistence/index.js'
import { CloseCode } from './codes.js'
import { ConfigError, resolveOptions, type WeftOptions } from './config.js'
import type { Authorizer } from './access.js'
import { RedisRevocations } from '../cluster/revocations.js'
import type { JwksKeys } from './jwks.js'
import { RevocationAwareAuthorizer, Revoker, type RevocationList, type RevokeResult } from './revocation.js'
import { createTokenAccess } from './token-access.js'
import { LevelOutboxStore, MemoryOutboxStore, WebhookOutbox } from './webhooks/index.js'
import { AuthenticateAuthorizer, authorizerAsAuthenticate } from './authenticate.js'
import { HttpApi } from './http-api.js'
import { serveApiDescription, serveHomePage } from './home-page.js'
import { DemoPage, demoEnabled } from './demo-page.js'
import { rawError, RETRY_AFTER_SECONDS, sendError, sendJson } from './http-response.js'
import { MemoryTickets, Tickets } from './tickets.js'
import { DocumentReads } from './document-reads.js'
import { Admission, BodyBudget, ClientAddress, PendingConnections, ResponseBudget, RoomQuota } from './admission.js'
import type { StatelessEvent } from './hocuspocus-session.js'
import { ConnectionRegistry } from './connection-registry.js'
import { SOFT_MARK_SHARE } from './connection.js'
import { HookRunner } from './hook-runner.js'
import type { Authenticate, WeftHooks } from './hooks.js'
import { createLogger, type Logger } from './logger.js'
import { ServerMetrics } from './metrics.js'
import { buildInfo } from './build-info.js'
import { StatusPage } from './status-page.js'
import { RoomRegistry, type RoomEvents } from './room.js'
import { awarenessLimits } from './room-awareness.js'
import { UpgradePipeline } from './upgrade-pipeline.js'

export { servesHocuspocus } from './upgrade-pipeline.js'

export type ServerState = 'starting' | 'serving' | 'draining' | 'stopped'

/** Endpoints outside the API, each its own route label. */
const FIXED_ROUTES: ReadonlySet<string> = new Set(['/', '/openapi.yaml', '/health/live', '/health/ready', '/metrics', '/status', '/status.json'])

const SERVER_TRANSITIONS: Readonly<Record<ServerState, readonly ServerState[]>> = {
  starting: ['serving', 'draining', 'stopped'],
  serving: ['draining', 'stopped'],
  draining: ['stopped'],
  stopped: [],
}

/** A store for documents (Store) and their named versions (VersionStore); see the README's guide. */
export type DocumentStore = Store & VersionStore

/**
 * Settings (as on the command line, by key) and the parts an embedding application hands in.
 * The CLI builds its parts from its flags and hands them in the same way.
 */
export interface CreateServerOptions extends Partial<WeftOptions> {
  /** A pino logger to use instead of the JSON stdout logger built from `logLevel`. */
  logger?: Logger
  /**
   * Where documents and versions live. Default: LevelDB in `data`, or memory for `data: 'memory'`.
   * weft owns the store from here on: it closes it when the server stops.
   */
  store?: DocumentStore
  /**
   * Decides who may open which room, for y-websocket upgrades, each Hocuspocus document and every
   * HTTP API request. When given it replaces the built-in token check (open mode, or the JWT
   * settings); that check stays callable as `weft.defaultAuthenticate`.
   */
  authenticate?: Authenticate
  /** Reactions to what happens in rooms and connections, bounded by `hookTimeoutMs`. */
  hooks?: WeftHooks
  /**
   * Internal: a sink for what rooms report, used instead of the hook runner (tests of the room
   * side). Embedding applications pass `hooks`.
   */
  roomEvents?: RoomEvents
}

export interface DrainResult {
  /** Rooms whose last writes could not be stored before the deadline. */
  unsaved: string[]
}

/** How long start waits for the revocations in force to be read from Redis. */
const REVOCATIONS_FIRST_READ_MS = 2_000

/** How long a hurried shutdown may take to close sockets and flush. */
const HURRIED_SHUTDOWN_MS = 1_000

/** A store that can also say which rooms have versions: what --redis needs to re-publish them. */
function isLocalVersionStore(store: DocumentStore): store is DocumentStore & LocalVersionStore {
  const candidate = store as Partial<LocalVersionStore>
  return typeof candidate.listVersionRooms === 'function' && typeof candidate.readPublishedEpoch === 'function' && typeof candidate.writePublishedEpoch === 'function'
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
  private readonly admission: Admission
  private readonly roomQuota: RoomQuota
  private readonly bodies: BodyBudget
  /** HTTP answers on their way to clients (--max-response-bytes-in-flight[-per-ip]). */
  private readonly answers: ResponseBudget
  /** HTTP reads that cost CPU in proportion to the document, big ones on a worker thread. */
  private readonly reads: DocumentReads
  private pending: PendingConnections | null = null
  private readonly authorizer: Authorizer
  /** The demo editor (--demo); null when it is off. */
  private readonly demoPage: DemoPage | null
  private readonly clientAddress: ClientAddress
  private storageHealth: StorageHealth = { ok: true }
  private readonly connections: ConnectionRegistry
  private readonly upgrades: UpgradePipeline
  /** The embedding application's hooks and `authenticate`, bounded and counted (hook-runner.ts). */
  private readonly hooks: HookRunner
  /** The store handed to createServer; null = built from `data` at start. */
  private readonly givenStore: DocumentStore | null
  private readonly roomEvents: RoomEvents | null
  /**
   * The built-in check (open mode, or the JWT settings) as an `authenticate`: what runs when the
   * application gives none, and what its own `authenticate` may call to accept weft's tokens too.
   */
  readonly defaultAuthenticate: Authenticate
  /** Issue 16: the identity provider's keys, and revocations (shared with --redis). */
  private readonly jwks: JwksKeys | null
  private readonly revocations: RevocationList
  private readonly revoker: Revoker
  private revocationChannel: RedisRevocations | null = null

  constructor(options: CreateServerOptions = {}) {
    const { logger, store, authenticate, hooks, roomEvents, ...settings } = options
    this.roomEvents = roomEvents ?? null
    this.options = resolveOptions(settings)
    this.log = logger ?? createLogger(this.options.logLevel)
    this.givenStore = store ?? null
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.options.maxMessageBytes,
      // --compression: negotiated with clients that offer it, but ws never compresses (each send
      // passes compress: false): weft deflates each shared payload once (frame-compression.ts).
      // No context takeover either way: it is what makes one compressed payload valid for every
      // socket, and an idle socket then holds no zlib state. Off, nothing is negotiated.
      perMessageDeflate: this.options.compression ? deflateNegotiation(this.options.compressionThresholdBytes) : false,
      clientTracking: false,
    })
    this.metrics.storageUp.set(1)
    this.admission = new Admission(this.options)
    this.roomQuota = new RoomQuota(this.options)
    this.bodies = new BodyBudget(this.options)
    this.answers = new ResponseBudget(this.options)
    this.reads = new DocumentReads({
      workers: this.options.readWorkers,
      thresholdBytes: this.options.readWorkerThresholdBytes,
      maxTotal: this.options.maxDocumentReads,
      maxPerIp: this.options.maxDocumentReadsPerIp,
    })
    this.metrics.observeDocumentReads(this.reads)
    const { metrics, options: resolved } = this
    this.hooks = new HookRunner(hooks ?? {}, {
      timeoutMs: resolved.hookTimeoutMs,
      maxPending: resolved.maxPendingHookCalls,
      log: this.log.child({ part: 'hooks' }),
      onFailure: (hook, reason) => metrics.hookFailures.inc({ hook, reason }),
    })
    // The built-in check: open mode, or tokens (--auth-secret, --auth-jwks) minus revoked ones.
    const access = createTokenAccess(this.options, this.metrics, this.log)
    this.jwks = access.jwks
    this.revocations = access.revocations
    this.defaultAuthenticate = authorizerAsAuthenticate(access.authorizer)
    // A revocation covers the application's grants too: the revocation check stays outermost.
    this.authorizer =
      authenticate === undefined
        ? access.authorizer
        : new RevocationAwareAuthorizer(new AuthenticateAuthorizer(authenticate, this.hooks), access.revocations, () => this.metrics.revokedRefusals.inc())
    this.demoPage = demoEnabled(this.options.demo, this.authorizer.open) ? new DemoPage(this.options.hocuspocusPath) : null
    this.revoker = new Revoker({
      list: access.revocations,
      revocationMs: this.options.authRevocationSeconds * 1000,
      connections: () => this.connections.list(),
      onClosed: (protocol, count) => this.metrics.revokedConnections.inc({ protocol }, count),
      onInvalid: (text) => this.log.warn({ text }, 'revocation message ignored: not a revocation'),
    })
    this.clientAddress = new ClientAddress(this.options.trustedProxies, this.options.ipv6PrefixLength)
    this.statusPage = this.createStatusPage()
    this.connections = new ConnectionRegistry({
      options: resolved,
      metrics,
      log: this.log,
      authorizer: this.authorizer,
      hooks: this.hooks,
      revoker: this.revoker,
      hocuspocus: {
        onStateless: (event: StatelessEvent) => this.emitStateless(event),
        maxDocumentsPerSocket: resolved.maxDocumentsPerConnection,
        claimRoom: (ip: string, room: string) => this.claimRoom(ip, room, 'hocuspocus')?.reason ?? null,
        releaseRoom: (ip: string, room: string) => this.roomQuota.release(ip, room),
        onTooManyDocuments: () => metrics.roomLimitRefusals.inc({ limit: 'per_connection', protocol: 'hocuspocus' }),
      },
    })
    this.upgrades = new UpgradePipeline({
      options: resolved,
      wss: this.wss,
      metrics,
      log: this.log,
      admission: this.admission,
      roomQuota: this.roomQuota,
      clientAddress: this.clientAddress,
      authorizer: this.authorizer,
      revocations: this.revocations,
      serving: () => {
        if (this.stateValue === 'serving' && this.rooms !== null) return { ok: true, rooms: this.rooms, tickets: this.tickets }
        return { ok: false, reason: this.stateValue === 'draining' ? 'server is draining' : 'server is not ready' }
      },
      claimRoom: (ip, room) => this.claimRoom(ip, room, 'ywebsocket'),
      admit: ({ ws, raw, ticket, rooms, room, grant, context, savedAcks }) => this.connections.admit(ws, raw, ticket, rooms, room, grant, context, savedAcks),
    })
  }

  get state(): ServerState {
    return this.stateValue
  }

  private transition(next: ServerState): void {
    if (!SERVER_TRANSITIONS[this.stateValue].includes(next)) throw new Error(`server: illegal transition ${this.stateValue} -> ${next}`)
    this.stateValue = next
    this.metrics.setState(next)
    if (next === 'stopped') this.statusPage.stop()
    this.log.debug({ state: next }, 'server state')
  }

  /** Opens storage. Called by `listen` and `attach`; safe to call more than once. */
  start(): Promise<void> {
    this.startPromise ??= this.open()
    return this.startPromise
  }

  private async open(): Promise<void> {
    const store = this.givenStore ?? (await openStore(this.options.data))
    const writer = new DocumentWriter(store, {
      persistWindowMs: this.options.persistWindowMs,
      mergeWorkers: this.options.mergeWorkers,
      mergeWorkerThresholdBytes: this.options.mergeWorkerThresholdBytes,
      idleRoomsKept: this.options.idleRoomsKept,
      logger: this.log,
      // Compaction takes a loaded room's live document. A room Yjs broke is forgotten at once
      // (Room.reset): only a sound document is snapshotted.
      onBatchStored: (updates, oldestWaitMs) => this.metrics.observeWriteBatch(updates, oldestWaitMs / 1000),
      onCompacted: () => this.metrics.compactions.inc(),
      snapshots: {
        snapshot: (name) => {
          const room = this.rooms?.get(name)
          return room !== undefined && room.state === 'active' ? room.snapshot() : null
        },
      },
    })
    writer.on('health', (health) => {
      this.storageHealth = health
      this.metrics.storageUp.set(health.ok ? 1 : 0)
      if (health.ok) this.log.info('storage recovered')
      else this.log.error({ error: health.error }, 'storage failing')
    })
    this.writer = writer
    let redisRelay: RedisRelay | null = null
    if (this.options.redisUrl !== null) {
      const relay = createRelay({
        redisUrl: this.options.redisUrl,
        instanceId: this.options.instanceId ?? randomUUID(),
        prefix: this.options.redisPrefix,
        retentionMs: this.options.redisRetentionSeconds * 1000,
        republishRoomsPerSecond: this.options.republishRoomsPerSecond,
        logger: this.log.child({ part: 'relay' }),
        onCommand: this.observeRedisCommand,
      })
      relay.setStoredRooms({ list: async () => (await writer.listRooms()).map((stored) => stored.room), load: (room) => writer.load(room) })
      relay.on('health', (health) => {
        if (this.stateValue === 'draining' || this.stateValue === 'stopped') return
        if (health.up) this.log.info('redis relay up')
        else this.log.error({ error: health.error }, 'redis relay down; serving local clients, holding updates until it is back')
      })
      this.relay = redisRelay = relay
      this.metrics.observeRelay(relay)
    }
    this.versions = store
    this.tickets = new Tickets(new MemoryTickets())
    if (this.options.redisUrl !== null) {
      const shared = new RedisSharedState({
        redisUrl: this.options.redisUrl,
        instanceId: this.relay?.instanceId ?? randomUUID(),
        prefix: this.options.redisPrefix,
        logger: this.log.child({ part: 'shared' }),
        onCommand: this.observeRedisCommand,
        // The relay reads the epoch every check: the shared state follows those reads instead of a timer of its own.
        ...(redisRelay === null ? {} : { epochReads: redisRelay }),
      })
      shared.onRoomDeleted((room) => {
        this.deleteLocally(room).catch((err: unknown) => this.log.error({ room, err }, 'deleting a room failed'))
      })
      this.shared = shared
      if (!isLocalVersionStore(store)) {
        throw new ConfigError('--redis', 'invalid store for --redis: it must also implement listVersionRooms, readPublishedEpoch and writePublishedEpoch (LocalVersionStore)')
      }
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
    if (this.options.redisUrl !== null) {
      this.revocationChannel = new RedisRevocations({
        redisUrl: this.options.redisUrl,
        instanceId: this.relay?.instanceId ?? randomUUID(),
        prefix: this.options.redisPrefix,
        maxEntries: this.options.authMaxRevocations,
        logger: this.log.child({ part: 'revocations' }),
        onRevocation: (text) => this.revoker.receive(text),
      })
      this.revoker.useChannel(this.revocationChannel)
      // Bounded like the relay's first connect: a Redis that is down does not keep weft from serving.
      if (!(await this.revocationChannel.ready(REVOCATIONS_FIRST_READ_MS))) this.log.warn('revocations in force could not be read from redis yet; read when it is reachable')
    }
    // An identity provider that does not answer at start does not stop weft (SECURITY.md): its
    // tokens are refused, and the keys loaded again at the next one (at most once per cooldown).
    if (this.jwks !== null) await this.jwks.load()
    const { options } = this
    this.rooms = new RoomRegistry(writer, this.log, options.roomUnloadDelayMs, options.maxDocumentBytes, options.maxRoomConnections, this.relay, {
      maxNestingDepth: options.maxNestingDepth,
      maxPendingBytes: options.maxPendingBytes,
    }, awarenessLimits(options), this.roomEvents ?? this.hooks)
    const rooms = this.rooms
    rooms.awarenessFlushMs = options.awarenessFlushMs
    rooms.repeatAnswerIntervalMs = options.repeatAnswerIntervalMs
    rooms.onBatched = (count) => this.metrics.batchedUpdates.inc(count)
    rooms.onRefused = (reason) => this.metrics.updateRefusals.inc({ reason })
    rooms.onQuarantined = () => this.metrics.quarantinedEntries.inc()
    rooms.onReset = () => this.metrics.roomResets.inc()
    rooms.onAwarenessRefused = (reason, count) => this.metrics.awarenessRefused.inc({ reason }, count)
    rooms.onSyncAskDeferred = () => this.metrics.syncAsksDeferred.inc()
    rooms.replyMemory = this.connections.replyMemory
    // The connection's rule for a big reply: past a quarter of the send budget.
    rooms.bigReplyBytes = Math.floor(options.sendQueueBytes * SOFT_MARK_SHARE)
    this.metrics.observeReplyMemory(this.connections.replyMemory)
    rooms.onDelivered = (protocol, source, ms, now) => this.metrics.observeDelivery(protocol, source, ms / 1000, now)
    this.webhooks = await this.openWebhooks(writer, rooms)
    this.statusPage.start()
    this.api = new HttpApi({
      rooms: this.rooms,
      writer,
      versions: this.versions as VersionStore,
      authorizer: this.authorizer,
      tickets: this.tickets as Tickets,
      revokeConnections: (subject, room) => this.revokeConnections(subject, room),
      deleteRoom: (room) => this.deleteRoom(room),
      sendStateless: (room, payload) => this.sendStateless(room, payload),
      maxBodyBytes: this.options.maxMessageBytes,
      maxContentBytes: this.options.maxContentBytes,
      log: this.log,
      allowOrigins: this.options.allowOrigins,
      addressOf: (req) => this.clientAddress.limitKey(this.clientAddress.of(req)),
      bodies: this.bodies,
      bodyTimeoutMs: this.options.bodyTimeoutMs,
      answers: {
        budget: this.answers,
        gate: this.connections.replyGate,
        // A body the size of a big sync reply takes a turn like one.
        bigBytes: Math.floor(this.options.sendQueueBytes * SOFT_MARK_SHARE),
        sendTimeoutMs: this.options.sendTimeoutMs,
        onRefused: (reason) => this.metrics.httpRefusals.inc({ reason }),
      },
      reads: this.reads,
      claimRoom: (ip, room) => this.claimRoom(ip, room, 'http'),
      releaseRoom: (ip, room) => this.roomQuota.release(ip, room),
      onRefused: (reason) => this.metrics.httpRefusals.inc({ reason }),
      versionLimits: { maxCount: this.options.maxVersionsPerRoom, maxBytes: this.options.maxVersionBytesPerRoom },
      versionsPerMinutePerRoom: this.options.versionsPerMinutePerRoom,
      requestsPerSecondPerIp: this.options.httpRequestsPerSecondPerIp,
      onVersion: (outcome) => (outcome === 'created' ? this.metrics.versionsCreated.inc() : this.metrics.versionRefusals.inc({ reason: outcome })),
      webhooks: this.webhooks,
    })
    this.connections.start()
    if (this.authorizer.open && this.options.allowOrigins === null) {
      this.log.warn('open mode: no --auth-secret, no --auth-jwks and no --allow-origin; anyone who can reach this port can read and edit every document')
    }
    if (this.stateValue === 'starting') this.transition('serving')
  }

  /**
   * The webhook outbox (issue 16), in <data>/webhooks (its own LevelDB beside the documents), or in
   * memory with `--data memory`. Fed by the changes clients and HTTP requests make here: changes
   * that came from other instances are theirs to report, so each change is one event cluster-wide.
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
    rooms.onOutsideChange = (room, origin) => outbox.recordChange(room, origin, Date.now())
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
    const pending = new PendingConnections(options, (ip) => this.clientAddress.isTrusted(ip), (reason) => metrics.httpRefusals.inc({ reason }), (address) => this.clientAddress.limitKey(address))
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
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrades.handle(req, socket, head))
    void this.start().catch((err: unknown) => this.log.error({ err }, 'storage could not be opened'))
  }

  address(): AddressInfo | null {
    const address = this.httpServer?.address()
    return address !== null && typeof address === 'object' ? address : null
  }

  private readonly observeRedisCommand = (command: string, seconds: number): void => this.metrics.observeRedisCommand(command, seconds)

  /** The status page's view of this server (server/status-page.ts). */
  private readonly statusPage: StatusPage

  private createStatusPage(): StatusPage {
    return new StatusPage({
      // The relay's id names this instance in the cluster (a random one when --instance-id is not set).
      instance: () => this.relay?.instanceId ?? this.options.instanceId ?? hostname(),
      version: buildInfo().version,
      commit: buildInfo().commit,
      state: () => this.stateValue,
      connections: () => this.connections.list(),
      rooms: () => this.rooms?.all() ?? [],
      storage: () => (this.storageHealth.ok ? 'ok' : 'failing'),
      redis: () => (this.relay === null ? 'none' : this.relay.health().up ? 'up' : 'down'),
      window: this.metrics.window,
      metricsToken: this.options.metricsToken,
      authorizer: this.authorizer,
    })
  }

  /**
   * The route pattern of a path for weft_http_requests_total: the API's template
   * (`/api/rooms/{room}`), a fixed endpoint, or `other`; never the room or anything else a
   * client chose, which would make the label set unbounded.
   */
  private routeOf(path: string): string {
    if (FIXED_ROUTES.has(path)) return path
    if (this.demoPage?.handles(path) === true) return this.demoPage.routeOf(path)
    if (this.api === null || !this.api.handles(path)) return 'other'
    const segments = path.split('/')
    for (const route of this.api.routes) {
      const template = route.path.split('/')
      if (template.length === segments.length && template.every((part, i) => part.startsWith('{') || part === segments[i])) return route.path
    }
    return '/api/other'
  }

  /** weft's HTTP endpoints, for use from an embedding server's request handler. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now()
    const target = req.url ?? '/'
    const url = { pathname: pathOfTarget(target) }
    const route = this.routeOf(url.pathname)
    // 'finish' when the answer was handed over (before the client can ask again); 'close' for aborted ones.
    let observed = false
    const observe = (): void => {
      if (observed) return
      observed = true
      this.metrics.observeHttp(route, res.statusCode, (performance.now() - started) / 1000)
    }
    res.once('finish', observe)
    res.once('close', observe)
    if (this.api !== null && this.api.handles(url.pathname)) {
      if (this.stateValue !== 'serving') {
        sendError(res, 'unavailable', `server is ${this.stateValue}`)
        return
      }
      void this.api.handle(req, res, url.pathname, target.slice(url.pathname.length + 1))
      return
    }
    if (this.demoPage?.handles(url.pathname) === true) {
      this.demoPage.serve(req, res, url.pathname)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (url.pathname.startsWith('/health/') || url.pathname === '/metrics' || url.pathname === '/status' || url.pathname === '/status.json') {
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
        // Progress of a re-publish after Redis lost its data: the instance serves meanwhile. Shown
        // once the stored rooms are counted (a 0-of-0 while listing them would read as finished).
        const republish = recovery?.republishing === true && recovery.republishTotal > 0 ? { republish: { done: recovery.republishDone, total: recovery.republishTotal } } : {}
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
      case '/status':
      case '/status.json':
        this.statusPage.serve(req, res, url.pathname === '/status.json', target.slice(url.pathname.length + 1)).catch((err: unknown) => {
          this.log.error({ err }, 'status page failed')
          sendError(res, 'internal_error', 'the status could not be collected')
        })
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

  /**
   * Ends every connection of `subject` (to `room`, or to any room) with 4403 on this instance and,
   * with --redis, on every other; their credentials issued before now are refused for
   * --auth-revocation-seconds. Rejects when the other instances cannot be reached (the ones here
   * are closed all the same).
   */
  revokeConnections(subject: string, room: string | null): Promise<RevokeResult> {
    return this.revoker.revoke(subject, room)
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
    // Spread over the first half of the window; the rest is for the final flush.
    await this.connections.closeSpread(this.options.drainSeconds * 1000 * 0.5, deadline)
    return this.shutdown(this.hurried ? Math.min(deadline, Date.now() + HURRIED_SHUTDOWN_MS) : deadline)
  }

  /** Closes everything now: connections with 1012 (1001 is not in the contract), then flush and close storage. */
  async close(): Promise<DrainResult> {
    if (this.drainPromise !== null) {
      this.hurried = true
      this.connections.hurry()
      return this.drainPromise
    }
    if (this.stateValue === 'stopped') return { unsaved: [] }
    this.drainPromise = (async () => {
      if (this.stateValue !== 'draining') this.transition('draining')
      await this.startPromise?.catch(() => {})
      this.connections.closeAll(CloseCode.serviceRestart, 'service restart')
      return this.shutdown(Date.now() + Math.max(1000, this.options.drainSeconds * 1000))
    })()
    return this.drainPromise
  }

  private async shutdown(deadline: number): Promise<DrainResult> {
    this.connections.stop()
    this.pending?.close()
    // Wait for the close handshakes (bounded), so updates that arrived meanwhile are applied first.
    while (this.connections.size > 0 && Date.now() < deadline - 500) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    this.connections.terminateAll()
    // Before storage closes: the last gathered changes read their state vector.
    await this.webhooks?.close(deadline - 500).catch((err: unknown) => this.log.warn({ err }, 'closing the webhook outbox failed'))
    this.replicas?.close()
    await this.revocationChannel?.close().catch((err: unknown) => this.log.warn({ err }, 'closing the revocation channel failed'))
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
    // The application hears of the last writes and disconnects (onStored, onDisconnect) before
    // close resolves, within the deadline: a hook still running then is left behind.
    await this.hooksIdle(Math.max(100, deadline - Date.now()))
    if (this.ownsHttpServer && this.httpServer !== null) {
      const server = this.httpServer
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      // Keep-alive HTTP sockets would hold close() open; upgraded sockets are already ours and gone.
      server.closeAllConnections()
      await closed
    }
    this.wss.close()
    await this.reads.close()
    this.transition('stopped')
    if (unsaved.length > 0) this.log.error({ rooms: unsaved }, 'stopped with unsaved rooms')
    else this.log.info('stopped')
    return { unsaved }
  }

  private async hooksIdle(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | null = null
    await Promise.race([this.hooks.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))])
    if (timer !== null) clearTimeout(timer)
  }

  /** For tests and the HTTP API: the loaded room, if any. */
  loadedRoom(name: string) {
    return this.rooms?.get(name)
  }
}

/** Creates a weft server; `listen()` or `attach(httpServer)` to start it. */
export function createServer(options: CreateServerOptions = {}): WeftServer {
  return new WeftServer(options)
}
