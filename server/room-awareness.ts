import type { AwarenessEntry } from '../protocol/index.js'

/**
 * The owner of awareness states that came from clients of another instance. Those states may be
 * taken over by a newer state from anywhere: their client has moved, or its instance died.
 */
export class RemoteInstance {
  constructor(readonly id: string) {}
}

interface ClientPresence {
  clock: number
  /** JSON text as the client sent it; `null` once the client is gone (kept for its clock). */
  state: string | null
  /** The member that introduced this client ID; only it may change or remove the state. */
  owner: object
}

/**
 * The awareness states of one room, with the member that introduced each client ID.
 *
 * Follows y-protocols' rule for which entry wins (a higher clock, or a removal at the same clock)
 * so that what the server relays is what every client would have applied anyway. The server keeps
 * states as JSON text: it never re-serialises a client's state.
 */
export class RoomAwareness {
  private readonly clients = new Map<number, ClientPresence>()

  /**
   * Applies entries sent by `owner`; returns the entries that changed something, to relay.
   * Entries for client IDs another member introduced are refused and left out.
   */
  apply(entries: readonly AwarenessEntry[], owner: object): { accepted: AwarenessEntry[]; refused: number } {
    const accepted: AwarenessEntry[] = []
    let refused = 0
    for (const entry of entries) {
      const current = this.clients.get(entry.clientId)
      if (current !== undefined && current.state !== null && current.owner !== owner && !(current.owner instanceof RemoteInstance)) {
        refused++
        continue
      }
      const removal = entry.state === 'null'
      if (current !== undefined) {
        const rejoin = current.state === null && !removal && current.clock <= entry.clock
        const newer = rejoin || current.clock < entry.clock || (current.clock === entry.clock && removal && current.state !== null)
        if (!newer) continue
      } else if (removal) {
        // Removing a client this room never saw: nothing to relay.
        continue
      }
      this.clients.set(entry.clientId, { clock: entry.clock, state: removal ? null : entry.state, owner })
      accepted.push(entry)
    }
    return { accepted, refused }
  }

  /** Removes every state `owner` introduced (its connection closed); returns the removals to relay. */
  removeOwner(owner: object): AwarenessEntry[] {
    const removed: AwarenessEntry[] = []
    for (const [clientId, presence] of this.clients) {
      if (presence.owner !== owner || presence.state === null) continue
      // Same clock as the last state, as y-protocols does: clients apply a removal at an equal
      // clock, and a client that reconnects with its old clock is not shut out for a renewal.
      presence.state = null
      removed.push({ clientId, clock: presence.clock, state: 'null' })
    }
    return removed
  }

  /** Every live state (or those whose owner passes `ownedBy`), for a newcomer or a query-awareness answer. */
  liveEntries(ownedBy?: (owner: object) => boolean): AwarenessEntry[] {
    const out: AwarenessEntry[] = []
    for (const [clientId, presence] of this.clients) {
      if (presence.state === null) continue
      if (ownedBy !== undefined && !ownedBy(presence.owner)) continue
      out.push({ clientId, clock: presence.clock, state: presence.state })
    }
    return out
  }

  get size(): number {
    let n = 0
    for (const presence of this.clients.values()) if (presence.state !== null) n++
    return n
  }
}
