import { ByteReader } from './byte-reader.js'
import { assertVarUint, varUintSize, writeVarUint } from './varuint-writer.js'

/** One client's entry in a y-protocols awareness update. */
export interface AwarenessEntry {
  clientId: number
  clock: number
  /** The JSON text exactly as received; `"null"` means the client is gone. */
  state: string
}

const DEFAULT_MAX_STATE_BYTES = 1024 * 1024
// clientID (1) + clock (1) + string length (1) + the shortest JSON text, e.g. `0` (1).
const MIN_ENTRY_BYTES = 4

/** A state's JSON text; text that is not JSON would make y-protocols' JSON.parse throw, so it fails the update. */
function readState (reader: ByteReader, clientId: number, stateBytes: number): string {
  const state = reader.readString(stateBytes)
  try {
    JSON.parse(state)
  } catch {
    reader.fail(`awareness state of client ${clientId} is not valid JSON`)
  }
  return state
}

/**
 * Decodes and checks an awareness update the way y-protocols' applyAwarenessUpdate reads it,
 * so that an update accepted here cannot make that function throw halfway through its loop.
 * States are kept as text: the server forwards them, it does not need their values.
 */
export function decodeAwarenessUpdate (update: Uint8Array, maxStateBytes = DEFAULT_MAX_STATE_BYTES): AwarenessEntry[] {
  const reader = new ByteReader(update, 1007)
  const count = reader.readCount(MIN_ENTRY_BYTES, 'awareness entry')
  const entries: AwarenessEntry[] = []
  for (let i = 0; i < count; i++) {
    const clientId = reader.readVarUint()
    const clock = reader.readVarUint()
    const stateBytes = reader.readVarUint()
    if (stateBytes > maxStateBytes) reader.fail(`awareness state of ${stateBytes} bytes exceeds ${maxStateBytes}`)
    entries.push({ clientId, clock, state: readState(reader, clientId, stateBytes) })
  }
  reader.expectEnd('awareness update')
  return entries
}

export interface AwarenessReadLimits {
  /** Entries read from one update; those after them are left unread (ignored). */
  maxEntriesPerMessage: number
  /** A state longer than this (UTF-8 bytes) is skipped unread and counted, not an error. */
  maxStateBytes: number
}

export interface AwarenessRead {
  entries: AwarenessEntry[]
  /** Entries the update declares past `maxEntriesPerMessage`, never read. */
  unread: number
  /** Entries skipped for a state over `maxStateBytes`. */
  oversized: number
}

/**
 * Reads what the server acts on from a client's awareness update, with bounds: at most
 * `maxEntriesPerMessage` entries are looked at (stock providers echo every state they hear, so a long
 * update is not by itself hostile; what lies past the bound is never parsed), and a state over
 * `maxStateBytes` is skipped without decoding it. The entries read are checked like
 * decodeAwarenessUpdate does; a malformed one still fails the whole update (1007).
 */
export function readAwarenessUpdate (update: Uint8Array, limits: AwarenessReadLimits): AwarenessRead {
  const reader = new ByteReader(update, 1007)
  const count = reader.readCount(MIN_ENTRY_BYTES, 'awareness entry')
  const toRead = Math.min(count, limits.maxEntriesPerMessage)
  const entries: AwarenessEntry[] = []
  let oversized = 0
  for (let i = 0; i < toRead; i++) {
    const clientId = reader.readVarUint()
    const clock = reader.readVarUint()
    const stateBytes = reader.readVarUint()
    if (stateBytes > limits.maxStateBytes) {
      reader.readBytes(stateBytes)
      oversized++
      continue
    }
    entries.push({ clientId, clock, state: readState(reader, clientId, stateBytes) })
  }
  if (toRead === count) reader.expectEnd('awareness update')
  return { entries, unread: count - toRead, oversized }
}

/** Byte-compatible with y-protocols' encodeAwarenessUpdate; states are written as given. */
export function encodeAwarenessUpdate (entries: readonly AwarenessEntry[]): Uint8Array {
  const encoder = new TextEncoder()
  const states = entries.map(entry => encoder.encode(entry.state))
  let size = varUintSize(entries.length)
  entries.forEach((entry, i) => {
    assertVarUint(entry.clientId, 'clientId')
    assertVarUint(entry.clock, 'clock')
    const stateLength = states[i]?.length ?? 0
    size += varUintSize(entry.clientId) + varUintSize(entry.clock) + varUintSize(stateLength) + stateLength
  })
  const out = new Uint8Array(size)
  let pos = writeVarUint(out, 0, entries.length)
  entries.forEach((entry, i) => {
    const state = states[i] ?? new Uint8Array(0)
    pos = writeVarUint(out, pos, entry.clientId)
    pos = writeVarUint(out, pos, entry.clock)
    pos = writeVarUint(out, pos, state.length)
    out.set(state, pos)
    pos += state.length
  })
  return out
}
