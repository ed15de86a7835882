import type * as Y from 'yjs'
import type { UpdateOrigin } from './hooks.js'
import type { Logger } from './logger.js'
import type { Room } from './room.js'

/**
 * What rooms tell the application about their documents: the sink the hook runner (timeouts,
 * failure counting) implements and hands to the RoomRegistry. The room guards every call anyway:
 * a sink that throws or rejects is logged, and the edit, the room and its members carry on.
 */
export interface RoomEvents {
  /** An update was applied, stored-to-be, relayed and broadcast; every origin but `storage`. Not awaited. */
  changed(room: Room, update: Uint8Array, origin: UpdateOrigin): void | Promise<void>
  /** A write of the room reached storage (once per storage batch, not per update). Not awaited. */
  stored(room: Room): void | Promise<void>
  /**
   * The stored document (and the cluster's) has been applied; no member has synced yet. Awaited:
   * edits made to `doc` here (seeding a new document) are stored, relayed and in every member's
   * first sync. Bounding its time is the sink's job.
   */
  loaded(room: Room, doc: Y.Doc): Promise<void>
  /** The room left memory after its last write was stored (or its document was deleted). Not awaited. */
  unloaded(room: Room): void | Promise<void>
}

/** The default: nobody listens. */
export const NO_ROOM_EVENTS: RoomEvents = Object.freeze({
  changed() {},
  stored() {},
  loaded: () => Promise.resolve(),
  unloaded() {},
})

/** Calls a sink method that is not awaited; a throw or a rejection is logged and goes no further. */
export function notify(log: Logger, room: string, event: keyof RoomEvents, call: () => void | Promise<void>): void {
  try {
    const result = call()
    if (result !== undefined) Promise.resolve(result).catch((err: unknown) => log.error({ room, event, err }, 'room event handler failed'))
  } catch (err) {
    log.error({ room, event, err }, 'room event handler failed')
  }
}
