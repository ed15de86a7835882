import type { VersionInfo, VersionRecord } from './store.js'

/**
 * The stored form of one version, the same in LevelDB and in Redis:
 *
 *   byte 0        format, 1
 *   bytes 1..4    n, the header length, unsigned 32-bit big-endian
 *   bytes 5..4+n  header, UTF-8 JSON {"name": string, "createdAt": ms since the epoch}
 *   the rest      the update (the whole document, one v1 update)
 *
 * The id is not in the value: it is the key (LevelDB and Redis). Beside it each store keeps the
 * version's description, `encodeVersionInfo` below, under a key of its own: a listing reads the
 * descriptions only and never loads a document (a listing that read every value of 150 versions
 * of a 2 MB document blocked Redis for seconds). The header inside the value makes the value
 * complete on its own, so a description can always be rebuilt from it (`versionInfoFromValue`).
 */
export const VERSION_FORMAT = 1
export const VERSION_HEADER_OFFSET = 5

interface VersionHeader {
  name: string
  createdAt: number
}

export function encodeVersionValue(version: VersionRecord): Uint8Array {
  if (typeof version.name !== 'string') throw new TypeError('version name must be a string')
  if (!Number.isFinite(version.createdAt)) throw new TypeError('version createdAt must be a finite number')
  if (!(version.update instanceof Uint8Array)) throw new TypeError('version update must be a Uint8Array')
  const header = Buffer.from(JSON.stringify({ name: version.name, createdAt: version.createdAt }), 'utf8')
  const value = new Uint8Array(VERSION_HEADER_OFFSET + header.byteLength + version.update.byteLength)
  const view = new DataView(value.buffer)
  view.setUint8(0, VERSION_FORMAT)
  view.setUint32(1, header.byteLength)
  value.set(header, VERSION_HEADER_OFFSET)
  value.set(version.update, VERSION_HEADER_OFFSET + header.byteLength)
  return value
}

/** The description of a stored value, read from its header: for rebuilding a lost description. */
export function versionInfoFromValue(id: string, value: Uint8Array): VersionInfo {
  const header = headerOf(value)
  const { name, createdAt } = parseHeader(header)
  return { id, name, createdAt, bytes: value.byteLength - VERSION_HEADER_OFFSET - header.byteLength }
}

/** A version's description as stored beside it: UTF-8 JSON {"name", "createdAt", "bytes"} (bytes = the document's size). */
export function encodeVersionInfo(info: Omit<VersionInfo, 'id'>): Uint8Array {
  return Buffer.from(JSON.stringify({ name: info.name, createdAt: info.createdAt, bytes: info.bytes }), 'utf8')
}

export function decodeVersionInfo(id: string, stored: Uint8Array): VersionInfo {
  const parsed: unknown = JSON.parse(Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength).toString('utf8'))
  const { name, createdAt, bytes } = (parsed ?? {}) as Partial<VersionInfo>
  if (typeof name !== 'string' || typeof createdAt !== 'number' || typeof bytes !== 'number') throw new Error('stored version description is malformed')
  return { id, name, createdAt, bytes }
}

/** The update is a plain Uint8Array copy: callers may keep it after the store reuses its buffers. */
export function decodeVersionValue(id: string, value: Uint8Array): VersionRecord {
  const header = headerOf(value)
  const { name, createdAt } = parseHeader(header)
  return { id, name, createdAt, update: copyBytes(value.subarray(VERSION_HEADER_OFFSET + header.byteLength)) }
}

/** A plain Uint8Array copy, also of a Buffer (whose own `slice` is a view of the same memory). */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes)
}

function headerOf(value: Uint8Array): Uint8Array {
  if (value.byteLength < VERSION_HEADER_OFFSET || value[0] !== VERSION_FORMAT) throw new Error('stored version has an unknown format')
  const length = new DataView(value.buffer, value.byteOffset, value.byteLength).getUint32(1)
  if (VERSION_HEADER_OFFSET + length > value.byteLength) throw new Error('stored version is truncated')
  return value.subarray(VERSION_HEADER_OFFSET, VERSION_HEADER_OFFSET + length)
}

function parseHeader(header: Uint8Array): VersionHeader {
  const parsed: unknown = JSON.parse(Buffer.from(header.buffer, header.byteOffset, header.byteLength).toString('utf8'))
  const { name, createdAt } = (parsed ?? {}) as Partial<VersionHeader>
  if (typeof name !== 'string' || typeof createdAt !== 'number') throw new Error('stored version has a malformed header')
  return { name, createdAt }
}
