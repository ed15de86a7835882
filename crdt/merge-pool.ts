import { Worker } from 'node:worker_threads'
import { mergeUpdatesIntoState } from './chunked-merge.js'

/** Settings of a MergePool; see MERGE_POOL_DEFAULTS. */
export interface MergePoolOptions {
  /** Worker threads at most (started when first needed); 0 = every merge on the calling thread. */
  workers: number
  /** Merges of fewer bytes than this run on the calling thread: posting them costs more than it saves. */
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

/** Main thread to worker. The updates are copied (structured clone): the caller's buffers stay its own. */
export interface MergeJob {
  id: number
  updates: Uint8Array[]
}

export type MergeReply = { id: number; ok: true; state: Uint8Array } | { id: number; ok: false; message: string }

interface Pending {
  job: MergeJob
  resolve(state: Uint8Array): void
  reject(err: Error): void
}

interface PoolWorker {
  thread: Worker
  /** The job it is working on, if any. */
  current: Pending | null
}

const WORKER_URL = new URL('./merge-worker.js', import.meta.url)

/**
 * Y.mergeUpdates-into-a-state (mergeUpdatesIntoState) on worker threads, for merges big enough to
 * stall the event loop: a cold load or a compaction of a large document. The result is the same
 * bytes the calling thread would have produced (the worker runs the same function). When a worker
 * fails, the merge runs on the calling thread instead and `mergeWorkerCounters.fallbacks` counts
 * it: a failure costs time, never the result. Jobs run in the order they were asked for, one per
 * worker at a time; idle workers do not keep the process alive.
 */
export class MergePool {
  private readonly options: Readonly<MergePoolOptions>
  private readonly workers = new Set<PoolWorker>()
  private readonly queue: Pending[] = []
  private nextId = 0
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

  /** The updates merged into one encoded document state (see mergeUpdatesIntoState). */
  async mergeIntoState(updates: readonly Uint8Array[]): Promise<Uint8Array> {
    if (updates.length === 0) throw new RangeError('nothing to merge')
    const bytes = updates.reduce((sum, update) => sum + update.byteLength, 0)
    if (!this.offloads(bytes)) return mergeUpdatesIntoState(updates)
    let state: Uint8Array
    try {
      state = await this.run([...updates])
    } catch {
      // The worker crashed or threw (a Yjs error included): the calling thread does it, and
      // throws what Yjs throws there, as it would have without workers.
      mergeWorkerCounters.fallbacks++
      return mergeUpdatesIntoState(updates)
    }
    mergeWorkerCounters.jobs++
    return state
  }

  /** Ends the workers; merges asked for later run on the calling thread, queued ones fall back. */
  async close(): Promise<void> {
    this.closed = true
    const queued = this.queue.splice(0)
    for (const pending of queued) pending.reject(new Error('merge pool closed'))
    await Promise.all([...this.workers].map((worker) => worker.thread.terminate()))
    this.workers.clear()
  }

  private run(updates: Uint8Array[]): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      this.queue.push({ job: { id: this.nextId++, updates }, resolve, reject })
      this.dispatch()
    })
  }

  private dispatch(): void {
    while (this.queue.length > 0 && !this.closed) {
      const worker = this.idleWorker()
      if (worker === null) return
      const pending = this.queue.shift() as Pending
      worker.current = pending
      worker.thread.ref()
      try {
        worker.thread.postMessage(pending.job)
      } catch (err) {
        // Not cloneable, or the thread is gone: this job falls back; the worker is replaced.
        worker.current = null
        this.retire(worker)
        pending.reject(err instanceof Error ? err : new Error(String(err)))
      }
    }
  }

  private idleWorker(): PoolWorker | null {
    for (const worker of this.workers) if (worker.current === null) return worker
    if (this.workers.size >= this.options.workers) return null
    const worker: PoolWorker = { thread: new Worker(this.options.workerUrl ?? WORKER_URL), current: null }
    worker.thread.unref()
    worker.thread.on('message', (reply: MergeReply) => {
      const pending = worker.current
      if (pending === null || pending.job.id !== reply.id) return
      worker.current = null
      worker.thread.unref()
      if (reply.ok) pending.resolve(reply.state)
      else pending.reject(new Error(reply.message))
      this.dispatch()
    })
    const failed = (err: Error): void => {
      const pending = worker.current
      worker.current = null
      this.retire(worker)
      pending?.reject(err)
      this.dispatch()
    }
    worker.thread.on('error', failed)
    worker.thread.on('exit', (code) => failed(new Error(`merge worker exited with code ${code}`)))
    this.workers.add(worker)
    return worker
  }

  private retire(worker: PoolWorker): void {
    if (!this.workers.delete(worker)) return
    worker.thread.removeAllListeners('message')
    void worker.thread.terminate().catch(() => {})
  }
}
