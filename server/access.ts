import type { AuthenticateRequest } from './hooks.js'
import { errors as joseErrors, jwtVerify, type CryptoKey, type FlattenedJWSInput, type JWSHeaderParameters, type JWTVerifyOptions } from 'jose'
import { JWKS_ALGORITHMS, JwksUnavailableError, type JwksKeys } from './jwks.js'

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
  /** When the token was issued (its `iat`, ms since epoch); null or absent = unknown. Revocation compares it. */
  issuedAt?: number | null
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

/** What JwtAuthorizer checks besides the signature. */
export interface JwtOptions {
  /** Keys of an identity provider (--auth-jwks): RS256, ES256 and EdDSA tokens verify against them. */
  keys?: JwksKeys | null
  /** Required `iss` (--auth-issuer). */
  issuer?: string | null
  /** Required `aud` (--auth-audience): the token's `aud` must be or contain it. */
  audience?: string | null
  /** Tolerated clock difference for `exp`, `nbf` and `iat`, in seconds. */
  clockSkewSeconds?: number
}

/**
 * Verifies access tokens with `jose`: claims `sub`, `exp`, `rooms`, `access`. HS256 with the
 * shared secret, and RS256/ES256/EdDSA against a JWKS when `keys` is given; either verifies when
 * both are set. Issuer, audience and clock skew apply to every token.
 */
export class JwtAuthorizer implements Authorizer {
  readonly open = false
  private readonly key: Uint8Array | null
  private readonly verifyOptions: JWTVerifyOptions
  private readonly keys: JwksKeys | null

  constructor(secret: string | null, options: JwtOptions = {}) {
    this.key = secret === null ? null : new TextEncoder().encode(secret)
    this.keys = options.keys ?? null
    if (this.key === null && this.keys === null) throw new Error('JwtAuthorizer needs a secret or a JWKS')
    const algorithms = [...(this.key === null ? [] : ['HS256']), ...(this.keys === null ? [] : JWKS_ALGORITHMS)]
    this.verifyOptions = Object.freeze({
      algorithms,
      requiredClaims: ['exp', 'sub'],
      clockTolerance: options.clockSkewSeconds ?? 0,
      ...(options.issuer != null ? { issuer: options.issuer } : {}),
      ...(options.audience != null ? { audience: options.audience } : {}),
    })
  }

  /** The key for a token: the secret for HS256 (checked against `algorithms` by jose), else the JWKS. */
  private readonly keyFor = (header: JWSHeaderParameters, token: FlattenedJWSInput): Uint8Array | Promise<CryptoKey> => {
    if (header.alg === 'HS256' && this.key !== null) return this.key
    if (this.keys !== null && header.alg !== 'HS256') return this.keys.resolve(header, token)
    // Not an algorithm this server takes: jose refuses it before using this key.
    return this.key ?? new Uint8Array(32)
  }

  async authorize(token: string | null, room: string | null): Promise<AccessDecision> {
    if (token === null || token === '') return { ok: false, status: 401, reason: 'an access token is required' }
    let payload
    try {
      ;({ payload } = await jwtVerify(token, this.keyFor, this.verifyOptions))
    } catch (err) {
      return { ok: false, status: 401, reason: refusalReason(err) }
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
      // The connection still ends at `exp` by this server's clock: the skew only widens the check.
      expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : null,
      issuedAt: typeof payload.iat === 'number' ? payload.iat * 1000 : null,
    }
    if (room !== null && !roomInScope(grant, room)) return { ok: false, status: 403, reason: 'the access token does not cover this room' }
    return { ok: true, grant }
  }
}

/** A fixed text per kind of failure: never the token, never a key or a URL. */
function refusalReason(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the access token has expired'
  if (err instanceof JwksUnavailableError) return 'the signing keys of the identity provider are not available; try again later'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'the access token is signed with an unknown key'
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'iss') return 'the access token has the wrong issuer'
    if (err.claim === 'aud') return 'the access token has the wrong audience'
    if (err.claim === 'nbf') return 'the access token is not valid yet'
  }
  return 'the access token is not valid'
}
