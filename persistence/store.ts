import { isValidRoomName } from '../protocol/room-name.js'
import { InvalidRoomNameError } from './errors.js'

/** What `listRooms` reports about one stored document: the size of its update log. */
export interface StoredRoom {
  room: string
  /** Sum of the stored update sizes; the log, not the merged document. */
  bytes: number
  entries: number
  /** Entries set aside because they could not be applied (Store.quarantine); absent when none. */
  quarantined?: number
}

/** One entry of a room's update log. */
export interface LogEntry {
  /** Opaque; keys of one room increase in append order. */
  key: string
  update: Uint8Array
}

/**
 * The only way persistence touches storage: an append-only log of Yjs updates per room, plus a
 * replace used by compaction that never loses content. Implemented by LevelStore (the real one) and MemoryStore
 * (tests, demos, `--data memory`); both validate room names the same way.
 */
export interface Store {
  /** A short name for logs and tests: 'leveldb', 'memory', or what an application's own store calls itself. */
  readonly kind: string
  /** Every entry of the room's update log, oldest first, with its key. Empty when never stored. */
  readLog(room: string): Promise<LogEntry[]>
  /** Appends one entry; durable (the LevelDB write done) when it resolves. */
  append(room: string, update: Uint8Array): Promise<string>
  /**
   * Deletes the listed entries and writes `merged` in their place, ordered before any entry
   * appended after them. `keys` must not be empty. A reader, or a crash, may see `merged` beside
   * some of the entries it replaces (Yjs applies them again without effect), never those entries
   * gone without `merged`: the simplest correct store does it in one atomic batch.
   */
  replace(room: string, keys: readonly string[], merged: Uint8Array): Promise<void>
  deleteRoom(room: string): Promise<void>
  /**
   * Moves the log entry `key` out of the log into the room's quarantine (kept for an operator,
   * never loaded again); deleted with the room. A key not in the log is ignored.
   */
  quarantine(room: string, key: string): Promise<void>
  listRooms(): Promise<StoredRoom[]>
  /**
   * Gives the file system back the space still held by what `replace` and `deleteRoom` removed.
   * Optional work and maybe slow (LevelDB rewrites files, off the main thread); the writer calls
   * it at close, after its last compaction.
   */
  reclaimSpace(): Promise<void>
  /** Idempotent. Every other method rejects afterwards. */
  close(): Promise<void>
}

/**
 * Same rule as the server's URL check (protocol/room-name.ts). Stores enforce it again because
 * their key layout depends on it: a room name never contains U+0000, the separator after it.
 */
export function assertStorableRoomName(room: string): void {
  if (!isValidRoomName(room)) throw new InvalidRoomNameError(room)
}

/** A named point-in-time copy of a document (`POST /api/rooms/:room/versions`). */
export interface VersionRecord {
  /** Sortable by creation time: listing in key order lists oldest first. */
  id: string
  name: string
  /** Milliseconds since the epoch. */
  createdAt: number
  /** The whole document then, as one v1 update. */
  update: Uint8Array
}

export type VersionInfo = Omit<VersionRecord, 'update'> & { bytes: number }

/** What one room may hold in versions; `putVersion` refuses a version that would go past either. */
export interface VersionLimits {
  /** Versions a room may hold. */
  maxCount: number
  /** Sum of the stored documents' sizes (`VersionInfo.bytes`) a room may hold. */
  maxBytes: number
}

/** One page of a listing: versions with ids after `after` (oldest first), at most `limit` of them. */
export interface VersionPageRequest {
  after?: string
  limit?: number
}

/**
 * Saved versions of documents. Every store keeps a version's description (name, date, size) apart
 * from its document, so a listing reads descriptions only, however large the documents are.
 * LevelStore and MemoryStore keep them beside the logs; RedisSharedState keeps the cluster's copy;
 * ReplicatedVersions (persistence/version-replicas.ts) keeps both in step.
 */
export interface VersionStore {
  /**
   * Stores the version, durable when it resolves. With `limits`, refuses with VersionLimitError
   * (nothing stored) when the room would hold more than the limits allow; the check and the write
   * are one step, so concurrent puts cannot together pass a limit. Without limits (restoring a
   * version that was stored before), it is never refused. A version already stored under the same
   * id is replaced. A reader may find the document (`getVersion`) before a listing shows it, never
   * a listed version without its document, nor a refused version; a put that rejects or is cut
   * short by a crash leaves nothing listed under its id (a version it was replacing may be gone
   * too): the simplest correct store writes the document and its description in one atomic batch.
   */
  putVersion(room: string, version: VersionRecord, limits?: VersionLimits): Promise<void>
  /** Oldest first, without the documents; `page` bounds what is read. */
  listVersions(room: string, page?: VersionPageRequest): Promise<VersionInfo[]>
  getVersion(room: string, id: string): Promise<VersionRecord | null>
  deleteVersions(room: string): Promise<void>
}

/** A store that can say which rooms have versions: what a re-publication walks. */
export interface LocalVersionStore extends VersionStore {
  /** Every room with at least one stored version, in key order; reads keys only. */
  listVersionRooms(): Promise<string[]>
  /**
   * The Redis data epoch (cluster/keys.ts) into which every version of this store was last
   * published in full; null when never. Kept with the versions, so an instance that was down
   * while Redis lost its data still puts its versions back when it starts.
   */
  readPublishedEpoch(): Promise<string | null>
  writePublishedEpoch(epoch: string): Promise<void>
}
