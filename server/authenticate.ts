import { OPEN_GRANT, type AccessDecision, type AuthContext, type Authorizer, type Grant } from './access.js'
import type { HookRunner } from './hook-runner.js'
import type { Authenticate, AuthenticateGrant, AuthenticateRefusal } from './hooks.js'

/** What a failed `authenticate` (threw, timed out, answered nonsense) becomes: the client is refused, never let in. */
const FAILED: AccessDecision = Object.freeze({ ok: false, status: 401, reason: 'authentication failed' })

/** What the runner answers for a call that threw or timed out (already logged and counted). */
const NO_ANSWER = Symbol('no answer')

function isRefusal(answer: AuthenticateGrant | AuthenticateRefusal): answer is AuthenticateRefusal {
  return 'refuse' in answer
}

function validGrant(answer: AuthenticateGrant): boolean {
  return (
    (answer.access === 'read' || answer.access === 'write' || answer.access === 'admin') &&
    (answer.subject === null || typeof answer.subject === 'string') &&
    (answer.expiresAt === undefined || Number.isFinite(answer.expiresAt)) &&
    (answer.rooms === undefined || (Array.isArray(answer.rooms) && answer.rooms.every((room) => typeof room === 'string')))
  )
}

/**
 * The application's `authenticate` as weft's Authorizer: it replaces the built-in token check for
 * y-websocket upgrades, each Hocuspocus document and the HTTP API. The call is bounded by
 * hookTimeoutMs and counted like a hook when it fails; a failure refuses (401/4401), never admits.
 * A grant applies to the room asked about; for a request about no room, to `rooms` (default all).
 */
export class AuthenticateAuthorizer implements Authorizer {
  readonly open = false

  constructor(
    private readonly authenticate: Authenticate,
    private readonly runner: HookRunner,
  ) {}

  async authorize(token: string | null, room: string | null, context?: AuthContext): Promise<AccessDecision> {
    const request = { room, token, protocol: context?.protocol ?? 'http', headers: context?.headers ?? {}, remoteAddress: context?.remoteAddress ?? '' }
    const answer = await this.runner.bounded<AuthenticateGrant | AuthenticateRefusal | typeof NO_ANSWER>('authenticate', { room, protocol: request.protocol }, () => this.authenticate(request), NO_ANSWER)
    if (answer === NO_ANSWER) return FAILED
    if (answer === null || typeof answer !== 'object') return this.invalid(room, request.protocol)
    if (isRefusal(answer)) {
      if (answer.refuse === 'forbidden') return { ok: false, status: 403, reason: answer.message ?? 'forbidden' }
      return { ok: false, status: 401, reason: answer.message ?? 'not authenticated' }
    }
    if (!validGrant(answer)) return this.invalid(room, request.protocol)
    if (answer.expiresAt !== undefined && answer.expiresAt <= Date.now()) return { ok: false, status: 401, reason: 'the grant has expired' }
    const grant: Grant = {
      access: answer.access,
      subject: answer.subject,
      rooms: room !== null ? [room] : (answer.rooms ?? null),
      expiresAt: answer.expiresAt ?? null,
    }
    return { ok: true, grant }
  }

  private invalid(room: string | null, protocol: string): AccessDecision {
    // An application bug, not the client's: logged and counted like a throw.
    this.runner.fail('authenticate', 'error', { room, protocol }, new TypeError('authenticate answered neither a grant { subject, access } nor a refusal { refuse }'))
    return FAILED
  }
}

/**
 * An Authorizer as an `authenticate` function: the built-in check (open mode, or the JWT settings)
 * is the default `authenticate`, and an application can call it from its own, e.g. "our session
 * cookie, else a weft access token" (`defaultAuthenticate` of WeftServer).
 */
export function authorizerAsAuthenticate(authorizer: Authorizer): Authenticate {
  return async ({ token, room, protocol, headers, remoteAddress }) => {
    const decision = await authorizer.authorize(authorizer.open ? null : token, room, { protocol, headers, remoteAddress })
    if (!decision.ok) return { refuse: decision.status === 401 ? 'unauthenticated' : 'forbidden', message: decision.reason }
    const { grant } = decision
    return {
      subject: grant.subject,
      access: grant === OPEN_GRANT && protocol === 'http' ? 'admin' : grant.access,
      ...(grant.expiresAt === null ? {} : { expiresAt: grant.expiresAt }),
      ...(grant.rooms === null ? {} : { rooms: grant.rooms }),
    }
  }
}

/** The same Authorizer for every call of one connection, with where it came from: what Hocuspocus documents are checked with. */
export function withContext(authorizer: Authorizer, context: AuthContext): Authorizer {
  return { open: authorizer.open, authorize: (token, room) => authorizer.authorize(token, room, context) }
}
