import type { RoomWork } from './room-work.js'

/**
 * The persist windows of every room, ended by one timer. A room's window starts with the first
 * update of a batch and ends `windowMs` later, when its append starts. When the timer fires it
 * also ends the windows that would end within a quarter window after it (early by that at most,
 * never late). A timer per room woke the process once per update where rooms get an update now
 * and then (bench scenario 2: 200 rooms at 5 updates a second each, 1,000 wake-ups a second);
 * one timer with that slack wakes it at most four times per window.
 */
export class PersistWindows {
  /** Rooms whose window runs, in the order the windows end (every window is as long). */
  private readonly running = new Set<RoomWork>()
  private timer: NodeJS.Timeout | null = null
  private readonly slackMs: number

  constructor(
    private readonly windowMs: number,
    /** Called when a room's window ends (not when it is cancelled). */
    private readonly end: (work: RoomWork) => void,
    /** @internal The clock (tests move it with the timers). */
    private readonly now: () => number = () => performance.now(),
  ) {
    this.slackMs = windowMs / 4
  }

  /** Starts the room's window unless one runs already (later updates do not extend it). */
  start(work: RoomWork): void {
    if (work.windowEndsAt !== null) return
    work.windowEndsAt = this.now() + this.windowMs
    this.running.add(work)
    // Every running window ends before this one: a timer armed already is armed for the first.
    this.timer ??= this.arm(work.windowEndsAt)
  }

  /** Ends the room's window without calling `end` (its queue was taken, or the room deleted). */
  cancel(work: RoomWork): void {
    if (work.windowEndsAt === null) return
    const wasFirst = this.first() === work
    work.windowEndsAt = null
    this.running.delete(work)
    if (wasFirst) this.rearm()
  }

  private first(): RoomWork | undefined {
    return this.running.values().next().value
  }

  /** Arms the timer for the first window to end, or stops it when none runs. */
  private rearm(): void {
    if (this.timer !== null) clearTimeout(this.timer)
    const first = this.first()
    this.timer = first === undefined ? null : this.arm(first.windowEndsAt as number)
  }

  /** In whole milliseconds, rounded up: the timer never fires before the window it is armed for ends. */
  private arm(at: number): NodeJS.Timeout {
    return setTimeout(this.fire, Math.max(0, Math.ceil(at - this.now())))
  }

  /**
   * The timer is armed for the first window: it has ended, and so have those within the slack
   * after it, and all that ended while the timer waited for a busy event loop (with a window of
   * 0 every one would otherwise wait a turn of its own).
   */
  private readonly fire = (): void => {
    this.timer = null
    const first = this.first()
    if (first === undefined) return
    const until = Math.max(first.windowEndsAt as number, this.now()) + this.slackMs
    const ended: RoomWork[] = []
    for (const work of this.running) {
      if ((work.windowEndsAt as number) > until) break
      ended.push(work)
    }
    for (const work of ended) {
      work.windowEndsAt = null
      this.running.delete(work)
    }
    this.rearm()
    for (const work of ended) this.end(work)
  }
}
