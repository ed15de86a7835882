export { ProtocolError } from './errors.js'
export {
  MessageType,
  decodeYMessage,
  encodeAwareness,
  encodePermissionDenied,
  encodeQueryAwareness,
  encodeSyncStep1,
  encodeSyncStep2,
  encodeSyncUpdate
} from './ywebsocket.js'
export type { YMessage } from './ywebsocket.js'
export { decodeAwarenessUpdate, encodeAwarenessUpdate } from './awareness.js'
export type { AwarenessEntry } from './awareness.js'
export { isEmptyUpdate, validateUpdate } from './update.js'
export type { UpdateSummary } from './update.js'
export { MAX_ROOM_NAME_BYTES, isValidRoomName, roomFromPath } from './room-name.js'
