import { EventEmitter } from 'node:events'
import { pino } from 'pino'
import * as Y from 'yjs'
import { isValidRoomName } from '../protocol/room-name.js'
import { MERGE_POOL_DEFAULTS, MergePool, mergeUpdatesInChunks } from '../crdt/index.js'
import { AppendRetry, StorageHealthTracker, type StorageHealth } from './append-failures.js'
import { InvalidRoomNameError, InvalidUpdateError, WriterClosedError } from './errors.js'
import { LevelStore } from './level-store.js'
import { LogCompactor, type SnapshotSource } from './log-compaction.js'
import { MemoryStore } from './memory-store.js'
import { PersistWindows } from './persist-windows.js'
import { PendingWrite, RoomWork, rejectWrites, settled } from './room-work.js'
import type { LocalVersionStore, LogEntry, Store, StoredRoom } from './store.js'

export type { StorageHealth } from './append-failures.js'
export type { SnapshotSource } from './log-compaction.js'

export interface WriterLogger {
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
  info(obj: object, msg: string): void
}

export interface WriterOptions {
  /** Longest time, in ms, an accepted update waits before its append starts (contract default 100). */
  persistWindowMs: number
  /** Compact once the log has more than this many entries (subject to the big-document rule in log-compaction.ts). */
  compactEntries?: number
  /** Compact once the bytes appended on top of the last merged base exceed this, whatever the entry count. */
  compactBytes?: number
  /** First retry delay after a failed append, in ms; doubles per failure up to retryMaxMs. */
  retryBaseMs?: number
  retryMaxMs?: number
  logger?: WriterLogger
  /**
   * Loaded rooms' documents for compaction, from the layer that holds them (the server's room
   * registry); without it compaction merges the stored log.
   */
  snapshots?: SnapshotSource
  /** For metrics: each append stored, with its update count and how long (ms) its oldest update waited since `write`. */
  onBatchStored?(updates: number, oldestWaitMs: number): void
  /** For metrics: each log compacted into one entry. */
  onCompacted?(): void
  /**
   * Worker threads that merge large logs (cold load, compaction) off the event loop; 0 = on it
   * (default 1, started when first needed). A worker that fails is replaced and its merge runs on
   * the event loop instead (counted in `weft_merge_worker_fallbacks_total`).
   */
  mergeWorkers?: number
  /** Merges of fewer bytes stay on the event loop (default 1 MiB). */
  mergeWorkerThresholdBytes?: number
  /**
   * Rooms with nothing in flight the writer keeps what it knows of (their log-size estimate, for
   * compaction), the least recently used forgotten first (default 10,000, a few MB). Without a
   * bound every room ever read or written would stay in memory until the process ends.
   */
  idleRoomsKept?: number
  /** @internal The worker script (tests use one that fails). */
  mergeWorkerUrl?: URL
}

/** Time kept back from a close deadline for closing the store itself. */
const CLOSE_RESERVE_MS = 500

/** Updates merged into one log entry at most. */
const MAX_BATCH_UPDATES = 64

/** Rooms at work forgetIdleRooms may meet (and move to the back) in one walk before it stops. */
const FORGET_LOOKS = 64

export const WRITER_DEFAULTS = Object.freeze({
  persistWindowMs: 100,
  mergeWorkers: MERGE_POOL_DEFAULTS.workers,
  mergeWorkerThresholdBytes: MERGE_POOL_DEFAULTS.thresholdBytes,
  compactEntries: 64,
  compactBytes: 16 * 1024 * 1024,
  retryBaseMs: 100,
  retryMaxMs: 10_000,
  idleRoomsKept: 10_000,
})

type WriterState = 'open' | 'closing' | 'closed'

/**
 * Per-room persistence for the server: batches a room's updates for up to `persistWindowMs` into
 * one append, retries failed appends with backoff while keeping them queued (append-failures.ts),
 * compacts logs that grew long (log-compaction.ts), and reports storage health.
 */
export class DocumentWriter extends EventEmitter {
  private readonly rooms = new Map<string, RoomWork>()
  private readonly options: Readonly<ResolvedOptions>
  private readonly logger: WriterLogger
  private readonly onBatchStored: NonNullable<WriterOptions['onBatchStored']>
  private readonly retry: AppendRetry
  private readonly failures: StorageHealthTracker
  private readonly compactor: LogCompactor
  private readonly merges: MergePool
  private readonly windows: PersistWindows
  private state: WriterState = 'open'
  /** Set when close's deadline expired: loops stop and what was not stored is abandoned. */
  private stopped = false
  private closing: Promise<{ unsaved: string[] }> | null = null

  constructor(private readonly store: Store, options: WriterOptions) {
    super()
    this.options = Object.freeze(validateOptions(options))
    this.logger = options.logger ?? pino({ base: { service: 'weft', component: 'persistence' } })
    this.retry = new AppendRetry(this.options.retryBaseMs, this.options.retryMaxMs)
    this.failures = new StorageHealthTracker(this.retry, this.logger, (health) => this.emit('health', health))
    const { compactEntries, compactBytes, retryMaxMs } = this.options
    this.merges = new MergePool({
      workers: this.options.mergeWorkers,
      thresholdBytes: this.options.mergeWorkerThresholdBytes,
      ...(options.mergeWorkerUrl === undefined ? {} : { workerUrl: options.mergeWorkerUrl }),
    })
    this.compactor = new LogCompactor(store, { compactEntries, compactBytes, retryAfterFailureMs: retryMaxMs }, options.snapshots ?? null, this.logger, () => this.state === 'open', options.onCompacted, this.merges)
    this.onBatchStored = options.onBatchStored ?? (() => {})
    this.windows = new PersistWindows(this.options.persistWindowMs, (work) => this.kick(work))
  }

  override on(event: 'health', listener: (health: StorageHealth) => void): this {
    return super.on(event, listener)
  }

  override off(event: 'health', listener: (health: StorageHealth) => void): this {
    return super.off(event, listener)
  }

  health(): StorageHealth {
    return this.failures.health
  }

  /** Whether load merges a log of `bytes` on a worker thread rather than the event loop. */
  mergesOffLoop(bytes: number): boolean {
    return this.state === 'open' && this.merges.offloads(bytes)
  }

  hasPending(room: string): boolean {
    return this.rooms.get(room)?.hasPending ?? false
  }

  write(room: string, update: Uint8Array): Promise<void> {
    if (this.state !== 'open') return Promise.reject(new WriterClosedError())
    // Refused here: an unstorable name would otherwise fail every retry and hold health down forever.
    if (!isValidRoomName(room)) return Promise.reject(new InvalidRoomNameError(room))
    const work = this.work(room)
    const write = new PendingWrite(update)
    work.queued.push(write)
    // The window starts with the first update of a batch and is not extended by later ones:
    // it bounds how long any update waits.
    this.windows.start(work)
    return write.done
  }

  /**
   * The stored document merged with the updates of this room not yet durable, so it includes every
   * write accepted before the call. It does not wait for those appends: a room must stay loadable
   * while appends fail (a full disk still reads). A state merged here has `headroom` free bytes
   * in front of it (see claimHeadroom); one read back as it is has none.
   */
  async load(room: string, headroom = 0): Promise<Uint8Array | null> {
    this.assertOpen()
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    const work = this.work(room)
    const updates = await holding(work, async () => {
      while (work.deletion !== null) await settled(work.deletion)
      // Taken before reading: an append that completes during the read is then in both, which a
      // merge tolerates (Yjs skips structs it already has); the other order could miss it.
      const pending = work.unstored.map((write) => write.update)
      const log = await this.store.readLog(room)
      this.compactor.noteLogRead(work, log)
      this.compactor.maybeCompact(work)
      return log.map((entry) => entry.update).concat(pending)
    })
    if (updates.length === 0) return null
    if (updates.length === 1) return updates[0] as Uint8Array
    try {
      return await this.merges.mergeIntoState(updates, headroom)
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
    return holding(work, async () => {
      while (work.deletion !== null) await settled(work.deletion)
      const pending = work.unstored.map((write) => write.update)
      return { log: await this.store.readLog(room), pending }
    })
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
    await holding(work, async () => {
      await move
      this.compactor.noteQuarantined(work)
    })
  }

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
    this.windows.cancel(work)
    const superseded = work.queued
    work.queued = []
    rejectWrites(superseded, room, 'deleted')
    // A failing batch of this room is gone with it; it no longer holds health down.
    this.failures.markRecovered(work, false)
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
    await this.compactor.queue(this.work(room))
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
      void this.merges.close()
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
    await this.merges.close()
    this.state = 'closed'
    return { unsaved: [] }
  }

  private async compactForClose(): Promise<void> {
    for (const work of this.rooms.values()) {
      if (work.log.entries > 1) await this.compactor.queue(work)
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
      this.windows.cancel(work)
      work.wakeRetry?.()
      rejectWrites(work.unstored, work.room, 'closed')
      work.queued = []
    }
    return unsaved
  }

  private async flushRoom(work: RoomWork): Promise<void> {
    const writes = work.unstored
    if (writes.length === 0) return
    if (work.queued.length > 0) this.kick(work)
    await Promise.allSettled(writes.map((write) => write.done))
    if (writes.some((write) => write.outcome === 'abandoned')) throw new WriterClosedError(work.room)
  }

  /** The room's work, made most recently used (last in `rooms`), and made when it is new. */
  private work(room: string): RoomWork {
    let work = this.rooms.get(room)
    if (work !== undefined) {
      this.rooms.delete(room)
    } else {
      work = new RoomWork(room)
      if (this.rooms.size >= this.options.idleRoomsKept) this.forgetIdleRooms()
    }
    this.rooms.set(room, work)
    return work
  }

  /**
   * Forgets the least recently used rooms that are idle, down to nine tenths of idleRoomsKept, so
   * the walk runs once per tenth of the bound in new rooms rather than for each (one room at a
   * time, a flood of made-up names cost three times as much). A room at work goes to the back
   * instead, so the walk moves on; with FORGET_LOOKS looks to spare, the known rooms exceed the
   * bound by no more than the rooms at work.
   */
  private forgetIdleRooms(): void {
    const keep = this.options.idleRoomsKept - Math.ceil(this.options.idleRoomsKept / 10)
    let looks = this.rooms.size - keep + FORGET_LOOKS
    for (const [room, work] of this.rooms) {
      if (this.rooms.size <= keep || looks-- === 0) return
      this.rooms.delete(room)
      if (!work.idle) this.rooms.set(room, work)
    }
  }

  /** Rooms the writer currently keeps work for (at most idleRoomsKept idle ones, plus those at work). */
  get knownRooms(): number {
    return this.rooms.size
  }

  /** Starts the room's drain loop unless it runs already (it takes everything queued before it stops). */
  private kick(work: RoomWork): void {
    this.windows.cancel(work)
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
        // that is not running and its window starts a new one.
        work.draining = false
        return
      }
      this.windows.cancel(work)
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
        rejectWrites(batch, work.room, this.stopped ? 'closed' : 'deleted')
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
        this.compactor.noteAppended(work, merged.update.byteLength)
        this.failures.markRecovered(work, true)
        this.compactor.maybeCompact(work)
        continue
      }
      if (work.generation !== generation) {
        rejectWrites(batch, work.room, 'deleted')
        continue
      }
      // Never dropped: the batch goes back in front of what arrived since, and the next attempt
      // merges all of it into one append.
      work.queued = batch.concat(work.queued)
      this.failures.markFailed(work, failure)
      await this.retry.sleep(work)
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

  private async runDeletion(work: RoomWork): Promise<void> {
    await work.maintenance
    // An append already handed to the store cannot be recalled; the delete lands after it.
    if (work.storeCall !== null) await settled(work.storeCall)
    await this.store.deleteRoom(work.room)
    this.compactor.noteDeleted(work)
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new WriterClosedError()
  }
}

/** Runs `task` with `work` held: the writer does not forget the room meanwhile (RoomWork.idle). */
async function holding<T>(work: RoomWork, task: () => Promise<T>): Promise<T> {
  work.holds++
  try {
    return await task()
  } finally {
    work.holds--
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

type ResolvedOptions = Required<Omit<WriterOptions, 'logger' | 'snapshots' | 'onBatchStored' | 'onCompacted' | 'mergeWorkerUrl'>>

function validateOptions(options: WriterOptions): ResolvedOptions {
  const resolved = {
    persistWindowMs: options.persistWindowMs,
    compactEntries: options.compactEntries ?? WRITER_DEFAULTS.compactEntries,
    compactBytes: options.compactBytes ?? WRITER_DEFAULTS.compactBytes,
    retryBaseMs: options.retryBaseMs ?? WRITER_DEFAULTS.retryBaseMs,
    retryMaxMs: options.retryMaxMs ?? WRITER_DEFAULTS.retryMaxMs,
    mergeWorkers: options.mergeWorkers ?? WRITER_DEFAULTS.mergeWorkers,
    mergeWorkerThresholdBytes: options.mergeWorkerThresholdBytes ?? WRITER_DEFAULTS.mergeWorkerThresholdBytes,
    idleRoomsKept: options.idleRoomsKept ?? WRITER_DEFAULTS.idleRoomsKept,
  }
  const check = (name: keyof typeof resolved, ok: boolean): void => {
    if (!ok) throw new RangeError(`DocumentWriter option ${name} is invalid: ${resolved[name]}`)
  }
  check('persistWindowMs', Number.isFinite(resolved.persistWindowMs) && resolved.persistWindowMs >= 0)
  check('compactEntries', Number.isInteger(resolved.compactEntries) && resolved.compactEntries >= 1)
  check('compactBytes', Number.isFinite(resolved.compactBytes) && resolved.compactBytes > 0)
  check('retryBaseMs', Number.isFinite(resolved.retryBaseMs) && resolved.retryBaseMs > 0)
  check('retryMaxMs', Number.isFinite(resolved.retryMaxMs) && resolved.retryMaxMs >= resolved.retryBaseMs)
  check('mergeWorkers', Number.isInteger(resolved.mergeWorkers) && resolved.mergeWorkers >= 0)
  check('mergeWorkerThresholdBytes', Number.isFinite(resolved.mergeWorkerThresholdBytes) && resolved.mergeWorkerThresholdBytes >= 0)
  check('idleRoomsKept', Number.isSafeInteger(resolved.idleRoomsKept) && resolved.idleRoomsKept >= 1)
  return resolved
}

/** The store behind `--data`: `memory` keeps documents in this process only; anything else is a LevelDB directory. */
export async function openStore(data: string): Promise<Store & LocalVersionStore> {
  if (data === 'memory') return new MemoryStore()
  return LevelStore.open(data)
}
