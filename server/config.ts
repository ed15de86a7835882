/**
 * weft's settings: one options type, one DEFAULTS object, one validator.
 *
 * Only the CLI entry point reads `process.argv` and `process.env`; it hands both to
 * `parseSettings`, which validates once and returns a frozen object. `createServer` takes the
 * same options (partial) and runs them through `resolveOptions`, the same validator.
 */

import { createPrivateKey, X509Certificate } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import { readFileSync } from 'node:fs'
import { REDIS_PREFIX_PATTERN } from '../cluster/keys.js'
import { MERGE_POOL_DEFAULTS } from '../crdt/index.js'
import { WRITER_DEFAULTS } from '../persistence/index.js'
import { DOCUMENT_READS_DEFAULTS } from './document-reads.js'
import { ClientAddress } from './admission.js'
import { MAX_JWKS_BYTES, parseJwks } from './jwks.js'

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface WeftOptions {
  /** Listen address. */
  host: string
  /** Listen port; 0 picks any free port (the chosen one is logged). */
  port: number
  /** LevelDB directory, or `memory` for an in-memory store. */
  data: string
  /** Redis URL; when set the instance joins the cluster on that Redis. */
  redisUrl: string | null
  /** This instance's id in the cluster; random when not set. */
  instanceId: string | null
  /** HS256 secret for access tokens; null = open mode. */
  authSecret: string | null
  /** Allowed Origin values for WebSocket upgrades; null = any. */
  allowOrigins: readonly string[] | null
  /** Connections admitted at once. */
  maxConnections: number
  /** Connections admitted at once per remote address. */
  maxConnectionsPerIp: number
  /** Largest inbound frame in bytes; larger closes with 1009. */
  maxMessageBytes: number
  /** Per-connection outbound budget in bytes. */
  sendQueueBytes: number
  /** Graceful drain window in seconds. */
  drainSeconds: number
  /** An update that would grow a document past this many bytes is refused. */
  maxDocumentBytes: number
  /** Longest time in milliseconds an applied update waits before it is in storage. */
  persistWindowMs: number
  /** Proxy addresses whose X-Forwarded-For is believed. */
  trustedProxies: readonly string[]
  /** When set, /metrics needs `Authorization: Bearer <token>`. */
  metricsToken: string | null
  /** URL path served with the Hocuspocus protocol. */
  hocuspocusPath: string
  /** The demo editor at /demo/<room>: `auto` = on in open mode, off when tokens are checked. */
  demo: DemoMode
  /** PEM certificate and key (file paths) to serve https/wss directly. */
  tlsCert: string | null
  tlsKey: string | null
  /** JSON log level (logs go to stdout). */
  logLevel: LogLevel
  /** Connections admitted at once to one room. */
  maxRoomConnections: number
  /** WebSocket upgrades admitted per second (token bucket; the burst is twice this). */
  upgradesPerSecond: number
  /** WebSocket upgrades admitted per second from one address (burst twice this); more get 429. */
  upgradesPerSecondPerIp: number
  /** Requests to the HTTP API (/api/...) per second from one address (burst twice this); more get 429. */
  httpRequestsPerSecondPerIp: number
  /** The bits of an IPv6 address that count as one client for every per-address limit (128 = each address alone). */
  ipv6PrefixLength: number
  /** Inbound messages per second per connection; past it the socket is paused, not dropped. */
  inboundMessagesPerSecond: number
  /** Inbound bytes per second per connection; past it the socket is paused, not dropped. */
  inboundBytesPerSecond: number
  /** Milliseconds a connection may stay over --send-queue-bytes before it is closed with 1013. */
  slowConsumerGraceMs: number
  /**
   * Big sync replies (over a quarter of --send-queue-bytes: a whole document for a joiner) written
   * at once, server-wide; the others wait their turn in their send queues. 0: no limit.
   */
  syncRepliesAtOnce: number
  /** Milliseconds a room with no connections stays loaded after it is persisted. */
  roomUnloadDelayMs: number
  /** Embedding only (no flag): milliseconds one hook or `authenticate` call may take before it counts as failed. */
  hookTimeoutMs: number
  /** Embedding only (no flag): hook calls waiting per room or connection; past it a notification is dropped and counted. */
  maxPendingHookCalls: number
  /** Embedding only (no flag): worker threads for merges of large logs (cold load, compaction); 0 = all on the event loop. */
  mergeWorkers: number
  /** Embedding only (no flag): merges of fewer bytes than this stay on the event loop. */
  mergeWorkerThresholdBytes: number
  /** Embedding only (no flag): rooms with nothing being stored whose log-size estimate the writer keeps, least recently used forgotten first. */
  idleRoomsKept: number
  /** Embedding only (no flag): worker threads for HTTP reads of big documents (JSON, rich text, diffs); 0 = all on the event loop. */
  readWorkers: number
  /** Embedding only (no flag): reads of documents of fewer bytes than this stay on the event loop. */
  readWorkerThresholdBytes: number
  /** Milliseconds between server pings; a connection silent for two intervals is terminated. */
  heartbeatIntervalMs: number
  /** Deepest nesting of shared types in a document (a root type is 1); deeper updates are refused. */
  maxNestingDepth: number
  /** Bytes of out-of-order cluster updates a room may hold pending; past it the room reloads. */
  maxPendingBytes: number
  /** Awareness entries of one message looked at; the rest is ignored. */
  awarenessMaxEntriesPerMessage: number
  /** UTF-8 bytes of one awareness state; a longer state is ignored. */
  awarenessMaxStateBytes: number
  /** Live awareness client IDs one connection (one Hocuspocus document) may own at once. */
  awarenessMaxClientsPerConnection: number
  /** Live awareness states in one room. */
  awarenessMaxRoomEntries: number
  /** Characters of JSON text of one room's live awareness states together. */
  awarenessMaxRoomBytes: number
  /** Seconds a departed client ID stays reserved for its owner's reconnect; 0 = not at all. */
  awarenessReclaimSeconds: number
  /** Milliseconds a room gathers awareness changes before sending them merged, one frame per member; 0 = per socket read. */
  awarenessFlushMs: number
  /** Bytes a Hocuspocus socket may send before its first document is authenticated; past it 1009. */
  preauthBytes: number
  /** Milliseconds a Hocuspocus socket may stay without an authenticated document; then 4401. */
  authTimeoutMs: number
  /** Milliseconds an HTTP request body may take to arrive whole; then 408 and the connection is cut. */
  bodyTimeoutMs: number
  /** HTTP request bodies being read at once, server-wide; more get 503. */
  maxConcurrentBodies: number
  /** HTTP request bodies being read at once from one address; more get 429. */
  maxConcurrentBodiesPerIp: number
  /** Bytes of HTTP request bodies held at once, server-wide (declared lengths reserved up front); more get 503. */
  maxBodyBytesInFlight: number
  /** Bytes of HTTP API answers on their way to clients at once, server-wide; more get 503 (one answer alone always goes). */
  maxResponseBytesInFlight: number
  /** The same for one address; more get 429. */
  maxResponseBytesInFlightPerIp: number
  /** Milliseconds an HTTP answer may stay with its client reading none of it; then the connection is cut. */
  sendTimeoutMs: number
  /** Bytes of big sync replies held until they are out of their sockets, server-wide (each shared reply once); past it a big reply's ask waits. */
  maxSyncReplyBytes: number
  /** The same for the replies one address's asks built. */
  maxSyncReplyBytesPerIp: number
  /** HTTP reads of big documents (JSON, rich text, diffs) waiting or running on the read workers at once, server-wide; more get 503. */
  maxDocumentReads: number
  /** The same for one address; more get 429. */
  maxDocumentReadsPerIp: number
  /** Shortest milliseconds between two answers to a client asking again for a whole document (sync step 1) or the room's presence (query-awareness). */
  repeatAnswerIntervalMs: number
  /** Bytes of one ProseMirror JSON body of PUT /api/rooms/:room/content; building its update costs about 1 s of CPU per MB. */
  maxContentBytes: number
  /** Milliseconds a new TCP connection may take to send a complete request head; then it is cut. */
  headersTimeoutMs: number
  /** TCP connections that have not sent a complete request head yet, server-wide; more are cut at once. */
  maxPendingConnections: number
  /** The same per remote address (trusted proxies exempt). */
  maxPendingConnectionsPerIp: number
  /** Documents one Hocuspocus socket may hold at once. */
  maxDocumentsPerConnection: number
  /** Distinct rooms one address may hold at once, over its sockets, Hocuspocus documents and HTTP requests. */
  maxRoomsPerIp: number
  /** Rooms loaded at once; a request that would load one more is refused. */
  maxLoadedRooms: number
  /** Versions one room may hold; more are refused with 409 too_many_versions. */
  maxVersionsPerRoom: number
  /** Bytes of saved documents one room's versions may hold together; more are refused with 409 too_many_versions. */
  maxVersionBytesPerRoom: number
  /** Versions one room may get per minute on one instance (burst the same); more get 429. */
  versionsPerMinutePerRoom: number
  /** Pace of putting versions back into Redis after it lost its data, in bytes per second. */
  versionRepublishBytesPerSecond: number
  /** Namespace of every Redis key and channel (the DB number of --redis is part of channel names too). */
  redisPrefix: string
  /** Seconds after its last edit a room's keys leave Redis (LevelDB keeps it); 0 = never. */
  redisRetentionSeconds: number
  /** Stored rooms re-published to Redis per second after it lost its data. */
  republishRoomsPerSecond: number
  // Tokens from an identity provider, and revocation (issue 16).
  /** JWKS file path or http(s) URL: RS256/ES256/EdDSA tokens verify against its keys. */
  authJwks: string | null
  /** Required `iss` of every token when set. */
  authIssuer: string | null
  /** Required `aud` of every token when set. */
  authAudience: string | null
  /** Tolerated difference between the token issuer's clock and this one, for `exp`, `nbf` and `iat`. */
  authClockSkewSeconds: number
  /** Least time between two JWKS loads caused by tokens (unknown `kid`s, keys not loaded yet). */
  authJwksRefreshSeconds: number
  /** Cached JWKS keys older than this are loaded again, so a key removed from the set stops verifying. */
  authJwksMaxAgeSeconds: number
  /** Seconds a revoked subject's credentials issued before the revocation stay refused; 0 = only close. */
  authRevocationSeconds: number
  /** Revocations remembered at once; past it the oldest is forgotten early (counted). */
  authMaxRevocations: number
  // Webhooks (issue 16): a durable outbox of signed events (server/webhooks/).
  /** URLs that receive every event (http:// or https://); none = no webhooks. */
  webhookUrls: readonly string[] | null
  /** HMAC-SHA256 key of the Weft-Signature header; required with webhookUrls. */
  webhookSecret: string | null
  /** A room's changes are sent this many milliseconds after its last change... */
  webhookDebounceMs: number
  /** ...or this many after its first unsent change, whichever comes first. */
  webhookMaxWaitMs: number
  /** Seconds an event is retried before it is dead-lettered. */
  webhookMaxAgeSeconds: number
  /** Milliseconds one delivery attempt may take (connect to the end of the answer). */
  webhookTimeoutMs: number
  /** First retry delay in milliseconds; doubles per attempt (with jitter) up to five minutes. */
  webhookRetryMinMs: number
  /** Events held in the outbox (queued and dead together); more are refused and counted. */
  webhookMaxEntries: number
  /** Bytes of event bodies held in the outbox; more are refused and counted. */
  webhookMaxBytes: number
  /** permessage-deflate for clients that offer it, above a size threshold, compressed once per broadcast. */
  compression: boolean
  /** With `compression`: payloads shorter than this many bytes go out plain. */
  compressionThresholdBytes: number
}

export const DEFAULTS: Readonly<WeftOptions> = Object.freeze({
  host: '0.0.0.0',
  port: 1234,
  data: './data',
  redisUrl: null,
  instanceId: null,
  authSecret: null,
  allowOrigins: null,
  maxConnections: 20_000,
  maxConnectionsPerIp: 200,
  maxMessageBytes: 16 * 1024 * 1024,
  sendQueueBytes: 4 * 1024 * 1024,
  drainSeconds: 20,
  maxDocumentBytes: 64 * 1024 * 1024,
  persistWindowMs: 100,
  trustedProxies: [],
  metricsToken: null,
  hocuspocusPath: '/',
  demo: 'auto',
  tlsCert: null,
  tlsKey: null,
  logLevel: 'info',
  maxRoomConnections: 10_000,
  upgradesPerSecond: 1_000,
  upgradesPerSecondPerIp: 100,
  httpRequestsPerSecondPerIp: 200,
  ipv6PrefixLength: 64,
  inboundMessagesPerSecond: 500,
  inboundBytesPerSecond: 8 * 1024 * 1024,
  slowConsumerGraceMs: 5_000,
  syncRepliesAtOnce: 8,
  roomUnloadDelayMs: 5_000,
  hookTimeoutMs: 5_000,
  maxPendingHookCalls: 10_000,
  mergeWorkers: MERGE_POOL_DEFAULTS.workers,
  mergeWorkerThresholdBytes: MERGE_POOL_DEFAULTS.thresholdBytes,
  idleRoomsKept: WRITER_DEFAULTS.idleRoomsKept,
  readWorkers: DOCUMENT_READS_DEFAULTS.workers,
  readWorkerThresholdBytes: DOCUMENT_READS_DEFAULTS.thresholdBytes,
  heartbeatIntervalMs: 30_000,
  maxNestingDepth: 256,
  maxPendingBytes: 1024 * 1024,
  awarenessMaxEntriesPerMessage: 1_000,
  awarenessMaxStateBytes: 32 * 1024,
  awarenessMaxClientsPerConnection: 4,
  awarenessMaxRoomEntries: 20_000,
  awarenessMaxRoomBytes: 8 * 1024 * 1024,
  awarenessReclaimSeconds: 300,
  awarenessFlushMs: 20,
  preauthBytes: 256 * 1024,
  authTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  maxConcurrentBodies: 64,
  maxConcurrentBodiesPerIp: 8,
  maxBodyBytesInFlight: 128 * 1024 * 1024,
  maxResponseBytesInFlight: 256 * 1024 * 1024,
  maxResponseBytesInFlightPerIp: 64 * 1024 * 1024,
  sendTimeoutMs: 30_000,
  maxSyncReplyBytes: 256 * 1024 * 1024,
  maxSyncReplyBytesPerIp: 128 * 1024 * 1024,
  maxDocumentReads: DOCUMENT_READS_DEFAULTS.maxTotal,
  maxDocumentReadsPerIp: DOCUMENT_READS_DEFAULTS.maxPerIp,
  repeatAnswerIntervalMs: 1_000,
  maxContentBytes: 1024 * 1024,
  headersTimeoutMs: 10_000,
  maxPendingConnections: 2_000,
  maxPendingConnectionsPerIp: 256,
  maxDocumentsPerConnection: 100,
  maxRoomsPerIp: 500,
  maxLoadedRooms: 20_000,
  maxVersionsPerRoom: 100,
  maxVersionBytesPerRoom: 64 * 1024 * 1024,
  versionsPerMinutePerRoom: 30,
  versionRepublishBytesPerSecond: 16 * 1024 * 1024,
  redisPrefix: 'weft',
  redisRetentionSeconds: 3 * 24 * 3600,
  republishRoomsPerSecond: 100,
  authJwks: null,
  authIssuer: null,
  authAudience: null,
  authClockSkewSeconds: 30,
  authJwksRefreshSeconds: 30,
  authJwksMaxAgeSeconds: 600,
  authRevocationSeconds: 3600,
  authMaxRevocations: 10_000,
  webhookUrls: null,
  webhookSecret: null,
  webhookDebounceMs: 2_000,
  webhookMaxWaitMs: 10_000,
  webhookMaxAgeSeconds: 24 * 3600,
  webhookTimeoutMs: 10_000,
  webhookRetryMinMs: 1_000,
  webhookMaxEntries: 100_000,
  webhookMaxBytes: 256 * 1024 * 1024,
  compression: false,
  compressionThresholdBytes: 1024,
})

/** A setting that cannot be used; the CLI prints `message` and exits with status 2. */
export class ConfigError extends Error {
  constructor(readonly setting: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'ConfigError'
  }
}

type Kind = 'string' | 'int' | 'url' | 'list' | 'level' | 'path' | 'file' | 'switch' | 'choice'

/** Whether `GET /demo/<room>` serves the demo editor (server/demo-page.ts). */
export type DemoMode = 'auto' | 'on' | 'off'
export const DEMO_MODES: readonly DemoMode[] = ['auto', 'on', 'off']

interface SettingSpec {
  key: keyof WeftOptions
  flag: string
  env: string
  kind: Kind
  min?: number
  max?: number
  /** The allowed values of a `choice`. */
  choices?: readonly string[]
}

/** The contract's table, in order: flag, environment variable, kind. */
export const SETTINGS: readonly SettingSpec[] = [
  { key: 'host', flag: '--host', env: 'WEFT_HOST', kind: 'string' },
  { key: 'port', flag: '--port', env: 'WEFT_PORT', kind: 'int', min: 0, max: 65535 },
  { key: 'data', flag: '--data', env: 'WEFT_DATA', kind: 'string' },
  { key: 'redisUrl', flag: '--redis', env: 'WEFT_REDIS_URL', kind: 'url' },
  { key: 'instanceId', flag: '--instance-id', env: 'WEFT_INSTANCE_ID', kind: 'string' },
  { key: 'authSecret', flag: '--auth-secret', env: 'WEFT_AUTH_SECRET', kind: 'string' },
  { key: 'allowOrigins', flag: '--allow-origin', env: 'WEFT_ALLOW_ORIGIN', kind: 'list' },
  { key: 'maxConnections', flag: '--max-connections', env: 'WEFT_MAX_CONNECTIONS', kind: 'int', min: 1 },
  { key: 'maxConnectionsPerIp', flag: '--max-connections-per-ip', env: 'WEFT_MAX_CONNECTIONS_PER_IP', kind: 'int', min: 1 },
  { key: 'maxMessageBytes', flag: '--max-message-bytes', env: 'WEFT_MAX_MESSAGE_BYTES', kind: 'int', min: 64 },
  { key: 'sendQueueBytes', flag: '--send-queue-bytes', env: 'WEFT_SEND_QUEUE_BYTES', kind: 'int', min: 1024 },
  { key: 'drainSeconds', flag: '--drain-seconds', env: 'WEFT_DRAIN_SECONDS', kind: 'int', min: 0, max: 3600 },
  { key: 'maxDocumentBytes', flag: '--max-document-bytes', env: 'WEFT_MAX_DOCUMENT_BYTES', kind: 'int', min: 1024 },
  { key: 'persistWindowMs', flag: '--persist-window-ms', env: 'WEFT_PERSIST_WINDOW_MS', kind: 'int', min: 0, max: 60_000 },
  { key: 'trustedProxies', flag: '--trusted-proxies', env: 'WEFT_TRUSTED_PROXIES', kind: 'list' },
  { key: 'metricsToken', flag: '--metrics-token', env: 'WEFT_METRICS_TOKEN', kind: 'string' },
  { key: 'hocuspocusPath', flag: '--hocuspocus-path', env: 'WEFT_HOCUSPOCUS_PATH', kind: 'path' },
  { key: 'demo', flag: '--demo', env: 'WEFT_DEMO', kind: 'choice', choices: DEMO_MODES },
  { key: 'tlsCert', flag: '--tls-cert', env: 'WEFT_TLS_CERT', kind: 'file' },
  { key: 'tlsKey', flag: '--tls-key', env: 'WEFT_TLS_KEY', kind: 'file' },
  { key: 'logLevel', flag: '--log-level', env: 'WEFT_LOG_LEVEL', kind: 'level' },
  // Beyond the contract's table: limits of the connection core.
  { key: 'maxRoomConnections', flag: '--max-room-connections', env: 'WEFT_MAX_ROOM_CONNECTIONS', kind: 'int', min: 1 },
  { key: 'upgradesPerSecond', flag: '--upgrades-per-second', env: 'WEFT_UPGRADES_PER_SECOND', kind: 'int', min: 1 },
  { key: 'upgradesPerSecondPerIp', flag: '--upgrades-per-second-per-ip', env: 'WEFT_UPGRADES_PER_SECOND_PER_IP', kind: 'int', min: 1 },
  { key: 'httpRequestsPerSecondPerIp', flag: '--http-requests-per-second-per-ip', env: 'WEFT_HTTP_REQUESTS_PER_SECOND_PER_IP', kind: 'int', min: 1 },
  { key: 'ipv6PrefixLength', flag: '--ipv6-prefix-length', env: 'WEFT_IPV6_PREFIX_LENGTH', kind: 'int', min: 1, max: 128 },
  { key: 'inboundMessagesPerSecond', flag: '--inbound-messages-per-second', env: 'WEFT_INBOUND_MESSAGES_PER_SECOND', kind: 'int', min: 1 },
  { key: 'inboundBytesPerSecond', flag: '--inbound-bytes-per-second', env: 'WEFT_INBOUND_BYTES_PER_SECOND', kind: 'int', min: 1024 },
  { key: 'slowConsumerGraceMs', flag: '--slow-consumer-grace-ms', env: 'WEFT_SLOW_CONSUMER_GRACE_MS', kind: 'int', min: 0, max: 600_000 },
  { key: 'syncRepliesAtOnce', flag: '--sync-replies-at-once', env: 'WEFT_SYNC_REPLIES_AT_ONCE', kind: 'int', min: 0, max: 100_000 },
  { key: 'heartbeatIntervalMs', flag: '--heartbeat-interval-ms', env: 'WEFT_HEARTBEAT_INTERVAL_MS', kind: 'int', min: 100, max: 600_000 },
  // Room integrity (issue 12): Yjs recurses once per nesting level; ~1,000 levels overflow its stack.
  { key: 'maxNestingDepth', flag: '--max-nesting-depth', env: 'WEFT_MAX_NESTING_DEPTH', kind: 'int', min: 2, max: 512 },
  { key: 'maxPendingBytes', flag: '--max-pending-bytes', env: 'WEFT_MAX_PENDING_BYTES', kind: 'int', min: 0 },
  // Awareness bounds (issue 12, findings 2 and 10).
  { key: 'awarenessMaxEntriesPerMessage', flag: '--awareness-max-entries-per-message', env: 'WEFT_AWARENESS_MAX_ENTRIES_PER_MESSAGE', kind: 'int', min: 1, max: 1_000_000 },
  { key: 'awarenessMaxStateBytes', flag: '--awareness-max-state-bytes', env: 'WEFT_AWARENESS_MAX_STATE_BYTES', kind: 'int', min: 64, max: 16 * 1024 * 1024 },
  { key: 'awarenessMaxClientsPerConnection', flag: '--awareness-max-clients-per-connection', env: 'WEFT_AWARENESS_MAX_CLIENTS_PER_CONNECTION', kind: 'int', min: 1, max: 10_000 },
  { key: 'awarenessMaxRoomEntries', flag: '--awareness-max-room-entries', env: 'WEFT_AWARENESS_MAX_ROOM_ENTRIES', kind: 'int', min: 1, max: 10_000_000 },
  { key: 'awarenessMaxRoomBytes', flag: '--awareness-max-room-bytes', env: 'WEFT_AWARENESS_MAX_ROOM_BYTES', kind: 'int', min: 1024, max: 1024 * 1024 * 1024 },
  { key: 'awarenessReclaimSeconds', flag: '--awareness-reclaim-seconds', env: 'WEFT_AWARENESS_RECLAIM_SECONDS', kind: 'int', min: 0, max: 86_400 },
  { key: 'awarenessFlushMs', flag: '--awareness-flush-ms', env: 'WEFT_AWARENESS_FLUSH_MS', kind: 'int', min: 0, max: 1_000 },
  // Bounds on what a client holds before it is authenticated, and on rooms per client (issue 12).
  { key: 'preauthBytes', flag: '--preauth-bytes', env: 'WEFT_PREAUTH_BYTES', kind: 'int', min: 1024 },
  { key: 'authTimeoutMs', flag: '--auth-timeout-ms', env: 'WEFT_AUTH_TIMEOUT_MS', kind: 'int', min: 100, max: 600_000 },
  { key: 'bodyTimeoutMs', flag: '--body-timeout-ms', env: 'WEFT_BODY_TIMEOUT_MS', kind: 'int', min: 100, max: 3_600_000 },
  { key: 'maxConcurrentBodies', flag: '--max-concurrent-bodies', env: 'WEFT_MAX_CONCURRENT_BODIES', kind: 'int', min: 1 },
  { key: 'maxConcurrentBodiesPerIp', flag: '--max-concurrent-bodies-per-ip', env: 'WEFT_MAX_CONCURRENT_BODIES_PER_IP', kind: 'int', min: 1 },
  { key: 'maxBodyBytesInFlight', flag: '--max-body-bytes-in-flight', env: 'WEFT_MAX_BODY_BYTES_IN_FLIGHT', kind: 'int', min: 1024 },
  { key: 'maxResponseBytesInFlight', flag: '--max-response-bytes-in-flight', env: 'WEFT_MAX_RESPONSE_BYTES_IN_FLIGHT', kind: 'int', min: 1024 },
  { key: 'maxResponseBytesInFlightPerIp', flag: '--max-response-bytes-in-flight-per-ip', env: 'WEFT_MAX_RESPONSE_BYTES_IN_FLIGHT_PER_IP', kind: 'int', min: 1024 },
  { key: 'sendTimeoutMs', flag: '--send-timeout-ms', env: 'WEFT_SEND_TIMEOUT_MS', kind: 'int', min: 100, max: 3_600_000 },
  { key: 'maxSyncReplyBytes', flag: '--max-sync-reply-bytes', env: 'WEFT_MAX_SYNC_REPLY_BYTES', kind: 'int', min: 1024 },
  { key: 'maxSyncReplyBytesPerIp', flag: '--max-sync-reply-bytes-per-ip', env: 'WEFT_MAX_SYNC_REPLY_BYTES_PER_IP', kind: 'int', min: 1024 },
  { key: 'maxDocumentReads', flag: '--max-document-reads', env: 'WEFT_MAX_DOCUMENT_READS', kind: 'int', min: 1 },
  { key: 'maxDocumentReadsPerIp', flag: '--max-document-reads-per-ip', env: 'WEFT_MAX_DOCUMENT_READS_PER_IP', kind: 'int', min: 1 },
  { key: 'repeatAnswerIntervalMs', flag: '--repeat-answer-interval-ms', env: 'WEFT_REPEAT_ANSWER_INTERVAL_MS', kind: 'int', min: 0, max: 60_000 },
  { key: 'maxContentBytes', flag: '--max-content-bytes', env: 'WEFT_MAX_CONTENT_BYTES', kind: 'int', min: 1024 },
  { key: 'headersTimeoutMs', flag: '--headers-timeout-ms', env: 'WEFT_HEADERS_TIMEOUT_MS', kind: 'int', min: 100, max: 600_000 },
  { key: 'maxPendingConnections', flag: '--max-pending-connections', env: 'WEFT_MAX_PENDING_CONNECTIONS', kind: 'int', min: 1 },
  { key: 'maxPendingConnectionsPerIp', flag: '--max-pending-connections-per-ip', env: 'WEFT_MAX_PENDING_CONNECTIONS_PER_IP', kind: 'int', min: 1 },
  { key: 'maxDocumentsPerConnection', flag: '--max-documents-per-connection', env: 'WEFT_MAX_DOCUMENTS_PER_CONNECTION', kind: 'int', min: 1 },
  { key: 'maxRoomsPerIp', flag: '--max-rooms-per-ip', env: 'WEFT_MAX_ROOMS_PER_IP', kind: 'int', min: 1 },
  { key: 'maxLoadedRooms', flag: '--max-loaded-rooms', env: 'WEFT_MAX_LOADED_ROOMS', kind: 'int', min: 1 },
  // Versions per room (issue 12 finding 4, issue 13).
  { key: 'maxVersionsPerRoom', flag: '--max-versions-per-room', env: 'WEFT_MAX_VERSIONS_PER_ROOM', kind: 'int', min: 1, max: 100_000 },
  { key: 'maxVersionBytesPerRoom', flag: '--max-version-bytes-per-room', env: 'WEFT_MAX_VERSION_BYTES_PER_ROOM', kind: 'int', min: 1024 },
  { key: 'versionsPerMinutePerRoom', flag: '--versions-per-minute-per-room', env: 'WEFT_VERSIONS_PER_MINUTE_PER_ROOM', kind: 'int', min: 1, max: 60_000 },
  { key: 'versionRepublishBytesPerSecond', flag: '--version-republish-bytes-per-second', env: 'WEFT_VERSION_REPUBLISH_BYTES_PER_SECOND', kind: 'int', min: 65_536 },
  // The cluster (issue #13).
  { key: 'redisPrefix', flag: '--redis-prefix', env: 'WEFT_REDIS_PREFIX', kind: 'string' },
  { key: 'redisRetentionSeconds', flag: '--redis-retention-seconds', env: 'WEFT_REDIS_RETENTION_SECONDS', kind: 'int', min: 0, max: 10 * 365 * 24 * 3600 },
  { key: 'republishRoomsPerSecond', flag: '--republish-rooms-per-second', env: 'WEFT_REPUBLISH_ROOMS_PER_SECOND', kind: 'int', min: 1, max: 100_000 },
  // Tokens from an identity provider, and revocation (issue 16).
  { key: 'authJwks', flag: '--auth-jwks', env: 'WEFT_AUTH_JWKS', kind: 'string' },
  { key: 'authIssuer', flag: '--auth-issuer', env: 'WEFT_AUTH_ISSUER', kind: 'string' },
  { key: 'authAudience', flag: '--auth-audience', env: 'WEFT_AUTH_AUDIENCE', kind: 'string' },
  { key: 'authClockSkewSeconds', flag: '--auth-clock-skew-seconds', env: 'WEFT_AUTH_CLOCK_SKEW_SECONDS', kind: 'int', min: 0, max: 600 },
  { key: 'authJwksRefreshSeconds', flag: '--auth-jwks-refresh-seconds', env: 'WEFT_AUTH_JWKS_REFRESH_SECONDS', kind: 'int', min: 1, max: 86_400 },
  { key: 'authJwksMaxAgeSeconds', flag: '--auth-jwks-max-age-seconds', env: 'WEFT_AUTH_JWKS_MAX_AGE_SECONDS', kind: 'int', min: 1, max: 7 * 86_400 },
  { key: 'authRevocationSeconds', flag: '--auth-revocation-seconds', env: 'WEFT_AUTH_REVOCATION_SECONDS', kind: 'int', min: 0, max: 30 * 86_400 },
  { key: 'authMaxRevocations', flag: '--auth-max-revocations', env: 'WEFT_AUTH_MAX_REVOCATIONS', kind: 'int', min: 1, max: 10_000_000 },
  // Webhooks (issue 16).
  { key: 'webhookUrls', flag: '--webhook-url', env: 'WEFT_WEBHOOK_URL', kind: 'list' },
  { key: 'webhookSecret', flag: '--webhook-secret', env: 'WEFT_WEBHOOK_SECRET', kind: 'string' },
  { key: 'webhookDebounceMs', flag: '--webhook-debounce-ms', env: 'WEFT_WEBHOOK_DEBOUNCE_MS', kind: 'int', min: 0, max: 3_600_000 },
  { key: 'webhookMaxWaitMs', flag: '--webhook-max-wait-ms', env: 'WEFT_WEBHOOK_MAX_WAIT_MS', kind: 'int', min: 0, max: 3_600_000 },
  { key: 'webhookMaxAgeSeconds', flag: '--webhook-max-age-seconds', env: 'WEFT_WEBHOOK_MAX_AGE_SECONDS', kind: 'int', min: 1, max: 30 * 24 * 3600 },
  { key: 'webhookTimeoutMs', flag: '--webhook-timeout-ms', env: 'WEFT_WEBHOOK_TIMEOUT_MS', kind: 'int', min: 100, max: 600_000 },
  { key: 'webhookRetryMinMs', flag: '--webhook-retry-min-ms', env: 'WEFT_WEBHOOK_RETRY_MIN_MS', kind: 'int', min: 10, max: 600_000 },
  { key: 'webhookMaxEntries', flag: '--webhook-max-entries', env: 'WEFT_WEBHOOK_MAX_ENTRIES', kind: 'int', min: 1 },
  { key: 'webhookMaxBytes', flag: '--webhook-max-bytes', env: 'WEFT_WEBHOOK_MAX_BYTES', kind: 'int', min: 65_536 },
  // Compression (issue 19).
  { key: 'compression', flag: '--compression', env: 'WEFT_COMPRESSION', kind: 'switch' },
  { key: 'compressionThresholdBytes', flag: '--compression-threshold-bytes', env: 'WEFT_COMPRESSION_THRESHOLD_BYTES', kind: 'int', min: 0, max: 1024 * 1024 * 1024 },
]

/** Spellings of a switch's two values. */
const SWITCH_ON = ['on', 'true', '1', 'yes']
const SWITCH_OFF = ['off', 'false', '0', 'no']

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

function convert(spec: SettingSpec, raw: string, source: string): unknown {
  const fail = (why: string): never => {
    throw new ConfigError(spec.flag, `invalid ${source}: ${why}`)
  }
  switch (spec.kind) {
    case 'string':
      if (raw === '') fail('must not be empty')
      return raw
    case 'int': {
      if (!/^\d+$/.test(raw)) fail(`"${raw}" is not a whole number`)
      const n = Number(raw)
      if (!Number.isSafeInteger(n)) fail(`"${raw}" is too large`)
      if (spec.min !== undefined && n < spec.min) fail(`${n} is below ${spec.min}`)
      if (spec.max !== undefined && n > spec.max) fail(`${n} is above ${spec.max}`)
      return n
    }
    case 'url': {
      let url: URL
      try {
        url = new URL(raw)
      } catch {
        return fail(`"${redactUrl(raw)}" is not a URL`)
      }
      if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') fail(`"${redactUrl(raw)}" is not a redis:// or rediss:// URL`)
      if (url.hostname === '') fail(`"${redactUrl(raw)}" has no host`)
      return raw
    }
    case 'list': {
      const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '')
      if (items.length === 0) fail('must name at least one value')
      return Object.freeze(items)
    }
    case 'level':
      if (!(LOG_LEVELS as readonly string[]).includes(raw)) fail(`"${raw}" is not one of ${LOG_LEVELS.join(', ')}`)
      return raw
    case 'choice':
      if (!(spec.choices ?? []).includes(raw)) fail(`"${raw}" is not one of ${(spec.choices ?? []).join(', ')}`)
      return raw
    case 'path':
      if (!raw.startsWith('/')) fail(`"${raw}" must start with /`)
      return raw
    case 'switch':
      if (SWITCH_ON.includes(raw)) return true
      if (SWITCH_OFF.includes(raw)) return false
      return fail(`"${raw}" is not on or off`)
    case 'file':
      try {
        readFileSync(raw)
      } catch (err) {
        fail(`cannot read ${raw} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
      }
      return raw
  }
}

/** Hides the password of a URL for messages and logs. */
export function redactUrl(raw: string): string {
  return raw.replace(/\/\/([^@/]*)@/, '//***@')
}

/**
 * Reads settings from command-line flags, then the environment, then DEFAULTS.
 * Throws ConfigError naming the first bad setting.
 */
export function parseSettings(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Readonly<WeftOptions> {
  const fromFlags = new Map<keyof WeftOptions, unknown>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (!arg.startsWith('--')) throw new ConfigError(arg, `unexpected argument "${arg}"`)
    const eq = arg.indexOf('=')
    const flag = eq === -1 ? arg : arg.slice(0, eq)
    const spec = SETTINGS.find((s) => s.flag === flag)
    if (spec === undefined) throw new ConfigError(flag, `unknown flag ${flag}`)
    let value: string | undefined
    if (eq !== -1) value = arg.slice(eq + 1)
    else if (spec.kind === 'switch' && (argv[i + 1] === undefined || (argv[i + 1] as string).startsWith('--'))) {
      // A switch given alone (`--compression`) is on.
      value = 'on'
    } else {
      value = argv[i + 1]
      i++
    }
    if (value === undefined) throw new ConfigError(flag, `${flag} needs a value`)
    fromFlags.set(spec.key, convert(spec, value, `${flag}`))
  }
  const options: Record<string, unknown> = { ...DEFAULTS }
  for (const spec of SETTINGS) {
    if (fromFlags.has(spec.key)) options[spec.key] = fromFlags.get(spec.key)
    else {
      const raw = env[spec.env]
      if (raw !== undefined && raw !== '') options[spec.key] = convert(spec, raw, `${spec.env} (${spec.flag})`)
    }
  }
  return resolveOptions(options as Partial<WeftOptions>)
}

/** Fills in DEFAULTS, checks cross-setting rules, and freezes. Used by the CLI and by createServer. */
export function resolveOptions(partial: Partial<WeftOptions> = {}): Readonly<WeftOptions> {
  const options: WeftOptions = { ...DEFAULTS }
  for (const [key, value] of Object.entries(partial)) {
    if (value !== undefined) (options as unknown as Record<string, unknown>)[key] = value
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new ConfigError('--port', `invalid --port: ${options.port} is not between 0 and 65535`)
  }
  for (const key of ['mergeWorkers', 'mergeWorkerThresholdBytes', 'readWorkers', 'readWorkerThresholdBytes', 'syncRepliesAtOnce', 'repeatAnswerIntervalMs'] as const) {
    if (!Number.isSafeInteger(options[key]) || options[key] < 0) throw new ConfigError(key, `invalid ${key}: ${options[key]} is not a whole number ≥ 0`)
  }
  if ((options.tlsCert === null) !== (options.tlsKey === null)) {
    throw new ConfigError(options.tlsCert === null ? '--tls-cert' : '--tls-key', 'invalid --tls-cert/--tls-key: both must be given')
  }
  for (const key of [
    'hookTimeoutMs',
    'maxPendingHookCalls',
    'maxConnections',
    'maxConnectionsPerIp',
    'maxMessageBytes',
    'sendQueueBytes',
    'maxDocumentBytes',
    'maxRoomConnections',
    'upgradesPerSecond',
    'upgradesPerSecondPerIp',
    'httpRequestsPerSecondPerIp',
    'ipv6PrefixLength',
    'inboundMessagesPerSecond',
    'inboundBytesPerSecond',
    'heartbeatIntervalMs',
    'maxNestingDepth',
    'awarenessMaxEntriesPerMessage',
    'awarenessMaxStateBytes',
    'awarenessMaxClientsPerConnection',
    'awarenessMaxRoomEntries',
    'awarenessMaxRoomBytes',
    'preauthBytes',
    'authTimeoutMs',
    'bodyTimeoutMs',
    'maxConcurrentBodies',
    'maxConcurrentBodiesPerIp',
    'maxBodyBytesInFlight',
    'maxResponseBytesInFlight',
    'maxResponseBytesInFlightPerIp',
    'sendTimeoutMs',
    'maxSyncReplyBytes',
    'maxSyncReplyBytesPerIp',
    'maxDocumentReads',
    'maxDocumentReadsPerIp',
    'maxContentBytes',
    'headersTimeoutMs',
    'maxPendingConnections',
    'maxPendingConnectionsPerIp',
    'maxDocumentsPerConnection',
    'maxRoomsPerIp',
    'maxLoadedRooms',
    'maxVersionsPerRoom',
    'maxVersionBytesPerRoom',
    'versionsPerMinutePerRoom',
    'versionRepublishBytesPerSecond',
    'republishRoomsPerSecond',
    'authJwksRefreshSeconds',
    'authJwksMaxAgeSeconds',
    'authMaxRevocations',
    'idleRoomsKept',
  ] as const) {
    if (!Number.isInteger(options[key]) || options[key] <= 0) throw new ConfigError(key, `invalid ${key}: must be a positive whole number`)
  }
  if (options.data === '') throw new ConfigError('--data', 'invalid --data: must not be empty')
  if (!REDIS_PREFIX_PATTERN.test(options.redisPrefix)) {
    throw new ConfigError('--redis-prefix', `invalid --redis-prefix: "${options.redisPrefix}" must be 1 to 64 letters, digits, '.', '_' or '-'`)
  }
  if (!Number.isSafeInteger(options.redisRetentionSeconds) || options.redisRetentionSeconds < 0) {
    throw new ConfigError('--redis-retention-seconds', 'invalid --redis-retention-seconds: must be a whole number of seconds, 0 = keep for ever')
  }
  checkWebhooks(options)
  if (typeof options.compression !== 'boolean') throw new ConfigError('--compression', 'invalid --compression: must be on or off')
  if (!Number.isSafeInteger(options.compressionThresholdBytes) || options.compressionThresholdBytes < 0) {
    throw new ConfigError('--compression-threshold-bytes', 'invalid --compression-threshold-bytes: must be a whole number of bytes')
  }
  const badProxy = ClientAddress.validate(options.trustedProxies)
  if (badProxy !== null) throw new ConfigError('--trusted-proxies', `invalid --trusted-proxies: "${badProxy}" is not an IP address or CIDR range`)
  checkUsable(options)
  return Object.freeze({ ...options })
}

/** Shortest HS256 key accepted: RFC 7518 §3.2 asks for a key at least as long as the hash (256 bits). */
export const MIN_AUTH_SECRET_BYTES = 32

/**
 * Values that parse but cannot work: each would start a server that refuses every browser, accepts
 * guessable tokens or fails at the first TLS handshake, with nothing in the logs to say why.
 */
function checkUsable(options: WeftOptions): void {
  for (const origin of options.allowOrigins ?? []) {
    let normal: string | null = null
    try {
      const url = new URL(origin)
      if (url.protocol === 'http:' || url.protocol === 'https:') normal = url.origin
    } catch {
      // not a URL: reported below
    }
    // Browsers send the Origin header as scheme://host[:port], lower case, default port left out;
    // any other spelling never matches it.
    if (normal !== origin) {
      const hint = normal === null ? 'an origin is scheme://host[:port], e.g. https://app.example.com' : `browsers send it as "${normal}"`
      throw new ConfigError('--allow-origin', `invalid --allow-origin: "${origin}" can never match a browser's Origin header (${hint})`)
    }
  }
  checkTokenSettings(options)
  if (options.authSecret !== null && Buffer.byteLength(options.authSecret) < MIN_AUTH_SECRET_BYTES) {
    throw new ConfigError('--auth-secret', `invalid --auth-secret: an HS256 secret needs at least ${MIN_AUTH_SECRET_BYTES} bytes, this one has ${Buffer.byteLength(options.authSecret)} (e.g. openssl rand -base64 32)`)
  }
  // The header arrives trimmed and cannot carry control characters, so such a token never matches.
  if (options.metricsToken !== null && (options.metricsToken !== options.metricsToken.trim() || [...options.metricsToken].some((c) => c < ' ' || c === '\x7f'))) {
    throw new ConfigError('--metrics-token', 'invalid --metrics-token: leading or trailing spaces or control characters never match an Authorization header')
  }
  if (!DEMO_MODES.includes(options.demo)) throw new ConfigError('--demo', `invalid --demo: "${String(options.demo)}" is not one of ${DEMO_MODES.join(', ')}`)
  if (!options.hocuspocusPath.startsWith('/') || /[?#\s]/.test(options.hocuspocusPath)) {
    throw new ConfigError('--hocuspocus-path', `invalid --hocuspocus-path: "${options.hocuspocusPath}" must be a URL path starting with / without ?, # or spaces`)
  }
  if (options.tlsCert !== null && options.tlsKey !== null) {
    try {
      new X509Certificate(readFileSync(options.tlsCert))
    } catch (err) {
      throw new ConfigError('--tls-cert', `invalid --tls-cert: ${options.tlsCert} is not a readable PEM certificate (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
    try {
      createPrivateKey(readFileSync(options.tlsKey))
    } catch (err) {
      throw new ConfigError('--tls-key', `invalid --tls-key: ${options.tlsKey} is not a readable PEM private key (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
    }
    try {
      createSecureContext({ cert: readFileSync(options.tlsCert), key: readFileSync(options.tlsKey) })
    } catch (err) {
      throw new ConfigError('--tls-key', `invalid --tls-key: ${options.tlsKey} does not belong to the certificate ${options.tlsCert} (${(err as Error).message})`)
    }
  }
}

/**
 * A JWKS file must be readable and hold a key set now: a typo would otherwise refuse every token
 * with nothing but a log line. A URL is only checked for its form; whether it answers is found out
 * at start, and an unreachable one does not stop weft (see SECURITY.md, "Identity provider").
 */
function checkTokenSettings(options: WeftOptions): void {
  for (const [key, flag] of [['authClockSkewSeconds', '--auth-clock-skew-seconds'], ['authRevocationSeconds', '--auth-revocation-seconds']] as const) {
    if (!Number.isSafeInteger(options[key]) || options[key] < 0) throw new ConfigError(flag, `invalid ${flag}: must be a whole number of seconds`)
  }
  for (const [value, flag] of [[options.authIssuer, '--auth-issuer'], [options.authAudience, '--auth-audience']] as const) {
    if (value === '') throw new ConfigError(flag, `invalid ${flag}: must not be empty`)
  }
  if (options.authSecret === null && options.authJwks === null) {
    for (const [value, flag] of [[options.authIssuer, '--auth-issuer'], [options.authAudience, '--auth-audience']] as const) {
      if (value !== null) throw new ConfigError(flag, `invalid ${flag}: it needs --auth-secret or --auth-jwks (without either, weft is in open mode and checks no token)`)
    }
  }
  if (options.authJwks === null) return
  const source = options.authJwks
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) {
    let url: URL | null = null
    try {
      url = new URL(source)
    } catch {
      // reported below
    }
    if (url === null || (url.protocol !== 'https:' && url.protocol !== 'http:') || url.hostname === '') {
      throw new ConfigError('--auth-jwks', `invalid --auth-jwks: "${redactUrl(source)}" is not an http:// or https:// URL or a file path`)
    }
    return
  }
  let text: string
  try {
    const bytes = readFileSync(source)
    if (bytes.length > MAX_JWKS_BYTES) throw Object.assign(new Error('too large'), { code: `larger than ${MAX_JWKS_BYTES} bytes` })
    text = bytes.toString('utf8')
  } catch (err) {
    throw new ConfigError('--auth-jwks', `invalid --auth-jwks: cannot read ${source} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  try {
    parseJwks(text)
  } catch (err) {
    throw new ConfigError('--auth-jwks', `invalid --auth-jwks: ${source} is not a JSON Web Key Set (${(err as Error).message})`)
  }
}

/**
 * Webhook settings (issue 16): every URL is http(s) and a secret of auth-secret strength is given,
 * or no event could ever be delivered or trusted.
 */
function checkWebhooks(options: WeftOptions): void {
  for (const raw of options.webhookUrls ?? []) {
    let url: URL | null = null
    try {
      url = new URL(raw)
    } catch {
      // reported below
    }
    if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
      throw new ConfigError('--webhook-url', `invalid --webhook-url: "${redactUrl(raw)}" is not an http:// or https:// URL`)
    }
  }
  const urls = options.webhookUrls ?? []
  if (urls.length > 0 && options.webhookSecret === null) throw new ConfigError('--webhook-secret', 'invalid --webhook-secret: required with --webhook-url (receivers verify the signature with it)')
  if (options.webhookSecret !== null && Buffer.byteLength(options.webhookSecret) < MIN_AUTH_SECRET_BYTES) {
    throw new ConfigError('--webhook-secret', `invalid --webhook-secret: needs at least ${MIN_AUTH_SECRET_BYTES} bytes, this one has ${Buffer.byteLength(options.webhookSecret)} (e.g. openssl rand -base64 32)`)
  }
  for (const key of ['webhookTimeoutMs', 'webhookRetryMinMs', 'webhookMaxEntries', 'webhookMaxBytes', 'webhookMaxAgeSeconds'] as const) {
    if (!Number.isSafeInteger(options[key]) || options[key] <= 0) throw new ConfigError(key, `invalid ${key}: must be a positive whole number`)
  }
  for (const key of ['webhookDebounceMs', 'webhookMaxWaitMs'] as const) {
    if (!Number.isSafeInteger(options[key]) || options[key] < 0) throw new ConfigError(key, `invalid ${key}: must be a whole number of milliseconds`)
  }
}

/** One line of `weft serve --help` per setting; SETTINGS entries without one show only flag, variable and default. */
const SETTING_HELP: Partial<Record<keyof WeftOptions, string>> = {
  host: 'listen address',
  port: 'listen port; 0 = any free port (logged)',
  data: 'LevelDB directory; memory = in-memory store',
  redisUrl: 'redis:// or rediss:// URL; joins the cluster on that Redis',
  instanceId: "this instance's id in the cluster (default random)",
  authSecret: `HS256 secret for access tokens (>= ${MIN_AUTH_SECRET_BYTES} bytes); none (and no --auth-jwks) = open mode`,
  allowOrigins: 'comma list of allowed Origin values (scheme://host[:port])',
  maxConnections: 'connections admitted at once',
  maxConnectionsPerIp: 'connections admitted at once per address',
  maxMessageBytes: 'largest inbound frame; larger closes with 1009',
  sendQueueBytes: 'per-connection outbound budget',
  drainSeconds: 'graceful drain window on SIGTERM/SIGINT',
  maxDocumentBytes: 'updates growing a document past this are refused',
  persistWindowMs: 'longest wait of an applied update before storage',
  trustedProxies: 'comma list of proxies whose X-Forwarded-For is believed',
  metricsToken: '/metrics needs Authorization: Bearer <token>',
  hocuspocusPath: 'URL path served with the Hocuspocus protocol',
  demo: 'demo editor at /demo/<room>: auto (on in open mode), on or off',
  tlsCert: 'PEM certificate file: serve https/wss (with --tls-key)',
  tlsKey: 'PEM private key file for --tls-cert',
  logLevel: 'fatal, error, warn, info, debug, trace or silent',
  maxRoomConnections: 'connections admitted at once to one room',
  upgradesPerSecond: 'WebSocket upgrades per second (burst twice this)',
  upgradesPerSecondPerIp: 'WebSocket upgrades per second per address',
  httpRequestsPerSecondPerIp: 'HTTP API requests per second per address (burst twice this)',
  ipv6PrefixLength: 'bits of an IPv6 address that count as one client for per-address limits',
  inboundMessagesPerSecond: 'per connection; past it the socket is paused',
  inboundBytesPerSecond: 'per connection; past it the socket is paused',
  slowConsumerGraceMs: 'time over --send-queue-bytes before a 1013 close',
  syncRepliesAtOnce: 'big sync replies written at once; others wait (0: no limit)',
  heartbeatIntervalMs: 'ping interval; two silent intervals end a connection',
  maxNestingDepth: 'deepest nesting of shared types; deeper updates are refused',
  maxPendingBytes: 'out-of-order cluster updates held per room',
  awarenessMaxEntriesPerMessage: 'awareness entries of one message that are read',
  awarenessMaxStateBytes: 'bytes of one awareness state',
  awarenessMaxClientsPerConnection: 'awareness client IDs one connection may own',
  awarenessMaxRoomEntries: 'awareness states in one room',
  awarenessMaxRoomBytes: 'bytes of one room\'s awareness states',
  awarenessReclaimSeconds: 'a departed client ID stays reserved for its owner',
  awarenessFlushMs: 'a room gathers awareness changes this long, then sends them merged',
  preauthBytes: 'bytes a Hocuspocus socket may send before it authenticates',
  authTimeoutMs: 'time a Hocuspocus socket may stay unauthenticated',
  bodyTimeoutMs: 'time an HTTP body may take to arrive',
  maxConcurrentBodies: 'HTTP bodies read at once',
  maxConcurrentBodiesPerIp: 'HTTP bodies read at once per address',
  maxBodyBytesInFlight: 'bytes of HTTP bodies held at once',
  maxResponseBytesInFlight: 'bytes of HTTP answers on their way to clients at once',
  maxResponseBytesInFlightPerIp: 'bytes of HTTP answers on their way to one address at once',
  sendTimeoutMs: 'time an HTTP answer may wait for its client to read',
  maxSyncReplyBytes: 'bytes of big sync replies held until they are out of their sockets',
  maxSyncReplyBytesPerIp: 'the same for the replies one address asked for',
  maxDocumentReads: 'HTTP reads of big documents in progress at once',
  maxDocumentReadsPerIp: 'HTTP reads of big documents in progress at once per address',
  repeatAnswerIntervalMs: 'shortest time between two answers to a repeated sync step 1 or query-awareness',
  maxContentBytes: 'bytes of one ProseMirror JSON body (PUT .../content)',
  headersTimeoutMs: 'time a connection may take to send its request head',
  maxPendingConnections: 'connections still sending their request head',
  maxPendingConnectionsPerIp: 'the same per address',
  maxDocumentsPerConnection: 'documents on one Hocuspocus socket',
  maxRoomsPerIp: 'distinct rooms one address may hold',
  maxLoadedRooms: 'rooms loaded at once',
  maxVersionsPerRoom: 'versions one room may hold',
  maxVersionBytesPerRoom: 'bytes of one room\'s versions',
  versionsPerMinutePerRoom: 'versions one room may get per minute',
  versionRepublishBytesPerSecond: 'pace of putting versions back into Redis',
  redisPrefix: 'namespace of every Redis key and channel',
  redisRetentionSeconds: 'idle rooms leave Redis after this; 0 = never',
  republishRoomsPerSecond: 'pace of re-publishing rooms after a Redis data loss',
  authJwks: 'JWKS file or http(s) URL: RS256/ES256/EdDSA tokens',
  authIssuer: 'required iss of tokens',
  authAudience: 'required aud of tokens',
  authClockSkewSeconds: 'tolerated clock difference for exp/nbf/iat',
  authJwksRefreshSeconds: 'least time between JWKS loads for unknown kids',
  authJwksMaxAgeSeconds: 'cached JWKS keys are loaded again after this',
  authRevocationSeconds: "a revoked subject's older credentials stay refused",
  authMaxRevocations: 'revocations remembered at once',
  webhookUrls: 'comma list of http(s) URLs that receive signed events',
  webhookSecret: `HMAC-SHA256 key of Weft-Signature (>= ${MIN_AUTH_SECRET_BYTES} bytes)`,
  webhookDebounceMs: "a room's changes are sent this long after its last one",
  webhookMaxWaitMs: '...or this long after its first unsent one',
  webhookMaxAgeSeconds: 'an event is retried this long, then dead-lettered',
  webhookTimeoutMs: 'time one delivery attempt may take',
  webhookRetryMinMs: 'first retry delay; doubles (with jitter) up to 5 min',
  webhookMaxEntries: 'events held in the outbox; more are refused',
  webhookMaxBytes: 'bytes of events held in the outbox; more are refused',
  compression: 'on/off: permessage-deflate for clients that offer it, once per broadcast',
  compressionThresholdBytes: 'with --compression: smaller payloads go out plain',
}

/** The settings table of `weft serve --help`, generated from SETTINGS and DEFAULTS so it cannot drift. */
export function settingsHelp(): string {
  const shown = (value: unknown): string => (value === null ? '-' : typeof value === 'boolean' ? (value ? 'on' : 'off') : Array.isArray(value) ? (value.length === 0 ? '-' : value.join(',')) : String(value))
  const rows = SETTINGS.map((spec) => {
    const range = spec.min !== undefined || spec.max !== undefined ? ` (${spec.min ?? ''}..${spec.max ?? ''})` : ''
    return [spec.flag, spec.env, shown(DEFAULTS[spec.key]), (SETTING_HELP[spec.key] ?? '') + range]
  })
  const header = ['flag', 'environment', 'default', 'meaning']
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] as string).length)))
  const line = (cells: readonly string[]): string => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] as number))).join('  ').trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}
