import { setPriority } from 'node:os'
import { parentPort, Worker } from 'node:worker_threads'

/**
 * Worker threads for CPU-bound work on Yjs updates that must not stall the event loop: merges of
 * a big log (crdt/merge-pool.ts) and reads of a big document over HTTP (server/document-reads.ts).
 * A job is some updates and a task the worker script understands; its answer is bytes and a
 * string. The updates are copied into a shared buffer the worker allocated (so the event loop
 * neither serializes them nor faults in fresh pages) and the answer comes back transferred, not
 * copied. Jobs start in the order they are run, one per worker at a time; idle workers do not
 * keep the process alive and end after 10 s without a job.
 */

/** Main thread to worker. */
export type PoolRequest =
  | { type: 'buffer'; id: number; bytes: number }
  /** The updates lie one after another from the start of `shared`, `lengths` bytes each. */
  | { type: 'job'; id: number; shared: SharedArrayBuffer; lengths: number[]; task: unknown }

/** Worker to main thread. */
export type PoolReply =
  | { type: 'buffer'; id: number; shared: SharedArrayBuffer }
  | { type: 'done'; id: number; ok: true; result: Uint8Array; meta: string }
  /** The task threw: `name` and `message` of what it threw. */
  | { type: 'done'; id: number; ok: false; name: string; message: string }

/** What a job answers: bytes (transferred) and a string the task gives them (a content type, say). */
export interface JobResult {
  result: Uint8Array
  meta: string
}

/** The task threw in the worker (its input's fault): the worker itself is fine. */
export class JobRefused extends Error {
  constructor(
    readonly errorName: string,
    message: string,
  ) {
    super(message)
    this.name = 'JobRefused'
  }
}

interface PoolWorker {
  thread: Worker
  busy: boolean
  /** Its transfer buffer (allocated and touched by the worker), kept between jobs. */
  shared: SharedArrayBuffer | null
  /** Ends the worker when it has been idle for IDLE_WORKER_MS. */
  idleTimer: NodeJS.Timeout | null
  /** The answer the worker owes, if any. */
  awaiting: { id: number; resolve(reply: PoolReply): void; reject(err: Error): void } | null
}

interface Job {
  inputs: readonly Uint8Array[]
  bytes: number
  task: unknown
  resolve(result: JobResult): void
  reject(err: Error): void
}

/**
 * A worker is ended after this long without a job: its heap (a big merge leaves it tens of MB)
 * and its transfer buffer go back to the system; the next big job starts a new one.
 */
const IDLE_WORKER_MS = 10_000
/** Transfer buffers grow in steps of this, with a quarter to spare. */
const SHARED_STEP_BYTES = 1024 * 1024

export class WorkerPool {
  private readonly workers = new Set<PoolWorker>()
  private readonly queue: Job[] = []
  private nextId = 0
  private closedValue = false

  constructor(
    /** The worker's script: one that calls `serveJobs`. */
    private readonly workerUrl: URL,
    /** Worker threads at most, started when first needed. */
    private readonly maxWorkers: number,
  ) {
    if (!Number.isInteger(maxWorkers) || maxWorkers < 1) throw new RangeError(`a worker pool needs a whole number ≥ 1 of workers, not ${maxWorkers}`)
  }

  get closed(): boolean {
    return this.closedValue
  }

  /**
   * The task run on `inputs` by a worker. Rejects with JobRefused when the task threw there, and
   * with another error when the worker failed (crashed, exited) or the pool closed.
   */
  run(inputs: readonly Uint8Array[], task: unknown): Promise<JobResult> {
    if (this.closedValue) return Promise.reject(new Error('worker pool closed'))
    const bytes = inputs.reduce((sum, input) => sum + input.byteLength, 0)
    return new Promise<JobResult>((resolve, reject) => {
      this.queue.push({ inputs, bytes, task, resolve, reject })
      this.dispatch()
    })
  }

  /** Ends the workers; unfinished jobs are rejected. */
  async close(): Promise<void> {
    this.closedValue = true
    for (const job of this.queue.splice(0)) job.reject(new Error('worker pool closed'))
    const workers = [...this.workers]
    for (const worker of workers) this.retire(worker, new Error('worker pool closed'))
    await Promise.all(workers.map((worker) => worker.thread.terminate().catch(() => 0)))
  }

  private dispatch(): void {
    while (this.queue.length > 0 && !this.closedValue) {
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
            if (!worker.busy) this.retire(worker, new Error('worker idle'))
          }, IDLE_WORKER_MS).unref()
        }
        this.dispatch()
      })
    }
  }

  private async runOn(worker: PoolWorker, job: Job): Promise<JobResult> {
    if (worker.shared === null || worker.shared.byteLength < job.bytes) {
      const bytes = Math.max(SHARED_STEP_BYTES, Math.ceil((job.bytes * 1.25) / SHARED_STEP_BYTES) * SHARED_STEP_BYTES)
      worker.shared = null
      const reply = await this.ask(worker, (id) => ({ type: 'buffer', id, bytes }))
      if (reply.type !== 'buffer') throw new Error('worker answered out of turn')
      worker.shared = reply.shared
    }
    const shared = worker.shared
    const view = new Uint8Array(shared)
    let offset = 0
    for (const input of job.inputs) {
      view.set(input, offset)
      offset += input.byteLength
    }
    const reply = await this.ask(worker, (id) => ({ type: 'job', id, shared, lengths: job.inputs.map((input) => input.byteLength), task: job.task }))
    if (reply.type !== 'done') throw new Error('worker answered out of turn')
    if (!reply.ok) throw new JobRefused(reply.name, reply.message)
    return { result: reply.result, meta: reply.meta }
  }

  private ask(worker: PoolWorker, request: (id: number) => PoolRequest): Promise<PoolReply> {
    if (!this.workers.has(worker)) return Promise.reject(new Error('worker gone'))
    const id = this.nextId++
    return new Promise<PoolReply>((resolve, reject) => {
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
    if (this.workers.size >= this.maxWorkers) return null
    const worker: PoolWorker = { thread: new Worker(this.workerUrl), busy: false, shared: null, idleTimer: null, awaiting: null }
    worker.thread.unref()
    worker.thread.on('message', (reply: PoolReply) => {
      const awaiting = worker.awaiting
      if (awaiting === null || awaiting.id !== reply.id) return
      worker.awaiting = null
      awaiting.resolve(reply)
    })
    worker.thread.on('error', (err) => this.retire(worker, err))
    worker.thread.on('exit', (code) => this.retire(worker, new Error(`worker exited with code ${code}`)))
    this.workers.add(worker)
    return worker
  }

  /** A worker that failed (or the pool closing): what it owed is rejected; it is not used again. */
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

/**
 * The body of a pool's worker thread. Two requests:
 * - `buffer`: allocate a SharedArrayBuffer and touch every page of it here, so the main thread
 *   copies a job's inputs into memory that is already mapped (first-touch page faults of a
 *   20 MB buffer cost ~100-200 ms on a virtual machine, which must not be the event loop's);
 * - `job`: run `handle` on the inputs laid out in it and hand the result back without copying
 *   it. The result must own its whole ArrayBuffer (it is transferred).
 * The thread runs at the lowest CPU priority (on Linux the nice value is per thread): on a core
 * the event loop shares with it, the event loop runs first and the job takes what is left.
 */
export function serveJobs(handle: (inputs: Uint8Array[], task: unknown) => Promise<JobResult> | JobResult): void {
  const port = parentPort
  if (port === null) throw new Error('a pool worker runs as a worker thread')
  try {
    setPriority(19)
  } catch {
    // Not permitted or not supported: the job runs at the process's priority.
  }
  port.on('message', (request: PoolRequest) => {
    if (request.type === 'buffer') {
      const shared = new SharedArrayBuffer(request.bytes)
      new Uint8Array(shared).fill(0)
      port.postMessage({ type: 'buffer', id: request.id, shared } satisfies PoolReply)
      return
    }
    const inputs: Uint8Array[] = []
    let offset = 0
    for (const length of request.lengths) {
      inputs.push(new Uint8Array(request.shared, offset, length))
      offset += length
    }
    const refuse = (err: unknown): void => {
      const { name, message } = err instanceof Error ? err : { name: 'Error', message: String(err) }
      port.postMessage({ type: 'done', id: request.id, ok: false, name, message } satisfies PoolReply)
    }
    try {
      Promise.resolve(handle(inputs, request.task)).then(({ result, meta }) => port.postMessage({ type: 'done', id: request.id, ok: true, result, meta } satisfies PoolReply, [result.buffer as ArrayBuffer]), refuse)
    } catch (err) {
      refuse(err)
    }
  })
}
