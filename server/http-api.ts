import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import * as Y from 'yjs'
import { isValidRoomName, ProtocolError, validateStateVector, validateUpdate, type UpdateSummary } from '../protocol/index.js'
import type { DocumentWriter, VersionLimits, VersionStore } from '../persistence/index.js'
import { isVersionId, newVersionId, VersionLimitError } from '../persistence/index.js'
import { allows, roomInScope, type Access, type Authorizer, type Grant } from './access.js'
import type { BodyBudget, RoomRefusal } from './admission.js'
import type { HttpErrorCode } from './codes.js'
import { sendError, type Headers } from './http-response.js'
import { ContentRequestError, ContentShapeError, contentField, contentQuery, NotXmlFieldError, parseContentBody, replacementUpdate } from './content-api.js'
import type { ShareKind } from './document-json.js'
import { ReadAbandoned, ReadRefused, ReadsBusy, type DocumentReads, type ReadOutput, type ReadTask } from './document-reads.js'
import type { Logger } from './logger.js'
import { sendAnswer, type AnswerLimits } from './response-writer.js'
import { RoomLoadError, UpdateSource, type Room, type RoomMember, type RoomRegistry } from './room.js'
import type { Tickets } from './tickets.js'
import { MAX_SUBJECT_LENGTH, type RevokeResult } from './revocation.js'
import { KeyedBuckets } from './token-bucket.js'
import type { WebhookOutbox } from './webhooks/index.js'

/** An error an endpoint answers with: the contract's JSON body and the status of its code. */
export class ApiError extends Error {
  constructor(
    readonly code: HttpErrorCode,
    message: string,
    readonly headers: Record<string, string | number> = {},
  ) {
    super(message)
  }
}

export interface HttpApiDeps {
  rooms: RoomRegistry
  writer: DocumentWriter
  versions: VersionStore
  authorizer: Authorizer
  tickets: Tickets
  /** Deletes a room everywhere (every instance with --redis); connected clients get 4404. */
  deleteRoom(room: string): Promise<void>
  sendStateless(room: string, payload: string): number
  /** Largest request body in bytes; larger gets 413. */
  maxBodyBytes: number
  /** Largest ProseMirror JSON body of PUT .../content (its conversion is CPU-bound); larger gets 413. */
  maxContentBytes?: number
  log: Logger
  /** --allow-origin: browser requests (with an Origin header) from other origins get 403; null = any. */
  allowOrigins: readonly string[] | null
  /** What the per-address limits count the client under: its address (behind trusted proxies, from X-Forwarded-For), an IPv6 one grouped by --ipv6-prefix-length. */
  addressOf(req: IncomingMessage): string
  /** Request bodies being read, server-wide and per address. */
  bodies: BodyBudget
  /** Milliseconds a body may take to arrive whole; then 408. */
  bodyTimeoutMs: number
  /** What bounds the answers on their way out (see sendAnswer). */
  answers: AnswerLimits
  /** Reads that cost CPU in proportion to the document (JSON, rich text, diffs): big ones on a worker, bounded per address. */
  reads: DocumentReads
  /** Claims a room for an address for the duration of a request (see RoomQuota); null when granted. */
  claimRoom(ip: string, room: string): RoomRefusal | null
  releaseRoom(ip: string, room: string): void
  /** A request refused before it was served (origin, content type, body bounds), for metrics. */
  onRefused(reason: string): void
  /** What one room may hold in versions (--max-versions-per-room, --max-version-bytes-per-room). */
  versionLimits?: VersionLimits
  /** --versions-per-minute-per-room; undefined = no rate limit. */
  versionsPerMinutePerRoom?: number
  /** --http-requests-per-second-per-ip (burst twice that); undefined = no rate limit. */
  requestsPerSecondPerIp?: number
  /** Each version saved, and each refused (by the limit that refused it). */
  onVersion?(outcome: 'created' | 'count' | 'bytes' | 'rate'): void
  /** POST /api/connections/revoke (issue 16): ends a subject's connections on every instance. */
  revokeConnections?(subject: string, room: string | null): Promise<RevokeResult>
  /** With --webhook-url: deletions and versions made here become events; dead letters are served. */
  webhooks?: WebhookOutbox | null
}

interface RouteContext {
  req: IncomingMessage
  res: ServerResponse
  query: URLSearchParams
  grant: Grant
  /** Percent-decoded path parameters in order (room, version id). */
  params: string[]
}

type Scope = 'read' | 'write' | 'admin' | 'token'

interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE'
  /** OpenAPI-style template; `{room}` and `{id}` are single percent-encoded path segments. */
  path: string
  scope: Scope
  /**
   * Content types a POST must carry: none a cross-site form or no-cors fetch can send
   * (text/plain, form encodings), so such a request needs a CORS preflight first. A POST without
   * a content type passes only with an Authorization header, which needs a preflight too.
   */
  accepts?: readonly string[]
  handle(ctx: RouteContext): Promise<void>
}

const BINARY_BODY: readonly string[] = ['application/octet-stream']
const JSON_BODY: readonly string[] = ['application/json']
const STATELESS_BODY: readonly string[] = ['application/octet-stream', 'application/json']

/** What a preflight may ask for; the answer's lifetime in seconds. */
const CORS_ALLOW_HEADERS = 'authorization, content-type, if-none-match, accept'
const CORS_MAX_AGE_SECONDS = '600'

/** How a request's body is read: its address and the server's budget (see readBody). */
interface BodyGate {
  ip: string
  deps: HttpApiDeps
}

/**
 * Set per request by HttpApi.handle, so every route's body read goes through the budget and the
 * deadline without each route passing them on.
 */
const bodyGates = new WeakMap<IncomingMessage, BodyGate>()

/** Page size of GET /api/rooms (and of version listings) when `limit` is not given, and the most it may ask for. */
const DEFAULT_PAGE = 100
const MAX_PAGE = 1000

/**
 * The HTTP document API. Every route is in ROUTES (docs/openapi.yaml must list exactly these; a
 * test checks both ways). Rooms not loaded are loaded for the request and unload again after the
 * usual grace delay; reading a room that does not exist creates nothing.
 */
export class HttpApi {
  readonly routes: readonly Route[]
  /** Per room: versions it may still get now (--versions-per-minute-per-room). */
  private readonly versionRate: KeyedBuckets | null
  /** --http-requests-per-second-per-ip; null = none (an embedding's own front limits them). */
  private readonly requestRate: KeyedBuckets | null

  constructor(private readonly deps: HttpApiDeps) {
    const perMinute = deps.versionsPerMinutePerRoom
    this.versionRate = perMinute === undefined ? null : new KeyedBuckets(perMinute / 60, perMinute)
    const perSecond = deps.requestsPerSecondPerIp
    this.requestRate = perSecond === undefined ? null : new KeyedBuckets(perSecond, perSecond * 2)
    this.routes = [
      { method: 'GET', path: '/api/rooms', scope: 'admin', handle: (c) => this.listRooms(c) },
      { method: 'GET', path: '/api/rooms/{room}', scope: 'read', handle: (c) => this.getRoom(c) },
      { method: 'DELETE', path: '/api/rooms/{room}', scope: 'admin', handle: (c) => this.deleteRoom(c) },
      { method: 'GET', path: '/api/rooms/{room}/state-vector', scope: 'read', handle: (c) => this.stateVector(c) },
      { method: 'GET', path: '/api/rooms/{room}/updates', scope: 'read', handle: (c) => this.updatesSince(c) },
      { method: 'POST', path: '/api/rooms/{room}/updates', scope: 'write', accepts: BINARY_BODY, handle: (c) => this.postUpdate(c) },
      { method: 'PUT', path: '/api/rooms/{room}/content', scope: 'write', accepts: JSON_BODY, handle: (c) => this.putContent(c) },
      { method: 'POST', path: '/api/rooms/{room}/stateless', scope: 'write', accepts: STATELESS_BODY, handle: (c) => this.postStateless(c) },
      { method: 'POST', path: '/api/rooms/{room}/versions', scope: 'write', accepts: JSON_BODY, handle: (c) => this.createVersion(c) },
      { method: 'GET', path: '/api/rooms/{room}/versions', scope: 'read', handle: (c) => this.listVersions(c) },
      { method: 'GET', path: '/api/rooms/{room}/versions/{id}', scope: 'read', handle: (c) => this.getVersion(c) },
      { method: 'GET', path: '/api/rooms/{room}/versions/{id}/diff', scope: 'read', handle: (c) => this.versionDiff(c) },
      { method: 'POST', path: '/api/tickets', scope: 'token', accepts: JSON_BODY, handle: (c) => this.issueTicket(c) },
      { method: 'POST', path: '/api/connections/revoke', scope: 'admin', accepts: JSON_BODY, handle: (c) => this.revokeConnections(c) },
      { method: 'GET', path: '/api/webhooks/dead', scope: 'admin', handle: (c) => this.listDeadWebhooks(c) },
      { method: 'POST', path: '/api/webhooks/dead/retry', scope: 'admin', accepts: JSON_BODY, handle: (c) => this.retryDeadWebhooks(c) },
    ]
  }

  /** True when the path is the API's; the request is then answered. */
  handles(path: string): boolean {
    return path === '/api' || path.startsWith('/api/')
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string, queryString: string): Promise<void> {
    let claimed: { ip: string; room: string } | null = null
    try {
      const ip = this.deps.addressOf(req)
      // Before anything that costs: a token's signature, a room's load, a body.
      this.takeRequestRate(req, ip)
      if (!this.originAllowed(req, res)) throw this.refusal('origin', new ApiError('forbidden', 'origin not allowed'))
      if (req.method === 'OPTIONS' && this.deps.allowOrigins !== null) {
        this.preflight(res, path)
        return
      }
      const match = this.match(req.method ?? 'GET', path)
      const query = new URLSearchParams(queryString)
      const room = match.route.path.includes('{room}') ? (match.params[0] as string) : null
      const grant = await this.authenticate(req, query, match.route.scope, room)
      if (match.route.accepts !== undefined) this.checkContentType(req, match.route.accepts)
      bodyGates.set(req, { ip, deps: this.deps })
      if (room !== null) {
        // The room counts for this address while the request holds it (--max-rooms-per-ip).
        const refused = this.deps.claimRoom(ip, room)
        if (refused !== null) throw new ApiError(refused.error, refused.reason)
        claimed = { ip, room }
      }
      await match.route.handle({ req, res, query, grant, params: match.params })
    } catch (err) {
      if (err instanceof ApiError) {
        if (err.headers.connection === 'close' && !req.complete) lingerAfterAnswer(req)
        sendError(res, err.code, err.message, err.headers)
        return
      }
      if (err instanceof ContentRequestError || err instanceof ContentShapeError || err instanceof NotXmlFieldError) {
        sendError(res, 'bad_request', err.message)
        return
      }
      this.deps.log.error({ err, method: req.method }, 'api request failed')
      sendError(res, 'internal_error', 'internal error')
    } finally {
      if (claimed !== null) this.deps.releaseRoom(claimed.ip, claimed.room)
    }
  }

  /**
   * Refuses with 429 past --http-requests-per-second-per-ip. A request with a body is answered
   * with `Connection: close` (its body is not read), like the other refusals before a body.
   */
  private takeRequestRate(req: IncomingMessage, ip: string): void {
    const rate = this.requestRate
    if (rate === null || rate.tryTake(ip)) return
    const length = req.headers['content-length']
    const hasBody = (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined
    throw this.refusal('rate_per_ip', new ApiError('too_many_requests', `more than ${rate.ratePerSecond} API requests a second from this address (--http-requests-per-second-per-ip); retry shortly`, {
      'retry-after': rate.retryAfterSeconds(ip),
      ...(hasBody ? { connection: 'close' } : {}),
    }))
  }

  private refusal(reason: string, error: ApiError): ApiError {
    this.deps.onRefused(reason)
    return error
  }

  /**
   * With --allow-origin, a request that carries an Origin (a browser's) must come from a listed
   * origin; the answer then names it for CORS. Requests without Origin (curl, servers) pass.
   */
  private originAllowed(req: IncomingMessage, res: ServerResponse): boolean {
    const allowed = this.deps.allowOrigins
    const origin = req.headers.origin
    if (allowed === null || origin === undefined) return true
    if (!allowed.includes(origin)) return false
    res.setHeader('access-control-allow-origin', origin)
    res.setHeader('vary', 'Origin')
    res.setHeader('access-control-expose-headers', 'etag, retry-after')
    return true
  }

  /** A CORS preflight from an allowed origin (or none): the methods the path has and the headers weft reads. */
  private preflight(res: ServerResponse, path: string): void {
    const methods = new Set<string>()
    for (const method of ['GET', 'POST', 'PUT', 'DELETE']) {
      try {
        if (this.match(method, path).route.method === method) methods.add(method)
      } catch {
        // not a method of this path
      }
    }
    if (methods.size === 0) throw new ApiError('not_found', `no route for ${path}`)
    if (methods.has('GET')) methods.add('HEAD')
    res.writeHead(204, {
      'access-control-allow-methods': [...methods].join(', '),
      'access-control-allow-headers': CORS_ALLOW_HEADERS,
      'access-control-max-age': CORS_MAX_AGE_SECONDS,
      'cache-control': 'no-store',
    })
    res.end()
  }

  private checkContentType(req: IncomingMessage, accepts: readonly string[]): void {
    const header = req.headers['content-type']
    if (header === undefined) {
      if (req.headers.authorization !== undefined) return
      throw this.refusal('content_type', new ApiError('unsupported_media_type', `this needs Content-Type ${accepts.join(' or ')}`))
    }
    const type = (header.split(';')[0] as string).trim().toLowerCase()
    if (!accepts.includes(type)) throw this.refusal('content_type', new ApiError('unsupported_media_type', `Content-Type ${type || '(empty)'} is not accepted here; send ${accepts.join(' or ')}`))
  }

  private match(method: string, path: string): { route: Route; params: string[] } {
    const segments = path.split('/')
    let pathMatched = false
    for (const route of this.routes) {
      const template = route.path.split('/')
      if (template.length !== segments.length) continue
      const params: string[] = []
      let ok = true
      for (let i = 0; i < template.length && ok; i++) {
        const part = template[i] as string
        const actual = segments[i] as string
        if (part.startsWith('{')) {
          let decoded: string
          try {
            decoded = decodeURIComponent(actual)
          } catch {
            throw new ApiError('bad_request', `path segment "${actual}" is not valid percent-encoding`)
          }
          if (part === '{room}' && !isValidRoomName(decoded)) {
            throw new ApiError('invalid_room', 'room names are 1 to 512 bytes of UTF-8 without control characters')
          }
          params.push(decoded)
        } else if (part !== actual) ok = false
      }
      if (!ok) continue
      pathMatched = true
      if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, params }
    }
    if (pathMatched) throw new ApiError('method_not_allowed', `${method} is not allowed on ${path}`)
    throw new ApiError('not_found', `no route for ${method} ${path}`)
  }

  /** Bearer header (or `?token=`); open mode grants everything. */
  private async authenticate(req: IncomingMessage, query: URLSearchParams, scope: Scope, room: string | null): Promise<Grant> {
    const { authorizer } = this.deps
    if (authorizer.open) return { access: 'admin', subject: null, rooms: null, expiresAt: null }
    const header = req.headers.authorization
    const token = header !== undefined && header.startsWith('Bearer ') ? header.slice(7).trim() : query.get('token')
    // The room goes to the check: an application's `authenticate` decides per room (a JWT's scope is the same test).
    const decision = await authorizer.authorize(token, room, { protocol: 'http', headers: req.headers, remoteAddress: this.deps.addressOf(req) })
    if (!decision.ok) throw new ApiError(decision.status === 401 ? 'unauthorized' : 'forbidden', decision.reason)
    const { grant } = decision
    if (scope === 'token') return grant
    const needed: Access = scope
    if (!allows(grant.access, needed)) throw new ApiError('forbidden', `this needs ${needed} access`)
    if (room !== null && !roomInScope(grant, room)) throw new ApiError('forbidden', 'the access token does not cover this room')
    return grant
  }

  /** Runs `work` with the room loaded (sharing a load in progress); 404 when it holds nothing. */
  private async withExistingRoom<T>(name: string, work: (room: Room) => T | Promise<T>): Promise<T> {
    return this.withRoom(name, async (room) => {
      if (room.isEmpty()) throw new ApiError('not_found', `room "${name}" does not exist`)
      return work(room)
    })
  }

  private async withRoom<T>(name: string, work: (room: Room, member: RoomMember) => T | Promise<T>): Promise<T> {
    try {
      return await this.deps.rooms.withRoom(name, work)
    } catch (err) {
      if (err instanceof RoomLoadError) throw new ApiError('unavailable', 'storage is unavailable; the document could not be loaded', { 'retry-after': 5 })
      throw err
    }
  }

  private async listRooms({ res, query, grant }: RouteContext): Promise<void> {
    const limit = pageSize(query.get('limit'))
    const cursor = query.get('cursor')
    // An admin scoped to `tenantA/*` sees tenantA's rooms only, not their names and sizes elsewhere.
    const stored = (await this.deps.writer.listRooms()).filter((r) => roomInScope(grant, r.room))
    // Loaded rooms whose first edits are not in storage yet are listed too (size 0 stored).
    const known = new Set(stored.map((r) => r.room))
    for (const room of this.deps.rooms.all()) {
      if (!known.has(room.name) && room.state === 'active' && !room.isEmpty() && roomInScope(grant, room.name)) stored.push({ room: room.name, bytes: 0, entries: 0 })
    }
    stored.sort((a, b) => (a.room < b.room ? -1 : a.room > b.room ? 1 : 0))
    const from = cursor === null ? 0 : stored.findIndex((r) => r.room > cursor)
    const page = from === -1 ? [] : stored.slice(from, from + limit)
    const next = from !== -1 && from + limit < stored.length ? (page[page.length - 1]?.room ?? null) : null
    answerJson(res, 200, {
      rooms: page.map((r) => ({ room: r.room, storedBytes: r.bytes, entries: r.entries, quarantined: r.quarantined ?? 0, loaded: this.deps.rooms.get(r.room) !== undefined })),
      nextCursor: next,
    })
  }

  private async getRoom({ req, res, query, params }: RouteContext): Promise<void> {
    const name = params[0] as string
    const binary = query.get('format') === 'update' || (req.headers.accept ?? '').includes('application/octet-stream')
    const kinds = parseTypes(query.get('types'))
    const delta = query.get('text') === 'delta'
    const content = binary ? null : contentQuery(query)
    const state = await this.withExistingRoom(name, async (room) => {
      // The document's state vector and delete set (a change that only deletes must change the
      // tag too), then the representation: binary, delta, the types asked for, a rich-text format.
      const variant = binary ? 'u' : content !== null ? `${content.format}:${content.field}` : `${delta ? 'd' : 'j'}:${query.get('types') ?? ''}`
      const etag = `"${createHash('sha1').update(room.snapshotDigest()).update(variant).digest('base64url')}"`
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { etag })
        res.end()
        return null
      }
      return { update: await room.sharedStateOffLoop(), etag }
    })
    if (state === null) return
    if (binary) {
      answerBinary(res, state.update, { etag: state.etag })
      return
    }
    const task: ReadTask = content !== null ? { kind: 'content', query: content } : { kind: 'json', kinds, textAsDelta: delta, declareKinds: true, envelope: null }
    await this.answerRead(res, [state.update], task, { etag: state.etag })
  }

  private async stateVector({ res, params }: RouteContext): Promise<void> {
    await this.withExistingRoom(params[0] as string, (room) => answerBinary(res, Y.encodeStateVector(room.doc)))
  }

  private async updatesSince({ res, query, params }: RouteContext): Promise<void> {
    const since = query.get('since')
    let stateVector: Uint8Array | undefined
    if (since !== null) {
      stateVector = new Uint8Array(Buffer.from(since, 'base64'))
      try {
        validateStateVector(stateVector)
      } catch (err) {
        if (err instanceof ProtocolError) throw new ApiError('bad_request', `since is not a base64 state vector: ${err.message}`)
        throw err
      }
    }
    const state = await this.withExistingRoom(params[0] as string, (room) => room.sharedStateOffLoop())
    if (stateVector === undefined) answerBinary(res, state)
    else await this.answerRead(res, [state], { kind: 'since', stateVector })
  }

  private async postUpdate({ req, res, params, grant }: RouteContext): Promise<void> {
    const body = await readBody(req, this.deps.maxBodyBytes)
    let summary: UpdateSummary
    try {
      summary = validateUpdate(body)
    } catch (err) {
      if (err instanceof ProtocolError) throw new ApiError('bad_request', `the body is not a Yjs update: ${err.message}`)
      throw err
    }
    await this.withRoom(params[0] as string, (room, member) => this.applyDurably(room, member, grant, body, summary))
    res.writeHead(204)
    res.end()
  }

  /**
   * PUT /api/rooms/{room}/content?field=: the field's content replaced by the ProseMirror JSON
   * body as one update, applied like POST /updates (stored, relayed, broadcast; 204 once stored).
   * A room that does not exist is created, as by POST /updates.
   */
  private async putContent({ req, res, query, params, grant }: RouteContext): Promise<void> {
    const field = contentField(query)
    const body = await readBody(req, Math.min(this.deps.maxBodyBytes, this.deps.maxContentBytes ?? this.deps.maxBodyBytes))
    const content = parseContentBody(body)
    // The update is built from the document's state as a document read (on a worker when big),
    // then applied if the document has not changed meanwhile; if it has, it is built again. After
    // REPLACE_ATTEMPTS changes in a row it is built on the event loop and applied with no await
    // between: the field then holds exactly the content sent, whatever else was written.
    for (let attempt = 1; ; attempt++) {
      const last = attempt === REPLACE_ATTEMPTS
      const seen = last ? null : await this.withRoom(params[0] as string, async (room) => {
        // The digest first: the state is the document as of this call, even when it is merged off the event loop.
        const digest = room.snapshotDigest()
        return { state: await room.sharedStateOffLoop(), digest }
      })
      const built = seen === null ? null : await this.runRead(res, [seen.state], { kind: 'replace', field, content }, body.length)
      if (seen !== null && built === null) return
      const applied = await this.withRoom(params[0] as string, async (room, member) => {
        if (seen !== null && !room.snapshotDigest().equals(seen.digest)) return false
        const update = built?.body ?? replacementUpdate(room.doc, field, content).update
        await this.applyDurably(room, member, grant, update, validateUpdate(update))
        return true
      })
      if (applied) break
    }
    res.writeHead(204)
    res.end()
  }

  /** An update from an HTTP request into the room; resolves once stored, or throws the refusal as an ApiError. */
  private async applyDurably(room: Room, member: RoomMember, grant: Grant, update: Uint8Array, summary: UpdateSummary): Promise<void> {
    const source = new UpdateSource({ kind: 'http', subject: grant.subject }, member, allows(grant.access, 'write'))
    const outcome = room.apply(update, source, summary)
    switch (outcome.kind) {
      case 'applied':
        // Answered once the update is stored: a 204 means it survives a crash.
        await outcome.durable
        return
      case 'readOnly':
        // The route's scope already asked for write access; kept for a grant that changed meanwhile.
        throw new ApiError('forbidden', 'read-only access: the update was refused')
      case 'tooLarge':
        throw new ApiError('payload_too_large', 'the document would exceed --max-document-bytes')
      case 'refused':
        if (outcome.reason === 'missing_dependencies') throw new ApiError('missing_dependencies', outcome.message)
        throw new ApiError('bad_request', `the update was rejected: ${outcome.message}`)
    }
  }

  private async postStateless({ req, res, params }: RouteContext): Promise<void> {
    const body = await readBody(req, this.deps.maxBodyBytes)
    const payload = Buffer.from(body).toString('utf8')
    this.deps.sendStateless(params[0] as string, payload)
    res.writeHead(204)
    res.end()
  }

  private async deleteRoom({ res, params, grant }: RouteContext): Promise<void> {
    const name = params[0] as string
    await this.withExistingRoom(name, () => undefined)
    // The room's last changes are made into their event while its state vector can still be read.
    await this.deps.webhooks?.flushRoom(name)
    await this.deps.deleteRoom(name)
    await this.deps.webhooks?.recordDeleted(name, grant.subject)
    res.writeHead(204)
    res.end()
  }

  private async createVersion({ req, res, params, grant }: RouteContext): Promise<void> {
    const body = await readBody(req, 64 * 1024)
    let name: unknown
    try {
      name = (JSON.parse(Buffer.from(body).toString('utf8')) as { name?: unknown }).name
    } catch {
      throw new ApiError('bad_request', 'the body must be JSON: {"name": "..."}')
    }
    if (typeof name !== 'string' || name === '' || name.length > 200) throw new ApiError('bad_request', 'name must be a string of 1 to 200 characters')
    const room = params[0] as string
    this.takeVersionRate(room)
    const update = await this.withExistingRoom(room, (r) => r.encodeState())
    const version = { id: newVersionId(), name, createdAt: Date.now(), update }
    try {
      await this.versionStore((v) => v.putVersion(room, version, this.deps.versionLimits))
    } catch (err) {
      if (!(err instanceof VersionLimitError)) throw err
      this.deps.onVersion?.(err.limit)
      throw new ApiError('too_many_versions', err.message)
    }
    this.deps.onVersion?.('created')
    await this.deps.webhooks?.recordVersion(room, version, grant.subject)
    answerJson(res, 201, { id: version.id, name: version.name, createdAt: version.createdAt })
  }

  /** Refuses with 429 past --versions-per-minute-per-room: every version copies the whole document. */
  private takeVersionRate(room: string): void {
    const rate = this.versionRate
    if (rate === null || rate.tryTake(room)) return
    this.deps.onVersion?.('rate')
    throw new ApiError('too_many_requests', `room "${room}" got more than ${rate.capacity} versions in a minute (--versions-per-minute-per-room)`, {
      'retry-after': rate.retryAfterSeconds(room),
    })
  }

  /** Paged like GET /api/rooms: `limit`, and `cursor` = the `nextCursor` of the page before (a version id). */
  private async listVersions({ res, query, params }: RouteContext): Promise<void> {
    const room = params[0] as string
    const limit = pageSize(query.get('limit'))
    const cursor = query.get('cursor')
    if (cursor !== null && !isVersionId(cursor)) throw new ApiError('bad_request', 'cursor must be a version id (the nextCursor of the page before)')
    // One more than the page: whether there is a next page, without a second read.
    const found = await this.versionStore((v) => v.listVersions(room, { after: cursor ?? undefined, limit: limit + 1 }))
    // Like every other read: a room that does not exist is 404, not an empty list.
    if (found.length === 0 && cursor === null) await this.withExistingRoom(room, () => undefined)
    const versions = found.slice(0, limit)
    const nextCursor = found.length > limit ? (versions[versions.length - 1]?.id ?? null) : null
    answerJson(res, 200, { versions, nextCursor })
  }

  private async loadVersion(room: string, id: string) {
    const version = await this.versionStore((v) => v.getVersion(room, id))
    if (version === null) throw new ApiError('not_found', `room "${room}" has no version "${id}"`)
    return version
  }

  private async getVersion({ req, res, query, params }: RouteContext): Promise<void> {
    const version = await this.loadVersion(params[0] as string, params[1] as string)
    const binary = query.get('format') === 'update' || (req.headers.accept ?? '').includes('application/octet-stream')
    if (binary) {
      answerBinary(res, version.update)
      return
    }
    const content = contentQuery(query)
    const envelope = { id: version.id, name: version.name, createdAt: version.createdAt }
    const task: ReadTask = content !== null ? { kind: 'content', query: content } : { kind: 'json', kinds: parseTypes(query.get('types')), textAsDelta: query.get('text') === 'delta', declareKinds: false, envelope }
    await this.answerRead(res, [version.update], task)
  }

  private async versionDiff({ res, params }: RouteContext): Promise<void> {
    const room = params[0] as string
    const version = await this.loadVersion(room, params[1] as string)
    const current = await this.withExistingRoom(room, (r) => r.sharedStateOffLoop())
    // Everything the version lacks: applying it to the version's document yields the document now.
    await this.answerRead(res, [current, version.update], { kind: 'since-update' })
  }

  /**
   * Answers with a read of a document (see DocumentReads: a big one runs on a worker, in turn
   * with other addresses' reads). Past the bounds the request gets 429 or 503; a client that
   * left before its read started gets nothing, and nothing is read.
   */
  private async answerRead(res: ServerResponse, inputs: readonly Uint8Array[], task: ReadTask, extraHeaders: Headers = {}): Promise<void> {
    const output = await this.runRead(res, inputs, task)
    if (output !== null) answer(res, 200, { 'content-type': output.contentType, 'cache-control': 'no-store', ...extraHeaders }, output.body)
  }

  /** The read for the request `res` answers; null when its client left before the read started. */
  private async runRead(res: ServerResponse, inputs: readonly Uint8Array[], task: ReadTask, extraBytes = 0): Promise<ReadOutput | null> {
    const left = new AbortController()
    const onClose = (): void => left.abort()
    res.once('close', onClose)
    try {
      return await this.deps.reads.read(admitted(res).ip, inputs, task, { signal: left.signal, extraBytes })
    } catch (err) {
      if (err instanceof ReadAbandoned) return null
      if (err instanceof ReadRefused) throw new ApiError('bad_request', err.message)
      if (err instanceof ReadsBusy) {
        throw this.refusal(err.reason, new ApiError(err.reason === 'document_reads_per_ip' ? 'too_many_requests' : 'unavailable', err.message, { 'retry-after': 1 }))
      }
      throw err
    } finally {
      res.off('close', onClose)
    }
  }

  private async issueTicket({ res, grant }: RouteContext): Promise<void> {
    const ticket = await this.deps.tickets.issue(grant).catch((err: unknown) => {
      // The cause (a Redis address, a socket error) is for the log, never for the client.
      this.deps.log.error({ err }, 'issuing a ticket failed')
      throw new ApiError('unavailable', 'tickets are unavailable right now', { 'retry-after': 5 })
    })
    answerJson(res, 200, ticket)
  }

  /**
   * `{subject, room?}`: every connection of the subject (to that room, or to any) is closed with
   * 4403 on every instance; 200 `{closed, instances}` (closed here; other instances told). An admin
   * token scoped to some rooms may revoke only in those: a revocation without a room needs `*`.
   */
  private async revokeConnections({ req, res, grant }: RouteContext): Promise<void> {
    const revoke = this.deps.revokeConnections
    if (revoke === undefined) throw new ApiError('not_found', 'revocation is not available on this server')
    const body = await readBody(req, 8 * 1024)
    let value: unknown
    try {
      value = JSON.parse(Buffer.from(body).toString('utf8'))
    } catch {
      throw new ApiError('bad_request', 'the body must be JSON: {"subject": "...", "room": "..." (optional)}')
    }
    const { subject, room = null } = (typeof value === 'object' && value !== null ? value : {}) as { subject?: unknown; room?: unknown }
    if (typeof subject !== 'string' || subject === '' || subject.length > MAX_SUBJECT_LENGTH) {
      throw new ApiError('bad_request', `subject must be a string of 1 to ${MAX_SUBJECT_LENGTH} characters (the tokens' sub)`)
    }
    if (room !== null && (typeof room !== 'string' || !isValidRoomName(room))) {
      throw new ApiError('invalid_room', 'room must be a room name (1 to 512 bytes of UTF-8 without control characters) or left out')
    }
    if (room === null ? grant.rooms !== null && !grant.rooms.includes('*') : !roomInScope(grant, room)) {
      throw new ApiError('forbidden', room === null ? 'revoking in every room needs an admin token for every room ("*")' : 'the access token does not cover this room')
    }
    let result: RevokeResult
    try {
      result = await revoke(subject, room)
    } catch (err) {
      // The connections here are closed; the cause (a Redis address) is for the log only.
      this.deps.log.error({ err }, 'sending a revocation to the other instances failed')
      throw new ApiError('unavailable', 'the connections on this instance were closed, but the other instances could not be reached; send the request again', { 'retry-after': 5 })
    }
    answerJson(res, 200, result)
  }

  /** Dead letters (oldest first, `?limit=`) of rooms in the token's scope; none without --webhook-url. */
  private listDeadWebhooks({ res, query, grant }: RouteContext): Promise<void> {
    const limit = pageSize(query.get('limit'))
    const outbox = this.deps.webhooks ?? null
    answerJson(res, 200, outbox === null ? { deadLetters: [], total: 0 } : outbox.deadLetters(limit, (room) => roomInScope(grant, room)))
    return Promise.resolve()
  }

  /** Queues dead letters again: `{"ids": [...]}` (delivery ids) or, with no ids, every one in the token's scope. */
  private async retryDeadWebhooks({ req, res, grant }: RouteContext): Promise<void> {
    const body = Buffer.from(await readBody(req, 1024 * 1024)).toString('utf8')
    let ids: unknown = undefined
    if (body.trim() !== '') {
      try {
        ids = (JSON.parse(body) as { ids?: unknown }).ids
      } catch {
        throw new ApiError('bad_request', 'the body must be JSON: {"ids": ["dlv_..."]}, or {} for all')
      }
      if (ids !== undefined && (!Array.isArray(ids) || !ids.every((id) => typeof id === 'string'))) throw new ApiError('bad_request', 'ids must be an array of delivery ids')
    }
    const outbox = this.deps.webhooks ?? null
    const requeued = outbox === null ? 0 : await outbox.retryDead((ids as string[] | undefined) ?? null, (room) => roomInScope(grant, room))
    answerJson(res, 200, { requeued })
  }

  private async versionStore<T>(work: (versions: VersionStore) => Promise<T>): Promise<T> {
    try {
      return await work(this.deps.versions)
    } catch (err) {
      if (err instanceof ApiError || err instanceof VersionLimitError) throw err
      this.deps.log.error({ err }, 'version storage failed')
      throw new ApiError('unavailable', 'version storage is unavailable', { 'retry-after': 5 })
    }
  }
}

function pageSize(raw: string | null): number {
  if (raw === null) return DEFAULT_PAGE
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new ApiError('bad_request', 'limit must be a whole number of at least 1')
  return Math.min(Number(raw), MAX_PAGE)
}

const KINDS: readonly ShareKind[] = ['text', 'map', 'array', 'xml']

/** `?types=body:xml,title:text`: how to read top-level names whose type the bytes cannot tell. */
function parseTypes(raw: string | null): Record<string, ShareKind> {
  const kinds: Record<string, ShareKind> = {}
  if (raw === null || raw === '') return kinds
  for (const pair of raw.split(',')) {
    const colon = pair.lastIndexOf(':')
    const name = pair.slice(0, colon)
    const kind = pair.slice(colon + 1) as ShareKind
    if (colon <= 0 || !KINDS.includes(kind)) throw new ApiError('bad_request', `types: "${pair}" is not name:text|map|array|xml`)
    kinds[name] = kind
  }
  return kinds
}

/**
 * Reads a body up to `limit` bytes; more is 413 without reading the rest. The body counts in the
 * server's budget while it is read (concurrent bodies, per address, bytes held) and must arrive
 * within --body-timeout-ms; a refused or slow body is answered with `Connection: close`, which
 * cuts the sender off.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new ApiError('payload_too_large', `the body is larger than ${limit} bytes`, { connection: 'close' }))
  const gate = bodyGates.get(req)
  if (gate === undefined) throw new Error('readBody outside HttpApi.handle')
  const { ip, deps } = gate
  const { bodies } = deps
  const reserved = Number.isFinite(declared) ? declared : 0
  const refused = bodies.start(ip, reserved)
  if (refused !== null) {
    deps.onRefused(refused.reason)
    return Promise.reject(new ApiError(refused.error, refused.message, { connection: 'close' }))
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let held = reserved
    let settled = false
    const finish = (error: ApiError | null): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      bodies.end(ip, held)
      req.off('data', onData)
      if (error === null) {
        resolve(new Uint8Array(Buffer.concat(chunks)))
        return
      }
      req.pause()
      reject(error)
    }
    const timer = setTimeout(() => {
      deps.onRefused('body_timeout')
      finish(new ApiError('request_timeout', `the body did not arrive within ${deps.bodyTimeoutMs} ms`, { connection: 'close' }))
    }, deps.bodyTimeoutMs)
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > limit) {
        finish(new ApiError('payload_too_large', `the body is larger than ${limit} bytes`, { connection: 'close' }))
        return
      }
      if (size > held) {
        if (!bodies.fits(size - held)) {
          deps.onRefused('body_bytes')
          finish(new ApiError('unavailable', 'too many body bytes in progress; retry shortly', { connection: 'close' }))
          return
        }
        bodies.grow(size - held)
        held = size
      }
      chunks.push(chunk)
    }
    req.on('data', onData)
    req.on('end', () => finish(null))
    req.on('error', () => finish(new ApiError('bad_request', 'the request body could not be read')))
    req.on('close', () => finish(new ApiError('bad_request', 'the request body was cut off')))
  })
}

/**
 * An answer with a body, through the answer budget, the reply gate's turns and the send timeout
 * (sendAnswer). Only for requests HttpApi.handle admitted: their address is known.
 */
function answer(res: ServerResponse, status: number, headers: Headers, body: Uint8Array | string): void {
  const gate = admitted(res)
  sendAnswer(res, gate.ip, gate.deps.answers, status, headers, body)
}

/** What HttpApi.handle noted of the request `res` answers: its address (read once) and the API's deps. */
function admitted(res: ServerResponse): BodyGate {
  const gate = bodyGates.get(res.req)
  if (gate === undefined) throw new Error('answer outside HttpApi.handle')
  return gate
}

function answerJson(res: ServerResponse, status: number, value: unknown, extraHeaders: Headers = {}): void {
  answer(res, status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...extraHeaders }, JSON.stringify(value))
}

/** Times a PUT .../content builds its update off the event loop before it builds it on the event loop (see putContent). */
const REPLACE_ATTEMPTS = 3

/** How long a connection whose request body was refused part-way stays open after the answer. */
const LINGER_MS = 2_000

/**
 * For a refusal sent before the request's body has all arrived (too large, too many at once, too
 * slow). Node closes a `connection: close` answer's socket as soon as the answer is written, and
 * closing a socket with unread bytes resets the connection: the client, still sending, often
 * lost the answer (4 and 12 of 100 uploads of 3 and 8 MiB, declared 32 MiB, saw EPIPE instead
 * of 413). So the socket sends the answer and its FIN, and is closed LINGER_MS later, when the
 * client has long read the answer. It reads nothing meanwhile, so a refused upload costs no
 * memory here: what the client still sends waits in the kernel's buffers and is dropped with
 * the socket.
 */
function lingerAfterAnswer(req: IncomingMessage): void {
  req.socket.destroySoon = function lingering(this: Socket & { _paused?: boolean }): void {
    if (this.writable) this.end()
    // Node has just set the request flowing to drop its body (IncomingMessage._dump), which
    // starts the socket reading on the next tick. Stopped after that, and marked paused the way
    // Node's HTTP server marks a socket it holds back (`_paused`), so nothing starts it again.
    process.nextTick(() => {
      this._paused = true
      this.pause()
    })
    const timer = setTimeout(() => this.destroy(), LINGER_MS)
    timer.unref()
    this.once('close', () => clearTimeout(timer))
  }
}

function answerBinary(res: ServerResponse, bytes: Uint8Array, extraHeaders: Headers = {}): void {
  answer(res, 200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store', ...extraHeaders }, bytes)
}
