// What the server and the CLI use from persistence; everything else stays internal.
export { DocumentWriter, WRITER_DEFAULTS, openStore } from './document-writer.js'
export type { StorageHealth, WriterLogger, WriterOptions } from './document-writer.js'
export { LevelStore } from './level-store.js'
export type { LevelStoreOptions } from './level-store.js'
export { MemoryStore } from './memory-store.js'
export { newVersionId } from './version-id.js'
export type { LogEntry, Store, StoredRoom, VersionInfo, VersionRecord, VersionStore } from './store.js'
export { InvalidRoomNameError, InvalidUpdateError, RoomDeletedError, StoreClosedError, WriterClosedError } from './errors.js'
