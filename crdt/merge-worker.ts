/**
 * The body of a merge worker thread (crdt/merge-pool.ts). Two requests:
 * - `buffer`: allocate a SharedArrayBuffer and touch every page of it here, so the main thread
 *   copies a job's updates into memory that is already mapped (first-touch page faults of a
 *   20 MB buffer cost ~100-200 ms on a virtual machine, which must not be the event loop's);
 * - `merge`: merge the updates laid out in it with the same function the main thread uses, so
 *   the bytes are the same either way, and hand the result back without copying it.
 */
import { setPriority } from 'node:os'
import { parentPort } from 'node:worker_threads'
import { mergeUpdatesIntoState } from './chunked-merge.js'
import type { MergeReply, MergeRequest } from './merge-pool.js'

const port = parentPort
if (port === null) throw new Error('crdt/merge-worker.js runs as a worker thread')

// The lowest CPU priority, for this thread only (on Linux the nice value is per thread): on a
// core the event loop shares with it, the event loop runs first and the merge takes what is left.
try {
  setPriority(19)
} catch {
  // Not permitted or not supported: the merge runs at the process's priority.
}

port.on('message', (request: MergeRequest) => {
  if (request.type === 'buffer') {
    const shared = new SharedArrayBuffer(request.bytes)
    new Uint8Array(shared).fill(0)
    port.postMessage({ type: 'buffer', id: request.id, shared } satisfies MergeReply)
    return
  }
  const updates: Uint8Array[] = []
  let offset = 0
  for (const length of request.lengths) {
    updates.push(new Uint8Array(request.shared, offset, length))
    offset += length
  }
  mergeUpdatesIntoState(updates).then(
    (state) => port.postMessage({ type: 'merged', id: request.id, ok: true, state } satisfies MergeReply, [state.buffer as ArrayBuffer]),
    (err: unknown) => port.postMessage({ type: 'merged', id: request.id, ok: false, message: err instanceof Error ? err.message : String(err) } satisfies MergeReply),
  )
})
