/** Time source, injectable so tests can drive buckets and timers with a controlled clock. */
export interface Clock {
  now(): number
}

export const systemClock: Clock = { now: () => performance.now() }

/**
 * A token bucket that may go into debt: a cost larger than what is left is always taken (a frame
 * has already arrived; it cannot be refused), and the bucket then reports how long until it is
 * back above zero. Inbound limits use that wait to pause a socket instead of dropping data.
 */
export class TokenBucket {
  private tokens: number
  private updatedAt: number

  constructor(
    /** Tokens added per second. */
    readonly ratePerSecond: number,
    /** Most tokens the bucket holds (the burst). */
    readonly capacity: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.tokens = capacity
    this.updatedAt = clock.now()
  }

  private refill(): void {
    const now = this.clock.now()
    const elapsed = now - this.updatedAt
    this.updatedAt = now
    if (elapsed > 0) this.tokens = Math.min(this.capacity, this.tokens + (elapsed * this.ratePerSecond) / 1000)
  }

  /** Takes `cost` tokens if there are that many; false (nothing taken) otherwise. */
  tryTake(cost = 1): boolean {
    this.refill()
    if (this.tokens < cost) return false
    this.tokens -= cost
    return true
  }

  /** Takes `cost` tokens even into debt; returns milliseconds until the bucket is positive again (0 when it is). */
  take(cost: number): number {
    this.refill()
    this.tokens -= cost
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.ratePerSecond)
  }

  /** Milliseconds until `cost` tokens are available (0 when they are now). */
  waitFor(cost = 1): number {
    this.refill()
    return this.tokens >= cost ? 0 : Math.ceil(((cost - this.tokens) * 1000) / this.ratePerSecond)
  }
}

/**
 * One token bucket per key (an address, a room), each `ratePerSecond` with a burst of `capacity`.
 * The map is bounded: at `maxKeys` the full buckets are forgotten (a full bucket says nothing a new
 * one would not), and when too few are full the oldest ones go too, down to nine tenths of the
 * bound, so that many keys at once (addresses of a big network) cost one sweep per tenth of the
 * bound, not one per request. A forgotten key starts over with a full burst.
 */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>()

  constructor(
    readonly ratePerSecond: number,
    readonly capacity: number,
    private readonly maxKeys = 10_000,
    private readonly clock: Clock = systemClock,
  ) {}

  get size(): number {
    return this.buckets.size
  }

  /** Takes one token of `key`'s bucket if it has one; false (nothing taken) otherwise. */
  tryTake(key: string): boolean {
    return this.bucket(key).tryTake()
  }

  /** Whole seconds until `key` has a token again, at least 1: a Retry-After. */
  retryAfterSeconds(key: string): number {
    return Math.max(1, Math.ceil(this.bucket(key).waitFor() / 1000))
  }

  private bucket(key: string): TokenBucket {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxKeys) this.sweep()
      bucket = new TokenBucket(this.ratePerSecond, this.capacity, this.clock)
      this.buckets.set(key, bucket)
    }
    return bucket
  }

  private sweep(): void {
    for (const [key, held] of this.buckets) if (held.waitFor(held.capacity) === 0) this.buckets.delete(key)
    const keep = Math.floor(this.maxKeys * 0.9)
    // Oldest first: a Map iterates in insertion order.
    for (const key of this.buckets.keys()) {
      if (this.buckets.size <= keep) break
      this.buckets.delete(key)
    }
  }
}
