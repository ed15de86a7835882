import { StoreClosedError } from './errors.js'
import { formatSequence, parseSequence } from './log-key.js'
import { assertStorableRoomName, type LocalVersionStore, type LogEntry, type Store, type StoredRoom, type VersionInfo, type VersionLimits, type VersionPageRequest, type VersionRecord } from './store.js'
import { assertVersionId, isVersionId } from './version-id.js'
import { checkVersionLimits, pageOf } from './version-limits.js'
import { copyBytes } from './version-value.js'

/** Entries at least this big keep a buffer of their own; smaller ones share the log's arena. */
const OWN_BUFFER_BYTES = 4096
/** The arena's first size; it doubles when full. */
const MIN_ARENA_BYTES = 4096

/** An entry a replace or quarantine keeps: `ours` when `update` is the store's (a view or own buffer), not the caller's. */
interface KeptEntry {
  seq: number
  update: Uint8Array
  ours: boolean
}

/**
 * One room's log, held compactly: the bytes of small entries one after another in one buffer
 * (the arena), and per entry only numbers. An object per entry (the entry, its key string, its
 * copy) lived until the next compaction, seconds in a busy process, so every minor collection
 * copied and promoted them: with 200 rooms typing (bench scenario 2) they were about a third of
 * what each one copied. Held this way (and with PendingWrite a class), a minor collection there
 * copies 0.7 MB instead of 1.1 and pauses 2.4 ms instead of 3.5.
 */
class MemoryLog {
  /** Kept across clear(), as LevelStore keeps its counter within one process. */
  next = 0
  /** Set aside by quarantine. */
  quarantined: LogEntry[] = []
  /** Per entry, in key order: its sequence number. */
  private seqs: number[] = []
  /** Per entry: where its bytes start in the arena, or -1 - i for own[i]. */
  private starts: number[] = []
  private lengths: number[] = []
  private own: Uint8Array[] = []
  private arena = new Uint8Array(0)
  private used = 0

  get size(): number {
    return this.seqs.length
  }

  get bytes(): number {
    let total = 0
    for (const length of this.lengths) total += length
    return total
  }

  /** Adds a copy of `update` under the next sequence number and returns its key. */
  append(update: Uint8Array): string {
    const seq = this.next++
    this.push(seq, update, false)
    return formatSequence(seq)
  }

  /** Copies of the entries, oldest first. */
  entries(): LogEntry[] {
    const entries: LogEntry[] = []
    for (let i = 0; i < this.seqs.length; i++) entries.push({ key: formatSequence(this.seqs[i] as number), update: copyBytes(this.view(i)) })
    return entries
  }

  /** Replaces the entries of `seqs` with `merged` under the highest of them. */
  replace(seqs: ReadonlySet<number>, mergedSeq: number, merged: Uint8Array): void {
    const kept: KeptEntry[] = [{ seq: mergedSeq, update: merged, ours: false }]
    for (let i = 0; i < this.seqs.length; i++) {
      const seq = this.seqs[i] as number
      if (!seqs.has(seq)) kept.push({ seq, update: this.view(i), ours: true })
    }
    this.rebuild(kept.sort((a, b) => a.seq - b.seq))
  }

  /** Moves the entry of `seq`, if there is one, to `quarantined`. */
  quarantine(seq: number): void {
    const index = this.seqs.indexOf(seq)
    if (index === -1) return
    this.quarantined.push({ key: formatSequence(seq), update: copyBytes(this.view(index)) })
    const kept: KeptEntry[] = []
    for (let i = 0; i < this.seqs.length; i++) if (i !== index) kept.push({ seq: this.seqs[i] as number, update: this.view(i), ours: true })
    this.rebuild(kept)
  }

  clear(): void {
    this.rebuild([])
    this.quarantined = []
  }

  private view(index: number): Uint8Array {
    const start = this.starts[index] as number
    return start < 0 ? (this.own[-1 - start] as Uint8Array) : this.arena.subarray(start, start + (this.lengths[index] as number))
  }

  /** `ours`: a big `update` is the store's own copy already and is kept as it is; otherwise it is copied. */
  private push(seq: number, update: Uint8Array, ours: boolean): void {
    const length = update.byteLength
    let start: number
    if (length >= OWN_BUFFER_BYTES) {
      this.own.push(ours ? update : copyBytes(update))
      start = -this.own.length
    } else {
      if (this.used + length > this.arena.byteLength) {
        const grown = new Uint8Array(Math.max(MIN_ARENA_BYTES, 2 * (this.used + length)))
        grown.set(this.arena.subarray(0, this.used))
        this.arena = grown
      }
      this.arena.set(update, this.used)
      start = this.used
      this.used += length
    }
    this.seqs.push(seq)
    this.starts.push(start)
    this.lengths.push(length)
  }

  /** Starts over with `entries` (views into the old arena stay valid: a new one is made). */
  private rebuild(entries: readonly KeptEntry[]): void {
    this.seqs = []
    this.starts = []
    this.lengths = []
    this.own = []
    this.arena = new Uint8Array(0)
    this.used = 0
    for (const { seq, update, ours } of entries) this.push(seq, update, ours)
  }
}

/**
 * The Store contract in a Map: for `--data memory`, demos and unit tests. Same keys, same
 * room-name rule and same ordering as LevelStore; bytes are copied in and out so callers
 * cannot change stored entries by mutating their arrays.
 */
export class MemoryStore implements Store, LocalVersionStore {
  readonly kind = 'memory'
  private readonly logs = new Map<string, MemoryLog>()
  /** room → id → version. Apart from the logs: a room with only versions is not in `listRooms`, as in LevelStore. */
  private readonly versions = new Map<string, Map<string, VersionRecord>>()
  private publishedEpoch: string | null = null
  private closed = false

  async readLog(room: string): Promise<LogEntry[]> {
    this.assertOpen()
    assertStorableRoomName(room)
    return this.logs.get(room)?.entries() ?? []
  }

  async append(room: string, update: Uint8Array): Promise<string> {
    this.assertOpen()
    assertStorableRoomName(room)
    return this.logFor(room).append(update)
  }

  async replace(room: string, keys: readonly string[], merged: Uint8Array): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    if (keys.length === 0) throw new RangeError('replace needs at least one key')
    const seqs = keys.map(parseSequence)
    this.logFor(room).replace(new Set(seqs), Math.max(...seqs), merged)
  }

  async deleteRoom(room: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    const log = this.logs.get(room)
    log?.clear()
    this.versions.delete(room)
  }

  async quarantine(room: string, key: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    let seq: number
    try {
      seq = parseSequence(key)
    } catch {
      return
    }
    this.logs.get(room)?.quarantine(seq)
  }

  // ---- VersionStore ----------------------------------------------------------------------

  async putVersion(room: string, version: VersionRecord, limits?: VersionLimits): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    assertVersionId(version.id)
    if (typeof version.name !== 'string') throw new TypeError('version name must be a string')
    if (!Number.isFinite(version.createdAt)) throw new TypeError('version createdAt must be a finite number')
    const versions = this.versions.get(room) ?? new Map<string, VersionRecord>()
    if (limits !== undefined) {
      let bytes = 0
      for (const stored of versions.values()) bytes += stored.update.byteLength
      checkVersionLimits(room, { count: versions.size, bytes }, version.update.byteLength, versions.get(version.id)?.update.byteLength ?? null, limits)
    }
    this.versions.set(room, versions)
    versions.set(version.id, { id: version.id, name: version.name, createdAt: version.createdAt, update: copyBytes(version.update) })
  }

  async listVersions(room: string, page?: VersionPageRequest): Promise<VersionInfo[]> {
    this.assertOpen()
    assertStorableRoomName(room)
    // Ids are ASCII, so code unit order is LevelStore's byte order.
    const all = [...(this.versions.get(room)?.values() ?? [])]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map(({ id, name, createdAt, update }) => ({ id, name, createdAt, bytes: update.byteLength }))
    return pageOf(all, page)
  }

  async listVersionRooms(): Promise<string[]> {
    this.assertOpen()
    const utf8 = (text: string): Buffer => Buffer.from(text, 'utf8')
    return [...this.versions].filter(([, versions]) => versions.size > 0).map(([room]) => room).sort((a, b) => Buffer.compare(utf8(a), utf8(b)))
  }

  async readPublishedEpoch(): Promise<string | null> {
    this.assertOpen()
    return this.publishedEpoch
  }

  async writePublishedEpoch(epoch: string): Promise<void> {
    this.assertOpen()
    this.publishedEpoch = epoch
  }

  async getVersion(room: string, id: string): Promise<VersionRecord | null> {
    this.assertOpen()
    assertStorableRoomName(room)
    if (!isVersionId(id)) return null
    const version = this.versions.get(room)?.get(id)
    return version === undefined ? null : { ...version, update: copyBytes(version.update) }
  }

  async deleteVersions(room: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    this.versions.delete(room)
  }

  async listRooms(): Promise<StoredRoom[]> {
    this.assertOpen()
    const rooms: StoredRoom[] = []
    for (const [room, log] of this.logs) {
      if (log.size === 0) continue
      const stored: StoredRoom = { room, entries: log.size, bytes: log.bytes }
      if (log.quarantined.length > 0) stored.quarantined = log.quarantined.length
      rooms.push(stored)
    }
    // The order LevelStore yields: bytewise UTF-8, which for these strings is code point order.
    const utf8 = (text: string): Buffer => Buffer.from(text, 'utf8')
    return rooms.sort((a, b) => Buffer.compare(utf8(a.room), utf8(b.room)))
  }

  /** Nothing to do: what was removed is already garbage for the JavaScript heap. */
  async reclaimSpace(): Promise<void> {
    this.assertOpen()
  }

  async close(): Promise<void> {
    this.closed = true
  }

  private logFor(room: string): MemoryLog {
    let log = this.logs.get(room)
    if (log === undefined) {
      log = new MemoryLog()
      this.logs.set(room, log)
    }
    return log
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreClosedError()
  }
}
