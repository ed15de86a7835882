import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { WebSocket, WebSocketServer } from 'ws'
import { SAVED_ACKS_PARAM, pathOfTarget, roomFromPath } from '../protocol/index.js'
import { roomInScope, type AccessDecision, type AuthContext, type Authorizer, type Grant } from './access.js'
import { ClaimedTicket, type Admission, type AdmissionTicket, type ClientAddress, type RoomQuota } from './admission.js'
import { CloseCode, HttpError, type HttpErrorCode } from './codes.js'
import type { WeftOptions } from './config.js'
import { rawError } from './http-response.js'
import type { Logger } from './logger.js'
import type { ServerMetrics } from './metrics.js'
import type { RoomRegistry } from './room.js'
import type { RevocationList } from './revocation.js'
import type { Tickets } from './tickets.js'

/** Errors on a socket weft has not handed to ws yet (an upgrade waiting for its authorization). */
function destroySocket(this: Duplex): void {
  this.destroy()
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

/** An upgrade that passed every check: what the connection registry takes over. */
export interface AdmittedUpgrade {
  ws: WebSocket
  raw: Socket
  ticket: AdmissionTicket
  rooms: RoomRegistry
  /** The y-websocket room; null for a Hocuspocus socket (its documents authenticate inside). */
  room: string | null
  grant: Grant | null
  context: AuthContext
  /** y-websocket: the URL asked for weft's `stored` acknowledgements (`?weft-saved=1`). */
  savedAcks: boolean
}

export interface UpgradePipelineDeps {
  options: Readonly<WeftOptions>
  wss: WebSocketServer
  metrics: ServerMetrics
  log: Logger
  admission: Admission
  roomQuota: RoomQuota
  clientAddress: ClientAddress
  authorizer: Authorizer
  /** Revocations in force: a ticket of a revoked credential is refused like its token. */
  revocations: RevocationList
  /** Whether the server takes new connections now, and why not. */
  serving(): { ok: true; rooms: RoomRegistry; tickets: Tickets | null } | { ok: false; reason: string }
  claimRoom(ip: string, room: string): { error: HttpErrorCode; reason: string } | null
  admit(upgrade: AdmittedUpgrade): void
}

/**
 * A WebSocket upgrade, from the HTTP request to an admitted connection: server state, Origin,
 * room name, admission (capacity, rate), the room claim, then the credential (y-websocket only:
 * `?ticket=` or `?token=`/`authenticate`), then the handshake. Every refusal is a JSON HTTP error,
 * counted in weft_upgrades_total{result} and logged without the URL.
 */
export class UpgradePipeline {
  constructor(private readonly deps: UpgradePipelineDeps) {
    // Handshakes ws itself refuses (bad key, version or method) still get the contract's JSON errors.
    deps.wss.on('wsClientError', (err: Error, socket: Duplex) => {
      const code: HttpErrorCode = err.message === 'Invalid HTTP method' ? 'method_not_allowed' : 'bad_request'
      this.refuse(socket, code, err.message, 'bad_handshake')
    })
  }

  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', destroySocket)
    this.upgrade(req, socket, head).catch((err: unknown) => {
      this.deps.log.error({ err }, 'upgrade failed')
      this.refuse(socket, 'internal_error', 'internal error', 'error')
    })
  }

  private refuse(socket: Duplex, code: HttpErrorCode, message: string, result: string): void {
    this.deps.metrics.upgrades.inc({ result })
    this.deps.metrics.window.upgrade(false)
    // The client sees only a failed connection; this line tells the operator why. The reasons are
    // fixed texts and the URL is left out: neither can carry a token or ticket.
    this.deps.log.info({ result, status: HttpError[code], reason: message, remoteAddress: (socket as Socket).remoteAddress }, 'upgrade refused')
    socket.end(rawError(code, message))
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const { deps } = this
    const serving = deps.serving()
    if (!serving.ok) {
      this.refuse(socket, 'unavailable', serving.reason, 'unavailable')
      return
    }
    const { rooms, tickets } = serving
    const allowed = deps.options.allowOrigins
    const origin = req.headers.origin
    if (allowed !== null && (origin === undefined || !allowed.includes(origin))) {
      // Cross-site WebSocket hijacking: a page elsewhere must not ride on a user's cookies or network.
      this.refuse(socket, 'forbidden', 'origin not allowed', 'origin')
      return
    }
    const target = req.url ?? '/'
    const path = pathOfTarget(target)
    const hocuspocus = servesHocuspocus(path, deps.options.hocuspocusPath)
    const room = hocuspocus ? null : roomFromPath(path)
    if (!hocuspocus && room === null) {
      this.refuse(socket, 'invalid_room', 'room names are 1 to 512 bytes of UTF-8 without control characters', 'invalid_room')
      return
    }
    // Admission first, the credential after: a refusal for capacity must not use up a single-use ticket.
    const address = deps.clientAddress.of(req)
    const ip = deps.clientAddress.limitKey(address)
    const verdict = deps.admission.tryAdmit(ip, room !== null && rooms.isFull(room), address)
    if (!verdict.admitted) {
      this.refuse(socket, verdict.error, verdict.message, verdict.result)
      return
    }
    let ticket: AdmissionTicket = verdict.ticket
    if (room !== null) {
      const refusal = deps.claimRoom(ip, room)
      if (refusal !== null) {
        ticket.release()
        this.refuse(socket, refusal.error, refusal.reason, 'room_limit')
        return
      }
      ticket = new ClaimedTicket(ticket, deps.roomQuota, room)
    }
    // A peer that goes away during the checks below or mid-handshake (or a handshake ws answers
    // with 400 itself) gives the slot back; once admitted, the connection holds it and gives it back.
    const slot = ticket
    const release = (): void => slot.release()
    socket.once('close', release)
    const context: AuthContext = { protocol: room === null ? 'hocuspocus' : 'y-websocket', headers: req.headers, remoteAddress: address }
    // y-websocket carries its credential on the URL and is checked before the upgrade; the
    // Hocuspocus provider sends it per document inside the socket.
    let grant: Grant | null = null
    let savedAcks = false
    if (room !== null) {
      const query = new URLSearchParams(target.length > path.length ? target.slice(path.length + 1) : '')
      const credential = query.get('ticket')
      const decision = credential !== null && tickets !== null ? await this.redeemTicket(tickets, credential, room) : await deps.authorizer.authorize(query.get('token'), room, context)
      if (!decision.ok) {
        ticket.release()
        this.refuse(socket, decision.status === 401 ? 'unauthorized' : 'forbidden', decision.reason, decision.status === 401 ? 'unauthorized' : 'forbidden')
        return
      }
      grant = decision.grant
      savedAcks = query.get(SAVED_ACKS_PARAM) === '1'
      if (!deps.serving().ok) {
        ticket.release()
        this.refuse(socket, 'unavailable', 'server is draining', 'unavailable')
        return
      }
    }
    deps.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      if (!deps.serving().ok) {
        ws.close(CloseCode.serviceRestart, 'service restart')
        return
      }
      // ws handles the socket's errors and close from here on: nothing of the handshake stays
      // attached to a socket that may live for days.
      socket.off('close', release)
      socket.off('error', destroySocket)
      deps.metrics.upgrades.inc({ result: 'accepted' })
      deps.metrics.window.upgrade(true)
      // Upgrades come from Node's HTTP(S) server: the stream is a net.Socket (a TLSSocket with TLS).
      deps.admit({ ws, raw: socket as Socket, ticket: slot, rooms, room, grant, context, savedAcks })
    })
  }

  private async redeemTicket(tickets: Tickets, ticket: string, room: string): Promise<AccessDecision> {
    let grant: Grant | null
    try {
      grant = await tickets.redeem(ticket)
    } catch {
      return { ok: false, status: 401, reason: 'tickets are unavailable right now' }
    }
    if (grant === null) return { ok: false, status: 401, reason: 'the ticket is unknown, used or expired' }
    if (!roomInScope(grant, room)) return { ok: false, status: 403, reason: 'the ticket does not cover this room' }
    if (this.deps.revocations.refuses(grant, room)) {
      this.deps.metrics.revokedRefusals.inc()
      return { ok: false, status: 403, reason: 'access was revoked; get a new access token' }
    }
    return { ok: true, grant }
  }
}
