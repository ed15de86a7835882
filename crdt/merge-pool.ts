import { markHeadroom, mergeUpdatesIntoState } from './chunked-merge.js'
import { JobRefused, WorkerPool } from './worker-pool.js'

/** Settings of a MergePool; see MERGE_POOL_DEFAULTS. */
export interface MergePoolOptions {
  /** Worker threads at most (started when first needed); 0 = every merge on the calling thread. */
  workers: number
  /** Merges of fewer bytes than this run on the calling thread: handing them over costs more than it saves. */
  thresholdBytes: number
  /** The worker's script; tests point it at one that fails. */
  workerUrl?: URL
}

export const MERGE_POOL_DEFAULTS = Object.freeze({
  workers: 1,
  thresholdBytes: 1024 * 1024,
})

/**
 * Process totals for metrics (every pool adds to them): merges a worker did, and merges that fell
 * back to the calling thread because the worker failed (crashed, exited, or threw).
 */
export const mergeWorkerCounters = { jobs: 0, fallbacks: 0 }

const WORKER_URL = new URL('./merge-worker.js', import.meta.url)

/**
 * mergeUpdatesIntoState on worker threads, for merges big enough to stall the event loop: a cold
 * load or a compaction of a large document. The result is the same bytes the calling thread
 * would have produced (the worker runs the same function; see WorkerPool for how the bytes
 * travel). When a worker fails, the merge runs on the calling thread instead and
 * `mergeWorkerCounters.fallbacks` counts it: a failure costs time, never the result.
 */
export class MergePool {
  private readonly options: Readonly<MergePoolOptions>
  private pool: WorkerPool | null = null
  private closed = false

  constructor(options: Partial<MergePoolOptions> = {}) {
    const workers = options.workers ?? MERGE_POOL_DEFAULTS.workers
    const thresholdBytes = options.thresholdBytes ?? MERGE_POOL_DEFAULTS.thresholdBytes
    if (!Number.isInteger(workers) || workers < 0) throw new RangeError(`merge workers must be a whole number ≥ 0, not ${workers}`)
    if (!Number.isFinite(thresholdBytes) || thresholdBytes < 0) throw new RangeError(`merge worker threshold must be ≥ 0 bytes, not ${thresholdBytes}`)
    this.options = Object.freeze({ ...options, workers, thresholdBytes })
  }

  /** Whether a merge of `bytes` goes to a worker (else it runs on the calling thread). */
  offloads(bytes: number): boolean {
    return !this.closed && this.options.workers > 0 && bytes >= this.options.thresholdBytes
  }

  /** The updates merged into one encoded document state (see mergeUpdatesIntoState), `headroom` bytes into its buffer. */
  async mergeIntoState(updates: readonly Uint8Array[], headroom = 0): Promise<Uint8Array> {
    if (updates.length === 0) throw new RangeError('nothing to merge')
    const bytes = updates.reduce((sum, update) => sum + update.byteLength, 0)
    if (!this.offloads(bytes)) return mergeUpdatesIntoState(updates, headroom)
    this.pool ??= new WorkerPool(this.options.workerUrl ?? WORKER_URL, this.options.workers)
    let state: Uint8Array
    try {
      state = (await this.pool.run(updates, { headroom })).result
    } catch (err) {
      // The worker crashed, or Yjs refused the updates there: the calling thread does it, and
      // throws what Yjs throws there, as it would have without workers. Only a worker that
      // failed counts as a fallback; refused data is the data's fault, not the worker's.
      if (!(err instanceof JobRefused)) mergeWorkerCounters.fallbacks++
      return mergeUpdatesIntoState(updates, headroom)
    }
    mergeWorkerCounters.jobs++
    // Transferred: the headroom the worker left is still in front of it, and still free.
    return headroom === 0 ? state : markHeadroom(state)
  }

  /** Ends the workers; merges asked for later run on the calling thread, unfinished ones fall back. */
  async close(): Promise<void> {
    this.closed = true
    await this.pool?.close()
  }
}
