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
