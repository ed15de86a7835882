export { ProtocolError } from './errors.js'
export { CloseCode, HttpError } from './codes.js'
export type { CloseCodeValue, HttpErrorCode } from './codes.js'
export {
  MessageType,
  SAVED_ACKS_PARAM,
  WeftMessageType,
  decodeYMessage,
  encodeAwareness,
  encodePermissionDenied,
  encodeQueryAwareness,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate,
  encodeWeftStored
} from './ywebsocket.js'
export type { YMessage } from './ywebsocket.js'
export { decodeAwarenessUpdate, encodeAwarenessUpdate, readAwarenessUpdate } from './awareness.js'
export type { AwarenessEntry, AwarenessRead, AwarenessReadLimits } from './awareness.js'
export { deepestNesting, isEmptyUpdate, validateStateVector, validateUpdate } from './update.js'
export type { NestingLookup, UpdateSummary } from './update.js'
export { MAX_ROOM_NAME_BYTES, isValidRoomName, pathOfTarget, roomFromPath } from './room-name.js'
export {
  HocuspocusMessageType,
  decodeHocuspocusMessage,
  peekDocumentName,
  parseHocuspocusRoutingKey,
  encodeHocuspocusSyncStep1,
  encodeHocuspocusSyncStep2,
  encodeHocuspocusSyncUpdate,
  encodeHocuspocusAwareness,
  encodeHocuspocusQueryAwareness,
  encodeHocuspocusStateless,
  encodeHocuspocusAuthenticated,
  encodeHocuspocusPermissionDenied,
  encodeHocuspocusTokenRequest,
  encodeHocuspocusSyncStatus,
  encodeHocuspocusClose,
  encodeHocuspocusPing,
  encodeHocuspocusClientAuthToken,
  encodeHocuspocusClientBroadcastStateless,
  encodeHocuspocusClientClose,
  encodeHocuspocusClientPong
} from './hocuspocus.js'
export type { HocuspocusMessage, HocuspocusScope } from './hocuspocus.js'
