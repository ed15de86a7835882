/**
 * The body of a merge worker thread (crdt/merge-pool.ts): merges the updates it is sent into one
 * encoded state with the same function the main thread uses, so the bytes are the same either
 * way, and hands the result back without copying it.
 */
import { parentPort } from 'node:worker_threads'
import { mergeUpdatesIntoState } from './chunked-merge.js'
import type { MergeJob, MergeReply } from './merge-pool.js'

const port = parentPort
if (port === null) throw new Error('crdt/merge-worker.js runs as a worker thread')

port.on('message', (job: MergeJob) => {
  mergeUpdatesIntoState(job.updates).then(
    (state) => port.postMessage({ id: job.id, ok: true, state } satisfies MergeReply, [state.buffer as ArrayBuffer]),
    (err: unknown) => port.postMessage({ id: job.id, ok: false, message: err instanceof Error ? err.message : String(err) } satisfies MergeReply),
  )
})
