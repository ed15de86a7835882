import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Relay, RelayRecovery, RelayStats } from '../cluster/index.js'
import type { WebhookStats } from './webhooks/index.js'

/**
 * The server's Prometheus metrics. Each server has its own registry, so several servers in one
 * process (tests, embedding) never share counters.
 */
export class ServerMetrics {
  readonly registry = new Registry()
  readonly connections = new Gauge({ name: 'weft_connections', help: 'Open WebSocket connections', registers: [this.registry] })
  readonly upgrades = new Counter({
    name: 'weft_upgrades_total',
    help: 'WebSocket upgrade requests by result',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly closes = new Counter({
    name: 'weft_closes_total',
    help: 'Closed connections by close code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  })
  readonly heartbeatTerminations = new Counter({
    name: 'weft_heartbeat_terminations_total',
    help: 'Connections terminated for showing no sign of life',
    registers: [this.registry],
  })
  readonly slowConsumerCloses = new Counter({
    name: 'weft_slow_consumer_closes_total',
    help: 'Connections closed with 1013 for staying over the send-queue budget past the grace period',
    registers: [this.registry],
  })
  readonly coalescedUpdates = new Counter({
    name: 'weft_coalesced_updates_total',
    help: 'Updates merged into others for connections that fell behind',
    registers: [this.registry],
  })
  readonly batchedUpdates = new Counter({
    name: 'weft_batched_updates_total',
    help: 'Updates broadcast merged with others that arrived in the same socket read',
    registers: [this.registry],
  })
  readonly pausedSockets = new Gauge({
    name: 'weft_paused_sockets',
    help: 'Sockets not being read because their inbound rate limit is exhausted',
    registers: [this.registry],
  })
  readonly sendQueueBytes = new Histogram({
    name: 'weft_send_queue_bytes',
    help: 'Per-connection outbound bytes (socket buffer plus held), sampled each heartbeat',
    buckets: [0, 1024, 16 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024],
    registers: [this.registry],
  })
  readonly drainClosed = new Gauge({
    name: 'weft_drain_closed_connections',
    help: 'Connections closed so far by the current drain',
    registers: [this.registry],
  })
  readonly drainTotal = new Gauge({
    name: 'weft_drain_total_connections',
    help: 'Connections the current drain has to close',
    registers: [this.registry],
  })
  readonly roomsLoaded = new Gauge({ name: 'weft_rooms_loaded', help: 'Rooms loaded in memory', registers: [this.registry] })
  readonly storageUp = new Gauge({ name: 'weft_storage_up', help: '1 when storage writes succeed, 0 while they fail', registers: [this.registry] })
  readonly awarenessRefused = new Counter({
    name: 'weft_awareness_refused_total',
    help: 'Awareness entries ignored: over a bound, or for a client ID another connection owns or that is reserved for its owner',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly malformedMessages = new Counter({
    name: 'weft_malformed_messages_total',
    help: 'Connections closed for a malformed frame or payload',
    labelNames: ['code'] as const,
    registers: [this.registry],
  })
  readonly preauthCloses = new Counter({
    name: 'weft_preauth_closes_total',
    help: 'Hocuspocus sockets closed before authenticating: bytes (--preauth-bytes) or timeout (--auth-timeout-ms)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly httpRefusals = new Counter({
    name: 'weft_http_refusals_total',
    help: 'HTTP requests and raw connections refused before they were served, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly roomLimitRefusals = new Counter({
    name: 'weft_room_limit_refusals_total',
    help: 'Rooms refused to a client: per_connection, per_ip or loaded (--max-loaded-rooms), by protocol',
    labelNames: ['limit', 'protocol'] as const,
    registers: [this.registry],
  })

  readonly updateRefusals = new Counter({
    name: 'weft_update_refusals_total',
    help: 'Updates a room refused for their shape (too_deep, missing_dependencies) or because Yjs threw (rejected_by_yjs)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly quarantinedEntries = new Counter({
    name: 'weft_quarantined_entries_total',
    help: 'Stored entries set aside at load because they could not be applied',
    registers: [this.registry],
  })
  readonly roomResets = new Counter({
    name: 'weft_room_resets_total',
    help: 'Rooms dropped and reloaded from storage because Yjs threw while applying an update',
    registers: [this.registry],
  })
  readonly versionRefusals = new Counter({
    name: 'weft_version_refusals_total',
    help: 'Versions refused by reason: count (--max-versions-per-room), bytes (--max-version-bytes-per-room), rate (--versions-per-minute-per-room)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  })
  readonly versionsCreated = new Counter({ name: 'weft_versions_created_total', help: 'Versions saved through this instance', registers: [this.registry] })
  readonly versionsRepublished = new Counter({
    name: 'weft_versions_republished_total',
    help: 'Versions this instance put back into Redis from its LevelDB after Redis lost its data',
    registers: [this.registry],
  })
  readonly versionsCopied = new Counter({
    name: 'weft_versions_copied_total',
    help: "Versions this instance copied from Redis into its LevelDB (another instance's, or its own after its data directory was lost)",
    registers: [this.registry],
  })

  /** Reports the cluster relay's state: weft_redis_up, relay lag, and its message counters. */
  observeRelay(relay: Relay): void {
    new Gauge({
      name: 'weft_redis_up',
      help: '1 while the Redis relay is connected, 0 while it is down',
      registers: [this.registry],
      collect() {
        this.set(relay.health().up ? 1 : 0)
      },
    })
    new Gauge({
      name: 'weft_relay_lag_seconds',
      help: 'Time from another instance publishing an update to this one receiving it (smoothed)',
      registers: [this.registry],
      collect() {
        const health = relay.health()
        this.set(health.up ? health.lagMs / 1000 : 0)
      },
    })
    const counters: Array<[keyof RelayStats, string]> = [
      ['published', 'Updates this instance published to the cluster'],
      ['received', 'Updates received from other instances'],
      ['healed', 'Updates recovered by gap detection or catch-up instead of arriving live'],
      ['commands', 'Redis commands the relay sent'],
    ]
    for (const [key, help] of counters) {
      new Gauge({
        name: `weft_relay_${key}_total`,
        help,
        registers: [this.registry],
        collect() {
          this.set(relay.stats()[key])
        },
      })
    }
    const recovery = relay.recovery?.bind(relay)
    if (recovery !== undefined) {
      // Issue #13: how the cluster gets back what Redis lost.
      new Gauge({
        name: 'weft_redis_persistence_missing',
        help: '1 when the Redis has neither AOF nor RDB snapshots (a restart empties it), 0 when it has one, -1 while unknown',
        registers: [this.registry],
        collect() {
          const mode = recovery().persistence
          this.set(mode === 'none' ? 1 : mode === 'unknown' ? -1 : 0)
        },
      })
      new Gauge({
        name: 'weft_cluster_republish_pending_rooms',
        help: 'Stored rooms still to re-publish to Redis after it lost its data',
        registers: [this.registry],
        collect() {
          const state = recovery()
          this.set(state.republishing ? state.republishTotal - state.republishDone : 0)
        },
      })
      const totals: Array<[keyof RelayRecovery, string, string]> = [
        ['losses', 'weft_cluster_redis_data_losses_total', 'Times Redis was found to have lost its data (restarted empty, flushed)'],
        ['republished', 'weft_cluster_republished_rooms_total', 'Stored rooms re-published to Redis after it lost its data'],
        ['asks', 'weft_cluster_asks_total', 'Rooms Redis did not have that this instance asked the other instances for'],
        ['found', 'weft_cluster_asks_found_total', 'Asks another instance answered with the room'],
        ['answered', 'weft_cluster_asks_answered_total', 'Asks of other instances this one answered with the room'],
      ]
      for (const [key, name, help] of totals) {
        new Gauge({
          name,
          help,
          registers: [this.registry],
          collect() {
            this.set(Number(recovery()[key]))
          },
        })
      }
    }
    new Gauge({
      name: 'weft_relay_held_bytes',
      help: 'Bytes of updates held while Redis is down',
      registers: [this.registry],
      collect() {
        this.set(relay.stats().heldBytes)
      },
    })
  }

  /** Webhooks (issue 16): the outbox's queue, deliveries, failures, dead letters and refusals. */
  observeWebhooks(outbox: { stats(): WebhookStats }): void {
    const gauges: Array<[string, string, (stats: WebhookStats) => number]> = [
      ['weft_webhook_queued', 'Webhook deliveries waiting in the outbox (one per event and URL)', (s) => s.queued],
      ['weft_webhook_delivered_total', 'Webhook deliveries a receiver answered with 2xx', (s) => s.delivered],
      ['weft_webhook_failed_attempts_total', 'Webhook delivery attempts that failed (error, timeout, non-2xx); each is retried until the max age', (s) => s.failedAttempts],
      ['weft_webhook_dead', 'Webhook deliveries dead-lettered after --webhook-max-age-seconds, held for GET /api/webhooks/dead', (s) => s.dead],
      ['weft_webhook_dead_lettered_total', 'Webhook deliveries dead-lettered since start', (s) => s.deadLettered],
      ['weft_webhook_oldest_age_seconds', 'Age of the oldest webhook delivery still queued; 0 when none is', (s) => s.oldestAgeSeconds],
    ]
    for (const [name, help, read] of gauges) {
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read(outbox.stats()))
        },
      })
    }
    new Gauge({
      name: 'weft_webhook_refused_total',
      help: 'Webhook events refused because the outbox was full: entries (--webhook-max-entries) or bytes (--webhook-max-bytes)',
      labelNames: ['reason'] as const,
      registers: [this.registry],
      collect() {
        const { refused } = outbox.stats()
        this.set({ reason: 'entries' }, refused.entries)
        this.set({ reason: 'bytes' }, refused.bytes)
      },
    })
  }

  constructor() {
    // Event-loop lag, heap and CPU come from prom-client's default collectors.
    collectDefaultMetrics({ register: this.registry, prefix: 'weft_' })
  }
}
