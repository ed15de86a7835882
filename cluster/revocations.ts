import type { Redis } from 'ioredis'
import { RedisNamespace } from './keys.js'
import { openRedisConnection } from './redis-connection.js'

/** What the revocation channel logs. */
export interface RevocationsLogger {
  warn(obj: object, msg: string): void
}

export interface RedisRevocationsOptions {
  redisUrl: string
  instanceId: string
  prefix: string
  /** Revocations kept in Redis at once; the ones ending first are dropped past it. */
  maxEntries: number
  logger: RevocationsLogger
  /** A revocation from any instance (this one's own included), as the JSON text it was published as. */
  onRevocation(text: string): void
  maxRetryDelayMs?: number
}

const MAX_RETRY_DELAY_MS = 2_000

/**
 * Revocations shared by the instances on one Redis: a pub/sub channel that reaches every instance
 * at once, and a sorted set of those still in force (score: the ms time they end), read when the
 * subscriber (re)connects, so an instance that starts, or whose subscriber was cut off, still
 * refuses what was revoked meanwhile. The text of a revocation is the server's (JSON); this only
 * carries it.
 */
export class RedisRevocations {
  private readonly cmd: Redis
  private readonly sub: Redis
  private readonly key: string
  private readonly channel: string
  private closed = false
  private caughtUp!: () => void
  /** Settles once the first catch-up is done: an instance that starts knows what was revoked before it. */
  private readonly firstCatchUp = new Promise<void>((resolve) => {
    this.caughtUp = resolve
  })

  constructor(private readonly options: RedisRevocationsOptions) {
    const retry = options.maxRetryDelayMs ?? MAX_RETRY_DELAY_MS
    const noteError = (err: unknown): void => {
      if (!this.closed) options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'revocations: redis connection error')
    }
    this.cmd = openRedisConnection(options.redisUrl, `weft:${options.instanceId}:revocations-cmd`, retry, noteError)
    this.sub = openRedisConnection(options.redisUrl, `weft:${options.instanceId}:revocations-sub`, retry, noteError)
    const keys = new RedisNamespace(options.prefix, this.cmd.options.db ?? 0).revocations()
    this.key = keys.key
    this.channel = keys.channel
    this.sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) options.onRevocation(message)
    })
    // Resubscribing is ours (autoResubscribe is off); what was missed meanwhile is in the set.
    this.sub.on('ready', () => void this.resubscribe())
  }

  private async resubscribe(): Promise<void> {
    try {
      await this.sub.subscribe(this.channel)
      await this.catchUp()
    } catch (err) {
      if (!this.closed) this.options.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'revocations: resubscribing failed; retried at the next reconnect')
    }
  }

  /** Delivers every revocation still in force (after a reconnect of the subscriber). */
  private async catchUp(): Promise<void> {
    await this.waitForCommands()
    const live = await this.cmd.zrangebyscore(this.key, `(${Date.now()}`, '+inf')
    for (const text of live) this.options.onRevocation(text)
    this.caughtUp()
  }

  /** Waits (at most `timeoutMs`; Redis may be down at start) until the revocations in force are known. */
  async ready(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs)
    })
    try {
      return await Promise.race([this.firstCatchUp.then(() => true), timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  private async waitForCommands(): Promise<void> {
    if (this.cmd.status === 'ready') return
    await new Promise<void>((resolve, reject) => {
      const ready = (): void => {
        this.cmd.off('end', ended)
        resolve()
      }
      const ended = (): void => {
        this.cmd.off('ready', ready)
        reject(new Error('redis connection ended'))
      }
      this.cmd.once('ready', ready)
      this.cmd.once('end', ended)
    })
  }

  /**
   * Stores a revocation until `untilMs` (when it is later than now) and publishes it; resolves with
   * how many other instances heard it. Rejects while Redis is unreachable.
   */
  async publish(text: string, untilMs: number): Promise<number> {
    const now = Date.now()
    const tx = this.cmd.multi()
    if (untilMs > now) {
      tx.zadd(this.key, untilMs, text)
      tx.zremrangebyscore(this.key, '-inf', now)
      // Past the bound the ones ending first go: the newest revocations are the ones that matter.
      tx.zremrangebyrank(this.key, 0, -(this.options.maxEntries + 1))
      tx.pexpire(this.key, untilMs - now, 'GT')
      // PEXPIRE GT does nothing on a key without expiry (a new key): give it one.
      tx.pexpire(this.key, untilMs - now, 'NX')
    }
    tx.publish(this.channel, text)
    const results = await tx.exec()
    if (results === null) throw new Error('revocation transaction aborted')
    for (const [err] of results) if (err !== null) throw err
    const receivers = Number(results[results.length - 1]?.[1] ?? 0)
    // This instance's own subscriber is among the receivers when it is connected.
    return Math.max(0, receivers - (this.sub.status === 'ready' ? 1 : 0))
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all([quit(this.cmd), quit(this.sub)])
  }
}

async function quit(connection: Redis): Promise<void> {
  if (connection.status === 'end') return
  if (connection.status === 'ready') await connection.quit().catch(() => undefined)
  connection.disconnect(false)
}
