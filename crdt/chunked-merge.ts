import * as Y from 'yjs'

/**
 * How many updates one Y.mergeUpdates call takes before control returns to the event loop. A
 * merge of 50 small updates takes well under a millisecond; a merge of 10,000 in one call
 * would stall every socket of the process for the whole of it.
 */
export const MERGE_CHUNK_SIZE = 50

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/**
 * Y.mergeUpdates over any number of v1 updates, `chunkSize` at a time, as a tree: chunks merge
 * into partial results, which merge the same way, so each byte is re-merged log(n) times rather
 * than n times as a running accumulator would. Yields with setImmediate between chunks.
 */
export async function mergeUpdatesInChunks(updates: readonly Uint8Array[], chunkSize = MERGE_CHUNK_SIZE): Promise<Uint8Array> {
  if (updates.length === 0) throw new RangeError('nothing to merge')
  if (chunkSize < 2) throw new RangeError('chunkSize must be at least 2')
  let level: readonly Uint8Array[] = updates
  let first = true
  while (level.length > 1) {
    const next: Uint8Array[] = []
    for (let start = 0; start < level.length; start += chunkSize) {
      if (!first) await yieldToEventLoop()
      first = false
      const chunk = level.slice(start, start + chunkSize)
      next.push(chunk.length === 1 ? (chunk[0] as Uint8Array) : Y.mergeUpdates(chunk))
    }
    level = next
  }
  return level[0] as Uint8Array
}

/** How many bytes of updates are applied before control returns to the event loop. */
const APPLY_CHUNK_BYTES = 256 * 1024

/**
 * The same content as Y.mergeUpdates, but as a document's encoded state: the updates are applied
 * to a scratch Y.Doc and its state encoded. Unlike a merged update, which keeps every struct
 * of the history as it was, the state has adjacent items joined and deleted content collected,
 * so it is as small as the document and cheap to load. (A mergeUpdates result of 50,000 small
 * array pushes takes Yjs gigabytes of heap to apply; the state of the same document loads in
 * milliseconds.) Yields between chunks of about 256 KiB.
 */
export async function mergeUpdatesIntoState(updates: readonly Uint8Array[], headroom = 0): Promise<Uint8Array> {
  if (updates.length === 0) throw new RangeError('nothing to merge')
  const doc = new Y.Doc({ gc: true })
  let sinceYield = 0
  for (const update of updates) {
    Y.applyUpdate(doc, update)
    sinceYield += update.length
    if (sinceYield >= APPLY_CHUNK_BYTES) {
      sinceYield = 0
      await yieldToEventLoop()
    }
  }
  const state = Y.encodeStateAsUpdate(doc)
  doc.destroy()
  if (headroom === 0) return state
  const buffer = new Uint8Array(headroom + state.length)
  buffer.set(state, headroom)
  return markHeadroom(buffer.subarray(headroom))
}

/**
 * States made with headroom (mergeUpdatesIntoState, MergePool.mergeIntoState): bytes of their
 * ArrayBuffer in front of them that belong to nobody, so a message header can be written there
 * and the state sent as it lies instead of copied behind the header. Claimed once.
 */
const headrooms = new WeakMap<Uint8Array, number>()

/** Records that the bytes of `state`'s buffer in front of it are free: it owns its whole buffer, from offset 0. */
export function markHeadroom(state: Uint8Array): Uint8Array {
  if (state.byteOffset > 0 && state.buffer.byteLength === state.byteOffset + state.length) headrooms.set(state, state.byteOffset)
  return state
}

/**
 * `bytes` of `state`'s headroom and the state behind them, as one view, for the caller to write a
 * header into; null when it has less headroom or it was claimed already (the header of another
 * view would be overwritten).
 */
export function claimHeadroom(state: Uint8Array, bytes: number): Uint8Array | null {
  const free = headrooms.get(state)
  if (free === undefined || free < bytes) return null
  headrooms.delete(state)
  return new Uint8Array(state.buffer, state.byteOffset - bytes, bytes + state.length)
}
