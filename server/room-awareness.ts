import { createHash } from 'node:crypto'
import type { RelayAwarenessEntry } from '../cluster/index.js'
import type { WeftOptions } from './config.js'

/**
 * The identity awareness ownership goes by: a digest of the token's `sub` (so no user id travels
 * through Redis), or null in open mode, where nobody is identified.
 */
export function presenceIdentity(subject: string | null): string | null {
  return subject === null ? null : createHash('sha256').update(subject).digest('base64url').slice(0, 22)
}

/**
 * The owner of awareness states that came from clients of another instance. Like a local
 * member, it may change or remove only the client IDs it introduced; its states go when the
 * instance says goodbye or its heartbeat expires.
 */
export class RemoteInstance {
  constructor(readonly id: string) {}
}

/** Bounds on one room's awareness; every one is a setting (server/config.ts). */
export interface AwarenessLimits {
  /** Entries of one message looked at; the rest is ignored. */
  maxEntriesPerMessage: number
  /** UTF-8 bytes of one state; a longer state is ignored. */
  maxStateBytes: number
  /** Live client IDs one connection (one Hocuspocus document) may own at once. */
  maxClientsPerConnection: number
  /** Live states in a room, from every connection and instance. */
  maxRoomEntries: number
  /** Characters of JSON text of the room's live states together. */
  maxRoomBytes: number
  /** How long a departed client ID stays reserved for its owner's identity; 0 = not at all. */
  reclaimMs: number
}

/** The awareness bounds the settings give (server/config.ts), frozen: rooms share one object. */
export function awarenessLimits(options: Pick<WeftOptions, 'awarenessMaxEntriesPerMessage' | 'awarenessMaxStateBytes' | 'awarenessMaxClientsPerConnection' | 'awarenessMaxRoomEntries' | 'awarenessMaxRoomBytes' | 'awarenessReclaimSeconds'>): AwarenessLimits {
  return Object.freeze({
    maxEntriesPerMessage: options.awarenessMaxEntriesPerMessage,
    maxStateBytes: options.awarenessMaxStateBytes,
    maxClientsPerConnection: options.awarenessMaxClientsPerConnection,
    maxRoomEntries: options.awarenessMaxRoomEntries,
    maxRoomBytes: options.awarenessMaxRoomBytes,
    reclaimMs: options.awarenessReclaimSeconds * 1000,
  })
}

/** Why an entry was refused; the label of weft_awareness_refused_total. */
export type AwarenessRefusal = 'not-owner' | 'reserved' | 'connection-clients' | 'room-entries' | 'room-bytes' | 'state-bytes' | 'message-entries' | 'query-repeated'

/**
 * y-protocols' outdatedTimeout: stock clients renew their state every 15 s and drop others'
 * states after 30 s without renewal. A state older than this is as good as gone for every client,
 * so its owner's identity may take it over (a half-open socket, a removal lost with Redis).
 */
const STALE_MS = 30_000

interface LivePresence {
  clock: number
  /** JSON text as the client sent it. */
  state: string
  /** The member (or RemoteInstance) that introduced this client ID; only it may change or remove the state. */
  owner: object
  /** Who the owner authenticated as (a digest of the token's `sub`); null in open mode or unknown. */
  identity: string | null
  updatedAt: number
}

/** What is kept of a client that left: enough to give its ID back to its owner's reconnect only. */
interface Departed {
  clock: number
  identity: string | null
  until: number
}

export interface AwarenessApplied {
  /** Entries that changed something, newest per client ID, to broadcast and relay. */
  accepted: RelayAwarenessEntry[]
  refused: Map<AwarenessRefusal, number>
}

/**
 * The awareness states of one room, with the member that introduced each client ID.
 *
 * Follows y-protocols' rule for which entry wins (a higher clock, or a removal at the same clock)
 * so that what the server relays is what every client would have applied anyway. The server keeps
 * states as JSON text: it never re-serialises a client's state.
 *
 * Ownership: a client ID belongs to the member that introduced it while its state lives. When it
 * goes, only a bounded, expiring reservation (clock and owner identity) is kept, so that the
 * owner's reconnect gets it back and nobody else does (issue 12, finding 10); nothing else of
 * a departed client stays in memory (finding 2).
 */
export class RoomAwareness {
  // Created on first use: most rooms of a server are open in one tab with nobody else (issue 19:
  // 10,000 rooms with one connection each), and an empty Map costs about 200 bytes.
  private live: Map<number, LivePresence> | null = null
  /** In insertion order, which is expiry order (every reservation lasts reclaimMs). */
  private departed: Map<number, Departed> | null = null
  /** The client IDs of each owner: one number (a stock client has one), a Set when it has more. */
  private owned: Map<object, number | Set<number>> | null = null
  private liveBytes = 0
  /** Counts changes of the live states: what was encoded from them is current while it stays the same. */
  private changes = 0

  constructor(
    private readonly limits: AwarenessLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Applies entries sent by `owner`, authenticated as `identity` (undefined: each entry's own, as
   * another instance relayed it); returns what changed, to relay,
   * and what was refused. Entries for client IDs another member holds are never applied; stock
   * providers echo every state they hear, so an echo (not newer than what the room has) is
   * dropped silently and only an attempt to change or remove is counted.
   */
  apply(entries: readonly RelayAwarenessEntry[], owner: object, identity?: string | null): AwarenessApplied {
    const now = this.now()
    const accepted = new Map<number, RelayAwarenessEntry>()
    const refused = new Map<AwarenessRefusal, number>()
    const refuse = (reason: AwarenessRefusal): void => {
      refused.set(reason, (refused.get(reason) ?? 0) + 1)
    }
    const remote = owner instanceof RemoteInstance
    for (const entry of entries) {
      const { clientId, clock, state } = entry
      const who = identity !== undefined ? identity : (entry.identity ?? null)
      const removal = state === 'null'
      // Several entries for one ID in a message go out as one, so each must win over the last.
      const prior = accepted.get(clientId)
      if (prior !== undefined && !(prior.clock < clock || (prior.clock === clock && removal && prior.state !== 'null'))) continue
      const current = this.live?.get(clientId)
      if (current !== undefined && current.owner === owner) {
        const newer = current.clock < clock || (current.clock === clock && removal)
        if (!newer) continue
        if (removal) {
          this.depart(clientId, current, now)
          accepted.set(clientId, { clientId, clock, state, identity: current.identity })
          continue
        }
        if (this.liveBytes - current.state.length + state.length > this.limits.maxRoomBytes) {
          refuse('room-bytes')
          continue
        }
        this.liveBytes += state.length - current.state.length
        this.changes++
        current.clock = clock
        current.state = state
        current.updatedAt = now
        accepted.set(clientId, { clientId, clock, state, identity: current.identity })
        continue
      }
      if (current !== undefined) {
        const attempt = current.clock < clock || (current.clock === clock && removal)
        if (!attempt) continue
        // Another member's state: only its owner's identity may take it over, and only once the
        // state is stale (the old connection is dead, or its removal was lost).
        if (removal || now - current.updatedAt < STALE_MS) {
          refuse('not-owner')
          continue
        }
        if (!this.mayReclaim(current.identity, who)) {
          refuse('reserved')
          continue
        }
      }
      // Removing a client the room does not hold: nothing to do, nothing to relay.
      if (removal) continue
      // A stale state taken over: the new one replaces it, so it counts against no bound.
      const displaced = current
      const reservation = displaced === undefined ? this.reservation(clientId, now) : undefined
      if (reservation !== undefined) {
        if (!this.mayReclaim(reservation.identity, who)) {
          refuse('reserved')
          continue
        }
        // Older than what the room last saw of this client: y-protocols would ignore it too.
        if (clock < reservation.clock) continue
      }
      const mine = this.owned?.get(owner)
      if (!remote && mine !== undefined && (typeof mine === 'number' ? 1 : mine.size) >= this.limits.maxClientsPerConnection) {
        refuse('connection-clients')
        continue
      }
      if (this.size - (displaced === undefined ? 0 : 1) >= this.limits.maxRoomEntries) {
        refuse('room-entries')
        continue
      }
      if (this.liveBytes - (displaced?.state.length ?? 0) + state.length > this.limits.maxRoomBytes) {
        refuse('room-bytes')
        continue
      }
      if (displaced !== undefined) this.unlink(clientId, displaced)
      this.departed?.delete(clientId)
      ;(this.live ??= new Map()).set(clientId, { clock, state, owner, identity: who, updatedAt: now })
      this.liveBytes += state.length
      this.changes++
      this.own(owner, mine, clientId)
      accepted.set(clientId, { clientId, clock, state, identity: who })
    }
    return { accepted: [...accepted.values()], refused }
  }

  /** A reserved ID goes back to the same identity; in open mode (no identity) to anyone. */
  private mayReclaim(reservedFor: string | null, identity: string | null): boolean {
    return reservedFor === null || reservedFor === identity
  }

  private reservation(clientId: number, now: number): Departed | undefined {
    const departed = this.departed?.get(clientId)
    if (departed === undefined || departed.until > now) return departed
    this.departed?.delete(clientId)
    return undefined
  }

  /** Records `clientId` as `owner`'s; `mine` is what `owned` held for it. */
  private own(owner: object, mine: number | Set<number> | undefined, clientId: number): void {
    const owned = (this.owned ??= new Map())
    if (mine === undefined) owned.set(owner, clientId)
    else if (typeof mine === 'number') owned.set(owner, new Set([mine, clientId]))
    else mine.add(clientId)
  }

  private unlink(clientId: number, presence: LivePresence): void {
    this.live?.delete(clientId)
    this.liveBytes -= presence.state.length
    this.changes++
    const mine = this.owned?.get(presence.owner)
    if (mine === clientId) this.owned?.delete(presence.owner)
    else if (typeof mine === 'object') {
      mine.delete(clientId)
      if (mine.size === 0) this.owned?.delete(presence.owner)
    }
  }

  /** Drops a live state; keeps a reservation for its owner's identity within the bounds. */
  private depart(clientId: number, presence: LivePresence, now: number): void {
    this.unlink(clientId, presence)
    this.departed?.delete(clientId)
    if (this.limits.reclaimMs <= 0) return
    const departures = (this.departed ??= new Map())
    for (const [id, departed] of departures) {
      // Oldest first: expired ones, then whatever exceeds the bound (an ID reserved for the
      // shortest remaining time goes first).
      if (departed.until > now && departures.size < this.limits.maxRoomEntries) break
      departures.delete(id)
    }
    departures.set(clientId, { clock: presence.clock, identity: presence.identity, until: now + this.limits.reclaimMs })
  }

  /** Removes every state `owner` introduced (its connection closed); returns the removals to relay. */
  removeOwner(owner: object): RelayAwarenessEntry[] {
    const mine = this.owned?.get(owner)
    if (mine === undefined) return []
    const now = this.now()
    const removed: RelayAwarenessEntry[] = []
    for (const clientId of typeof mine === 'number' ? [mine] : [...mine]) {
      const presence = this.live?.get(clientId)
      if (presence === undefined) continue
      // Same clock as the last state, as y-protocols does: clients apply a removal at an equal
      // clock, and a client that reconnects with its old clock is not shut out for a renewal.
      removed.push({ clientId, clock: presence.clock, state: 'null', identity: presence.identity })
      this.depart(clientId, presence, now)
    }
    this.owned?.delete(owner)
    return removed
  }

  /** Every live state (or those whose owner passes `ownedBy`), for a newcomer or a query-awareness answer. */
  liveEntries(ownedBy?: (owner: object) => boolean): RelayAwarenessEntry[] {
    const out: RelayAwarenessEntry[] = []
    if (this.live === null) return out
    for (const [clientId, presence] of this.live) {
      if (ownedBy !== undefined && !ownedBy(presence.owner)) continue
      out.push({ clientId, clock: presence.clock, state: presence.state, identity: presence.identity })
    }
    return out
  }

  /** Changes so far of the live states (a state set, changed or removed). */
  get version(): number {
    return this.changes
  }

  /** Live states. */
  get size(): number {
    return this.live?.size ?? 0
  }

  /** Characters of the live states' JSON text. */
  get bytes(): number {
    return this.liveBytes
  }

  /** Departed client IDs still reserved (expired ones may linger until the next departure). */
  get reservedCount(): number {
    return this.departed?.size ?? 0
  }
}
