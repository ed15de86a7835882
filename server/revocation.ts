import type { AccessDecision, AuthContext, Authorizer, Grant } from './access.js'

/**
 * One revocation (POST /api/connections/revoke): every credential of `subject` issued at or before
 * `at` (for `room`, or for every room when null) is refused until `until`.
 */
export interface Revocation {
  subject: string
  room: string | null
  /** When it was revoked, ms since the epoch (the revoking instance's clock). */
  at: number
  /** When credentials issued before `at` are accepted again; `at` when they never were refused. */
  until: number
}

/** Longest subject and room accepted in a revocation (a room name is at most 512 bytes). */
export const MAX_SUBJECT_LENGTH = 1024

/** Whether `revocation` covers a connection of `grant` to `room`. */
export function revokes(revocation: Revocation, grant: Grant, room: string | null): boolean {
  if (grant.subject !== revocation.subject) return false
  if (revocation.room !== null && revocation.room !== room) return false
  // A credential issued after the revocation is a new one (the identity provider issued it knowing
  // of the revocation); one whose issue time is unknown is treated as old.
  return grant.issuedAt == null || grant.issuedAt <= revocation.at
}

/** Reads a revocation from untrusted JSON (the Redis channel); null when it is not one. */
export function parseRevocation(value: unknown): Revocation | null {
  if (typeof value !== 'object' || value === null) return null
  const { subject, room, at, until } = value as Record<string, unknown>
  if (typeof subject !== 'string' || subject === '' || subject.length > MAX_SUBJECT_LENGTH) return null
  if (room !== null && (typeof room !== 'string' || room === '' || room.length > MAX_SUBJECT_LENGTH)) return null
  if (typeof at !== 'number' || !Number.isSafeInteger(at) || typeof until !== 'number' || !Number.isSafeInteger(until) || until < at) return null
  return { subject, room, at, until }
}

/**
 * The revocations still in force on this instance, bounded: at most `maxEntries`, each forgotten
 * at its `until`; past the bound the one that ends first is forgotten early (`onEvicted`, counted
 * in metrics). Keyed by subject and room, so a second revocation of the same pair replaces the
 * first instead of taking a second slot.
 */
export class RevocationList {
  /** Insertion order is the order of `until` only roughly; eviction looks for the one ending first. */
  private readonly entries = new Map<string, Revocation>()

  constructor(
    private readonly maxEntries: number,
    private readonly onEvicted: () => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.entries.size
  }

  add(revocation: Revocation): void {
    if (revocation.until <= this.now()) return
    const key = `${revocation.subject}\u0000${revocation.room ?? ''}`
    const held = this.entries.get(key)
    if (held !== undefined && held.at >= revocation.at && held.until >= revocation.until) return
    this.entries.delete(key)
    if (this.entries.size >= this.maxEntries) this.makeRoom()
    this.entries.set(key, held === undefined ? revocation : { ...revocation, at: Math.max(held.at, revocation.at), until: Math.max(held.until, revocation.until) })
  }

  /** Whether a grant is refused for `room` (null: a request not about one room, e.g. an admin call). */
  refuses(grant: Grant, room: string | null): boolean {
    if (grant.subject === null || this.entries.size === 0) return false
    const now = this.now()
    for (const key of room === null ? [`${grant.subject}\u0000`] : [`${grant.subject}\u0000`, `${grant.subject}\u0000${room}`]) {
      const revocation = this.entries.get(key)
      if (revocation === undefined) continue
      if (revocation.until <= now) {
        this.entries.delete(key)
        continue
      }
      if (revokes(revocation, grant, room)) return true
    }
    return false
  }

  private makeRoom(): void {
    const now = this.now()
    let first: string | null = null
    let firstUntil = Infinity
    for (const [key, revocation] of this.entries) {
      if (revocation.until <= now) this.entries.delete(key)
      else if (revocation.until < firstUntil) {
        first = key
        firstUntil = revocation.until
      }
    }
    if (this.entries.size < this.maxEntries || first === null) return
    this.entries.delete(first)
    this.onEvicted()
  }
}

/**
 * An Authorizer that refuses (403) the credentials a revocation covers, around the one that checks
 * tokens: the reconnect of a revoked client with the same token is refused, on every protocol.
 */
export class RevocationAwareAuthorizer implements Authorizer {
  constructor(
    private readonly inner: Authorizer,
    private readonly list: RevocationList,
    private readonly onRefused: () => void = () => {},
  ) {}

  get open(): boolean {
    return this.inner.open
  }

  async authorize(token: string | null, room: string | null, context?: AuthContext): Promise<AccessDecision> {
    const decision = await this.inner.authorize(token, room, context)
    if (!decision.ok || !this.list.refuses(decision.grant, room)) return decision
    this.onRefused()
    return { ok: false, status: 403, reason: 'access was revoked; get a new access token' }
  }
}

/** What a protocol session offers revocation (YWebsocketSession, HocuspocusSession). */
export interface RevocableSession {
  /** Ends what `revoked` covers; returns how many connections or documents that was. */
  revoke(revoked: (grant: Grant, room: string) => boolean): number
}

/** How revocations reach the other instances (cluster/revocations.ts with --redis). */
export interface RevocationChannel {
  /** Resolves with how many other instances heard it; rejects while they cannot be reached. */
  publish(text: string, untilMs: number): Promise<number>
}

export interface RevokeResult {
  /** Connections (y-websocket sockets, Hocuspocus documents) ended on this instance. */
  closed: number
  /** Other instances the revocation was sent to; null without --redis. */
  instances: number | null
}

export interface RevokerOptions {
  list: RevocationList
  /** --auth-revocation-seconds: how long credentials issued before a revocation stay refused. */
  revocationMs: number
  /** The server's open connections, whose sessions were handed to `track`. */
  connections(): Iterable<object>
  onClosed(protocol: 'y-websocket' | 'hocuspocus', count: number): void
  onInvalid(text: string): void
}

/**
 * POST /api/connections/revoke on one instance: remembers the revocation (so reconnects with the
 * same credential are refused), ends the matching connections here, and sends it to the other
 * instances, which do the same when it arrives (`receive`).
 */
export class Revoker {
  private readonly sessions = new WeakMap<object, { session: RevocableSession; protocol: 'y-websocket' | 'hocuspocus' }>()
  private channel: RevocationChannel | null = null

  constructor(private readonly options: RevokerOptions) {}

  track(connection: object, session: RevocableSession, protocol: 'y-websocket' | 'hocuspocus'): void {
    this.sessions.set(connection, { session, protocol })
  }

  useChannel(channel: RevocationChannel | null): void {
    this.channel = channel
  }

  async revoke(subject: string, room: string | null): Promise<RevokeResult> {
    const at = Date.now()
    const revocation: Revocation = { subject, room, at, until: at + this.options.revocationMs }
    const closed = this.apply(revocation)
    if (this.channel === null) return { closed, instances: null }
    const instances = await this.channel.publish(JSON.stringify(revocation), revocation.until)
    return { closed, instances }
  }

  /** A revocation from the channel (another instance's, or this one's own coming back). */
  receive(text: string): void {
    let revocation: Revocation | null = null
    try {
      revocation = parseRevocation(JSON.parse(text))
    } catch {
      // not JSON: reported below
    }
    if (revocation === null) this.options.onInvalid(text.slice(0, 200))
    else this.apply(revocation)
  }

  private apply(revocation: Revocation): number {
    this.options.list.add(revocation)
    let closed = 0
    for (const connection of [...this.options.connections()]) {
      const tracked = this.sessions.get(connection)
      if (tracked === undefined) continue
      const ended = tracked.session.revoke((grant, room) => revokes(revocation, grant, room))
      if (ended === 0) continue
      closed += ended
      this.options.onClosed(tracked.protocol, ended)
    }
    return closed
  }
}
