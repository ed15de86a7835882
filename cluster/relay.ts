import type { AwarenessEntry } from '../protocol/index.js'

/**
 * An awareness entry as instances exchange it: with the identity its client authenticated as (a
 * digest of the token's `sub`; null in open mode), so that every instance keeps a departed client
 * ID for its owner's reconnect alone. Absent when an instance did not send it.
 */
export interface RelayAwarenessEntry extends AwarenessEntry {
  identity?: string | null
}

/**
 * What a room hears from the rest of the cluster. Called only between `joinRoom` resolving and
 * `leaveRoom`; updates may repeat (Yjs applies them idempotently) but none is ever skipped.
 */
export interface RelayRoomHandlers {
  /**
   * A document update another instance applied (or a healed batch of them, merged).
   * `publishedAt`: the origin's wall clock (ms) when it applied and published the update, the
   * same tick as its arrival there; absent for healed or merged updates.
   */
  onUpdate(update: Uint8Array, publishedAt?: number): void
  /** Awareness entries from clients of another instance (`instanceId`). */
  onAwareness(entries: readonly RelayAwarenessEntry[], instanceId: string): void
  /** Every client of that instance is gone (it died or left): remove the states it introduced. */
  onInstanceGone(instanceId: string): void
  /** The awareness states this instance's own clients introduced in the room, to re-send (a newcomer asked, or Redis came back). */
  localAwareness(): RelayAwarenessEntry[]
  /**
   * The room's whole document as this instance holds it (Y.encodeStateAsUpdate of its doc).
   * Asked when the cluster's copy may lack local edits: Redis came back empty (or flushed), or
   * more edits were held during an outage than the held-updates budget allows, or the room
   * joined while Redis was down. Only what the cluster lacks is then published.
   */
  localState(): Uint8Array
}

export interface RelayStats {
  /** Updates this instance published. */
  published: number
  /** Updates received from other instances. */
  received: number
  /** Updates recovered by gap detection or catch-up instead of arriving live. */
  healed: number
  /** Redis commands sent, for the cost-per-edit figure. */
  commands: number
  /** Periodic checks that sent a command (one EVALSHA each); a check with nothing to read sends none. */
  checks: number
  /** Room streams this instance folded into their snapshots (compactions written and applied). */
  compacted: number
  /** Bytes of local updates held (merged per room) while Redis is unreachable, waiting to be sent. */
  heldBytes: number
}

/** What the Redis the cluster runs on does to survive a restart (issue #13). */
export type RedisPersistence = 'aof' | 'rdb' | 'aof+rdb' | 'none' | 'unknown'

/** Where this instance's documents come from when the cluster asks for rooms it does not hold loaded. */
export interface StoredRooms {
  /** Every room this instance has stored. */
  list(): Promise<string[]>
  /** The stored document (one merged update), or null. */
  load(room: string): Promise<Uint8Array | null>
}

/** How the cluster recovers what Redis lost (issue #13): re-publishing stored rooms, asking the other instances. */
export interface RelayRecovery {
  persistence: RedisPersistence
  /** A re-publish of every stored room is under way (Redis lost its data, or was found empty). */
  republishing: boolean
  /** Held rooms are being re-synced whole after a loss of Redis's data. */
  resyncing: boolean
  /** Losses of Redis's data noticed (a new epoch). */
  losses: number
  /** Rooms of the current (or last) re-publish done, and how many it has. */
  republishDone: number
  republishTotal: number
  /** Stored rooms re-published since start. */
  republished: number
  /** Rooms Redis did not have that this instance asked the other instances for. */
  asks: number
  /** Asks that another instance answered with the room's content. */
  found: number
  /** Asks this instance answered for others with content. */
  answered: number
}

export type RelayHealth =
  | { up: true; lagMs: number }
  | { up: false; since: number; error: string }

/**
 * The cluster: how instances sharing a Redis relay updates and awareness for the rooms they hold.
 * A room joins when it loads and leaves when it unloads.
 */
export interface Relay {
  readonly instanceId: string
  /**
   * Starts relaying a room and returns the cluster's copy of its document (one merged update, or
   * null when the cluster has none), so an instance with an empty data directory serves it in full.
   * `localState` is what this instance holds (from its own storage); whatever of it the cluster
   * lacks is published, which heals a Redis that was restarted empty.
   */
  joinRoom(room: string, localState: Uint8Array | null, handlers: RelayRoomHandlers): Promise<Uint8Array | null>
  leaveRoom(room: string): Promise<void>
  /** Publishes a local update once. Never throws: while Redis is down updates are held (merged) and sent on reconnect. */
  publishUpdate(room: string, update: Uint8Array): void
  /** Publishes local awareness changes (best effort; the room's states are re-sent after a reconnect). */
  publishAwareness(room: string, entries: readonly RelayAwarenessEntry[]): void
  health(): RelayHealth
  stats(): RelayStats
  /** The cluster's recovery state; relays without a shared store (the in-memory one) have none. */
  recovery?(): RelayRecovery
  /** Lets the relay read rooms this instance stored but does not hold loaded (re-publish, answering asks). */
  setStoredRooms?(rooms: StoredRooms): void
  on(event: 'health', listener: (health: RelayHealth) => void): void
  /** Publishes the removal of this instance's awareness, stops heartbeats, closes connections. Idempotent. */
  close(): Promise<void>
}
