/**
 * Exponential backoff with full jitter: the n-th delay is uniform in [0, min(maxMs, initialMs·2ⁿ)).
 * Full jitter spreads a crowd of clients that lost the same server over the whole window, where
 * equal jitter would still bunch them at its upper half.
 */
export class Backoff {
  private attempt = 0

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** The next delay in milliseconds; every call widens the window until it reaches maxMs. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt)
    if (ceiling < this.maxMs) this.attempt++
    return Math.floor(this.random() * ceiling)
  }

  /** After a connection proved healthy (it synced): the next failure starts from initialMs again. */
  reset(): void {
    this.attempt = 0
  }
}
