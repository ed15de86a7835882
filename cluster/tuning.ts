import type { RelayMessage } from './relay-message.js'

/** The subset of a pino logger the relay writes to. */
export interface RelayLogger {
  debug(obj: object, msg: string): void
  info(obj: object, msg: string): void
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

/** Fault injection for tests: lets a test lose pub/sub messages the way Redis may. */
export interface RelayFaults {
  /** Return true to drop this incoming channel message before the relay sees it. */
  dropMessage?(room: string, message: RelayMessage): boolean
}

/** Timings and budgets of the Redis relay; units are in the names. */
export interface ClusterTuning {
  heartbeatMs: number
  instanceTtlMs: number
  checkMs: number
  epochCheckMs: number
  compactAfterEntries: number
  compactWaitMs: number
  heldBytes: number
  maxRetryDelayMs: number
  joinWaitMs: number
  closeMs: number
  retentionMs: number
  republishRoomsPerSecond: number
  askTimeoutMs: number
}

export const CLUSTER_DEFAULTS: Readonly<ClusterTuning> = Object.freeze({
  /** How often the heartbeat key is refreshed, where this instance's messages do not stand in for it (RedisRelay.beatCovered). */
  heartbeatMs: 1000,
  /**
   * TTL of the heartbeat key, and how long a message heard from an instance counts as its heartbeat:
   * awareness of a dead instance goes within this plus one check (< 5 s, issue #6). At least
   * 3 × heartbeatMs, or every tick writes the heartbeat.
   */
  instanceTtlMs: 3000,
  /**
   * How often the check runs: it reads `last` of the held rooms that stayed still since the last
   * one, the epoch, and the heartbeats of remote instances not heard from lately, in one command;
   * a check with nothing to read sends none (issue 19, redis-relay.ts `planCheck`).
   */
  checkMs: 1000,
  /**
   * Under traffic, the longest the epoch goes unread. A tick reads it whenever it sends a command,
   * and at once after an update with no predecessor on a room that had one (what a Redis that lost
   * its data shows); this bounds the case where that tell-tale was lost too.
   */
  epochCheckMs: 10_000,
  /**
   * The publish that makes a room's stream this long, or a multiple of it, brings the room whole to
   * its publisher, which folds the stream into the snapshot; its next publish of the room writes
   * the snapshot (scripts.ts PUBLISH_UPDATE).
   */
  compactAfterEntries: 500,
  /** How long a merged compaction waits for the next publish of its room to carry it before it is written alone. */
  compactWaitMs: 1000,
  /** Budget for updates held while Redis is down; past it a room is re-synced from `localState()` instead. */
  heldBytes: 16 * 1024 * 1024,
  /** Reconnect backoff: 50 ms doubling, capped here, with jitter. The cap bounds convergence after a fault clears. */
  maxRetryDelayMs: 1000,
  /** How long `joinRoom` waits for the first connection before serving the room from local state alone. */
  joinWaitMs: 2000,
  /** Deadline of the goodbye messages in `close()`. */
  closeMs: 1000,
  /** A room's keys expire this long after its last edit (refreshed while held); 0 = never (--redis-retention-seconds). */
  retentionMs: 3 * 24 * 3600 * 1000,
  /** Stored rooms re-published per second after Redis lost its data (--republish-rooms-per-second). */
  republishRoomsPerSecond: 100,
  /** How long an ask waits for the other instances' answers before the room is served without them. */
  askTimeoutMs: 2000,
})
