import { StoreClosedError } from './errors.js'
import { formatSequence, parseSequence } from './log-key.js'
import { assertStorableRoomName, type LocalVersionStore, type LogEntry, type Store, type StoredRoom, type VersionInfo, type VersionLimits, type VersionPageRequest, type VersionRecord } from './store.js'
import { assertVersionId, isVersionId } from './version-id.js'
import { checkVersionLimits, pageOf } from './version-limits.js'
import { copyBytes } from './version-value.js'

interface MemoryLog {
  /** Kept across deleteRoom, as LevelStore does within one process. */
  next: number
  /** Sorted by key. */
  entries: LogEntry[]
  /** Set aside by quarantine. */
  quarantined: LogEntry[]
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
    return (this.logs.get(room)?.entries ?? []).map(({ key, update }) => ({ key, update: copyBytes(update) }))
  }

  async append(room: string, update: Uint8Array): Promise<string> {
    this.assertOpen()
    assertStorableRoomName(room)
    const log = this.logFor(room)
    const key = formatSequence(log.next++)
    log.entries.push({ key, update: copyBytes(update) })
    return key
  }

  async replace(room: string, keys: readonly string[], merged: Uint8Array): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    if (keys.length === 0) throw new RangeError('replace needs at least one key')
    const mergedKey = formatSequence(Math.max(...keys.map(parseSequence)))
    const log = this.logFor(room)
    const replaced = new Set(keys)
    const kept = log.entries.filter((entry) => !replaced.has(entry.key))
    kept.push({ key: mergedKey, update: copyBytes(merged) })
    kept.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    log.entries = kept
  }

  async deleteRoom(room: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    const log = this.logs.get(room)
    if (log !== undefined) {
      log.entries = []
      log.quarantined = []
    }
    this.versions.delete(room)
  }

  async quarantine(room: string, key: string): Promise<void> {
    this.assertOpen()
    assertStorableRoomName(room)
    const log = this.logs.get(room)
    const entry = log?.entries.find((candidate) => candidate.key === key)
    if (log === undefined || entry === undefined) return
    log.entries = log.entries.filter((candidate) => candidate !== entry)
    log.quarantined.push(entry)
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
      if (log.entries.length === 0) continue
      const stored: StoredRoom = { room, entries: log.entries.length, bytes: log.entries.reduce((sum, entry) => sum + entry.update.byteLength, 0) }
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
      log = { next: 0, entries: [], quarantined: [] }
      this.logs.set(room, log)
    }
    return log
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreClosedError()
  }
}
