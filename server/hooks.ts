/**
 * The public seams an embedding application hands to `createServer` (issue 15): its own
 * authentication and its own reactions to what happens in rooms. Types only; the runner that
 * awaits them with a timeout, logs and counts their failures lives beside the server.
 */
import type { Access } from './access.js'

/** Which wire protocol a connection speaks. */
export type WireProtocol = 'y-websocket' | 'hocuspocus'

/**
 * Where an update came from, carried with it through `Room.apply` to every effect and hook.
 * `subject` is the authenticated user (`sub` of the token, or what `authenticate` returned);
 * null in open mode.
 */
export type UpdateOrigin =
  | { readonly kind: 'storage' }
  | { readonly kind: 'cluster'; readonly instance: string | null }
  | { readonly kind: 'client'; readonly protocol: WireProtocol; readonly subject: string | null }
  | { readonly kind: 'http'; readonly subject: string | null }

/** What `authenticate` is asked: one y-websocket upgrade, one Hocuspocus document, or one HTTP request. */
export interface AuthenticateRequest {
  readonly room: string | null
  readonly protocol: WireProtocol | 'http'
  /** The credential the client sent (`?token=`, the Hocuspocus Auth message, `Authorization: Bearer`); null when none. */
  readonly token: string | null
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
  readonly remoteAddress: string
}

/** What `authenticate` grants. */
export interface AuthenticateGrant {
  readonly subject: string | null
  readonly access: Access
  /** Milliseconds since the epoch; the connection is closed with 4401 when it passes. */
  readonly expiresAt?: number
  /**
   * Only for requests about no one room (`room` null: `GET /api/rooms`, `POST /api/tickets`): the
   * room names and `prefix*` patterns the grant covers there. Absent = every room. A request about
   * a room is granted that room, whatever this says.
   */
  readonly rooms?: readonly string[]
}

/** A refusal: 'unauthenticated' → 4401 / HTTP 401, 'forbidden' → 4403 / HTTP 403. */
export interface AuthenticateRefusal {
  readonly refuse: 'unauthenticated' | 'forbidden'
  readonly message?: string
}

export type Authenticate = (request: AuthenticateRequest) => Promise<AuthenticateGrant | AuthenticateRefusal> | AuthenticateGrant | AuthenticateRefusal

/** One connection as hooks see it. */
export interface ConnectionInfo {
  readonly room: string
  readonly protocol: WireProtocol
  readonly subject: string | null
  readonly remoteAddress: string
}

/**
 * Reactions of the embedding application. Each is awaited where it matters and bounded by
 * `hookTimeoutMs`; a hook that throws or times out is logged and counted
 * (`weft_hook_failures_total{hook}`), never takes the process down and never loses an edit.
 */
export interface WeftHooks {
  /** A room was loaded from storage, before any member sees it; the doc may be seeded here. */
  onLoad?(room: string, doc: import('yjs').Doc): Promise<void> | void
  /** An update was applied to a room (not called for `storage` origins). */
  onChange?(room: string, update: Uint8Array, origin: UpdateOrigin): Promise<void> | void
  /** A write of the room reached storage. */
  onStored?(room: string): Promise<void> | void
  /** A room was unloaded from memory after its last write was stored. */
  onUnload?(room: string): Promise<void> | void
  onConnect?(connection: ConnectionInfo): Promise<void> | void
  onDisconnect?(connection: ConnectionInfo, code: number): Promise<void> | void
}
