import type { UpdateOrigin } from './hooks.js'
import type { RoomMember } from './room.js'

/**
 * Where an update came from, as the room carries it from `Room.apply` to its effects: the public
 * origin (which the hooks see), and for a member's update the member itself, so the broadcast
 * leaves it out. It is also the Yjs transaction origin, which is how the room's update handler
 * tells its own applies (`instanceof UpdateSource`) from edits an application makes to the doc.
 */
export class UpdateSource {
  constructor(
    readonly origin: UpdateOrigin,
    /** The member that sent the update (it is not echoed back to it); null when no member did. */
    readonly member: RoomMember | null = null,
    /** False for read-only access: `apply` answers `readOnly` and the document never changes. */
    readonly mayWrite: boolean = true,
  ) {}
}

/** The stored document being applied at load: neither stored again, relayed nor reported as a change. */
export const STORAGE_SOURCE = new UpdateSource(Object.freeze({ kind: 'storage' }))

/** Updates from other instances: stored and broadcast here, never published back to the cluster. */
export const CLUSTER_SOURCE = new UpdateSource(Object.freeze({ kind: 'cluster', instance: null }))

/** Why a room refused an update it was sent (the label of weft_update_refusals_total). */
export type RefusalReason = 'too_deep' | 'missing_dependencies' | 'rejected_by_yjs'

/**
 * What `Room.apply` did with an update. Each protocol maps it to its own wire answer.
 * - `applied`: in the document, broadcast and relayed; `durable` resolves once what it changed is
 *   in storage (for an update that changed nothing, once what is pending for the room is) and
 *   rejects when it could not be stored. Read it only when the answer waits for storage.
 * - `readOnly`: the sender may not write; `changesDocument` is false for an update that only
 *   repeats what the room has (a read-only client's sync step 2), which is harmless.
 * - `tooLarge`: the document would grow past --max-document-bytes.
 * - `refused`: not applied for its shape (`too_deep`, `missing_dependencies`), because Yjs threw
 *   (`rejected_by_yjs`: the room has been reset and reloads from storage), or because the room
 *   is no longer loaded (`unavailable`).
 */
export type ApplyOutcome =
  | { readonly kind: 'applied'; readonly durable: Promise<void> }
  | { readonly kind: 'readOnly'; readonly changesDocument: boolean }
  | { readonly kind: 'tooLarge' }
  | { readonly kind: 'refused'; readonly reason: RefusalReason | 'unavailable'; readonly message: string }

/**
 * An update Yjs threw on, or one the room refused for its shape, inside the room. `Room.apply`
 * turns it into a `refused` outcome; it never reaches a protocol.
 */
export class UpdateRefusedError extends Error {
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message)
    this.name = 'UpdateRefusedError'
  }
}
