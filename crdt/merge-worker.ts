/**
 * The body of a merge worker thread (crdt/merge-pool.ts): merges the updates with the same
 * function the main thread uses, so the bytes are the same either way.
 */
import { mergeUpdatesIntoState } from './chunked-merge.js'
import { serveJobs } from './worker-pool.js'

serveJobs(async (updates, task) => ({ result: await mergeUpdatesIntoState(updates, (task as { headroom?: number } | null)?.headroom ?? 0), meta: '' }))
