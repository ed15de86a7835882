/**
 * Yjs helpers shared by the layers that handle updates without owning a room: persistence merges
 * its log with them, the cluster merges stream entries and diffs its copy against the local one,
 * and the sessions ask whether an update would change a document. Pure functions over updates and
 * documents: no storage, no sockets, no Redis.
 */
export { claimHeadroom, MERGE_CHUNK_SIZE, mergeUpdatesInChunks, mergeUpdatesIntoState } from './chunked-merge.js'
export { boundStringItems, MAX_MERGED_STRING_LENGTH } from './bounded-string-items.js'
export { missingFrom } from './state-diff.js'
export { updateChangesDocument } from './update-effect.js'
export { MERGE_POOL_DEFAULTS, MergePool, mergeWorkerCounters, type MergePoolOptions } from './merge-pool.js'
export { JobRefused, serveJobs, WorkerPool, type JobResult } from './worker-pool.js'
