import { errors as joseErrors, jwtVerify } from 'jose'
import type { AuthenticateRequest } from './hooks.js'

/** What a credential lets its holder do (the contract's `access` claim). */
export type Access = 'read' | 'write' | 'admin'

const ACCESS_RANK: Readonly<Record<Access, number>> = { read: 0, write: 1, admin: 2 }

export function allows(granted: Access, needed: Access): boolean {
  return ACCESS_RANK[granted] >= ACCESS_RANK[needed]
}

export interface Grant {
  access: Access
  /** The token's `sub`; null in open mode. */
  subject: string | null
  /** Room names and `prefix*` patterns the grant covers; null = every room (open mode). */
  rooms: readonly string[] | null
  /** When the credential stops being valid (ms since epoch); null = never. */
  expiresAt: number | null
}

export type AccessDecision =
  | { ok: true; grant: Grant }
  /** 401: no, bad or expired credential. 403: valid, but not for this room or not enough access. */
  | { ok: false; status: 401 | 403; reason: string }

/** Where a credential was presented: what `authenticate` sees besides token and room (server/authenticate.ts). */
export type AuthContext = Pick<AuthenticateRequest, 'protocol' | 'headers' | 'remoteAddress'>

/** Decides who may do what. Open mode lets anyone write; with a secret, JWTs decide; or the application's `authenticate`. */
export interface Authorizer {
  readonly open: boolean
  /** Checks a credential; `room` (when given) must be in its scope. The JWT check ignores `context`. */
  authorize(token: string | null, room: string | null, context?: AuthContext): Promise<AccessDecision>
}

export function roomInScope(grant: Grant, room: string): boolean {
  if (grant.rooms === null) return true
  for (const pattern of grant.rooms) {
    if (pattern.endsWith('*') ? room.startsWith(pattern.slice(0, -1)) : room === pattern) return true
  }
  return false
}

/** The grant of every connection in open mode: one frozen object, not one per connection. */
export const OPEN_GRANT: Grant = Object.freeze({ access: 'write', subject: null, rooms: null, expiresAt: null })

export const openAccess: Authorizer = {
  open: true,
  authorize: async () => ({ ok: true, grant: OPEN_GRANT }),
}

/** Verifies HS256 access tokens with `jose`: claims `sub`, `exp`, `rooms`, `access`. */
export class JwtAuthorizer implements Authorizer {
  readonly open = false
  private readonly key: Uint8Array

  constructor(secret: string) {
    this.key = new TextEncoder().encode(secret)
  }

  async authorize(token: string | null, room: string | null): Promise<AccessDecision> {
    if (token === null || token === '') return { ok: false, status: 401, reason: 'an access token is required' }
    let payload
    try {
      ;({ payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'], requiredClaims: ['exp', 'sub'] }))
    } catch (err) {
      const reason = err instanceof joseErrors.JWTExpired ? 'the access token has expired' : 'the access token is not valid'
      return { ok: false, status: 401, reason }
    }
    const access = payload.access
    if (access !== 'read' && access !== 'write' && access !== 'admin') return { ok: false, status: 401, reason: 'the access token has no valid access claim' }
    const rooms = payload.rooms
    if (!Array.isArray(rooms) || !rooms.every((r): r is string => typeof r === 'string')) {
      return { ok: false, status: 401, reason: 'the access token has no valid rooms claim' }
    }
    const grant: Grant = {
      access,
      subject: typeof payload.sub === 'string' ? payload.sub : null,
      rooms,
      expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : null,
    }
    if (room !== null && !roomInScope(grant, room)) return { ok: false, status: 403, reason: 'the access token does not cover this room' }
    return { ok: true, grant }
  }
}
