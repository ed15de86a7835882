/**
 * Every WebSocket close code and HTTP error code weft uses, in one place: shared by the server and
 * the client (which decides from the close code whether to reconnect).
 * The README's tables list exactly these; test/codes.test.ts fails when the two drift apart.
 */

export const CloseCode = {
  /** Normal close. */
  normal: 1000,
  /** A frame that is not a valid y-websocket / Hocuspocus message. */
  protocolError: 1002,
  /** A message whose payload (Yjs update, awareness JSON) is malformed. */
  invalidPayload: 1007,
  /** Policy: access revoked, or a read-only write attempt that cannot be ignored. */
  policyViolation: 1008,
  /** Frame larger than --max-message-bytes. */
  messageTooBig: 1009,
  /** Internal error on the server. */
  internalError: 1011,
  /** Service restart: graceful drain. */
  serviceRestart: 1012,
  /** Try again later: overload or slow consumer. */
  tryAgainLater: 1013,
  /** Unauthenticated (Hocuspocus-compatible). */
  unauthorized: 4401,
  /** Forbidden (Hocuspocus-compatible). */
  forbidden: 4403,
  /** The document was deleted. */
  documentDeleted: 4404,
} as const

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode]

/** HTTP errors: the `error` field of the JSON body, and the status that goes with it. */
export const HttpError = {
  bad_request: 400,
  invalid_room: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  too_many_versions: 409,
  payload_too_large: 413,
  too_many_requests: 429,
  /** An update that depends on changes the document does not have (issue 12): sync, then send it again. */
  missing_dependencies: 409,
  request_timeout: 408,
  unsupported_media_type: 415,
  too_many_rooms: 429,
  internal_error: 500,
  unavailable: 503,
} as const

export type HttpErrorCode = keyof typeof HttpError
