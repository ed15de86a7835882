import * as Y from 'yjs'

/** Updates held per room before they are merged into one. */
const HOLD_MERGE_AT = 64

/**
 * Local updates that could not be published (Redis down, or a publish failed), per room, until
 * the relay is up again. Bounded: past `budgetBytes` in all rooms together, the room that went
 * over loses what it held, and must be re-synced from its local document instead.
 */
export class OutageBuffer {
  private readonly rooms = new Map<string, { updates: Uint8Array[]; bytes: number }>()
  private heldBytes = 0

  constructor(private readonly budgetBytes: number) {}

  /** Bytes held in all rooms (the relay's `heldBytes` stat). */
  get bytes(): number {
    return this.heldBytes
  }

  get isEmpty(): boolean {
    return this.rooms.size === 0
  }

  /** Rooms holding updates, in the order they first held one. */
  roomNames(): string[] {
    return [...this.rooms.keys()]
  }

  /**
   * Holds `update` for `room`. Returns false when that took the buffer over its budget: the
   * room's held updates are dropped then, and its cluster copy may lack them.
   */
  hold(room: string, update: Uint8Array): boolean {
    const held = this.rooms.get(room) ?? { updates: [], bytes: 0 }
    held.updates.push(update)
    held.bytes += update.byteLength
    this.heldBytes += update.byteLength
    if (held.updates.length >= HOLD_MERGE_AT) {
      const merged = Y.mergeUpdates(held.updates)
      this.heldBytes += merged.byteLength - held.bytes
      held.updates = [merged]
      held.bytes = merged.byteLength
    }
    this.rooms.set(room, held)
    if (this.heldBytes <= this.budgetBytes) return true
    this.drop(room)
    return false
  }

  /** Removes and returns what `room` holds (to publish it), or undefined when nothing. */
  take(room: string): Uint8Array[] | undefined {
    const held = this.rooms.get(room)
    if (held === undefined) return undefined
    this.drop(room)
    return held.updates
  }

  /** Forgets what `room` holds: its local document has it, and a full sync publishes it. */
  drop(room: string): void {
    const held = this.rooms.get(room)
    if (held === undefined) return
    this.heldBytes -= held.bytes
    this.rooms.delete(room)
  }
}
