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
    const state = reader.readString(stateBytes)
    try {
      JSON.parse(state)
    } catch {
      reader.fail(`awareness state of client ${clientId} is not valid JSON`)
    }
    entries.push({ clientId, clock, state })
  }
  reader.expectEnd('awareness update')
  return entries
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
