/**
 * A store written here with none of weft's storage code, only its public names (the errors, the
 * room-name rule), passes the suite every store runs against itself: the README's "Writing a
 * store" is enough to write one. It keeps one JSON file per room, replaced atomically (write a
 * temporary file, fsync, rename) on every change, and serves one call at a time.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, open as openFile, readdir, readFile, rename, rm, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after } from 'node:test'
import { InvalidRoomNameError, StoreClosedError, VersionLimitError, type LogEntry, type Store, type StoredRoom, type VersionInfo, type VersionLimits, type VersionPageRequest, type VersionRecord, type VersionStore } from '../server/index.js'
import { isValidRoomName } from '../protocol/index.js'
import { describeStoreConformance } from './harness/store-conformance.js'

interface RoomFile {
  room: string
  next: number
  entries: Array<{ key: string; update: string }>
  quarantined: Array<{ key: string; update: string }>
  versions: Record<string, { name: string; createdAt: number; update: string }>
}

const VERSION_ID = /^[0-9a-z]{1,64}$/
const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64')
const fromBase64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'))

class FilePerRoomStore implements Store, VersionStore {
  readonly kind = 'file-per-room'
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false
  /** Next key per room for this process, kept across deleteRoom so keys only ever increase. */
  private readonly next = new Map<string, number>()

  constructor(private readonly dir: string) {}

  /** One call at a time: every change is read-modify-write of one file. */
  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => {
      if (this.closed) throw new StoreClosedError()
      return work()
    })
    this.queue = run.catch(() => {})
    return run
  }

  private fileOf(room: string): string {
    if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
    // Hashed: a 512-byte room name does not fit in a file name.
    return join(this.dir, `${createHash('sha256').update(room).digest('hex')}.json`)
  }

  private async read(room: string): Promise<RoomFile> {
    try {
      return JSON.parse(await readFile(this.fileOf(room), 'utf8')) as RoomFile
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      return { room, next: this.next.get(room) ?? 0, entries: [], quarantined: [], versions: {} }
    }
  }

  /** Durable before it resolves: the new file is synced, then renamed over the old one. */
  private async write(room: string, file: RoomFile): Promise<void> {
    const path = this.fileOf(room)
    const temporary = `${path}.tmp`
    const handle = await openFile(temporary, 'w')
    try {
      await handle.writeFile(JSON.stringify(file))
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temporary, path)
  }

  readLog(room: string): Promise<LogEntry[]> {
    return this.serial(async () => (await this.read(room)).entries.map(({ key, update }) => ({ key, update: fromBase64(update) })))
  }

  append(room: string, update: Uint8Array): Promise<string> {
    const copy = toBase64(update)
    return this.serial(async () => {
      const file = await this.read(room)
      file.next = Math.max(file.next, this.next.get(room) ?? 0)
      const key = String(file.next++).padStart(16, '0')
      this.next.set(room, file.next)
      file.entries.push({ key, update: copy })
      await this.write(room, file)
      return key
    })
  }

  replace(room: string, keys: readonly string[], merged: Uint8Array): Promise<void> {
    if (keys.length === 0) return Promise.reject(new RangeError('replace needs at least one key'))
    const copy = toBase64(merged)
    return this.serial(async () => {
      const file = await this.read(room)
      const known = new Set(file.entries.map((entry) => entry.key))
      const unknown = keys.find((key) => !known.has(key))
      if (unknown !== undefined) throw new RangeError(`not a key of this room: ${JSON.stringify(unknown)}`)
      // The merged entry takes the newest replaced key: before everything appended later.
      const mergedKey = [...keys].sort().at(-1) as string
      const replaced = new Set(keys)
      file.entries = file.entries.filter((entry) => !replaced.has(entry.key))
      file.entries.push({ key: mergedKey, update: copy })
      file.entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      await this.write(room, file)
    })
  }

  deleteRoom(room: string): Promise<void> {
    return this.serial(async () => {
      await unlink(this.fileOf(room)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err
      })
    })
  }

  quarantine(room: string, key: string): Promise<void> {
    return this.serial(async () => {
      const file = await this.read(room)
      const entry = file.entries.find((candidate) => candidate.key === key)
      if (entry === undefined) return
      file.entries = file.entries.filter((candidate) => candidate !== entry)
      file.quarantined.push(entry)
      await this.write(room, file)
    })
  }

  listRooms(): Promise<StoredRoom[]> {
    return this.serial(async () => {
      const rooms: StoredRoom[] = []
      for (const name of await readdir(this.dir)) {
        if (!name.endsWith('.json')) continue
        const file = JSON.parse(await readFile(join(this.dir, name), 'utf8')) as RoomFile
        const { room } = file
        if (file.entries.length === 0) continue
        const stored: StoredRoom = { room, entries: file.entries.length, bytes: file.entries.reduce((sum, entry) => sum + fromBase64(entry.update).byteLength, 0) }
        if (file.quarantined.length > 0) stored.quarantined = file.quarantined.length
        rooms.push(stored)
      }
      return rooms
    })
  }

  reclaimSpace(): Promise<void> {
    return this.serial(async () => {})
  }

  async close(): Promise<void> {
    await this.queue
    this.closed = true
  }

  putVersion(room: string, version: VersionRecord, limits?: VersionLimits): Promise<void> {
    if (!VERSION_ID.test(version.id)) return Promise.reject(new RangeError('malformed version id'))
    const stored = { name: version.name, createdAt: version.createdAt, update: toBase64(version.update) }
    return this.serial(async () => {
      const file = await this.read(room)
      if (limits !== undefined) {
        const others = Object.entries(file.versions).filter(([id]) => id !== version.id)
        const bytes = others.reduce((sum, [, other]) => sum + fromBase64(other.update).byteLength, 0) + version.update.byteLength
        if (others.length + 1 > limits.maxCount) throw new VersionLimitError('count', room, `holds ${others.length} versions`)
        if (bytes > limits.maxBytes) throw new VersionLimitError('bytes', room, `would hold ${bytes} bytes of versions`)
      }
      file.versions[version.id] = stored
      await this.write(room, file)
    })
  }

  listVersions(room: string, page: VersionPageRequest = {}): Promise<VersionInfo[]> {
    return this.serial(async () => {
      const { after, limit } = page
      const all = Object.entries((await this.read(room)).versions)
        .filter(([id]) => after === undefined || id > after)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([id, { name, createdAt, update }]) => ({ id, name, createdAt, bytes: fromBase64(update).byteLength }))
      return limit === undefined ? all : all.slice(0, limit)
    })
  }

  getVersion(room: string, id: string): Promise<VersionRecord | null> {
    return this.serial(async () => {
      const stored = VERSION_ID.test(id) ? (await this.read(room)).versions[id] : undefined
      return stored === undefined ? null : { id, name: stored.name, createdAt: stored.createdAt, update: fromBase64(stored.update) }
    })
  }

  deleteVersions(room: string): Promise<void> {
    return this.serial(async () => {
      const file = await this.read(room)
      file.versions = {}
      await this.write(room, file)
    })
  }
}

const dirs: string[] = []
after(() => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))))

describeStoreConformance('file-per-room', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'weft-file-store-'))
  dirs.push(dir)
  const fixture = {
    store: new FilePerRoomStore(dir),
    async reopen() {
      await fixture.store.close()
      fixture.store = new FilePerRoomStore(dir)
      return fixture.store
    },
  }
  return fixture
}, { reopens: true, localVersions: false })
