import { EventEmitter } from 'node:events'
import { pino } from 'pino'
import * as Y from 'yjs'
import { isValidRoomName } from '../protocol/room-name.js'
import { mergeUpdatesInChunks, mergeUpdatesIntoState } from './chunked-merge.js'
import { InvalidRoomNameError, InvalidUpdateError, RoomDeletedError, WriterClosedError } from './errors.js'
import { LevelStore } from './level-store.js'
import { MemoryStore } from './memory-store.js'
import type { LocalVersionStore, LogEntry, Store, StoredRoom } from './store.js'

export interface WriterLogger {
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
  info(obj: object, msg: string): void
}

export interface WriterOptions {
  /** Longest time, in ms, an accepted update waits before its append starts (contract default 100). */
  persistWindowMs: number
  /** Compact once the log has more than this many entries (subject to the big-document rule below). */
  compactEntries?: number
  /** Compact once the bytes appended on top of the last merged base exceed this, whatever the entry count. */
  compactBytes?: number
  /** First retry delay after a failed append, in ms; doubles per failure up to retryMaxMs. */
  retryBaseMs?: number
  retryMaxMs?: number
  logger?: WriterLogger
  /** For metrics: each append stored, with its update count and how long (ms) its oldest update waited since `write`. */
  onBatchStored?(updates: number, oldestWaitMs: number): void
  /** For metrics: each log compacted into one entry. */
  onCompacted?(): void
}

/** Time kept back from a close deadline for closing the store itself. */
const CLOSE_RESERVE_MS = 500

/** Updates merged into one log entry at most. */
const MAX_BATCH_UPDATES = 64

export const WRITER_DEFAULTS = Object.freeze({
  persistWindowMs: 100,
  compactEntries: 64,
  compactBytes: 16 * 1024 * 1024,
  retryBaseMs: 100,
  retryMaxMs: 10_000,
})

/**
 * Entry-count compaction rewrites the whole document, so for a big document it waits until the
 * bytes appended since the last compaction reach 1/16 of the base: each byte is then rewritten at
 * most ~16 times by entry-triggered compactions, instead of a 60 MB document being rewritten
 * every 64 keystrokes.
 */
const BIG_DOCUMENT_DIVISOR = 16
/** ...but never lets the log grow past 64 × compactEntries entries: load cost grows with entries too. */
const ENTRY_HARD_LIMIT_FACTOR = 64

export type StorageHealth = { ok: true } | { ok: false; since: number; error: string }

type WriteOutcome = 'pending' | 'saved' | 'refused' | 'abandoned'

/** One `write` call: its bytes and the promise its caller holds. */
interface PendingWrite {
  readonly update: Uint8Array
  /** performance.now() of the `write` call. */
  readonly at: number
  readonly done: Promise<void>
  outcome: WriteOutcome
  resolve(): void
  reject(err: Error, outcome: 'refused' | 'abandoned'): void
}

function createPendingWrite(update: Uint8Array): PendingWrite {
  let resolvePromise!: () => void
  let rejectPromise!: (err: Error) => void
  const done = new Promise<void>((resolve, reject) => {
    resolvePromise = resolve
    rejectPromise = reject
  })
  // A caller that does not await a write must not crash the process with an unhandled rejection:
  // the failure also reaches the log and close()'s `unsaved`. Awaiting callers still get it.
  done.catch(() => {})
  const write: PendingWrite = {
    update,
    at: performance.now(),
    done,
    outcome: 'pending',
    resolve() {
      if (write.outcome !== 'pending') return
      write.outcome = 'saved'
      resolvePromise()
    },
    reject(err, outcome) {
      if (write.outcome !== 'pending') return
      write.outcome = outcome
      rejectPromise(err)
    },
  }
  return write
}

/** What the writer believes about a room's stored log; only steers compaction, so estimates are fine. */
interface LogSize {
  entries: number
  bytes: number
  /** Size of the oldest entry, which after a compaction is the merged document. */
  baseBytes: number
}

const ignore = (): void => {}
const settled = (promise: Promise<unknown>): Promise<void> => promise.then(ignore, ignore)

/**
 * Everything in flight for one room. Appends run one at a time in `drain`; compactions and
 * deletions run one at a time on `maintenance`; the two chains overlap on purpose (an append
 * during a compaction lands behind the merged entry, see Store.replace), except that a deletion
 * waits for the append already in the store's hands and holds back later ones until it is done.
 */
class RoomWork {
  /** Accepted, not yet taken by the drain loop. */
  queued: PendingWrite[] = []
  /** Taken by the drain loop: being merged, appended, or waiting for a retry. */
  inFlight: PendingWrite[] | null = null
  storeCall: Promise<unknown> | null = null
  timer: NodeJS.Timeout | null = null
  draining = false
  failedAttempts = 0
  wakeRetry: (() => void) | null = null
  /** Bumped by deleteRoom; a batch taken under an older generation belongs to the deleted document. */
  generation = 0
  deletion: Promise<void> | null = null
  maintenance: Promise<void> = Promise.resolve()
  compactionQueued = false
  lastCompactionFailure = 0
  log: LogSize = { entries: 0, bytes: 0, baseBytes: 0 }
  /** Totals of successful appends, to tell which entries arrived while a compaction was reading. */
  appendedEntries = 0
  appendedBytes = 0

  constructor(readonly room: string) {}

  get hasPending(): boolean {
    return this.queued.length > 0 || this.inFlight !== null
  }
}

type WriterState = 'open' | 'closing' | 'closed'

/**
 * Per-room persistence for the server: batches a room's updates for up to `persistWindowMs` into
 * one append, retries failed appends with backoff while keeping them queued, compacts logs that
 * grew long, and reports storage health.
 */
export class DocumentWriter extends EventEmitter {
  private readonly rooms = new Map<string, RoomWork>()
  private readonly options: Readonly<Required<Omit<WriterOptions, 'logger' | 'onBatchStored' | 'onCompacted'>>>
  private readonly onBatchStored: NonNullable<WriterOptions['onBatchStored']>
  private readonly onCompacted: NonNullable<WriterOptions['onCompacted']>
  private readonly logger: WriterLogger
  private state: WriterState = 'open'
  /** Set when close's deadline expired: loops stop and what was not stored is abandoned. */
  private stopped = false
  private closing: Promise<{ unsaved: string[] }> | null = null
  /** Rooms whose last append failed, with when the failing began. */
  private readonly failingRooms = new Map<string, number>()
  private lastError = ''
  private healthState: StorageHealth = { ok: true }

  constructor(private readonly store: Store, options: WriterOptions) {
    super()
    this.options = Object.freeze(validateOptions(options))
    this.logger = options.logger ?? pino({ base: { service: 'weft', component: 'persistence' } })
    this.onBatchStored = options.onBatchStored ?? ignore
    this.onCompacted = options.onCompacted ?? ignore
  }

  override on(event: 'health', listener: (health: StorageHealth) => void): this {
    return super.on(event, listener)
  }

  override off(event: 'health', listener: (health: StorageHealth) => void): this {
    return super.off(event, listener)
  }

  health(): StorageHealth {
    return this.healthState
  }

  hasPending(room: string): boolean {
    return this.rooms.get(room)?.hasPending ?? false
  }

  write(room: string, update: Uint8Array): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new WriterClosedError())
    // Refused here: an unstorable name would otherwise fail every retry and hold health down forever.
    if (!isValidRoomName(room)) return Promise.reject(new InvalidRoomNameError(room))
    const work = this.work(room)
    const write = createPendingWrite(update)
    work.queued.push(write)
    // The window starts with the first update of a batch and is not extended by later ones:
    // it bounds how long any update waits.
    if (work.timer === null) {
      work.timer = setTimeout(() => {
        work.timer = null
        this.kick(work)
      }, this.options.persistWindowMs)
    }
    return write.done
  }

  /**
   * The stored document merged with the updates of this room not yet durable, so it includes every
   * write accepted before the call. It does not wait for those appends: a room must stay loadable
   * while appends fail (a full disk still reads).
   */
  async load(room: string): Promise<Uint8Array | null> {
    this.assertOpen()
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    const work = this.work(room)
    while (work.deletion !== null) await settled(work.deletion)
    // Taken before reading: an append that completes during the read is then in both, which a
    // merge tolerates (Yjs skips structs it already has); the other order could miss it.
    const pending = [...(work.inFlight ?? []), ...work.queued].map((write) => write.update)
    const log = await this.store.readLog(room)
    this.noteLogRead(work, log)
    const updates = log.map((entry) => entry.update).concat(pending)
    this.maybeCompact(work)
    if (updates.length === 0) return null
    if (updates.length === 1) return updates[0] as Uint8Array
    try {
      return await mergeUpdatesIntoState(updates)
    } catch (err) {
      // Some entry cannot be applied: the caller may look at them one by one (loadEntries).
      throw new InvalidUpdateError(room, err)
    }
  }

  /** Like load, without merging: the stored entries with their keys, then the writes not yet stored. */
  async loadEntries(room: string): Promise<{ log: LogEntry[]; pending: Uint8Array[] }> {
    this.assertOpen()
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    const work = this.work(room)
    while (work.deletion !== null) await settled(work.deletion)
    const pending = [...(work.inFlight ?? []), ...work.queued].map((write) => write.update)
    return { log: await this.store.readLog(room), pending }
  }

  /**
   * Moves one log entry aside (kept in storage, out of the log) because it cannot be applied.
   * Runs with the room's compactions, one at a time, so a compaction never reads the entry and
   * then writes it back merged into the document.
   */
  async quarantine(room: string, key: string): Promise<void> {
    this.assertOpen()
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    const work = this.work(room)
    const move = work.maintenance.then(() => this.store.quarantine(room, key))
    work.maintenance = settled(move)
    await move
    work.log = { entries: Math.max(0, work.log.entries - 1), bytes: work.log.bytes, baseBytes: work.log.baseBytes }
  }

  /**
   * Where compaction gets a loaded room's document: the server's live Y.Doc already holds every
   * stored entry (and maybe newer ones), and encoding it is far cheaper than re-applying the log.
   * Returns null for rooms that are not loaded.
   */
  setSnapshotSource(source: (room: string) => Uint8Array | null): void {
    this.snapshotSource = source
  }

  private snapshotSource: ((room: string) => Uint8Array | null) | null = null

  /**
   * Resolves once every write made before the call (to `room`, or to any room) is durable or
   * refused (its room deleted, its bytes invalid); rejects with WriterClosedError when close()'s
   * deadline abandoned some of them. Starts the appends at once instead of waiting for the window.
   */
  async flush(room?: string): Promise<void> {
    if (room === undefined) {
      await Promise.all([...this.rooms.values()].map((work) => this.flushRoom(work)))
      return
    }
    const work = this.rooms.get(room)
    if (work !== undefined) await this.flushRoom(work)
  }

  /**
   * Deletes the stored document. Writes still queued are refused with RoomDeletedError (the
   * deletion supersedes them); an append already handed to the store is waited for, then deleted.
   * Writes made after this call are kept and appended once the deletion is done.
   */
  async deleteRoom(room: string): Promise<void> {
    this.assertOpen()
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    const work = this.work(room)
    work.generation++
    this.clearTimer(work)
    const superseded = work.queued
    work.queued = []
    for (const write of superseded) write.reject(new RoomDeletedError(room), 'refused')
    // A failing batch of this room is gone with it; it no longer holds health down.
    this.markRecovered(work, false)
    work.wakeRetry?.()
    const deletion = this.runDeletion(work)
    work.deletion = deletion
    work.maintenance = settled(deletion)
    const clear = (): void => {
      if (work.deletion === deletion) work.deletion = null
    }
    deletion.then(clear, clear)
    await deletion
  }

  async listRooms(): Promise<StoredRoom[]> {
    this.assertOpen()
    return this.store.listRooms()
  }

  /** Compacts one room's log now, whatever its size; rejects when storage fails. */
  async compact(room: string): Promise<void> {
    this.assertOpen()
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    await this.queueCompaction(this.work(room))
  }

  /**
   * Flushes every room, lets running compactions finish, then closes the store. Idempotent: later
   * calls return the first call's result. With `deadlineMs`, gives up when storage has not
   * finished by then: the rooms with writes not yet durable are returned (and logged), and their
   * write promises reject with WriterClosedError.
   */
  close(options: { deadlineMs?: number } = {}): Promise<{ unsaved: string[] }> {
    this.closing ??= this.closeOnce(options.deadlineMs)
    return this.closing
  }

  private async closeOnce(deadlineMs: number | undefined): Promise<{ unsaved: string[] }> {
    this.state = 'closing'
    const startedAt = Date.now()
    const everythingStored = (async () => {
      await this.flush()
      await Promise.all([...this.rooms.values()].map((work) => work.maintenance))
    })()
    const finished = await withDeadline(everythingStored, deadlineMs)
    if (!finished) {
      const unsaved = this.abandonPendingWrites()
      this.logger.error({ unsaved, deadlineMs }, 'storage did not finish before the close deadline; these rooms lost their latest updates')
      // The store may hang as well: its close is started, not awaited.
      this.store.close().catch((err: unknown) => this.logger.error({ err }, 'closing the store failed'))
      this.state = 'closed'
      return { unsaved }
    }
    // Leave every room's log as one entry (loaded rooms from their live document), so the next
    // start loads each document in one read. Optional work, cut short by the deadline.
    const beforeCompaction = deadlineMs === undefined ? undefined : deadlineMs - (Date.now() - startedAt) - CLOSE_RESERVE_MS
    if (beforeCompaction === undefined || beforeCompaction > 0) {
      const compacted = await withDeadline(this.compactForClose(), beforeCompaction).catch((err: unknown) => {
        this.logger.warn({ err }, 'compaction at close failed; the logs stay as they are')
        return false
      })
      if (!compacted) this.logger.warn({ deadlineMs }, 'compaction at close did not finish; the logs stay as they are')
    }
    const remaining = deadlineMs === undefined ? undefined : Math.max(0, deadlineMs - (Date.now() - startedAt))
    const storeClosed = await withDeadline(this.store.close(), remaining)
    if (!storeClosed) this.logger.error({ deadlineMs }, 'store did not close before the deadline; every write was already durable')
    this.state = 'closed'
    return { unsaved: [] }
  }

  private async compactForClose(): Promise<void> {
    for (const work of this.rooms.values()) {
      if (work.log.entries > 1) await this.queueCompaction(work)
    }
    // The entries compaction replaced still take disk space until the store rewrites their files.
    await this.store.reclaimSpace()
  }

  /** After close's deadline: stops every loop and rejects what was not stored. */
  private abandonPendingWrites(): string[] {
    this.stopped = true
    const unsaved: string[] = []
    for (const work of this.rooms.values()) {
      if (work.hasPending) unsaved.push(work.room)
      this.clearTimer(work)
      work.wakeRetry?.()
      for (const write of [...(work.inFlight ?? []), ...work.queued]) {
        write.reject(new WriterClosedError(work.room), 'abandoned')
      }
      work.queued = []
    }
    return unsaved
  }

  private async flushRoom(work: RoomWork): Promise<void> {
    const writes = [...(work.inFlight ?? []), ...work.queued]
    if (writes.length === 0) return
    if (work.queued.length > 0) this.kick(work)
    await Promise.allSettled(writes.map((write) => write.done))
    if (writes.some((write) => write.outcome === 'abandoned')) throw new WriterClosedError(work.room)
  }

  private work(room: string): RoomWork {
    let work = this.rooms.get(room)
    if (work === undefined) {
      work = new RoomWork(room)
      this.rooms.set(room, work)
    }
    return work
  }

  private clearTimer(work: RoomWork): void {
    if (work.timer !== null) {
      clearTimeout(work.timer)
      work.timer = null
    }
  }

  /** Starts the room's drain loop unless it runs already (it takes everything queued before it stops). */
  private kick(work: RoomWork): void {
    this.clearTimer(work)
    if (work.draining || this.stopped) return
    work.draining = true
    this.drain(work).catch((err: unknown) => {
      // Only a bug gets here (store failures are handled inside); restart on the next write.
      work.draining = false
      this.logger.error({ room: work.room, err }, 'persistence loop failed')
    })
  }

  private async drain(work: RoomWork): Promise<void> {
    while (true) {
      while (work.deletion !== null) await settled(work.deletion)
      if (this.stopped || work.queued.length === 0) {
        // Cleared in the same tick as the emptiness check: a write arriving after it sees a loop
        // that is not running and its timer starts a new one.
        work.draining = false
        return
      }
      this.clearTimer(work)
      // At most MAX_BATCH_UPDATES per append: Yjs applies a merged update of thousands of small
      // structs far more slowly than the same structs in small updates (a burst of 25,000 array
      // pushes merged into one entry took 10 s to load), so a burst becomes several entries.
      // Taken from the front in place: copying the rest each time is quadratic in a long backlog.
      let batch = work.queued.length <= MAX_BATCH_UPDATES ? work.queued : work.queued.splice(0, MAX_BATCH_UPDATES)
      if (batch === work.queued) work.queued = []
      work.inFlight = batch
      const generation = work.generation
      const merged = await this.mergeBatch(work, batch)
      batch = merged.writes
      if (merged.update === null || work.generation !== generation || this.stopped) {
        work.inFlight = null
        for (const write of batch) write.reject(this.stopped ? new WriterClosedError(work.room) : new RoomDeletedError(work.room), this.stopped ? 'abandoned' : 'refused')
        continue
      }
      const call = this.store.append(work.room, merged.update)
      work.storeCall = call
      let failure: unknown = null
      try {
        await call
      } catch (err) {
        failure = err ?? new Error('append failed')
      } finally {
        work.storeCall = null
        work.inFlight = null
      }
      if (failure === null) {
        // The batch is in arrival order: its first write waited longest.
        if (batch.length > 0) this.onBatchStored(batch.length, performance.now() - (batch[0] as PendingWrite).at)
        for (const write of batch) write.resolve()
        work.log.entries++
        work.log.bytes += merged.update.byteLength
        work.appendedEntries++
        work.appendedBytes += merged.update.byteLength
        this.markRecovered(work, true)
        this.maybeCompact(work)
        continue
      }
      if (work.generation !== generation) {
        for (const write of batch) write.reject(new RoomDeletedError(work.room), 'refused')
        continue
      }
      // Never dropped: the batch goes back in front of what arrived since, and the next attempt
      // merges all of it into one append.
      work.queued = batch.concat(work.queued)
      this.markFailed(work, failure)
      await this.sleepBeforeRetry(work)
    }
  }

  /**
   * One update for the whole batch. Bytes that are not a Yjs update would make every later load
   * fail, so when the merge throws, the culprits are found, refused and logged, and the rest go on.
   */
  private async mergeBatch(work: RoomWork, batch: PendingWrite[]): Promise<{ update: Uint8Array | null; writes: PendingWrite[] }> {
    if (batch.length === 1) return { update: (batch[0] as PendingWrite).update, writes: batch }
    try {
      return { update: await mergeUpdatesInChunks(batch.map((write) => write.update)), writes: batch }
    } catch (mergeError) {
      const valid: PendingWrite[] = []
      for (const write of batch) {
        try {
          Y.decodeUpdate(write.update)
          valid.push(write)
        } catch (err) {
          this.logger.error({ room: work.room, err, bytes: write.update.byteLength }, 'refused a write that is not a Yjs update')
          write.reject(new InvalidUpdateError(work.room, err), 'refused')
        }
      }
      if (valid.length === batch.length) throw mergeError
      if (valid.length === 0) return { update: null, writes: [] }
      return this.mergeBatch(work, valid)
    }
  }

  private retryDelayMs(attempt: number): number {
    // No jitter: the store is a local LevelDB, not a shared service a herd of clients could flatten.
    return Math.min(this.options.retryMaxMs, this.options.retryBaseMs * 2 ** Math.min(attempt - 1, 30))
  }

  private sleepBeforeRetry(work: RoomWork): Promise<void> {
    const delayMs = this.retryDelayMs(work.failedAttempts)
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer)
        work.wakeRetry = null
        resolve()
      }
      const timer = setTimeout(wake, delayMs)
      work.wakeRetry = wake
    })
  }

  private markFailed(work: RoomWork, err: unknown): void {
    work.failedAttempts++
    this.lastError = err instanceof Error ? err.message : String(err)
    const details = { room: work.room, attempt: work.failedAttempts, retryInMs: this.retryDelayMs(work.failedAttempts), err }
    if (work.failedAttempts === 1) this.logger.error(details, 'append failed; updates stay queued and are retried')
    else this.logger.warn(details, 'append failed again')
    if (!this.failingRooms.has(work.room)) this.failingRooms.set(work.room, Date.now())
    this.updateHealth()
  }

  private markRecovered(work: RoomWork, stored: boolean): void {
    if (work.failedAttempts === 0) return
    if (stored) this.logger.info({ room: work.room, failedAttempts: work.failedAttempts }, 'append succeeded after failures')
    work.failedAttempts = 0
    this.failingRooms.delete(work.room)
    this.updateHealth()
  }

  /** Not ok while any room has a batch that failed and is not yet stored; emits on each change of ok. */
  private updateHealth(): void {
    const failing = this.failingRooms.size > 0
    if (failing === !this.healthState.ok) {
      if (failing && !this.healthState.ok) this.healthState = { ...this.healthState, error: this.lastError }
      return
    }
    this.healthState = failing ? { ok: false, since: Math.min(...this.failingRooms.values()), error: this.lastError } : { ok: true }
    this.emit('health', this.healthState)
  }

  private noteLogRead(work: RoomWork, log: readonly LogEntry[]): void {
    // A compaction in progress knows better; it sets the size when it is done.
    if (work.compactionQueued) return
    work.log = {
      entries: log.length,
      bytes: log.reduce((sum, entry) => sum + entry.update.byteLength, 0),
      baseBytes: log[0]?.update.byteLength ?? 0,
    }
  }

  private needsCompaction(log: LogSize): boolean {
    if (log.entries < 2) return false
    const appendedBytes = log.bytes - log.baseBytes
    if (appendedBytes > this.options.compactBytes) return true
    if (log.entries > this.options.compactEntries * ENTRY_HARD_LIMIT_FACTOR) return true
    return log.entries > this.options.compactEntries && appendedBytes * BIG_DOCUMENT_DIVISOR >= log.baseBytes
  }

  private maybeCompact(work: RoomWork): void {
    if (this.state !== 'open' || work.compactionQueued || !this.needsCompaction(work.log)) return
    // After a failure, wait as long as the longest append retry before trying again.
    if (Date.now() - work.lastCompactionFailure < this.options.retryMaxMs) return
    this.queueCompaction(work).catch((err: unknown) => {
      work.lastCompactionFailure = Date.now()
      this.logger.error({ room: work.room, err }, 'compaction failed; the log stays as it is and is compacted later')
    })
  }

  private queueCompaction(work: RoomWork): Promise<void> {
    work.compactionQueued = true
    const compaction = work.maintenance.then(() => this.compactLog(work))
    work.maintenance = settled(compaction)
    const done = (): void => {
      work.compactionQueued = false
    }
    compaction.then(done, done)
    return compaction
  }

  /**
   * Reads the log, merges it in chunks and replaces the entries read with the result, in one
   * atomic batch. Appends landing meanwhile are not in what was read; they keep their (higher)
   * keys and stay behind the merged entry.
   */
  private async compactLog(work: RoomWork): Promise<void> {
    const entriesBefore = work.appendedEntries
    const bytesBefore = work.appendedBytes
    const log = await this.store.readLog(work.room)
    if (log.length >= 2) {
      const merged = this.snapshotSource?.(work.room) ?? (await mergeUpdatesIntoState(log.map((entry) => entry.update)))
      await this.store.replace(work.room, log.map((entry) => entry.key), merged)
      // Appends that completed between the counter snapshot and the read are counted twice;
      // the estimate errs towards compacting a little early, which is harmless.
      work.log = {
        entries: 1 + work.appendedEntries - entriesBefore,
        bytes: merged.byteLength + work.appendedBytes - bytesBefore,
        baseBytes: merged.byteLength,
      }
      this.logger.info({ room: work.room, entries: log.length, bytes: merged.byteLength }, 'compacted')
      this.onCompacted()
    } else {
      work.compactionQueued = false
      this.noteLogRead(work, log)
    }
  }

  private async runDeletion(work: RoomWork): Promise<void> {
    await work.maintenance
    // An append already handed to the store cannot be recalled; the delete lands after it.
    if (work.storeCall !== null) await settled(work.storeCall)
    await this.store.deleteRoom(work.room)
    work.log = { entries: 0, bytes: 0, baseBytes: 0 }
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new WriterClosedError()
  }
}

/** True when `promise` settled in time (its rejection is rethrown); false when the deadline passed first. */
async function withDeadline(promise: Promise<unknown>, deadlineMs: number | undefined): Promise<boolean> {
  if (deadlineMs === undefined) {
    await promise
    return true
  }
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), deadlineMs)
  })
  try {
    return await Promise.race([promise.then(() => true as const), expired])
  } finally {
    clearTimeout(timer)
  }
}

function validateOptions(options: WriterOptions): Required<Omit<WriterOptions, 'logger' | 'onBatchStored' | 'onCompacted'>> {
  const resolved = {
    persistWindowMs: options.persistWindowMs,
    compactEntries: options.compactEntries ?? WRITER_DEFAULTS.compactEntries,
    compactBytes: options.compactBytes ?? WRITER_DEFAULTS.compactBytes,
    retryBaseMs: options.retryBaseMs ?? WRITER_DEFAULTS.retryBaseMs,
    retryMaxMs: options.retryMaxMs ?? WRITER_DEFAULTS.retryMaxMs,
  }
  const check = (name: keyof typeof resolved, ok: boolean): void => {
    if (!ok) throw new RangeError(`DocumentWriter option ${name} is invalid: ${resolved[name]}`)
  }
  check('persistWindowMs', Number.isFinite(resolved.persistWindowMs) && resolved.persistWindowMs >= 0)
  check('compactEntries', Number.isInteger(resolved.compactEntries) && resolved.compactEntries >= 1)
  check('compactBytes', Number.isFinite(resolved.compactBytes) && resolved.compactBytes > 0)
  check('retryBaseMs', Number.isFinite(resolved.retryBaseMs) && resolved.retryBaseMs > 0)
  check('retryMaxMs', Number.isFinite(resolved.retryMaxMs) && resolved.retryMaxMs >= resolved.retryBaseMs)
  return resolved
}

/** The store behind `--data`: `memory` keeps documents in this process only; anything else is a LevelDB directory. */
export async function openStore(data: string): Promise<Store & LocalVersionStore> {
  if (data === 'memory') return new MemoryStore()
  return LevelStore.open(data)
}
