/**
 * weft's settings: one options type, one DEFAULTS object, one validator.
 *
 * Only the CLI entry point reads `process.argv` and `process.env`; it hands both to
 * `parseSettings`, which validates once and returns a frozen object. `createServer` takes the
 * same options (partial) and runs them through `resolveOptions`, the same validator.
 */

import { readFileSync } from 'node:fs'
import { REDIS_PREFIX_PATTERN } from '../cluster/keys.js'
import { ClientAddress } from './admission.js'

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
  /** Inbound messages per second per connection; past it the socket is paused, not dropped. */
  inboundMessagesPerSecond: number
  /** Inbound bytes per second per connection; past it the socket is paused, not dropped. */
  inboundBytesPerSecond: number
  /** Milliseconds a connection may stay over --send-queue-bytes before it is closed with 1013. */
  slowConsumerGraceMs: number
  /** Milliseconds a room with no connections stays loaded after it is persisted. */
  roomUnloadDelayMs: number
  /** Milliseconds between server pings; a connection silent for two intervals is terminated. */
  heartbeatIntervalMs: number
  /** Namespace of every Redis key and channel (the DB number of --redis is part of channel names too). */
  redisPrefix: string
  /** Seconds after its last edit a room's keys leave Redis (LevelDB keeps it); 0 = never. */
  redisRetentionSeconds: number
  /** Stored rooms re-published to Redis per second after it lost its data. */
  republishRoomsPerSecond: number
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
  tlsCert: null,
  tlsKey: null,
  logLevel: 'info',
  maxRoomConnections: 10_000,
  upgradesPerSecond: 1_000,
  upgradesPerSecondPerIp: 100,
  inboundMessagesPerSecond: 500,
  inboundBytesPerSecond: 8 * 1024 * 1024,
  slowConsumerGraceMs: 5_000,
  roomUnloadDelayMs: 5_000,
  heartbeatIntervalMs: 30_000,
  redisPrefix: 'weft',
  redisRetentionSeconds: 3 * 24 * 3600,
  republishRoomsPerSecond: 100,
})

/** A setting that cannot be used; the CLI prints `message` and exits with status 2. */
export class ConfigError extends Error {
  constructor(readonly setting: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'ConfigError'
  }
}

type Kind = 'string' | 'int' | 'url' | 'list' | 'level' | 'path' | 'file'

interface SettingSpec {
  key: keyof WeftOptions
  flag: string
  env: string
  kind: Kind
  min?: number
  max?: number
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
  { key: 'tlsCert', flag: '--tls-cert', env: 'WEFT_TLS_CERT', kind: 'file' },
  { key: 'tlsKey', flag: '--tls-key', env: 'WEFT_TLS_KEY', kind: 'file' },
  { key: 'logLevel', flag: '--log-level', env: 'WEFT_LOG_LEVEL', kind: 'level' },
  // Beyond the contract's table: limits of the connection core.
  { key: 'maxRoomConnections', flag: '--max-room-connections', env: 'WEFT_MAX_ROOM_CONNECTIONS', kind: 'int', min: 1 },
  { key: 'upgradesPerSecond', flag: '--upgrades-per-second', env: 'WEFT_UPGRADES_PER_SECOND', kind: 'int', min: 1 },
  { key: 'upgradesPerSecondPerIp', flag: '--upgrades-per-second-per-ip', env: 'WEFT_UPGRADES_PER_SECOND_PER_IP', kind: 'int', min: 1 },
  { key: 'inboundMessagesPerSecond', flag: '--inbound-messages-per-second', env: 'WEFT_INBOUND_MESSAGES_PER_SECOND', kind: 'int', min: 1 },
  { key: 'inboundBytesPerSecond', flag: '--inbound-bytes-per-second', env: 'WEFT_INBOUND_BYTES_PER_SECOND', kind: 'int', min: 1024 },
  { key: 'slowConsumerGraceMs', flag: '--slow-consumer-grace-ms', env: 'WEFT_SLOW_CONSUMER_GRACE_MS', kind: 'int', min: 0, max: 600_000 },
  { key: 'heartbeatIntervalMs', flag: '--heartbeat-interval-ms', env: 'WEFT_HEARTBEAT_INTERVAL_MS', kind: 'int', min: 100, max: 600_000 },
  // The cluster (issue #13).
  { key: 'redisPrefix', flag: '--redis-prefix', env: 'WEFT_REDIS_PREFIX', kind: 'string' },
  { key: 'redisRetentionSeconds', flag: '--redis-retention-seconds', env: 'WEFT_REDIS_RETENTION_SECONDS', kind: 'int', min: 0, max: 10 * 365 * 24 * 3600 },
  { key: 'republishRoomsPerSecond', flag: '--republish-rooms-per-second', env: 'WEFT_REPUBLISH_ROOMS_PER_SECOND', kind: 'int', min: 1, max: 100_000 },
]

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
    case 'path':
      if (!raw.startsWith('/')) fail(`"${raw}" must start with /`)
      return raw
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
    else {
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
  if ((options.tlsCert === null) !== (options.tlsKey === null)) {
    throw new ConfigError(options.tlsCert === null ? '--tls-cert' : '--tls-key', 'invalid --tls-cert/--tls-key: both must be given')
  }
  for (const key of [
    'maxConnections',
    'maxConnectionsPerIp',
    'maxMessageBytes',
    'sendQueueBytes',
    'maxDocumentBytes',
    'maxRoomConnections',
    'upgradesPerSecond',
    'upgradesPerSecondPerIp',
    'inboundMessagesPerSecond',
    'inboundBytesPerSecond',
    'heartbeatIntervalMs',
    'republishRoomsPerSecond',
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
  const badProxy = ClientAddress.validate(options.trustedProxies)
  if (badProxy !== null) throw new ConfigError('--trusted-proxies', `invalid --trusted-proxies: "${badProxy}" is not an IP address or CIDR range`)
  return Object.freeze({ ...options })
}
