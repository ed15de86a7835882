/**
 * The client side of the two wire dialects the load generator speaks, and nothing else: frames
 * from bytes and back. y-websocket is one message per frame (y-protocols); Hocuspocus prefixes
 * every message with the document name and wants an Auth message before anything else is
 * answered (see @hocuspocus/server src/ClientConnection.ts and @hocuspocus/common src/auth.ts).
 */
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'

/** `relay` frames are y-websocket frames; the relay forwards them without reading them. */
export type Dialect = 'ywebsocket' | 'hocuspocus' | 'relay'

const MessageSync = 0
const MessageAwareness = 1
const MessageAuth = 2
/** Hocuspocus: like Sync, but never answered with another step 1. */
const MessageSyncReply = 4
const SyncStep1 = 0
const SyncStep2 = 1
const SyncUpdate = 2
const AuthToken = 0
const AuthAuthenticated = 2
/** Hocuspocus connection-level Ping (server -> client) and Pong: single bytes, no document name. */
const HocuspocusPing = 0x09
export const HOCUSPOCUS_PONG = Uint8Array.of(0x0a)

export type Incoming =
  | { kind: 'step1' | 'step2' | 'update'; payload: Uint8Array }
  | { kind: 'authenticated' }
  | { kind: 'other' }

export class WireCodec {
  constructor (readonly dialect: Dialect, readonly room: string) {}

  private encoder (): encoding.Encoder {
    const e = encoding.createEncoder()
    if (this.dialect === 'hocuspocus') encoding.writeVarString(e, this.room)
    return e
  }

  /** Frames a client sends when its socket opens, before it waits for the server's step 2. */
  hello (stateVector: Uint8Array): Uint8Array[] {
    if (this.dialect === 'relay') return []
    const frames: Uint8Array[] = []
    if (this.dialect === 'hocuspocus') {
      const auth = this.encoder()
      encoding.writeVarUint(auth, MessageAuth)
      encoding.writeVarUint(auth, AuthToken)
      encoding.writeVarString(auth, '')
      frames.push(encoding.toUint8Array(auth))
    }
    frames.push(this.sync(SyncStep1, stateVector))
    return frames
  }

  update (update: Uint8Array): Uint8Array {
    return this.sync(SyncUpdate, update)
  }

  step2 (update: Uint8Array): Uint8Array {
    return this.sync(SyncStep2, update)
  }

  private sync (type: number, payload: Uint8Array): Uint8Array {
    const e = this.encoder()
    encoding.writeVarUint(e, MessageSync)
    encoding.writeVarUint(e, type)
    encoding.writeVarUint8Array(e, payload)
    return encoding.toUint8Array(e)
  }

  /** An awareness update of one client ID (y-protocols' encoding: count, then ID, clock and JSON state per entry). */
  awareness (clientId: number, clock: number, state: string): Uint8Array {
    const update = encoding.createEncoder()
    encoding.writeVarUint(update, 1)
    encoding.writeVarUint(update, clientId)
    encoding.writeVarUint(update, clock)
    encoding.writeVarString(update, state)
    const e = this.encoder()
    encoding.writeVarUint(e, MessageAwareness)
    encoding.writeVarUint8Array(e, encoding.toUint8Array(update))
    return encoding.toUint8Array(e)
  }

  /** The states of an awareness frame (null when it is another message). */
  awarenessStates (frame: Uint8Array): string[] | null {
    if (frame.length < 2) return null
    const d = decoding.createDecoder(frame)
    if (this.dialect === 'hocuspocus') decoding.readVarString(d)
    if (decoding.readVarUint(d) !== MessageAwareness) return null
    const update = decoding.createDecoder(decoding.readVarUint8Array(d))
    const states: string[] = []
    for (let n = decoding.readVarUint(update); n > 0; n--) {
      decoding.readVarUint(update)
      decoding.readVarUint(update)
      states.push(decoding.readVarString(update))
    }
    return states
  }

  /** Whether a frame is an awareness message, reading only its type. */
  isAwareness (frame: Uint8Array): boolean {
    if (frame.length < 2) return false
    const d = decoding.createDecoder(frame)
    if (this.dialect === 'hocuspocus') {
      const nameLength = decoding.readVarUint(d)
      d.pos += nameLength
    }
    return decoding.readVarUint(d) === MessageAwareness
  }

  /** Hocuspocus keep-alive: weft's Hocuspocus path may send the bare byte 0x09 (no document name). */
  isPing (frame: Uint8Array): boolean {
    return this.dialect === 'hocuspocus' && frame.length === 1 && frame[0] === HocuspocusPing
  }

  /** Reads just enough of a frame to classify it; `payload` is a view into `frame`. */
  decode (frame: Uint8Array): Incoming {
    if (frame.length < 2) return { kind: 'other' }
    const d = decoding.createDecoder(frame)
    const kind = this.readKind(d)
    if (kind === 'step1' || kind === 'step2' || kind === 'update') return { kind, payload: decoding.readVarUint8Array(d) }
    return { kind }
  }

  /**
   * The kind of a message from its first bytes: a prefix of a long message is enough (the load
   * worker's light clients keep only the prefix of a sync reply; bench/light-socket.ts).
   */
  kind (prefix: Uint8Array): Incoming['kind'] {
    return prefix.length < 2 ? 'other' : this.readKind(decoding.createDecoder(prefix))
  }

  /** Reads a message's types; a sync message's payload is next. */
  private readKind (d: decoding.Decoder): Incoming['kind'] {
    if (this.dialect === 'hocuspocus') decoding.readVarString(d)
    const type = decoding.readVarUint(d)
    if (type === MessageSync || type === MessageSyncReply) {
      const sub = decoding.readVarUint(d)
      if (sub === SyncStep1) return 'step1'
      if (sub === SyncStep2) return 'step2'
      if (sub === SyncUpdate) return 'update'
      return 'other'
    }
    if (type === MessageAuth && decoding.readVarUint(d) === AuthAuthenticated) return 'authenticated'
    return 'other'
  }

  /**
   * How many writer updates a frame carries, without copying it: 0 when it is no sync update. A
   * server may merge a burst into one update (one message per frame still); every update a writer
   * sends is one struct (a Y.Map set), so a merged update of one writer carries its struct count.
   */
  updateCount (frame: Uint8Array): number {
    if (frame.length < 3) return 0
    const d = decoding.createDecoder(frame)
    if (this.dialect === 'hocuspocus') {
      const nameLength = decoding.readVarUint(d)
      d.pos += nameLength
    }
    if (decoding.readVarUint(d) !== MessageSync || decoding.readVarUint(d) !== SyncUpdate) return 0
    const length = decoding.readVarUint(d)
    return countUpdates(frame.subarray(d.pos, d.pos + length))
  }
}

/** Writer updates in an update: the struct count of its only client group, else its structs but skips. */
export function countUpdates (update: Uint8Array): number {
  const d = decoding.createDecoder(update)
  if (decoding.readVarUint(d) === 1) return decoding.readVarUint(d)
  return readLive(update).structs
}

/** What a tracker reads of a live update: its structs (skips aside) and the send times (`t`) of its Y.Map sets. */
export function readLive (update: Uint8Array): { structs: number, times: number[] } {
  const times: number[] = []
  let structs = 0
  for (const struct of Y.decodeUpdate(update).structs) {
    if (struct instanceof Y.Skip) continue
    structs++
    if (!(struct instanceof Y.Item) || !(struct.content instanceof Y.ContentAny)) continue
    const value = struct.content.arr[0] as { t?: unknown } | undefined
    if (typeof value?.t === 'number') times.push(value.t)
  }
  return { structs, times }
}

/** The path a client connects to: Hocuspocus serves every document on one path. */
export function socketUrl (dialect: Dialect, port: number, room: string): string {
  if (dialect === 'hocuspocus') return `ws://127.0.0.1:${port}/`
  return `ws://127.0.0.1:${port}/${encodeURIComponent(room)}`
}
