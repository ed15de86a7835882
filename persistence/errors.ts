/**
 * Errors persistence hands to its callers. Each has a stable `code` so the server can map it
 * (to a log line, a close code or an HTTP status) without matching message text.
 */

/** The room name cannot be stored: empty, over 512 bytes of UTF-8, or containing a control character. */
export class InvalidRoomNameError extends Error {
  readonly code = 'PERSIST_INVALID_ROOM_NAME'
  constructor(room: string) {
    super(`not a storable room name: ${JSON.stringify(room.slice(0, 64))}`)
  }
}

/** A write that was not yet durable when the writer was closed with a deadline that expired. */
export class WriterClosedError extends Error {
  readonly code = 'PERSIST_WRITER_CLOSED'
  constructor(room?: string) {
    super(room === undefined ? 'document writer is closed' : `document writer closed before room ${room} was saved`)
  }
}

/** A write that was still queued when its room was deleted; the deletion superseded it. */
export class RoomDeletedError extends Error {
  readonly code = 'PERSIST_ROOM_DELETED'
  constructor(room: string) {
    super(`room ${room} was deleted before this write was stored`)
  }
}

/** Bytes passed to `write` that are not a Yjs v1 update; storing them would break every later load. */
export class InvalidUpdateError extends Error {
  readonly code = 'PERSIST_INVALID_UPDATE'
  constructor(room: string, cause: unknown) {
    super(`room ${room}: not a valid Yjs update`, { cause })
  }
}

/** A store method called after `close()`. */
export class StoreClosedError extends Error {
  readonly code = 'PERSIST_STORE_CLOSED'
  constructor() {
    super('store is closed')
  }
}

/** A version refused because its room already holds as many versions, or as many bytes of them, as allowed. */
export class VersionLimitError extends Error {
  readonly code = 'PERSIST_VERSION_LIMIT'
  constructor(
    readonly limit: 'count' | 'bytes',
    room: string,
    detail: string,
  ) {
    super(`room ${JSON.stringify(room.slice(0, 64))} ${detail}`)
  }
}
