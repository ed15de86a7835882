import { ByteReader } from './byte-reader.js'
import { ProtocolError } from './errors.js'
import { assertVarUint, framePayload, varUintSize, writeVarUint } from './varuint-writer.js'

/** Outer message types of the y-websocket protocol (y-protocols). */
export const MessageType = { sync: 0, awareness: 1, auth: 2, queryAwareness: 3 } as const

/**
 * weft's own outer message types on a y-websocket connection: `stored`, the acknowledgement weft
 * sends only on connections that asked for it with `?weft-saved=1` (stock y-websocket clients
 * never see it). 100 is far from the types y-protocols and Hocuspocus use, and still a one-byte
 * varuint.
 */
export const WeftMessageType = { stored: 100 } as const

/** The query parameter (value `1`) with which a y-websocket connection asks for `stored` acknowledgements. */
export const SAVED_ACKS_PARAM = 'weft-saved'

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

const SyncType = { step1: 0, step2: 1, update: 2 } as const
const AuthType = { permissionDenied: 0 } as const

export type YMessage =
  | { kind: 'sync-step-1'; stateVector: Uint8Array }
  | { kind: 'sync-step-2'; update: Uint8Array }
  | { kind: 'sync-update'; update: Uint8Array }
  | { kind: 'awareness'; update: Uint8Array }
  | { kind: 'auth-denied'; reason: string }
  | { kind: 'query-awareness' }
  /** weft only: the first `count` update frames (sync step 2 and update) this connection sent are in storage. */
  | { kind: 'weft-stored'; count: number }

/**
 * Decodes one WebSocket frame. The frame must hold exactly one message: y-websocket sends one
 * per frame, so leftover bytes mean a broken or hostile peer. Payloads are views into `frame`;
 * copy them if they must outlive it. Only the framing is checked here; the server validates
 * the Yjs or awareness payload itself.
 */
export function decodeYMessage (frame: Uint8Array): YMessage {
  const reader = new ByteReader(frame, 1002)
  const message = readMessage(reader)
  reader.expectEnd(message.kind)
  return message
}

function readMessage (reader: ByteReader): YMessage {
  const type = reader.readVarUint()
  switch (type) {
    case MessageType.sync: {
      const syncType = reader.readVarUint()
      switch (syncType) {
        case SyncType.step1: return { kind: 'sync-step-1', stateVector: reader.readVarBytes() }
        case SyncType.step2: return { kind: 'sync-step-2', update: reader.readVarBytes() }
        case SyncType.update: return { kind: 'sync-update', update: reader.readVarBytes() }
        default: return reader.fail(`unknown sync message type ${syncType}`)
      }
    }
    case MessageType.awareness:
      return { kind: 'awareness', update: reader.readVarBytes() }
    case MessageType.auth: {
      const authType = reader.readVarUint()
      if (authType !== AuthType.permissionDenied) reader.fail(`unknown auth message type ${authType}`)
      return { kind: 'auth-denied', reason: readReason(reader) }
    }
    case MessageType.queryAwareness:
      return { kind: 'query-awareness' }
    case WeftMessageType.stored:
      return { kind: 'weft-stored', count: reader.readVarUint() }
    default:
      return reader.fail(`unknown message type ${type}`)
  }
}

function readReason (reader: ByteReader): string {
  const bytes = reader.readVarBytes()
  try {
    return utf8.decode(bytes)
  } catch {
    // The frame parsed; only its text is bad, which RFC 6455 files under 1007.
    throw new ProtocolError(1007, 'auth reason is not valid UTF-8')
  }
}

export function encodeSyncStep1 (stateVector: Uint8Array): Uint8Array {
  return framePayload([MessageType.sync, SyncType.step1], stateVector)
}

/** What comes before a sync step 2's update (as var-bytes): the room frames big replies itself (server/framed-state.ts). */
export const SYNC_STEP2_PREFIX: Uint8Array = Uint8Array.of(MessageType.sync, SyncType.step2)

/** What precedes the awareness update (as var-bytes) in an awareness message. */
export const AWARENESS_PREFIX: Uint8Array = Uint8Array.of(MessageType.awareness)

export function encodeSyncStep2 (update: Uint8Array): Uint8Array {
  return framePayload(SYNC_STEP2_PREFIX, update)
}

export function encodeSyncUpdate (update: Uint8Array): Uint8Array {
  return framePayload([MessageType.sync, SyncType.update], update)
}

export function encodeAwareness (awarenessUpdate: Uint8Array): Uint8Array {
  return framePayload([MessageType.awareness], awarenessUpdate)
}

export function encodeQueryAwareness (): Uint8Array {
  return Uint8Array.of(MessageType.queryAwareness)
}

export function encodePermissionDenied (reason: string): Uint8Array {
  return framePayload([MessageType.auth, AuthType.permissionDenied], new TextEncoder().encode(reason))
}

/**
 * [100, varuint count]: every update frame (sync step 2 or sync update) the connection has sent,
 * up to and including the `count`-th, is in storage. Cumulative, so a lost or coalesced one costs
 * nothing; `count` never goes down on one connection and restarts at 0 with the next.
 */
export function encodeWeftStored (count: number): Uint8Array {
  assertVarUint(count, 'stored count')
  const frame = new Uint8Array(1 + varUintSize(count))
  frame[0] = WeftMessageType.stored
  writeVarUint(frame, 1, count)
  return frame
}
