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
  /** A document update another instance applied (or a healed batch of them, merged). */
  onUpdate(update: Uint8Array): void
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
  /** Bytes of local updates held (merged per room) while Redis is unreachable, waiting to be sent. */
  heldBytes: number
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
  on(event: 'health', listener: (health: RelayHealth) => void): void
  /** Publishes the removal of this instance's awareness, stops heartbeats, closes connections. Idempotent. */
  close(): Promise<void>
}
