/** How often an ask that waits for the connection's last big reply to leave looks again. */
const RECHECK_MS = 100

/** What SyncAsks needs of its connection and document. */
export interface SyncAskHooks {
  /** Sends the reply to `stateVector`. */
  answer(stateVector: Uint8Array): void
  /** True while the connection has a big sync reply held or in its socket. */
  replyOnItsWay(): boolean
  /** Whether the reply to `stateVector` may be built now (see Room.mayBuildSyncReply). */
  mayBuild(stateVector: Uint8Array): boolean
  /** An ask that was not answered at once (for metrics). */
  onDeferred(): void
  /** Nothing waits any more (answered, or closed): a place in line for reply memory is given up (ReplyMemory.forget). */
  settled?(): void
}

/**
 * When one document's sync step 1 messages on one connection are answered. The first is answered
 * at once, unless its reply would be big and the server's memory for big replies is taken
 * (--max-sync-reply-bytes[-per-ip]): then it waits, in line by address, until that memory is
 * given back. Another (a resync, or a client asking again and again) is answered at most once per
 * `intervalMs` (--repeat-answer-interval-ms), and not while the connection still has a big sync
 * reply on its way: until then only the newest state vector is kept, and answered then. Nothing
 * is lost by the wait: the client has had the last reply and every update since. Without it, sync
 * step 1s with made-up state vectors, 500 a second, each made weft encode and hold another copy
 * of the document: 13 GB and 84 CPU-seconds in 6 s for a 4 MB document, from one read-only
 * connection.
 */
export class SyncAsks {
  private answeredAt = -Infinity
  private waiting: Uint8Array | null = null
  private timer: NodeJS.Timeout | null = null

  constructor(
    private readonly hooks: SyncAskHooks,
    private readonly intervalMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  ask(stateVector: Uint8Array): void {
    if (this.waiting === null && this.mayAnswer(stateVector)) {
      this.reply(stateVector)
      return
    }
    this.hooks.onDeferred()
    this.waiting = stateVector
    this.schedule()
  }

  /** The connection or document is gone: nothing more is answered. */
  close(): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.waiting = null
    this.hooks.settled?.()
  }

  private mayAnswer(stateVector: Uint8Array): boolean {
    if (this.answeredAt !== -Infinity && (this.now() - this.answeredAt < this.intervalMs || this.hooks.replyOnItsWay())) return false
    return this.hooks.mayBuild(stateVector)
  }

  private schedule(): void {
    if (this.timer !== null) return
    const wait = Math.max(RECHECK_MS, this.answeredAt + this.intervalMs - this.now())
    this.timer = setTimeout(() => {
      this.timer = null
      const stateVector = this.waiting
      if (stateVector === null) return
      if (!this.mayAnswer(stateVector)) {
        this.schedule()
        return
      }
      this.waiting = null
      this.reply(stateVector)
    }, wait)
    this.timer.unref()
  }

  private reply(stateVector: Uint8Array): void {
    this.answeredAt = this.now()
    this.hooks.settled?.()
    this.hooks.answer(stateVector)
  }
}
