import * as Y from 'yjs'
import { JobRefused, WorkerPool } from '../crdt/worker-pool.js'
import { renderContent, replacementFromState, type ContentQuery } from './content-api.js'
import type { ProsemirrorDoc } from './prosemirror.js'
import { documentToJson, type ShareKind } from './document-json.js'

/**
 * Reads of a document over HTTP that cost CPU in proportion to the document: its JSON, its
 * rich-text content, what a state vector lacks, and the update a PUT of rich text makes. A
 * fragmented 0.8 MB document took 190 ms to read as JSON and 100 ms to diff, on the event loop,
 * once per request, so a read-only client asking in a loop held every room of the process up.
 * Big reads now run on a worker thread; each address has a few at a time and takes its turn with
 * the others.
 */

/** What to read from the updates given (the first is the document's state). */
export type ReadTask =
  /** documentToJson of the state, wrapped as `envelope.content` when there is an envelope. */
  | { kind: 'json'; kinds: Readonly<Record<string, ShareKind>>; textAsDelta: boolean; declareKinds: boolean; envelope: Readonly<Record<string, unknown>> | null }
  /** A rich-text representation of one field (server/content-api.ts). */
  | { kind: 'content'; query: ContentQuery }
  /** What the state has that `stateVector` lacks, as an update. */
  | { kind: 'since'; stateVector: Uint8Array }
  /** What the state has that the second update lacks (a version's diff to now). */
  | { kind: 'since-update' }
  /** The update that replaces `field`'s content by `content` (PUT .../content; see replacementUpdate). */
  | { kind: 'replace'; field: string; content: ProsemirrorDoc }

export interface ReadOutput {
  contentType: string
  /** Owns its whole ArrayBuffer (a worker transfers it). */
  body: Uint8Array
}

const JSON_TYPE = 'application/json'
const BINARY_TYPE = 'application/octet-stream'

/** A read's request is wrong for this document (a field that is not XML, say): 400 with the message. */
export class ReadRefused extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ReadRefused'
  }
}

/** The names (each class sets its own) of errors whose message is the client's to read; anything else a read throws is weft's fault. */
const REQUEST_ERRORS: ReadonlySet<string> = new Set(['ContentRequestError', 'ContentShapeError', 'NotXmlFieldError'])

/** The read itself, the same on a worker and on the event loop. */
export function readDocument(inputs: readonly Uint8Array[], task: ReadTask): ReadOutput {
  const state = inputs[0] as Uint8Array
  switch (task.kind) {
    case 'json': {
      // Read from a copy: giving a top-level name a concrete type is a one-way change in Yjs.
      const copy = new Y.Doc()
      try {
        Y.applyUpdate(copy, state)
        if (task.declareKinds) for (const name of Object.keys(task.kinds)) if (!copy.share.has(name)) copy.get(name)
        const content = documentToJson(copy, task.kinds, { textAsDelta: task.textAsDelta })
        return { contentType: JSON_TYPE, body: encodeText(JSON.stringify(task.envelope === null ? content : { ...task.envelope, content })) }
      } finally {
        copy.destroy()
      }
    }
    case 'content': {
      const { contentType, body } = renderContent(state, task.query)
      return { contentType, body: encodeText(body) }
    }
    case 'since':
      return { contentType: BINARY_TYPE, body: Y.diffUpdate(state, task.stateVector) }
    case 'since-update':
      return { contentType: BINARY_TYPE, body: Y.diffUpdate(state, Y.encodeStateVectorFromUpdate(inputs[1] as Uint8Array)) }
    case 'replace':
      return { contentType: BINARY_TYPE, body: replacementFromState(state, task.field, task.content).update }
  }
}

/** UTF-8 in a buffer of its own (Buffer.from may hand out a slice of a shared pool, which cannot be transferred). */
function encodeText(text: string): Uint8Array {
  return new TextEncoder().encode(text)
}

export interface DocumentReadsOptions {
  /** Worker threads for reads; 0 = every read on the event loop. */
  workers: number
  /** Reads of fewer input bytes than this stay on the event loop: handing them over costs more than it saves. */
  thresholdBytes: number
  /** Reads one address may have waiting or running on the workers (--max-document-reads-per-ip). */
  maxPerIp: number
  /** Reads waiting or running on the workers, server-wide (--max-document-reads). */
  maxTotal: number
  /** The worker's script; tests point it at one that fails. */
  workerUrl?: URL
}

export const DOCUMENT_READS_DEFAULTS = Object.freeze({
  workers: 1,
  thresholdBytes: 16 * 1024,
  maxPerIp: 4,
  maxTotal: 64,
})

/** A read refused by the bounds: 429 for one address's, 503 for the server's. */
export class ReadsBusy extends Error {
  constructor(
    readonly reason: 'document_reads_per_ip' | 'document_reads',
    message: string,
  ) {
    super(message)
    this.name = 'ReadsBusy'
  }
}

/** The client went away before its read started: nothing was read. */
export class ReadAbandoned extends Error {}

/** Process totals for metrics: reads a worker did, and reads a failed worker left to the event loop. */
export const documentReadCounters = { jobs: 0, fallbacks: 0 }

interface WaitingRead {
  inputs: readonly Uint8Array[]
  task: ReadTask
  signal: AbortSignal | undefined
  resolve(output: ReadOutput): void
  reject(err: Error): void
}

const WORKER_URL = new URL('./document-read-worker.js', import.meta.url)

/**
 * Runs reads: small ones at once on the event loop, big ones on worker threads. An address may
 * have `maxPerIp` big reads waiting or running, the server `maxTotal`; past them a read is
 * refused (ReadsBusy), never queued without bound. Waiting reads start in turn by address (one
 * from each address that waits, round and round), so a client that keeps asking cannot make
 * another's read wait behind all of its own. A read whose client has gone (its signal aborted)
 * is dropped before it starts. When a worker fails, the read runs on the event loop instead and
 * is counted: a failure costs time, never the answer.
 */
export class DocumentReads {
  private readonly options: Readonly<DocumentReadsOptions>
  private pool: WorkerPool | null = null
  /** Waiting reads by address, in the order the addresses take their turns. */
  private readonly waiting = new Map<string, WaitingRead[]>()
  /** Reads waiting or running, by address. */
  private readonly perIp = new Map<string, number>()
  private total = 0
  private running = 0
  private closed = false

  constructor(options: Partial<DocumentReadsOptions> = {}) {
    const merged = { ...DOCUMENT_READS_DEFAULTS, ...options }
    if (!Number.isInteger(merged.workers) || merged.workers < 0) throw new RangeError(`read workers must be a whole number ≥ 0, not ${merged.workers}`)
    this.options = Object.freeze(merged)
  }

  /** Reads waiting or running on the workers (a gauge). */
  get inProgress(): number {
    return this.total
  }

  /**
   * The read, from `ip`. Throws ReadsBusy past the bounds, ReadRefused when the request does not
   * fit the document, ReadAbandoned when `signal` aborted before the read started. `extraBytes`
   * is what the task itself weighs beyond the inputs (a PUT's body), for the threshold.
   */
  async read(ip: string, inputs: readonly Uint8Array[], task: ReadTask, { signal, extraBytes = 0 }: { signal?: AbortSignal; extraBytes?: number } = {}): Promise<ReadOutput> {
    const bytes = inputs.reduce((sum, input) => sum + input.byteLength, extraBytes)
    if (this.closed || this.options.workers === 0 || bytes < this.options.thresholdBytes) return readInline(inputs, task)
    const fromIp = this.perIp.get(ip) ?? 0
    if (fromIp >= this.options.maxPerIp) throw new ReadsBusy('document_reads_per_ip', `this address has ${fromIp} document reads in progress; wait for them`)
    if (this.total >= this.options.maxTotal) throw new ReadsBusy('document_reads', 'too many document reads in progress; retry shortly')
    this.perIp.set(ip, fromIp + 1)
    this.total++
    try {
      return await new Promise<ReadOutput>((resolve, reject) => {
        const queue = this.waiting.get(ip)
        const read = { inputs, task, signal, resolve, reject }
        if (queue === undefined) this.waiting.set(ip, [read])
        else queue.push(read)
        this.dispatch()
      })
    } finally {
      const left = (this.perIp.get(ip) ?? 1) - 1
      if (left <= 0) this.perIp.delete(ip)
      else this.perIp.set(ip, left)
      this.total--
    }
  }

  async close(): Promise<void> {
    this.closed = true
    // What waits runs on the event loop: the pool is going, the requests are not (unless their clients left).
    for (const queue of this.waiting.values()) {
      for (const read of queue) {
        if (read.signal?.aborted === true) read.reject(new ReadAbandoned('the client went away'))
        else this.runInline(read)
      }
    }
    this.waiting.clear()
    await this.pool?.close()
  }

  private dispatch(): void {
    while (this.running < this.options.workers && !this.closed) {
      const read = this.nextWaiting()
      if (read === null) return
      if (read.signal?.aborted === true) {
        read.reject(new ReadAbandoned('the client went away'))
        continue
      }
      this.running++
      this.pool ??= new WorkerPool(this.options.workerUrl ?? WORKER_URL, this.options.workers)
      this.pool
        .run(read.inputs, read.task)
        .then(
          ({ result, meta }) => {
            documentReadCounters.jobs++
            read.resolve({ contentType: meta, body: result })
          },
          (err: unknown) => {
            if (err instanceof JobRefused) read.reject(REQUEST_ERRORS.has(err.errorName) ? new ReadRefused(err.message) : new Error(`document read failed: ${err.message}`))
            else {
              documentReadCounters.fallbacks++
              this.runInline(read)
            }
          },
        )
        .finally(() => {
          this.running--
          this.dispatch()
        })
    }
  }

  /** The first waiting read of the address whose turn it is; the address goes to the back of the line. */
  private nextWaiting(): WaitingRead | null {
    for (const [ip, queue] of this.waiting) {
      const read = queue.shift() as WaitingRead
      this.waiting.delete(ip)
      if (queue.length > 0) this.waiting.set(ip, queue)
      return read
    }
    return null
  }

  private runInline(read: WaitingRead): void {
    try {
      read.resolve(readInline(read.inputs, read.task))
    } catch (err) {
      read.reject(err instanceof Error ? err : new Error(String(err)))
    }
  }
}

function readInline(inputs: readonly Uint8Array[], task: ReadTask): ReadOutput {
  try {
    return readDocument(inputs, task)
  } catch (err) {
    if (err instanceof Error && REQUEST_ERRORS.has(err.name)) throw new ReadRefused(err.message)
    throw err
  }
}
