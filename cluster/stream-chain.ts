import { compareStreamIds } from './keys.js'

/** Out-of-order messages remembered per room at most; past it they are forgotten and the heal read covers them. */
const MAX_AHEAD = 1024

/**
 * The gapless chain of one room's stream as this instance applied it. Every relayed update names
 * the stream entry before it (`prev`), so a message whose `prev` is not the newest entry applied
 * reveals that something between was lost; the chain remembers such messages until the gap is
 * filled by a read of the stream (a heal), and tells when the stream's `last` stayed ahead of it.
 * Pure bookkeeping over stream ids: no Redis, no Yjs.
 */
export class StreamChain {
  /** Id of the newest stream entry applied with nothing missing before it; '' = none yet. */
  private applied = ''
  /** Messages seen out of order (prev → id), applied but not yet part of the gapless chain. */
  private readonly ahead = new Map<string, string>()
  /** `lastApplied` at the previous check that found the stream's `last` ahead of it. */
  private behindAt: string | null = null
  /** `lastApplied` at the previous tick of the check (`movedSinceTick`); null before the first. */
  private tickedAt: string | null = null

  get lastApplied(): string {
    return this.applied
  }

  /** Whether messages were applied past a gap that is not filled yet. */
  get hasGap(): boolean {
    return this.ahead.size > 0
  }

  /** Whether `id` is in the chain already (applied, or older than what was). */
  covers(id: string): boolean {
    return compareStreamIds(id, this.applied) <= 0
  }

  /** The chain starts at the last entry of the read that joined the room. */
  startAt(id: string): void {
    this.applied = id
  }

  /** Extends the chain with (prev → id); returns false when something before it is missing. */
  advance(prev: string, id: string): boolean {
    if (prev !== this.applied) {
      if (this.ahead.size >= MAX_AHEAD) this.ahead.clear()
      this.ahead.set(prev, id)
      return false
    }
    this.applied = id
    this.followAhead()
    return true
  }

  /**
   * A read of the stream up to `lastId` was applied: the chain reaches at least there, and the
   * messages seen ahead join it where they now connect. Returns whether the chain moved.
   */
  catchUp(lastId: string): boolean {
    let moved = false
    if (compareStreamIds(lastId, this.applied) > 0) {
      this.applied = lastId
      moved = true
    }
    this.followAhead()
    return moved
  }

  /** A heal read completed: the stream's `last` is not known to be ahead any more. */
  healed(): void {
    this.behindAt = null
  }

  /**
   * Called at each periodic check with the stream's `last`. True when `last` was ahead of what
   * was applied twice in a row with no progress in between: the newest message was lost (a gap
   * before a later message would have been noticed when it came). A read in flight (`reading`)
   * may be filling it, so it does not count.
   */
  stalledBehind(last: string | null, reading: boolean): boolean {
    if (last === null || reading || compareStreamIds(last, this.applied) <= 0) {
      this.behindAt = null
      return false
    }
    if (this.behindAt === this.applied) return true
    this.behindAt = this.applied
    return false
  }

  /**
   * Called once at each tick of the check: true when the chain moved since the previous tick and
   * has no gap, and the tick may skip reading the stream's `last` (issue 19). A message lost before
   * the newest one applied shows in the chain (the next one names it as `prev`); a lost newest
   * message stops the chain, so the next tick reads `last`. The skipped read counts as one that
   * found `last` ahead, so that read heals when it finds `last` still ahead with no progress: a lost
   * final message is still healed at the second tick after the loss, as with a read every tick.
   * (The price: a message in flight at that read, after a whole tick of silence, costs one needless
   * heal read.)
   */
  movedSinceTick(): boolean {
    const moved = this.tickedAt !== null && this.applied !== this.tickedAt && this.ahead.size === 0
    this.tickedAt = this.applied
    if (moved) this.behindAt = this.applied
    return moved
  }

  /** Redis lost its data: the stream starts over, and so does the chain. */
  reset(): void {
    this.applied = ''
    this.ahead.clear()
  }

  private followAhead(): void {
    for (let next = this.ahead.get(this.applied); next !== undefined; next = this.ahead.get(this.applied)) {
      this.ahead.delete(this.applied)
      this.applied = next
    }
    for (const [prev, id] of this.ahead) {
      if (compareStreamIds(id, this.applied) <= 0) this.ahead.delete(prev)
    }
  }
}
