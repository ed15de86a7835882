import { RoomDeletedError, WriterClosedError } from './errors.js'

type WriteOutcome = 'pending' | 'saved' | 'refused' | 'abandoned'

const ignore = (): void => {}

/**
 * One `DocumentWriter.write` call: its bytes and the promise its caller holds. A class, so a write
 * carries no closures of its own: it lives until its append is stored, long enough for the young
 * generation's collector to copy it, and a busy process makes a thousand a second.
 */
export class PendingWrite {
  /** performance.now() of the `write` call. */
  readonly at = performance.now()
  readonly done: Promise<void>
  outcome: WriteOutcome = 'pending'
  private resolvePromise!: () => void
  private rejectPromise!: (err: Error) => void

  constructor(readonly update: Uint8Array) {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolvePromise = resolve
      this.rejectPromise = reject
    })
    // A caller that does not await a write must not crash the process with an unhandled rejection:
    // the failure also reaches the log and close()'s `unsaved`. Awaiting callers still get it.
    this.done.catch(ignore)
  }

  resolve(): void {
    if (this.outcome !== 'pending') return
    this.outcome = 'saved'
    this.resolvePromise()
  }

  reject(err: Error, outcome: 'refused' | 'abandoned'): void {
    if (this.outcome !== 'pending') return
    this.outcome = outcome
    this.rejectPromise(err)
  }
}

/** Rejects writes that will never be stored: their room was deleted (refused) or close() gave up (abandoned). */
export function rejectWrites(writes: readonly PendingWrite[], room: string, why: 'deleted' | 'closed'): void {
  for (const write of writes) {
    if (why === 'deleted') write.reject(new RoomDeletedError(room), 'refused')
    else write.reject(new WriterClosedError(room), 'abandoned')
  }
}

/** What the writer believes about a room's stored log; only steers compaction, so estimates are fine. */
export interface LogSize {
  entries: number
  bytes: number
  /** Size of the oldest entry, which after a compaction is the merged document. */
  baseBytes: number
}

export const settled = (promise: Promise<unknown>): Promise<void> => promise.then(ignore, ignore)

/**
 * Everything in flight for one room. Appends run one at a time in the writer's drain loop;
 * compactions and deletions run one at a time on `maintenance`; the two chains overlap on purpose
 * (an append during a compaction lands behind the merged entry, see Store.replace), except that a
 * deletion waits for the append already in the store's hands and holds back later ones until it
 * is done.
 */
export class RoomWork {
  // ---- the write queue (document-writer.ts)
  /** Accepted, not yet taken by the drain loop. */
  queued: PendingWrite[] = []
  /** Taken by the drain loop: being merged, appended, or waiting for a retry. */
  inFlight: PendingWrite[] | null = null
  storeCall: Promise<unknown> | null = null
  /** When the room's persist window ends (performance.now()); null: none runs (persist-windows.ts). */
  windowEndsAt: number | null = null
  draining = false
  /** Bumped by deleteRoom; a batch taken under an older generation belongs to the deleted document. */
  generation = 0
  deletion: Promise<void> | null = null

  // ---- failures and retries (append-failures.ts)
  failedAttempts = 0
  wakeRetry: (() => void) | null = null

  // ---- compaction (log-compaction.ts)
  maintenance: Promise<void> = Promise.resolve()
  compactionQueued = false
  lastCompactionFailure = 0
  log: LogSize = { entries: 0, bytes: 0, baseBytes: 0 }
  /** False until `log` was read from the store (a load, a compaction, a deletion): a room the writer forgot starts over unknown. */
  logKnown = false
  /** Totals of successful appends, to tell which entries arrived while a compaction was reading. */
  appendedEntries = 0
  appendedBytes = 0

  // ---- forgetting (document-writer.ts forgetIdleRooms)
  /** Calls that use this work across an await without a flag of their own (load, loadEntries, quarantine). */
  holds = 0

  constructor(readonly room: string) {}

  get hasPending(): boolean {
    return this.queued.length > 0 || this.inFlight !== null
  }

  /**
   * Nothing queued, in flight, waiting or running for the room: the writer may forget it. All it
   * would lose is the log-size estimate (the room's next load reads it again) and the failure
   * backoff, which a room without failures does not have.
   */
  get idle(): boolean {
    return !this.hasPending && this.holds === 0 && !this.draining && this.storeCall === null && this.windowEndsAt === null &&
      this.deletion === null && !this.compactionQueued && this.wakeRetry === null && this.failedAttempts === 0
  }

  /** Every write not yet stored, oldest first. */
  get unstored(): PendingWrite[] {
    return [...(this.inFlight ?? []), ...this.queued]
  }
}
