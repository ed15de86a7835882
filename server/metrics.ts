import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Relay, RelayRecovery, RelayStats } from '../cluster/index.js'
import { mergeWorkerCounters } from '../crdt/index.js'
import { documentReadCounters } from './document-reads.js'
import { buildInfo } from './build-info.js'
import { FastHistogram, type HistogramSeries } from './fast-histogram.js'
import { DELIVERY_BUCKETS, PERSIST_BUCKETS, SloWindow } from './slo-window.js'

/** The two WebSocket protocols, as metric label values. */
export type Protocol = 'y-websocket' | 'hocuspocus'
export const PROTOCOLS: readonly Protocol[] = ['y-websocket', 'hocuspocus']
/** Where a delivered update came from: a client of this instance, or another instance (Redis relay). */
export type UpdateSource = 'local' | 'cluster'
export type ServerStateLabel = 'starting' | 'serving' | 'draining' | 'stopped'
const SERVER_STATES: readonly ServerStateLabel[] = ['starting', 'serving', 'draining', 'stopped']

/** Message types of both protocols (label `type`); anything else is `other`. A fixed set: no label from client bytes. */
export const MESSAGE_TYPES = [
  'sync_step1',
  'sync_step2',
  'update',
  'awareness',
  'auth',
  'query_awareness',
  'stateless',
  'broadcast_stateless',
  'close',
  'sync_status',
  'ping',
  'pong',
  'other',
] as const
export type MessageType = (typeof MESSAGE_TYPES)[number]


const TYPE_INDEX = Object.fromEntries(MESSAGE_TYPES.map((type, i) => [type, i])) as Record<MessageType, number>
const UPDATE = TYPE_INDEX.update
const AWARENESS = TYPE_INDEX.awareness

/**
 * Counts messages and bytes of one protocol in both directions. One per protocol, shared by every
 * connection of it. Counting is two additions to a typed array (a prom-client child's inc() hashes
 * its labels on every call: ~1 µs, too much per message); the counters read the totals at scrape.
 */
export class TrafficMeter {
  /** By message type index: [messages, bytes] pairs. */
  readonly inbound = new Float64Array(MESSAGE_TYPES.length * 2)
  readonly outbound = new Float64Array(MESSAGE_TYPES.length * 2)

  constructor(
    readonly protocol: Protocol,
    private readonly classify: (frame: Uint8Array) => number,
  ) {}

  received(frame: Uint8Array): void {
    const i = this.classify(frame) * 2
    this.inbound[i] = (this.inbound[i] as number) + 1
    this.inbound[i + 1] = (this.inbound[i + 1] as number) + frame.length
  }

  /** A frame of any type handed to the connection (sync replies, acks, stateless...). */
  sent(frame: Uint8Array): void {
    this.count(this.classify(frame), frame.length)
  }

  /** A broadcast handed to the connection: `bytes` of its frame, or of the update when it is held to merge. */
  sentBroadcast(type: 'update' | 'awareness', bytes: number): void {
    this.count(type === 'update' ? UPDATE : AWARENESS, bytes)
  }

  private count(type: number, bytes: number): void {
    const i = type * 2
    this.outbound[i] = (this.outbound[i] as number) + 1
    this.outbound[i + 1] = (this.outbound[i + 1] as number) + bytes
  }
}

/** Reads a lib0 varuint at `pos`: its value (-1 when the frame ends first); the position after it goes to `varPos`. */
function readVarUint(frame: Uint8Array, pos: number): number {
  let value = 0
  let shift = 0
  while (pos < frame.length && shift < 35) {
    const byte = frame[pos++] as number
    value += (byte & 0x7f) * 2 ** shift
    if (byte < 0x80) {
      varPos = pos
      return value
    }
    shift += 7
  }
  varPos = pos
  return -1
}
/** The position after the last readVarUint (module state: the classifiers are synchronous and allocate nothing). */
let varPos = 0

const OTHER = TYPE_INDEX.other
const SYNC_TYPES: readonly number[] = [TYPE_INDEX.sync_step1, TYPE_INDEX.sync_step2, UPDATE]

function syncType(frame: Uint8Array, pos: number): number {
  return SYNC_TYPES[readVarUint(frame, pos)] ?? OTHER
}

/** y-websocket: `messageType` (0 sync + sync type, 1 awareness, 2 auth, 3 query awareness); the index in MESSAGE_TYPES. */
export function yWebsocketMessageType(frame: Uint8Array): number {
  switch (readVarUint(frame, 0)) {
    case 0:
      return syncType(frame, varPos)
    case 1:
      return AWARENESS
    case 2:
      return TYPE_INDEX.auth
    case 3:
      return TYPE_INDEX.query_awareness
    default:
      return OTHER
  }
}

const HOCUSPOCUS_TYPES: readonly number[] = ([
  'other', // sync: by its sync type
  'awareness',
  'auth',
  'query_awareness',
  'other', // sync reply: by its sync type
  'stateless',
  'broadcast_stateless',
  'close',
  'sync_status',
  'ping',
  'pong',
] as const satisfies readonly MessageType[]).map((type) => TYPE_INDEX[type])

/** Hocuspocus: a document name (varstring) then the provider's MessageType; Ping and Pong are one byte. The index in MESSAGE_TYPES. */
export function hocuspocusMessageType(frame: Uint8Array): number {
  if (frame.length === 1) return frame[0] === 9 ? TYPE_INDEX.ping : frame[0] === 10 ? TYPE_INDEX.pong : OTHER
  const nameLength = readVarUint(frame, 0)
  if (nameLength < 0) return OTHER
  const type = readVarUint(frame, varPos + nameLength)
  if (type === 0 || type === 4) return syncType(frame, varPos)
  return HOCUSPOCUS_TYPES[type] ?? OTHER
}
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
  readonly syncReplyWaits = new Counter({
    name: 'weft_sync_reply_waits_total',
    help: 'Big sync replies and big HTTP answers that waited for a turn (--sync-replies-at-once)',
    registers: [this.registry],
  })
  readonly syncAsksDeferred = new Counter({
    name: 'weft_sync_asks_deferred_total',
    help: 'Sync step 1 messages answered later than they came: asked again within a second, or while the last big reply was on its way',
    registers: [this.registry],
  })
  readonly coalescedUpdates = new Counter({
    name: 'weft_coalesced_updates_total',
    help: 'Updates merged into others for connections that fell behind',
    registers: [this.registry],
  })
  readonly compressionInputBytes = new Counter({
    name: 'weft_compression_input_bytes_total',
    help: 'Bytes of payloads deflated for --compression (each payload once, however many sockets it went to)',
    registers: [this.registry],
  })
  readonly compressionOutputBytes = new Counter({
    name: 'weft_compression_output_bytes_total',
    help: 'Bytes those payloads deflated to',
    registers: [this.registry],
  })
  readonly compressions = new Counter({
    name: 'weft_compressions_total',
    help: 'Payloads deflated for --compression (one per broadcast or shared sync reply, not per recipient)',
    registers: [this.registry],
  })
  readonly compressedFramesSent = new Counter({
    name: 'weft_compressed_frames_sent_total',
    help: 'Compressed frames written to sockets',
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
    help: 'Per-connection outbound bytes (socket buffer plus held), sampled each heartbeat and whenever weft starts or stops holding data for the connection',
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
  // Tokens from an identity provider, and revocation (issue 16).
  readonly jwksLoads = new Counter({
    name: 'weft_jwks_loads_total',
    help: 'Loads of the --auth-jwks key set by result (ok, error)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })
  readonly revokedConnections = new Counter({
    name: 'weft_revoked_connections_total',
    help: 'y-websocket connections and Hocuspocus documents ended by a revocation',
    labelNames: ['protocol'] as const,
    registers: [this.registry],
  })
  readonly revokedRefusals = new Counter({
    name: 'weft_revoked_refusals_total',
    help: 'Credentials refused because their subject was revoked',
    registers: [this.registry],
  })
  readonly revocationEvictions = new Counter({
    name: 'weft_revocation_evictions_total',
    help: 'Revocations forgotten before their end because --auth-max-revocations was reached',
    registers: [this.registry],
  })

  // Issue 15: the embedding application's hooks and authenticate (server/hook-runner.ts).
  readonly hookFailures = new Counter({
    name: 'weft_hook_failures_total',
    help: 'Hook calls of the embedding application that threw, timed out (hookTimeoutMs) or were dropped for a full queue (maxPendingHookCalls)',
    labelNames: ['hook', 'reason'] as const,
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
      ['checks', 'Periodic checks the relay sent to Redis (one command each; a check with nothing to read sends none)'],
      ['compacted', 'Room streams in Redis this instance folded into their snapshots'],
    ]
    for (const [key, help] of counters) this.counterOf(`weft_relay_${key}_total`, help, () => relay.stats()[key])
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
      for (const [key, name, help] of totals) this.counterOf(name, help, () => Number(recovery()[key]))
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

  /** The memory big sync replies hold (see ReplyMemory). */
  observeReplyMemory(memory: { readonly heldBytes: number }): void {
    this.gaugeOf('weft_sync_reply_bytes', 'Bytes of big sync replies held until they are out of their sockets, each shared reply counted once (--max-sync-reply-bytes)', () => memory.heldBytes)
  }

  /** HTTP reads of big documents waiting or running on the read workers (see DocumentReads). */
  observeDocumentReads(reads: { readonly inProgress: number }): void {
    this.gaugeOf('weft_document_reads_in_progress', 'HTTP reads of big documents (JSON, rich text, diffs) waiting or running on the read workers', () => reads.inProgress)
  }

  /** A Gauge that reads a value kept elsewhere at each scrape. */
  private gaugeOf(name: string, help: string, value: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(value())
      },
    })
  }

  /** A Counter that follows a running total kept elsewhere (the relay's): it goes up by the difference at each scrape. */
  private counterOf(name: string, help: string, total: () => number): void {
    let reported = 0
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        const now = total()
        if (now > reported) this.inc(now - reported)
        reported = Math.max(reported, now)
      },
    })
  }

  /** Webhooks (issue 16): the outbox's queue, deliveries, failures, dead letters and refusals. */
  observeWebhooks(outbox: { stats(): WebhookStats }): void {
    const gauges: Array<[string, string, (stats: WebhookStats) => number]> = [
      ['weft_webhook_queued', 'Webhook deliveries waiting in the outbox (one per event and URL)', (s) => s.queued],
      ['weft_webhook_dead', 'Webhook deliveries dead-lettered after --webhook-max-age-seconds, held for GET /api/webhooks/dead', (s) => s.dead],
      ['weft_webhook_oldest_age_seconds', 'Age of the oldest webhook delivery still queued; 0 when none is', (s) => s.oldestAgeSeconds],
    ]
    this.counterOf('weft_webhook_delivered_total', 'Webhook deliveries a receiver answered with 2xx', () => outbox.stats().delivered)
    this.counterOf('weft_webhook_failed_attempts_total', 'Webhook delivery attempts that failed (error, timeout, non-2xx); each is retried until the max age', () => outbox.stats().failedAttempts)
    this.counterOf('weft_webhook_dead_lettered_total', 'Webhook deliveries dead-lettered since start', () => outbox.stats().deadLettered)
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

  // ---- issue 17: delivery, persistence, traffic, HTTP, Redis, build and state -------------------

  private readonly delivery = new FastHistogram(
    'weft_delivery_seconds',
    "Time from an update's arrival at weft (for source=cluster: at the origin instance) to its frame being written to a recipient's socket; sampled, see README",
    DELIVERY_BUCKETS,
    this.registry,
  )
  readonly persist = new Histogram({
    name: 'weft_persist_seconds',
    help: "Time from an update's arrival to its LevelDB write done; once per write batch, for the batch's oldest update",
    buckets: [...PERSIST_BUCKETS],
    registers: [this.registry],
  })
  readonly writeBatch = new Histogram({
    name: 'weft_write_batch_updates',
    help: 'Updates per storage write batch (one append)',
    buckets: [1, 2, 4, 8, 16, 32, 64],
    registers: [this.registry],
  })
  readonly compactions = new Counter({ name: 'weft_compactions_total', help: 'Room logs compacted into one entry', registers: [this.registry] })

  private readonly httpRequests = new Counter({
    name: 'weft_http_requests_total',
    help: 'HTTP requests by route pattern (never the room) and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  })
  private readonly httpDuration = new Histogram({
    name: 'weft_http_request_duration_seconds',
    help: 'HTTP request duration, from the request to the end of the answer, by route pattern',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })
  private readonly redisCommands = new Histogram({
    name: 'weft_redis_command_seconds',
    help: 'Redis command latency by command (sent to answered, failures included)',
    labelNames: ['command'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3],
    registers: [this.registry],
  })
  private readonly serverState = new Gauge({
    name: 'weft_server_state',
    help: 'The server state: 1 for the current one (starting, serving, draining, stopped), 0 for the others',
    labelNames: ['state'] as const,
    registers: [this.registry],
  })

  /** A counter that reads a process-wide total when scraped, from its value when this registry was made. */
  private processCounter(name: string, help: string, read: () => number): void {
    let seen = read()
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        const now = read()
        if (now > seen) this.inc(now - seen)
        seen = now
      },
    })
  }

  /** The traffic meters, one per protocol. */
  readonly traffic: Readonly<Record<Protocol, TrafficMeter>>
  /** The last 5 minutes of the SLO figures, for the status page. */
  readonly window = new SloWindow()

  private readonly deliverySeries: Record<Protocol, Record<UpdateSource, HistogramSeries>>
  private readonly httpChildren = new Map<string, { requests: Map<number, Counter.Internal>; duration: Histogram.Internal<'route'> }>()
  private readonly redisChildren = new Map<string, Histogram.Internal<'command'>>()

  constructor() {
    // Event-loop lag, heap and CPU come from prom-client's default collectors.
    collectDefaultMetrics({ register: this.registry, prefix: 'weft_' })
    this.processCounter('weft_merge_worker_jobs_total', 'Large merges (cold load, compaction, a big whole-state reply) a worker thread did instead of the event loop', () => mergeWorkerCounters.jobs)
    this.processCounter('weft_merge_worker_fallbacks_total', 'Merges a worker thread failed (crashed or exited), done on the event loop instead; updates Yjs refused are not counted', () => mergeWorkerCounters.fallbacks)
    this.processCounter('weft_document_read_worker_jobs_total', 'HTTP reads of big documents (JSON, rich text, diffs) a worker thread did instead of the event loop', () => documentReadCounters.jobs)
    this.processCounter('weft_document_read_worker_fallbacks_total', 'HTTP reads of documents a worker thread failed (crashed or exited), done on the event loop instead', () => documentReadCounters.fallbacks)
    const { version, commit } = buildInfo()
    new Gauge({ name: 'weft_build_info', help: 'Always 1; the labels say which build runs', labelNames: ['version', 'commit'] as const, registers: [this.registry] }).set({ version, commit }, 1)
    this.setState('starting')
    const traffic = {
      'y-websocket': new TrafficMeter('y-websocket', yWebsocketMessageType),
      hocuspocus: new TrafficMeter('hocuspocus', hocuspocusMessageType),
    }
    this.traffic = traffic
    // The meters' totals, written into the counters at each scrape (offset 0: messages, 1: bytes).
    const trafficCounter = (name: string, help: string, offset: 0 | 1): void => {
      new Counter({
        name,
        help,
        labelNames: ['direction', 'protocol', 'type'] as const,
        registers: [this.registry],
        collect() {
          this.reset()
          for (const protocol of PROTOCOLS) {
            const meter = traffic[protocol]
            MESSAGE_TYPES.forEach((type, i) => {
              this.inc({ direction: 'in', protocol, type }, meter.inbound[i * 2 + offset] as number)
              this.inc({ direction: 'out', protocol, type }, meter.outbound[i * 2 + offset] as number)
            })
          }
        },
      })
    }
    trafficCounter('weft_messages_total', 'WebSocket messages by direction (in/out), protocol and message type', 0)
    trafficCounter('weft_message_bytes_total', 'WebSocket message payload bytes by direction, protocol and message type', 1)
    // Every series exists from the start (zero), so rate() and alerts see them before the first sample.
    const deliveryOf = (protocol: Protocol): Record<UpdateSource, HistogramSeries> => ({
      local: this.delivery.series({ protocol, source: 'local' }),
      cluster: this.delivery.series({ protocol, source: 'cluster' }),
    })
    this.deliverySeries = { 'y-websocket': deliveryOf('y-websocket'), hocuspocus: deliveryOf('hocuspocus') }
  }

  setState(state: ServerStateLabel): void {
    for (const each of SERVER_STATES) this.serverState.set({ state: each }, each === state ? 1 : 0)
  }

  /** One delivery sample: `seconds` from arrival to the write to a recipient of `protocol`. */
  observeDelivery(protocol: Protocol, source: UpdateSource, seconds: number, now: number): void {
    this.deliverySeries[protocol][source].observe(seconds)
    this.window.delivery(seconds, now)
  }

  /** One storage write batch: how many updates, and how long its oldest update waited. */
  observeWriteBatch(updates: number, oldestSeconds: number): void {
    this.writeBatch.observe(updates)
    this.persist.observe(oldestSeconds)
    this.window.persist(oldestSeconds, performance.now())
  }

  /** An answered HTTP request; `route` is the route pattern (`/api/rooms/{room}`), never the path. */
  observeHttp(route: string, status: number, seconds: number): void {
    let children = this.httpChildren.get(route)
    if (children === undefined) {
      children = { requests: new Map(), duration: this.httpDuration.labels(route) }
      this.httpChildren.set(route, children)
    }
    let counter = children.requests.get(status)
    if (counter === undefined) {
      counter = this.httpRequests.labels(route, String(status))
      children.requests.set(status, counter)
    }
    counter.inc()
    children.duration.observe(seconds)
  }

  /** One Redis command answered (or failed) after `seconds`. */
  observeRedisCommand(command: string, seconds: number): void {
    let child = this.redisChildren.get(command)
    if (child === undefined) {
      child = this.redisCommands.labels(command)
      this.redisChildren.set(command, child)
    }
    child.observe(seconds)
  }
}
