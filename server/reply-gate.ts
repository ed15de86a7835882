/** A connection waiting for its turn to write a big sync reply. */
export interface ReplyWaiter {
  /** A turn is free: try again now (the waiter's send queue flushes, and its reply asks again). */
  replyTurn(): void
}

/**
 * Turns that start in one event-loop turn, at most. A reply's first write is copied into the
 * kernel up to the socket's send buffer (up to 4 MB by Linux's default) on the event loop, so
 * every turn starting at once (a crowd's shared reply resolving for all of them in one run of
 * microtasks) held the loop for all of their copies: 50 ms of `writev` for eight 20 MB replies in
 * bench scenario 13's storm. The others start in the next turns of the loop, after what else waits.
 */
const STARTS_PER_LOOP_TURN = 2

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
 * turn). Waiters are served in the order they came. At most STARTS_PER_LOOP_TURN turns start in
 * one turn of the event loop; a reply held back only by that is not counted as a wait.
 */
export class ReplyGate {
  private writing = 0
  /** Turns started in this turn of the event loop; set back to 0 by the next (see `started`). */
  private startedThisLoopTurn = 0
  private nextLoopTurn: NodeJS.Immediate | null = null
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
    if (this.writing < this.limit && this.startedThisLoopTurn < STARTS_PER_LOOP_TURN) {
      this.writing++
      this.started()
      this.waiting.delete(waiter)
      return true
    }
    if (!this.waiting.has(waiter)) {
      this.waiting.add(waiter)
      if (this.writing >= this.limit) this.onWait()
    }
    return false
  }

  /** A reply's turn is over: the next waiters get theirs. */
  leave(): void {
    this.writing--
    this.serve()
  }

  /** Hands free turns to waiters in order, as many as may start in this turn of the loop. */
  private serve(): void {
    for (const waiter of this.waiting) {
      if (this.writing >= this.limit || this.startedThisLoopTurn >= STARTS_PER_LOOP_TURN) break
      // A waiter that cannot write yet (its socket is still behind) asks again when it drains.
      this.waiting.delete(waiter)
      waiter.replyTurn()
    }
  }

  /** Counts a start; the next turn of the loop starts the count again and serves who waits. */
  private started(): void {
    this.startedThisLoopTurn++
    if (this.nextLoopTurn !== null) return
    this.nextLoopTurn = setImmediate(() => {
      this.nextLoopTurn = null
      this.startedThisLoopTurn = 0
      this.serve()
    })
  }

  /** The waiter's connection closed. */
  forget(waiter: ReplyWaiter): void {
    this.waiting.delete(waiter)
  }
}
