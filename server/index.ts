/**
 * weft as a library. Everything a user needs is exported here, by name; internals are not.
 */
export { createServer, WeftServer } from './server.js'
export type { CreateServerOptions, DocumentStore, DrainResult, ServerState } from './server.js'
export { DEFAULTS, ConfigError } from './config.js'
export type { WeftOptions, LogLevel } from './config.js'
export { CloseCode, HttpError } from './codes.js'
export type { CloseCodeValue, HttpErrorCode } from './codes.js'
export { documentToJson } from './document-json.js'
export type { ShareKind } from './document-json.js'
// Issue 15: the parts an application hands to createServer.
export type { Access } from './access.js'
export type { Authenticate, AuthenticateGrant, AuthenticateRefusal, AuthenticateRequest, ConnectionInfo, UpdateOrigin, WeftHooks, WireProtocol } from './hooks.js'
export { LevelStore, MemoryStore, InvalidRoomNameError, StoreClosedError, VersionLimitError } from '../persistence/index.js'
export type { LevelStoreOptions, LogEntry, Store, StoredRoom, VersionInfo, VersionLimits, VersionPageRequest, VersionRecord, VersionStore } from '../persistence/index.js'
export type { RevokeResult } from './revocation.js'
