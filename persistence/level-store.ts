import { mkdir } from 'node:fs/promises'
import { Level } from 'level'
import { StoreClosedError } from './errors.js'
import { formatSequence, parseSequence } from './log-key.js'
import { assertStorableRoomName, type LocalVersionStore, type LogEntry, type Store, type StoredRoom, type VersionInfo, type VersionLimits, type VersionPageRequest, type VersionRecord } from './store.js'
import { assertVersionId, isVersionId } from './version-id.js'
import { checkVersionLimits, type VersionUsage } from './version-limits.js'
import { decodeVersionInfo, decodeVersionValue, encodeVersionInfo, encodeVersionValue, versionInfoFromValue } from './version-value.js'

/**
 * Key layout (UTF-8 strings, compared bytewise by LevelDB):
 *
 *   log \0 <room> \0 <16-digit sequence>       one update of the room's log
 *   version \0 <room> \0 <version id>          one saved version (value: persistence/version-value.ts)
 *   version-info \0 <room> \0 <version id>     its description (encodeVersionInfo): what a listing reads
 *   version-pending \0 <room> \0 <version id>  a big version being written (VERSION_PENDING_KIND)
 *   meta \0 versions-described                 present once every version has its description
 *   meta \0 versions-published-epoch           the Redis epoch all versions were last published into
 *
 * The kind comes first so each kind (`version\0…` above, a later `meta\0…`) gets its own range without a
 * migration. Room names never contain control characters (assertStorableRoomName), so the \0
 * after the room ends it unambiguously: room "a" owns exactly [`log\0a\0`, `log\0a\x01`), which
 * holds no key of "a:b" or "ab" (their next byte is ≥ 0x20). The fixed-width sequence sorts
 * numerically; the key handed to callers is the sequence alone, so a key can never name an entry
 * of another room. Version ids are fixed-width and time-ordered (version-id.ts), so one room's
 * version range lists oldest first; versions are outside the log range, so `listRooms` (which
 * reads only the log range) does not report a room that has versions but no log.
 */
const LOG_KIND = 'log\u0000'
const VERSION_KIND = 'version\u0000'
/** quarantine \0 <room> \0 <sequence>: log entries that could not be applied, set aside. */
const QUARANTINE_KIND = 'quarantine\u0000'
const VERSION_INFO_KIND = 'version-info\u0000'
/**
 * version-pending \0 <room> \0 <version id>: a version over BATCH_VALUE_MAX_BYTES being written in
 * steps (putVersion). Present while its description is not; `open` deletes the version of every
 * one it finds (a put cut short by a crash), so what a put began and never finished stays unlisted.
 */
const VERSION_PENDING_KIND = 'version-pending\u0000'
/**
 * Stores written before descriptions existed hold versions without one; `open` describes them
 * once (reading each value once) and then writes this key, so later opens skip the scan.
 */
const VERSIONS_DESCRIBED_KEY = 'meta\u0000versions-described'
const PUBLISHED_EPOCH_KEY = 'meta\u0000versions-published-epoch'
/** Entries per batch while describing old versions at open. */
const DESCRIBE_BATCH = 256
const ROOM_END = '\u0000'
/** The byte after ROOM_END: the exclusive upper bound of one room's range. */
const ROOM_RANGE_END = '\u0001'
const SEQUENCE_LENGTH = formatSequence(0).length
/**
 * Sorts after every key of a room's range (sequences are digits, version ids [0-9a-z]) and before
 * the range's end. Like the bare range start, it never names an entry: reclaimSpace deletes both.
 */
const RANGE_LAST = '~'
/** Sorts before every key: compacting just it flushes the memtable and compacts nothing. */
const BEFORE_ALL_KEYS = '\u0000'
/**
 * Largest value written inside a batch; a bigger one (a merged document in `replace`, a version in
 * `putVersion`) gets a put of its own. classic-level builds a batch's LevelDB WriteBatch on the
 * event loop (each value copied, then appended to the batch's growing buffer), a put only copies
 * its value there and LevelDB builds its batch on a libuv thread. With a 20 MB value on a loaded
 * 2-core VM, a batch blocked the loop for a median of 175 to 490 ms (runs of 7 to 9), a put for 2 ms
 * (that one copy, of freshly mapped memory, still took up to 240 ms in some runs).
 */
const BATCH_VALUE_MAX_BYTES = 1024 * 1024
/** Garbage in a range below this many bytes is left to LevelDB: not worth a rewrite at close. */
const RECLAIM_MIN_BYTES = 64 * 1024
/** ...and below 1/8 of the range's live bytes: rewriting a big document for little is not worth it either. */
const RECLAIM_LIVE_DIVISOR = 8

function roomRange(room: string, kind = LOG_KIND): { gte: string; lt: string } {
  return { gte: kind + room + ROOM_END, lt: kind + room + ROOM_RANGE_END }
}

/**
 * In Node, `level` is classic-level, which has these beyond the abstract-level methods its types
 * promise (they cover browsers too).
 */
interface LevelDbFiles {
  compactRange(start: string, end: string): Promise<void>
  approximateSize(start: string, end: string): Promise<number>
}

function levelDbFiles(db: Level<string, Uint8Array>): LevelDbFiles {
  const files = db as unknown as Partial<LevelDbFiles>
  if (typeof files.compactRange !== 'function' || typeof files.approximateSize !== 'function') {
    throw new TypeError('the level package did not load classic-level (compactRange, approximateSize)')
  }
  return files as LevelDbFiles
}

/** A key range some of whose entries were deleted since the store opened (or since reclaimSpace last visited it). */
interface ReclaimableRange {
  gte: string
  lt: string
  /**
   * A lower bound of the bytes still live in the range: what was written since the deletion.
   * `replace` counts only the merged entry, not older entries it left, so the bound errs towards
   * rewriting a range that did not need it, which costs time, never data.
   */
  liveBytes: number
}

/** What removes a version whose put did not finish: its document, its description, then its pending mark, in one batch. */
function unfinishedVersionDeletes(pendingKey: string, key: string, infoKey: string): Array<{ type: 'del'; key: string }> {
  return [
    { type: 'del', key },
    { type: 'del', key: infoKey },
    { type: 'del', key: pendingKey },
  ]
}

/** classic-level hands out Buffers (often slices of a shared pool); callers get plain views. */
function asPlainBytes(value: Uint8Array): Uint8Array {
  return Buffer.isBuffer(value) ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value
}

export interface LevelStoreOptions {
  /**
   * fsync every write. Off by default: a resolved write survives a crash of the process (it is in
   * LevelDB's log, in the OS page cache) but not a power loss. On costs one fsync per append.
   */
  sync?: boolean
}

export class LevelStore implements Store, LocalVersionStore {
  readonly kind = 'leveldb'
  /**
   * The next sequence per room, found from the room's highest stored key the first time the room
   * is touched (one reverse seek), so sequences keep increasing across restarts without a scan of
   * the whole database at open. A promise, so concurrent first appends share one lookup.
   */
  private readonly nextSequence = new Map<string, Promise<{ next: number }>>()
  /** Keyed by range start. */
  private readonly reclaimable = new Map<string, ReclaimableRange>()
  /** Per room, the tail of its version writes: a limit check and its write are one step. */
  private readonly versionWrites = new Map<string, Promise<void>>()
  private closed = false

  private constructor(
    private readonly db: Level<string, Uint8Array>,
    /** The same object as `db`, typed with what classic-level adds. */
    private readonly files: LevelDbFiles,
    readonly location: string,
    private readonly sync: boolean,
  ) {}

  /** Opens (creating the directory and the database when missing) the LevelDB at `dir`. */
  static async open(dir: string, options: LevelStoreOptions = {}): Promise<LevelStore> {
    await mkdir(dir, { recursive: true })
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
    const files = levelDbFiles(db)
    try {
      await db.open()
    } catch (err) {
      // LEVEL_LOCKED (another process has it) hides in `cause`; name it in the message.
      const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : ''
      throw new Error(`cannot open LevelDB at ${dir}${cause}`, { cause: err })
    }
    const store = new LevelStore(db, files, dir, options.sync ?? false)
    try {
      await store.deleteUnfinishedVersions()
      await store.describeOldVersions()
    } catch (err) {
      await db.close()
      throw err
    }
    return store
  }

  async readLog(room: string): Promise<LogEntry[]> {
    this.assertOpen()
    assertStorableRoomName(room)
    const entries: LogEntry[] = []
    for await (const [key, value] of this.db.iterator(roomRange(room))) {
      entries.push({ key: key.slice(-SEQUENCE_LENGTH), update: asPlainBytes(value) })
    }
    return entries
  }

  async append(room: string, update: Uint8Array): Promise<string> {
    this.assertOpen()
    assertStorableRoomName(room)
    const counter = await this.sequenceFor(room)
    // Taken synchronously after the shared lookup, so keys follow the order of append calls.
    const key = formatSequence(counter.next++)
    await this.db.put(LOG_KIND + room + ROOM_END + key, update, { sync: this.sync })
    this.noteLiveBytes(roomRange(room), update.byteLength)
    return key
  }

  async replace(room: string, keys: readonly string[], merged: Uint8Array): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    if (keys.length === 0) throw new RangeError('replace needs at least one key')
    const sequences = keys.map(parseSequence)
    // The merged entry takes the highest replaced key: after everything it replaces, before
    // anything appended later (those got higher sequences).
    const mergedKey = formatSequence(Math.max(...sequences))
    const prefix = LOG_KIND + room + ROOM_END
    if (merged.byteLength > BATCH_VALUE_MAX_BYTES) {
      // Not in a batch (BATCH_VALUE_MAX_BYTES): a big document overwrites the highest key on its
      // own, then the rest go. In between, the log holds the merged document and entries
      // it already contains: applying them again changes nothing, so a crash there loses
      // nothing and the next compaction removes them.
      await this.db.put(prefix + mergedKey, merged, { sync: this.sync })
      const older = keys.filter((key) => key !== mergedKey)
      if (older.length > 0) await this.db.batch(older.map((key) => ({ type: 'del' as const, key: prefix + key })), { sync: this.sync })
    } else {
      await this.db.batch(
        [
          ...keys.map((key) => ({ type: 'del' as const, key: prefix + key })),
          // After the deletes in the same batch: LevelDB applies a batch in order.
          { type: 'put' as const, key: prefix + mergedKey, value: merged },
        ],
        { sync: this.sync },
      )
    }
    this.noteDeletion(roomRange(room), merged.byteLength)
  }

  async deleteRoom(room: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    // The sequence counter is kept: keys stay increasing for this process even across a delete.
    // Log and versions go in one batch, so no crash leaves versions of a deleted document behind
    // (`clear` would delete in chunks, one range at a time).
    const keys: string[] = []
    for (const range of [roomRange(room), roomRange(room, VERSION_KIND), roomRange(room, VERSION_INFO_KIND), roomRange(room, VERSION_PENDING_KIND), roomRange(room, QUARANTINE_KIND)]) {
      for await (const key of this.db.keys(range)) keys.push(key)
    }
    if (keys.length === 0) return
    await this.db.batch(keys.map((key) => ({ type: 'del' as const, key })), { sync: this.sync })
    this.noteDeletion(roomRange(room), 0)
    this.noteDeletion(roomRange(room, VERSION_KIND), 0)
    this.noteDeletion(roomRange(room, VERSION_INFO_KIND), 0)
  }

  async quarantine(room: string, key: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    const sequence = formatSequence(parseSequence(key))
    const logKey = LOG_KIND + room + ROOM_END + sequence
    const value = await this.db.get(logKey)
    if (value === undefined) return
    await this.db.batch(
      [
        { type: 'del', key: logKey },
        { type: 'put', key: QUARANTINE_KIND + room + ROOM_END + sequence, value },
      ],
      { sync: this.sync },
    )
  }

  // ---- VersionStore ----------------------------------------------------------------------

  /**
   * Durable when it resolves, like `append`. Up to BATCH_VALUE_MAX_BYTES the version and its
   * description are one batch. A bigger version goes in three writes, its document in a put of its
   * own: a pending mark (and the description of a version it replaces) first, then the document,
   * then its description with the mark removed. So a listing never shows a version without its
   * document; a put that fails midway, or a crash, leaves nothing listed under the id, and what
   * it wrote is deleted then or at the next open.
   */
  async putVersion(room: string, version: VersionRecord, limits?: VersionLimits): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    assertVersionId(version.id)
    const value = encodeVersionValue(version)
    const info = encodeVersionInfo({ name: version.name, createdAt: version.createdAt, bytes: version.update.byteLength })
    const key = VERSION_KIND + room + ROOM_END + version.id
    const infoKey = VERSION_INFO_KIND + room + ROOM_END + version.id
    const pendingKey = VERSION_PENDING_KIND + room + ROOM_END + version.id
    await this.serializeVersionWrite(room, async () => {
      if (limits !== undefined) {
        const { usage, replaced } = await this.versionUsage(room, version.id)
        checkVersionLimits(room, usage, version.update.byteLength, replaced, limits)
      }
      if (value.byteLength <= BATCH_VALUE_MAX_BYTES) {
        await this.db.batch(
          [
            { type: 'put', key, value },
            { type: 'put', key: infoKey, value: info },
          ],
          { sync: this.sync },
        )
        return
      }
      await this.db.batch(
        [
          { type: 'put', key: pendingKey, value: new Uint8Array(0) },
          { type: 'del', key: infoKey },
        ],
        { sync: this.sync },
      )
      try {
        await this.db.put(key, value, { sync: this.sync })
        await this.db.batch(
          [
            { type: 'put', key: infoKey, value: info },
            { type: 'del', key: pendingKey },
          ],
          { sync: this.sync },
        )
      } catch (err) {
        // Not acknowledged, so not kept. If this fails too (the store closed), the next open does it.
        await this.db.batch(unfinishedVersionDeletes(pendingKey, key, infoKey), { sync: this.sync }).catch(() => undefined)
        throw err
      }
    })
    this.noteLiveBytes(roomRange(room, VERSION_KIND), value.byteLength)
  }

  /** Reads descriptions only: the documents stay on disk. */
  async listVersions(room: string, page: VersionPageRequest = {}): Promise<VersionInfo[]> {
    this.assertOpen()
    assertStorableRoomName(room)
    const prefix = VERSION_INFO_KIND + room + ROOM_END
    const range = roomRange(room, VERSION_INFO_KIND)
    const bounds = page.after === undefined ? range : { gt: prefix + page.after, lt: range.lt }
    const versions: VersionInfo[] = []
    for await (const [key, value] of this.db.iterator({ ...bounds, limit: page.limit ?? -1 })) {
      versions.push(decodeVersionInfo(key.slice(prefix.length), value))
    }
    return versions
  }

  async listVersionRooms(): Promise<string[]> {
    this.assertOpen()
    const rooms: string[] = []
    for await (const key of this.db.keys({ gte: VERSION_INFO_KIND, lt: VERSION_INFO_KIND.slice(0, -1) + ROOM_RANGE_END })) {
      const room = key.slice(VERSION_INFO_KIND.length, key.lastIndexOf(ROOM_END))
      if (rooms[rooms.length - 1] !== room) rooms.push(room)
    }
    return rooms
  }

  async readPublishedEpoch(): Promise<string | null> {
    this.assertOpen()
    const value = await this.db.get(PUBLISHED_EPOCH_KEY)
    return value === undefined ? null : Buffer.from(value).toString('utf8')
  }

  async writePublishedEpoch(epoch: string): Promise<void> {
    this.assertOpen()
    await this.db.put(PUBLISHED_EPOCH_KEY, Buffer.from(epoch, 'utf8'), { sync: this.sync })
  }

  async getVersion(room: string, id: string): Promise<VersionRecord | null> {
    this.assertOpen()
    assertStorableRoomName(room)
    if (!isVersionId(id)) return null
    const value = await this.db.get(VERSION_KIND + room + ROOM_END + id)
    return value === undefined ? null : decodeVersionValue(id, value)
  }

  async deleteVersions(room: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    await this.serializeVersionWrite(room, async () => {
      // One batch: no crash leaves a description without its version or the other way round.
      const keys: string[] = []
      for (const range of [roomRange(room, VERSION_KIND), roomRange(room, VERSION_INFO_KIND), roomRange(room, VERSION_PENDING_KIND)]) {
        for await (const key of this.db.keys(range)) keys.push(key)
      }
      if (keys.length > 0) await this.db.batch(keys.map((key) => ({ type: 'del' as const, key })), { sync: this.sync })
    })
    this.noteDeletion(roomRange(room, VERSION_KIND), 0)
    this.noteDeletion(roomRange(room, VERSION_INFO_KIND), 0)
  }

  /** The room's count and bytes from its descriptions (bounded by the count limit), and the size of the version `id` replaces. */
  private async versionUsage(room: string, id: string): Promise<{ usage: VersionUsage; replaced: number | null }> {
    const usage: VersionUsage = { count: 0, bytes: 0 }
    let replaced: number | null = null
    const prefix = VERSION_INFO_KIND + room + ROOM_END
    for await (const [key, value] of this.db.iterator(roomRange(room, VERSION_INFO_KIND))) {
      const info = decodeVersionInfo(key.slice(prefix.length), value)
      usage.count++
      usage.bytes += info.bytes
      if (info.id === id) replaced = info.bytes
    }
    return { usage, replaced }
  }

  private serializeVersionWrite(room: string, work: () => Promise<void>): Promise<void> {
    const previous = this.versionWrites.get(room) ?? Promise.resolve()
    const next = previous.then(work, work)
    const tail = next.then(
      () => undefined,
      () => undefined,
    )
    this.versionWrites.set(room, tail)
    void tail.then(() => {
      if (this.versionWrites.get(room) === tail) this.versionWrites.delete(room)
    })
    return next
  }

  /** See VERSION_PENDING_KIND. Usually finds nothing: one seek. */
  private async deleteUnfinishedVersions(): Promise<void> {
    const deletes: Array<{ type: 'del'; key: string }> = []
    for await (const pendingKey of this.db.keys({ gte: VERSION_PENDING_KIND, lt: VERSION_PENDING_KIND.slice(0, -1) + ROOM_RANGE_END })) {
      const roomAndId = pendingKey.slice(VERSION_PENDING_KIND.length)
      deletes.push(...unfinishedVersionDeletes(pendingKey, VERSION_KIND + roomAndId, VERSION_INFO_KIND + roomAndId))
    }
    if (deletes.length > 0) await this.db.batch(deletes, { sync: true })
  }

  /** See VERSIONS_DESCRIBED_KEY. Reads every old version once; a crash midway repeats the scan at the next open. */
  private async describeOldVersions(): Promise<void> {
    if ((await this.db.get(VERSIONS_DESCRIBED_KEY)) !== undefined) return
    let batch: Array<{ type: 'put'; key: string; value: Uint8Array }> = []
    for await (const [key, value] of this.db.iterator({ gte: VERSION_KIND, lt: VERSION_KIND.slice(0, -1) + ROOM_RANGE_END })) {
      const end = key.lastIndexOf(ROOM_END)
      const room = key.slice(VERSION_KIND.length, end)
      const info = versionInfoFromValue(key.slice(end + 1), value)
      batch.push({ type: 'put', key: VERSION_INFO_KIND + room + ROOM_END + info.id, value: encodeVersionInfo(info) })
      if (batch.length >= DESCRIBE_BATCH) {
        await this.db.batch(batch, { sync: this.sync })
        batch = []
      }
    }
    batch.push({ type: 'put', key: VERSIONS_DESCRIBED_KEY, value: Uint8Array.of(1) })
    await this.db.batch(batch, { sync: true })
  }

  /** Streams the log keys and value lengths; memory use is one room's counters, not the values. */
  async listRooms(): Promise<StoredRoom[]> {
    this.assertOpen()
    const rooms: StoredRoom[] = []
    let current: StoredRoom | null = null
    // A room's keys are contiguous (they share one prefix), so one pass groups them.
    for await (const [key, value] of this.db.iterator({ gte: LOG_KIND, lt: LOG_KIND.slice(0, -1) + ROOM_RANGE_END })) {
      const room = key.slice(LOG_KIND.length, key.length - SEQUENCE_LENGTH - ROOM_END.length)
      if (current === null || current.room !== room) {
        current = { room, bytes: 0, entries: 0 }
        rooms.push(current)
      }
      current.bytes += value.byteLength
      current.entries += 1
    }
    // Usually empty: only what a load could not apply.
    const byRoom = new Map(rooms.map((entry) => [entry.room, entry]))
    for await (const key of this.db.keys({ gte: QUARANTINE_KIND, lt: QUARANTINE_KIND.slice(0, -1) + ROOM_RANGE_END })) {
      const entry = byRoom.get(key.slice(QUARANTINE_KIND.length, key.length - SEQUENCE_LENGTH - ROOM_END.length))
      if (entry !== undefined) entry.quarantined = (entry.quarantined ?? 0) + 1
    }
    return rooms
  }

  /**
   * Deleting an entry in LevelDB writes a tombstone; the entry's bytes stay on disk (in the
   * write-ahead log, later in a table file) until a compaction rewrites the file holding them.
   * Compaction alone does not always get there:
   * `compactRange` only compacts the levels above the deepest one holding the range, and a
   * memtable flush that overlaps nothing goes straight to level 2, so a room's whole history,
   * its tombstones and the merged entry can sit in one level-2 file that no compaction ever
   * rewrites (a 50,000-update room left 17 times its size on disk). So, for each range with
   * enough garbage: flush, then write tombstones at the range's two ends (keys that never hold an
   * entry, so deleting them is harmless whatever runs alongside), whose flush overlaps every
   * file of the range and so lands above it, and compact the range: every file holding the
   * range is then rewritten without what was deleted.
   *
   * LevelDB compacts on its own threads and replaces files only once their replacement is
   * written, so a crash at any point leaves the data as it was. Stops early when the store
   * is closed meanwhile (close waits for the compaction in progress).
   */
  async reclaimSpace(): Promise<void> {
    this.assertOpen()
    if (this.reclaimable.size === 0) return
    // approximateSize only sees table files: first move the memtable into one.
    await this.files.compactRange(BEFORE_ALL_KEYS, BEFORE_ALL_KEYS)
    // A range deleted from again meanwhile is noted again, for the next call.
    for (const start of [...this.reclaimable.keys()]) {
      if (this.closed) return
      const range = this.reclaimable.get(start)
      if (range === undefined) continue
      this.reclaimable.delete(start)
      const onDisk = await this.files.approximateSize(range.gte, range.lt)
      const garbage = onDisk - range.liveBytes
      if (garbage < RECLAIM_MIN_BYTES || garbage < range.liveBytes / RECLAIM_LIVE_DIVISOR) continue
      if (this.closed) return
      await this.db.batch([
        { type: 'del', key: range.gte },
        { type: 'del', key: range.gte + RANGE_LAST },
      ])
      await this.files.compactRange(range.gte, range.gte + RANGE_LAST)
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.db.close()
  }

  private sequenceFor(room: string): Promise<{ next: number }> {
    let counter = this.nextSequence.get(room)
    if (counter === undefined) {
      counter = this.findNextSequence(room)
      this.nextSequence.set(room, counter)
      // A failed lookup must not stick: the next append tries again.
      counter.catch(() => this.nextSequence.delete(room))
    }
    return counter
  }

  /** After entries of the range were deleted; `liveBytes` were written in the same operation. */
  private noteDeletion(range: { gte: string; lt: string }, liveBytes: number): void {
    this.reclaimable.set(range.gte, { ...range, liveBytes })
  }

  private noteLiveBytes(range: { gte: string; lt: string }, bytes: number): void {
    const reclaimable = this.reclaimable.get(range.gte)
    if (reclaimable !== undefined) reclaimable.liveBytes += bytes
  }

  private async findNextSequence(room: string): Promise<{ next: number }> {
    for await (const key of this.db.keys({ ...roomRange(room), reverse: true, limit: 1 })) {
      return { next: parseSequence(key.slice(-SEQUENCE_LENGTH)) + 1 }
    }
    return { next: 0 }
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreClosedError()
  }
}
