import { Worker } from 'node:worker_threads'
import { mergeUpdatesIntoState } from './chunked-merge.js'

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

/** Main thread to worker: see crdt/merge-worker.ts. */
export type MergeRequest =
  | { type: 'buffer'; id: number; bytes: number }
  /** The updates lie one after another from the start of `shared`, `lengths` bytes each. */
  | { type: 'merge'; id: number; shared: SharedArrayBuffer; lengths: number[] }

export type MergeReply =
  | { type: 'buffer'; id: number; shared: SharedArrayBuffer }
  | { type: 'merged'; id: number; ok: true; state: Uint8Array }
  | { type: 'merged'; id: number; ok: false; message: string }

interface Job {
  updates: readonly Uint8Array[]
  bytes: number
  resolve(state: Uint8Array): void
  reject(err: Error): void
}

interface PoolWorker {
  thread: Worker
  busy: boolean
  /** Its transfer buffer (allocated and touched by the worker), kept between jobs. */
  shared: SharedArrayBuffer | null
  /** Ends the worker when it has been idle for IDLE_WORKER_MS. */
  idleTimer: NodeJS.Timeout | null
  /** The answer the worker owes, if any. */
  awaiting: { id: number; resolve(reply: MergeReply): void; reject(err: Error): void } | null
}

/** The worker's merge threw (Yjs refused the updates): the worker itself is fine. */
class MergeRefused extends Error {}

const WORKER_URL = new URL('./merge-worker.js', import.meta.url)
/**
 * A worker is ended after this long without a job: its heap (a big merge leaves it tens of MB)
 * and its transfer buffer go back to the system; the next big merge starts a new one.
 */
const IDLE_WORKER_MS = 10_000
/** Transfer buffers grow in steps of this, with a quarter to spare. */
const SHARED_STEP_BYTES = 1024 * 1024

/**
 * mergeUpdatesIntoState on worker threads, for merges big enough to stall the event loop: a cold
 * load or a compaction of a large document. The result is the same bytes the calling thread
 * would have produced (the worker runs the same function). The updates are copied into a shared
 * buffer the worker allocated (so the event loop neither serializes them nor faults in fresh
 * pages) and the result comes back transferred, not copied. When a worker fails, the merge runs
 * on the calling thread instead and `mergeWorkerCounters.fallbacks` counts it: a failure costs
 * time, never the result. Jobs start in the order they were asked for, one per worker at a
 * time; idle workers do not keep the process alive and end after 10 s without a job.
 */
export class MergePool {
  private readonly options: Readonly<MergePoolOptions>
  private readonly workers = new Set<PoolWorker>()
  private readonly queue: Job[] = []
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
      state = await new Promise<Uint8Array>((resolve, reject) => {
        this.queue.push({ updates, bytes, resolve, reject })
        this.dispatch()
      })
    } catch (err) {
      // The worker crashed, or Yjs refused the updates there: the calling thread does it, and
      // throws what Yjs throws there, as it would have without workers. Only a worker that
      // failed counts as a fallback; refused data is the data's fault, not the worker's.
      if (!(err instanceof MergeRefused)) mergeWorkerCounters.fallbacks++
      return mergeUpdatesIntoState(updates)
    }
    mergeWorkerCounters.jobs++
    return state
  }

  /** Ends the workers; merges asked for later run on the calling thread, unfinished ones fall back. */
  async close(): Promise<void> {
    this.closed = true
    for (const job of this.queue.splice(0)) job.reject(new Error('merge pool closed'))
    const workers = [...this.workers]
    for (const worker of workers) this.retire(worker, new Error('merge pool closed'))
    await Promise.all(workers.map((worker) => worker.thread.terminate().catch(() => 0)))
  }

  private dispatch(): void {
    while (this.queue.length > 0 && !this.closed) {
      const worker = this.idleWorker()
      if (worker === null) return
      const job = this.queue.shift() as Job
      worker.busy = true
      worker.thread.ref()
      if (worker.idleTimer !== null) clearTimeout(worker.idleTimer)
      worker.idleTimer = null
      this.runOn(worker, job).then(job.resolve, job.reject).finally(() => {
        worker.busy = false
        if (this.workers.has(worker)) {
          worker.thread.unref()
          worker.idleTimer = setTimeout(() => {
            worker.idleTimer = null
            if (!worker.busy) this.retire(worker, new Error('merge worker idle'))
          }, IDLE_WORKER_MS).unref()
        }
        this.dispatch()
      })
    }
  }

  private async runOn(worker: PoolWorker, job: Job): Promise<Uint8Array> {
    if (worker.shared === null || worker.shared.byteLength < job.bytes) {
      const bytes = Math.ceil((job.bytes * 1.25) / SHARED_STEP_BYTES) * SHARED_STEP_BYTES
      worker.shared = null
      const reply = await this.ask(worker, (id) => ({ type: 'buffer', id, bytes }))
      if (reply.type !== 'buffer') throw new Error('merge worker answered out of turn')
      worker.shared = reply.shared
    }
    const shared = worker.shared
    const view = new Uint8Array(shared)
    let offset = 0
    for (const update of job.updates) {
      view.set(update, offset)
      offset += update.byteLength
    }
    const reply = await this.ask(worker, (id) => ({ type: 'merge', id, shared, lengths: job.updates.map((update) => update.byteLength) }))
    if (reply.type !== 'merged') throw new Error('merge worker answered out of turn')
    if (!reply.ok) throw new MergeRefused(reply.message)
    return reply.state
  }

  private ask(worker: PoolWorker, request: (id: number) => MergeRequest): Promise<MergeReply> {
    if (!this.workers.has(worker)) return Promise.reject(new Error('merge worker gone'))
    const id = this.nextId++
    return new Promise<MergeReply>((resolve, reject) => {
      worker.awaiting = { id, resolve, reject }
      try {
        worker.thread.postMessage(request(id))
      } catch (err) {
        worker.awaiting = null
        this.retire(worker, err instanceof Error ? err : new Error(String(err)))
        reject(err instanceof Error ? err : new Error(String(err)))
      }
    })
  }

  private idleWorker(): PoolWorker | null {
    for (const worker of this.workers) if (!worker.busy) return worker
    if (this.workers.size >= this.options.workers) return null
    const worker: PoolWorker = { thread: new Worker(this.options.workerUrl ?? WORKER_URL), busy: false, shared: null, idleTimer: null, awaiting: null }
    worker.thread.unref()
    worker.thread.on('message', (reply: MergeReply) => {
      const awaiting = worker.awaiting
      if (awaiting === null || awaiting.id !== reply.id) return
      worker.awaiting = null
      awaiting.resolve(reply)
    })
    worker.thread.on('error', (err) => this.retire(worker, err))
    worker.thread.on('exit', (code) => this.retire(worker, new Error(`merge worker exited with code ${code}`)))
    this.workers.add(worker)
    return worker
  }

  /** A worker that failed (or the pool closing): what it owed is rejected (and falls back); it is not used again. */
  private retire(worker: PoolWorker, err: Error): void {
    const awaiting = worker.awaiting
    worker.awaiting = null
    worker.shared = null
    if (worker.idleTimer !== null) clearTimeout(worker.idleTimer)
    worker.idleTimer = null
    awaiting?.reject(err)
    if (!this.workers.delete(worker)) return
    void worker.thread.terminate().catch(() => 0)
  }
}
