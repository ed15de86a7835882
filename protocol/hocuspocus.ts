/**
 * The Hocuspocus wire protocol, as spoken by the stock `@hocuspocus/provider` 4.8.
 *
 * Frame layout. Every document frame is `varString name, varuint type, payload`. The only
 * exceptions are the connection-level keep-alives: a Ping is the single byte 0x09 and a Pong
 * the single byte 0x0a, with no name. They cannot be confused with a document frame, whose
 * shortest form (empty name, type) is already two bytes.
 *
 *   type  name                 payload
 *   0     Sync                 y-protocols sync message: varuint 0|1|2, varUint8Array
 *   1     Awareness            varUint8Array awareness update
 *   2     Auth                 varuint 0 Token (varString token [, varString provider version])
 *                              varuint 1 PermissionDenied (varString reason)
 *                              varuint 2 Authenticated (varString 'readonly' | 'read-write')
 *                              server -> client Token has no string: it asks the provider to
 *                              send its token again
 *   3     QueryAwareness       nothing; the peer answers with its full awareness state
 *   4     SyncReply            as Sync, but the receiving server must not answer a step 1 with
 *                              its own step 1. Server-to-server only: the provider neither
 *                              sends nor understands it (it logs "unknown type")
 *   5     Stateless            varString payload
 *   6     BroadcastStateless   varString payload; unknown to the provider, accepted inbound only
 *   7     CLOSE                client -> server: nothing (the provider detached this document)
 *                              server -> client: varString reason
 *   8     SyncStatus           server -> client only: lib0 varint, 1 = applied, 0 = refused
 *   9     Ping                 server -> client, bare byte 0x09
 *   10    Pong                 client -> server, bare byte 0x0a
 *
 * Handshake, per document (HocuspocusProvider.onOpen / startSync):
 *   1. On socket open (or on attach to an already open socket) the provider sends Auth Token
 *      (`""` when it has no token; v4 appends its version string), then, without waiting for
 *      any answer, Sync step 1 and, if its local awareness state is set, one Awareness frame.
 *      The server therefore has to queue or drop the document's frames until authentication
 *      has finished; the provider never waits for `Authenticated`.
 *   2. The server answers Auth Authenticated(scope) or Auth PermissionDenied(reason). The
 *      provider only records these (`isAuthenticated`, `authorizedScope`, events
 *      `authenticated` / `authenticationFailed`); a denial does not close anything.
 *   3. For the client's step 1 the server sends Sync step 2 and then its own Sync step 1, both
 *      with type 0. The provider emits `synced` on the first step 2 it receives.
 *   4. The provider answers the server's step 1 with a Sync step 2 (type 0). The server acks it
 *      with SyncStatus(1): startSync set the provider's unsynced-change counter to 1, and this
 *      ack is what brings it back to 0. Every later local update increments the counter and
 *      must be acked by SyncStatus(1) too; SyncStatus(0) leaves it alone. When the counter
 *      reaches 0 the provider also sets `synced`.
 *   5. From then on: Sync update frames both ways, Awareness both ways, Stateless both ways.
 *
 * Readonly scope: the provider stores it and reports it, nothing more. It keeps applying local
 * edits and sending them, so the server must refuse them; Hocuspocus answers SyncStatus(0) to a
 * refused update, and SyncStatus(1) to a step 2 that holds nothing new, without which a
 * readonly provider would report unsynced changes forever.
 *
 * Shared socket: one HocuspocusProviderWebsocket carries many providers. It routes each
 * incoming frame by its exact name string (the first varString) and drops frames whose name no
 * provider is attached under, so the server must echo the name byte for byte. Detaching a
 * provider sends CLOSE for its name; the socket stays open for the others.
 * With `sessionAwareness: true` the name is `documentName + "\0" + sessionId` (sessionId is a
 * random base-36 string per provider instance), so two providers of the same document can share
 * one socket. The server routes to the room by the part before the first NUL and keeps one
 * session per full key; every reply must carry the full key. Off by default.
 *
 * Server CLOSE frame: the provider runs its close handling for that document only (marks it
 * not authenticated and not synced, drops remote awareness states, emits `close` with code 1000
 * and the reason), but it stays attached and does not resync until the socket reconnects.
 * WebSocket close codes, 4401 and 4403 included, are not interpreted: every provider on the
 * socket goes through the same close handling and the socket reconnects after `delay`
 * (or, if no frame had arrived on it yet, through the retry backoff), forever by default.
 * The socket counts as connected only once a first frame arrives, and it closes itself after
 * `messageReconnectTimeout` (30 s) without any frame, so the server must send something
 * (awareness or Ping) more often than that.
 */
import { ByteReader } from './byte-reader.js'
import { ProtocolError } from './errors.js'
import { varUintSize, writeVarUint } from './varuint-writer.js'

/** The provider's `MessageType` enum, plus the server-only SyncReply (4) and BroadcastStateless (6). */
export const HocuspocusMessageType = {
  sync: 0,
  awareness: 1,
  auth: 2,
  queryAwareness: 3,
  syncReply: 4,
  stateless: 5,
  broadcastStateless: 6,
  close: 7,
  syncStatus: 8,
  ping: 9,
  pong: 10
} as const

const SyncType = { step1: 0, step2: 1, update: 2 } as const
/** @hocuspocus/common `AuthMessageType`. */
const AuthType = { token: 0, permissionDenied: 1, authenticated: 2 } as const

/** Separator of @hocuspocus/common's routing key `documentName\0sessionId`. */
const SESSION_SEPARATOR = '\0'

export type HocuspocusScope = 'readonly' | 'read-write'

/**
 * A client -> server message. `document` is the name field exactly as sent, which with
 * `sessionAwareness` is the routing key `name\0session`; replies must carry it unchanged.
 */
export type HocuspocusMessage =
  | { kind: 'sync-step-1'; document: string; stateVector: Uint8Array; reply: boolean }
  | { kind: 'sync-step-2'; document: string; update: Uint8Array; reply: boolean }
  | { kind: 'sync-update'; document: string; update: Uint8Array; reply: boolean }
  | { kind: 'awareness'; document: string; update: Uint8Array }
  | { kind: 'query-awareness'; document: string }
  /** `providerVersion` is the string provider v4 appends; null when the frame has none. */
  | { kind: 'auth-token'; document: string; token: string; providerVersion: string | null }
  | { kind: 'stateless'; document: string; payload: string }
  | { kind: 'broadcast-stateless'; document: string; payload: string }
  | { kind: 'close'; document: string }
  /** Connection-level keep-alives: these frames carry no document name. */
  | { kind: 'ping' }
  | { kind: 'pong' }

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
const textEncoder = new TextEncoder()

const PING_FRAME = HocuspocusMessageType.ping
const PONG_FRAME = HocuspocusMessageType.pong

/**
 * Decodes one client -> server frame; it must hold exactly one message. Payloads are views into
 * `frame`. Only the framing is checked: Yjs updates and awareness updates are the caller's to
 * validate. Types a client never sends (Auth PermissionDenied / Authenticated, SyncStatus, a
 * named Ping or Pong) are refused with 1002.
 */
export function decodeHocuspocusMessage (frame: Uint8Array): HocuspocusMessage {
  const keepAlive = readKeepAlive(frame)
  if (keepAlive !== null) return keepAlive
  const reader = new ByteReader(frame, 1002)
  const document = readText(reader, 'document name')
  const message = readMessage(reader, document)
  reader.expectEnd(message.kind)
  return message
}

/**
 * Reads only the name, for routing before full decoding. Returns null for the connection-level
 * Ping and Pong frames, which have none. Throws ProtocolError like the full decoder.
 */
export function peekDocumentName (frame: Uint8Array): string | null {
  if (readKeepAlive(frame) !== null) return null
  return readText(new ByteReader(frame, 1002), 'document name')
}

/** Splits a name field into the document and, for `sessionAwareness` providers, the session. */
export function parseHocuspocusRoutingKey (key: string): { documentName: string; sessionId: string | null } {
  const at = key.indexOf(SESSION_SEPARATOR)
  if (at === -1) return { documentName: key, sessionId: null }
  return { documentName: key.slice(0, at), sessionId: key.slice(at + 1) }
}

function readKeepAlive (frame: Uint8Array): { kind: 'ping' } | { kind: 'pong' } | null {
  if (frame.length !== 1) return null
  if (frame[0] === PING_FRAME) return { kind: 'ping' }
  if (frame[0] === PONG_FRAME) return { kind: 'pong' }
  return null
}

function readMessage (reader: ByteReader, document: string): HocuspocusMessage {
  const type = reader.readVarUint()
  switch (type) {
    case HocuspocusMessageType.sync:
    case HocuspocusMessageType.syncReply: {
      const reply = type === HocuspocusMessageType.syncReply
      const syncType = reader.readVarUint()
      switch (syncType) {
        case SyncType.step1: return { kind: 'sync-step-1', document, stateVector: reader.readVarBytes(), reply }
        case SyncType.step2: return { kind: 'sync-step-2', document, update: reader.readVarBytes(), reply }
        case SyncType.update: return { kind: 'sync-update', document, update: reader.readVarBytes(), reply }
        default: return reader.fail(`unknown sync message type ${syncType}`)
      }
    }
    case HocuspocusMessageType.awareness:
      return { kind: 'awareness', document, update: reader.readVarBytes() }
    case HocuspocusMessageType.auth: {
      const authType = reader.readVarUint()
      if (authType !== AuthType.token) reader.fail(`auth message type ${authType} is not sent by clients`)
      const token = readText(reader, 'token')
      // Providers before v4 end the frame after the token; v4 appends its version.
      const providerVersion = reader.remaining > 0 ? readText(reader, 'provider version') : null
      return { kind: 'auth-token', document, token, providerVersion }
    }
    case HocuspocusMessageType.queryAwareness:
      return { kind: 'query-awareness', document }
    case HocuspocusMessageType.stateless:
      return { kind: 'stateless', document, payload: readText(reader, 'stateless payload') }
    case HocuspocusMessageType.broadcastStateless:
      return { kind: 'broadcast-stateless', document, payload: readText(reader, 'stateless payload') }
    case HocuspocusMessageType.close:
      return { kind: 'close', document }
    default:
      return reader.fail(`message type ${type} is not sent by clients`)
  }
}

/**
 * A varString. Bad framing (length past the end) is 1002 from the reader; bytes that frame
 * correctly but are not UTF-8 are 1007, as RFC 6455 files inconsistent text, and as the
 * y-websocket codec does for its auth reason. lib0 would throw on them in the peer, too.
 */
function readText (reader: ByteReader, what: string): string {
  const bytes = reader.readVarBytes()
  try {
    return utf8.decode(bytes)
  } catch {
    throw new ProtocolError(1007, `${what} is not valid UTF-8 at byte ${reader.offset - bytes.length}`)
  }
}

/**
 * `varString name, type, [subType], varUint8Array payload...`, written into one exactly sized
 * array. Every type and sub-type is below 128, so each is one byte. A varString is a
 * varUint8Array of UTF-8, so strings go in as encoded payloads.
 */
function documentFrame (document: string, prefix: readonly number[], ...payloads: Uint8Array[]): Uint8Array {
  const name = textEncoder.encode(document)
  let size = varUintSize(name.length) + name.length + prefix.length
  for (const payload of payloads) size += varUintSize(payload.length) + payload.length
  const frame = new Uint8Array(size)
  let pos = writeVarUint(frame, 0, name.length)
  frame.set(name, pos)
  pos += name.length
  frame.set(prefix, pos)
  pos += prefix.length
  for (const payload of payloads) {
    pos = writeVarUint(frame, pos, payload.length)
    frame.set(payload, pos)
    pos += payload.length
  }
  return frame
}

// Sync, Awareness, QueryAwareness and Stateless frames have the same bytes in both directions,
// so the encoders below serve the server and, in tests and benchmarks, the client.

export function encodeHocuspocusSyncStep1 (document: string, stateVector: Uint8Array): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.sync, SyncType.step1], stateVector)
}

export function encodeHocuspocusSyncStep2 (document: string, update: Uint8Array): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.sync, SyncType.step2], update)
}

/** What comes before a sync step 2's update (as var-bytes) for `document`, as SYNC_STEP2_PREFIX for y-websocket. */
export function hocuspocusSyncStep2Prefix (document: string): Uint8Array {
  const frame = documentFrame(document, [HocuspocusMessageType.sync, SyncType.step2], new Uint8Array(0))
  // The empty update's length, one 0 byte, ends the frame.
  return frame.subarray(0, frame.length - 1)
}

/** What precedes the awareness update (as var-bytes) in `document`'s Awareness frame. */
export function hocuspocusAwarenessPrefix (document: string): Uint8Array {
  const frame = documentFrame(document, [HocuspocusMessageType.awareness], new Uint8Array(0))
  return frame.subarray(0, frame.length - 1)
}

export function encodeHocuspocusSyncUpdate (document: string, update: Uint8Array): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.sync, SyncType.update], update)
}

export function encodeHocuspocusAwareness (document: string, awarenessUpdate: Uint8Array): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.awareness], awarenessUpdate)
}

/** Asks the peer for its full awareness state; the provider answers with an Awareness frame. */
export function encodeHocuspocusQueryAwareness (document: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.queryAwareness])
}

export function encodeHocuspocusStateless (document: string, payload: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.stateless], textEncoder.encode(payload))
}

// Server -> client only.

export function encodeHocuspocusAuthenticated (document: string, scope: HocuspocusScope): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.auth, AuthType.authenticated], textEncoder.encode(scope))
}

export function encodeHocuspocusPermissionDenied (document: string, reason: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.auth, AuthType.permissionDenied], textEncoder.encode(reason))
}

/** Auth Token without a string: the provider answers by sending its token again. */
export function encodeHocuspocusTokenRequest (document: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.auth, AuthType.token])
}

/**
 * The provider reads the flag as a lib0 signed varint and compares it with 1; 0 and 1 are the
 * same single byte as varint and varuint, which is what Hocuspocus writes.
 */
export function encodeHocuspocusSyncStatus (document: string, applied: boolean): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.syncStatus, applied ? 1 : 0])
}

/** The provider reports it as a close event with code 1000 and this reason, for this document only. */
export function encodeHocuspocusClose (document: string, reason: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.close], textEncoder.encode(reason))
}

/** Connection-level; the provider answers with a bare Pong. */
export function encodeHocuspocusPing (): Uint8Array {
  return Uint8Array.of(PING_FRAME)
}

// Client -> server only, for tests and benchmarks.

/** `providerVersion` is what provider v4 appends after the token; omit it for the older form. */
export function encodeHocuspocusClientAuthToken (document: string, token: string, providerVersion?: string): Uint8Array {
  const prefix = [HocuspocusMessageType.auth, AuthType.token]
  if (providerVersion === undefined) return documentFrame(document, prefix, textEncoder.encode(token))
  return documentFrame(document, prefix, textEncoder.encode(token), textEncoder.encode(providerVersion))
}

export function encodeHocuspocusClientBroadcastStateless (document: string, payload: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.broadcastStateless], textEncoder.encode(payload))
}

/** Sent by the provider when it detaches from a shared socket. */
export function encodeHocuspocusClientClose (document: string): Uint8Array {
  return documentFrame(document, [HocuspocusMessageType.close])
}

export function encodeHocuspocusClientPong (): Uint8Array {
  return Uint8Array.of(PONG_FRAME)
}
