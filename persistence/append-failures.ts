import type { WriterLogger } from './document-writer.js'
import type { RoomWork } from './room-work.js'

export type StorageHealth = { ok: true } | { ok: false; since: number; error: string }

/**
 * When a room's failed append is tried again: `baseMs` after the first failure, doubling per
 * failure up to `maxMs`. A failed batch is never dropped; it waits here, still queued.
 */
export class AppendRetry {
  constructor(
    private readonly baseMs: number,
    private readonly maxMs: number,
  ) {}

  delayMs(attempt: number): number {
    // No jitter: the store is a local LevelDB, not a shared service a herd of clients could flatten.
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(attempt - 1, 30))
  }

  /** Waits out the delay after `work`'s latest failure; `work.wakeRetry()` ends it early (deletion, close). */
  sleep(work: RoomWork): Promise<void> {
    const delayMs = this.delayMs(work.failedAttempts)
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer)
        work.wakeRetry = null
        resolve()
      }
      const timer = setTimeout(wake, delayMs)
      work.wakeRetry = wake
    })
  }
}

/**
 * The storage health that follows from the rooms' appends: not ok while any room has a batch
 * that failed and is not yet stored. `onChange` is called on each change of ok.
 */
export class StorageHealthTracker {
  /** Rooms whose last append failed, with when the failing began. */
  private readonly failingRooms = new Map<string, number>()
  private lastError = ''
  private current: StorageHealth = { ok: true }

  constructor(
    private readonly retry: AppendRetry,
    private readonly logger: WriterLogger,
    private readonly onChange: (health: StorageHealth) => void,
  ) {}

  get health(): StorageHealth {
    return this.current
  }

  markFailed(work: RoomWork, err: unknown): void {
    work.failedAttempts++
    this.lastError = err instanceof Error ? err.message : String(err)
    const details = { room: work.room, attempt: work.failedAttempts, retryInMs: this.retry.delayMs(work.failedAttempts), err }
    if (work.failedAttempts === 1) this.logger.error(details, 'append failed; updates stay queued and are retried')
    else this.logger.warn(details, 'append failed again')
    if (!this.failingRooms.has(work.room)) this.failingRooms.set(work.room, Date.now())
    this.update()
  }

  /** `stored`: the failing batch was appended (logged); otherwise it went with its deleted room. */
  markRecovered(work: RoomWork, stored: boolean): void {
    if (work.failedAttempts === 0) return
    if (stored) this.logger.info({ room: work.room, failedAttempts: work.failedAttempts }, 'append succeeded after failures')
    work.failedAttempts = 0
    this.failingRooms.delete(work.room)
    this.update()
  }

  private update(): void {
    const failing = this.failingRooms.size > 0
    if (failing === !this.current.ok) {
      if (failing && !this.current.ok) this.current = { ...this.current, error: this.lastError }
      return
    }
    this.current = failing ? { ok: false, since: Math.min(...this.failingRooms.values()), error: this.lastError } : { ok: true }
    this.onChange(this.current)
  }
}
