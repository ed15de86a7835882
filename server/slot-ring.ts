/**
 * A fixed ring of time slots: figures of the last `slotCount × slotMs` milliseconds kept in
 * `slotCount` buckets, the oldest reused as time moves on. Nothing grows with traffic: adding to
 * the current slot is a division and a comparison, and slots skipped while nothing happened are
 * cleared when time next moves.
 */
export class SlotRing<T> {
  private readonly slots: T[]
  /** The slot number (time / slotMs) each slot holds, NaN for never used (equal to no number). */
  private readonly numbers: Float64Array
  private head = -1

  constructor(
    readonly slotMs: number,
    readonly slotCount: number,
    create: () => T,
    private readonly reset: (slot: T) => void,
  ) {
    this.slots = Array.from({ length: slotCount }, create)
    this.numbers = new Float64Array(slotCount).fill(NaN)
  }

  /** The slot for time `now` (ms, same clock for every call), cleared first when it held an older one. */
  current(now: number): T {
    const number = Math.floor(now / this.slotMs)
    const index = number % this.slotCount
    const slot = this.slots[index] as T
    if (this.numbers[index] !== number) {
      this.reset(slot)
      this.numbers[index] = number
    }
    if (number > this.head) this.head = number
    return slot
  }

  /** The slots of the window ending at `now`, oldest first; slots nothing was added to in that time are left out. */
  window(now: number): Array<{ slot: T; startMs: number }> {
    const last = Math.floor(now / this.slotMs)
    const out: Array<{ slot: T; startMs: number }> = []
    for (let number = last - this.slotCount + 1; number <= last; number++) {
      const index = ((number % this.slotCount) + this.slotCount) % this.slotCount
      if (this.numbers[index] === number) out.push({ slot: this.slots[index] as T, startMs: number * this.slotMs })
    }
    return out
  }
}
