/** A connection waiting for its turn to write a big sync reply. */
export interface ReplyWaiter {
  /** A turn is free: try again now (the waiter's send queue flushes, and its reply asks again). */
  replyTurn(): void
}

/**
 * How many big sync replies are written at once, server-wide (--sync-replies-at-once).
 *
 * A whole document written to a fresh socket is copied into the kernel at once, up to the
 * socket's send buffer (megabytes on loopback), on the event loop, and the rest follows a send
 * buffer at a time as the socket drains. 150 joiners of a 20 MB document did that 150 times in
 * the same turns and held every other room's messages back by a few hundred milliseconds. Past
 * the limit a connection's reply waits in its send queue, with whatever follows it, and goes
 * out when a turn is free: when another reply is out of its socket, or has had its turn for
 * `turnMs` (a reader that stops reading cannot keep the gate shut; its reply goes on without a
 * turn). Waiters are served in the order they came.
 */
export class ReplyGate {
  private writing = 0
  /** Insertion order is arrival order; asking again does not lose a waiter its place. */
  private readonly waiting = new Set<ReplyWaiter>()

  constructor(
    /** Replies written at once. */
    readonly limit: number,
    /** Longest turn of one reply. */
    readonly turnMs: number,
    private readonly onWait: () => void = () => {},
  ) {}

  /** True: write the reply now and call leave() once, when it is out or its turn is over. False: `waiter.replyTurn()` comes later. */
  tryEnter(waiter: ReplyWaiter): boolean {
    if (this.writing < this.limit) {
      this.writing++
      this.waiting.delete(waiter)
      return true
    }
    if (!this.waiting.has(waiter)) {
      this.waiting.add(waiter)
      this.onWait()
    }
    return false
  }

  /** A reply's turn is over: the next waiters get theirs. */
  leave(): void {
    this.writing--
    for (const waiter of this.waiting) {
      if (this.writing >= this.limit) break
      // A waiter that cannot write yet (its socket is still behind) asks again when it drains.
      this.waiting.delete(waiter)
      waiter.replyTurn()
    }
  }

  /** The waiter's connection closed. */
  forget(waiter: ReplyWaiter): void {
    this.waiting.delete(waiter)
  }
}
