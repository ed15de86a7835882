/**
 * weft as a library. Everything a user needs is exported here, by name; internals are not.
 */
export { createServer, WeftServer } from './server.js'
export type { CreateServerOptions, DrainResult, ServerState } from './server.js'
export { DEFAULTS, ConfigError } from './config.js'
export type { WeftOptions, LogLevel } from './config.js'
export { CloseCode, HttpError } from './codes.js'
export type { CloseCodeValue, HttpErrorCode } from './codes.js'
export { documentToJson } from './document-json.js'
export type { ShareKind } from './document-json.js'
export type { RevokeResult } from './revocation.js'
