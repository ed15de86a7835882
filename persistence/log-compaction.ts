import { MergePool } from '../crdt/index.js'
import type { WriterLogger } from './document-writer.js'
import { settled, type LogSize, type RoomWork } from './room-work.js'
import type { LogEntry, Store } from './store.js'

/**
 * Where compaction gets a loaded room's document, handed to the writer at construction by the
 * layer that holds the rooms. A live document already holds every stored entry (and maybe newer
 * ones), and encoding it is far cheaper than re-applying the log.
 */
export interface SnapshotSource {
  /**
   * The encoded state of `room` when it is loaded and sound, else null (the log is merged then).
   * Never the state of a document Yjs broke: it would be written over the sound log.
   */
  snapshot(room: string): Uint8Array | null
}

export interface CompactionOptions {
  /** Compact once the log has more than this many entries (subject to the big-document rule below). */
  compactEntries: number
  /** Compact once the bytes appended on top of the last merged base exceed this, whatever the entry count. */
  compactBytes: number
  /** After a failed compaction, none is started for this long (the longest append retry). */
  retryAfterFailureMs: number
}

/**
 * Entry-count compaction rewrites the whole document, so for a big document it waits until the
 * bytes appended since the last compaction reach 1/16 of the base: each byte is then rewritten at
 * most ~16 times by entry-triggered compactions, instead of a 60 MB document being rewritten
 * every 64 keystrokes.
 */
const BIG_DOCUMENT_DIVISOR = 16
/** ...but never lets the log grow past 64 × compactEntries entries: load cost grows with entries too. */
const ENTRY_HARD_LIMIT_FACTOR = 64
/** Compactions of different rooms running at once (each room runs its own one at a time). */
const CONCURRENT_COMPACTIONS = 2

/**
 * Lets compactions of different rooms start one per turn of the event loop, at most `limit` at a
 * time. Rooms that filled their logs together (writers that started together, a deploy) would
 * otherwise all compact in the same tick: with a fast store every step settles in microtasks, and
 * two hundred small compactions back to back stalled every room's traffic for tens of ms.
 */
class CompactionTurns {
  private running = 0
  private readonly waiting: Array<() => void> = []

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve))
    else this.running++
    try {
      // A turn of the event loop first: frames that arrived meanwhile are handled before this one starts.
      await new Promise<void>((resolve) => setImmediate(resolve))
      return await task()
    } finally {
      const next = this.waiting.shift()
      // The slot passes straight to the next waiter, so `running` stays counted for it.
      if (next === undefined) this.running--
      else next()
    }
  }
}

/**
 * Keeps each room's log short: tracks its estimated size from reads and appends, and when it grew
 * past the policy, replaces the entries with one merged document, on the room's maintenance chain.
 */
export class LogCompactor {
  private readonly turns = new CompactionTurns(CONCURRENT_COMPACTIONS)

  constructor(
    private readonly store: Store,
    private readonly options: Readonly<CompactionOptions>,
    private readonly snapshots: SnapshotSource | null,
    private readonly logger: WriterLogger,
    /** False once the writer is closing: only close() itself compacts then. */
    private readonly accepting: () => boolean,
    /** For metrics: each log compacted into one entry. */
    private readonly onCompacted: () => void = () => {},
    /** Where logs are merged: on worker threads when big (then even a loaded room's log is merged there rather than its document encoded on the event loop). */
    private readonly merges: MergePool = new MergePool({ workers: 0 }),
  ) {}

  noteLogRead(work: RoomWork, log: readonly LogEntry[]): void {
    // A compaction in progress knows better; it sets the size when it is done.
    if (work.compactionQueued) return
    work.logKnown = true
    work.log = {
      entries: log.length,
      bytes: log.reduce((sum, entry) => sum + entry.update.byteLength, 0),
      baseBytes: log[0]?.update.byteLength ?? 0,
    }
  }

  noteAppended(work: RoomWork, bytes: number): void {
    work.log.entries++
    work.log.bytes += bytes
    work.appendedEntries++
    work.appendedBytes += bytes
    if (!work.logKnown) this.measure(work)
  }

  /**
   * A room written without a load since the writer made its work (it forgot the room, see
   * DocumentWriter idleRoomsKept, and the room stayed loaded): its log is read once on the
   * maintenance chain, so a room written now and then among many does not grow its log for ever
   * with an estimate that starts over at every write.
   */
  private measure(work: RoomWork): void {
    if (!this.accepting() || work.compactionQueued) return
    work.logKnown = true
    // Counts as a compaction while it reads: the room is not forgotten, and none starts meanwhile.
    work.compactionQueued = true
    const entriesBefore = work.appendedEntries
    const bytesBefore = work.appendedBytes
    const read = work.maintenance.then(() => this.store.readLog(work.room))
    work.maintenance = settled(read)
    read.then(
      (log) => {
        work.compactionQueued = false
        this.noteLogRead(work, log)
        // Appends stored while the read waited or ran may be missing from it: counted on top, so
        // the estimate errs towards compacting a little early (those before the read are counted twice).
        work.log.entries += work.appendedEntries - entriesBefore
        work.log.bytes += work.appendedBytes - bytesBefore
        this.maybeCompact(work)
      },
      (err: unknown) => {
        work.compactionQueued = false
        this.logger.warn({ room: work.room, err }, 'reading the log to size it failed; it is read again at the room\'s next load')
      },
    )
  }

  noteQuarantined(work: RoomWork): void {
    work.log = { entries: Math.max(0, work.log.entries - 1), bytes: work.log.bytes, baseBytes: work.log.baseBytes }
  }

  noteDeleted(work: RoomWork): void {
    work.logKnown = true
    work.log = { entries: 0, bytes: 0, baseBytes: 0 }
  }

  /** Queues a compaction when the log grew past the policy; a failure is logged and retried later. */
  maybeCompact(work: RoomWork): void {
    if (!this.accepting() || work.compactionQueued || !this.needsCompaction(work.log)) return
    // After a failure, wait as long as the longest append retry before trying again.
    if (Date.now() - work.lastCompactionFailure < this.options.retryAfterFailureMs) return
    this.queue(work).catch((err: unknown) => {
      work.lastCompactionFailure = Date.now()
      this.logger.error({ room: work.room, err }, 'compaction failed; the log stays as it is and is compacted later')
    })
  }

  /** Compacts the room's log after the maintenance already queued for it; rejects when storage fails. */
  queue(work: RoomWork): Promise<void> {
    work.compactionQueued = true
    const compaction = work.maintenance.then(() => this.turns.run(() => this.compactLog(work)))
    work.maintenance = settled(compaction)
    const done = (): void => {
      work.compactionQueued = false
    }
    compaction.then(done, done)
    return compaction
  }

  private needsCompaction(log: LogSize): boolean {
    if (log.entries < 2) return false
    const appendedBytes = log.bytes - log.baseBytes
    if (appendedBytes > this.options.compactBytes) return true
    if (log.entries > this.options.compactEntries * ENTRY_HARD_LIMIT_FACTOR) return true
    return log.entries > this.options.compactEntries && appendedBytes * BIG_DOCUMENT_DIVISOR >= log.baseBytes
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
      const updates = log.map((entry) => entry.update)
      const bytes = updates.reduce((sum, update) => sum + update.byteLength, 0)
      // Encoding a big live document blocks the event loop as long as merging its log would;
      // a worker merges the log without blocking it.
      const snapshot = this.merges.offloads(bytes) ? null : (this.snapshots?.snapshot(work.room) ?? null)
      const merged = snapshot ?? (await this.merges.mergeIntoState(updates))
      await this.store.replace(work.room, log.map((entry) => entry.key), merged)
      // Appends that completed between the counter snapshot and the read are counted twice;
      // the estimate errs towards compacting a little early, which is harmless.
      work.logKnown = true
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
}
