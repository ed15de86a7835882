/** The cluster part of weft: the Relay interface, its Redis implementation and an in-memory fake. */
export type { Relay, RelayAwarenessEntry, RelayHealth, RelayRecovery, RelayRoomHandlers, RelayStats, RedisPersistence, StoredRooms } from './relay.js'
export { RedisRelay } from './redis-relay.js'
export type { RedisRelayOptions } from './redis-relay.js'
export { CLUSTER_DEFAULTS } from './tuning.js'
export type { ClusterTuning, RelayFaults, RelayLogger } from './tuning.js'
export { MemoryBus, MemoryRelay } from './memory-relay.js'
import { RedisRelay } from './redis-relay.js'
import type { RelayLogger } from './tuning.js'
import type { CommandObserver } from './redis-connection.js'

export interface CreateRelayOptions {
  redisUrl: string
  instanceId: string
  /** --redis-prefix. */
  prefix: string
  /** --redis-retention-seconds, in ms (0 = keep for ever). */
  retentionMs: number
  /** --republish-rooms-per-second. */
  republishRoomsPerSecond: number
  logger: RelayLogger
  /** For metrics: each Redis command's name and latency in seconds. */
  onCommand?: CommandObserver
}

/** The relay for `--redis URL`: connects at once and keeps reconnecting (with backoff) until closed. */
export function createRelay(options: CreateRelayOptions): RedisRelay {
  return new RedisRelay(options)
}
export { RedisNamespace, DEFAULT_REDIS_PREFIX } from './keys.js'
export { RedisSharedState, RedisUnavailableError, TicketExistsError } from './shared-state.js'
export type { EpochReads, SharedStateOptions } from './shared-state.js'
