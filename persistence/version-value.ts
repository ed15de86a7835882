import type { VersionInfo, VersionRecord } from './store.js'

/**
 * The stored form of one version, the same in LevelDB and in Redis:
 *
 *   byte 0        format, 1
 *   bytes 1..4    n, the header length, unsigned 32-bit big-endian
 *   bytes 5..4+n  header, UTF-8 JSON {"name": string, "createdAt": ms since the epoch}
 *   the rest      the update (the whole document, one v1 update)
 *
 * The id is not in the value: it is the key (LevelDB) or the hash field (Redis). A header with
 * its length in front lets a listing read name and date without decoding the document, and
 * lets the Redis store do that inside Redis (cluster/shared-state.ts), so a listing never ships
 * the documents.
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

/** The header bytes (JSON) and the total value length → what a listing reports. */
export function versionInfoFromHeader(id: string, header: Uint8Array, valueBytes: number): VersionInfo {
  const { name, createdAt } = parseHeader(header)
  return { id, name, createdAt, bytes: valueBytes - VERSION_HEADER_OFFSET - header.byteLength }
}

export function decodeVersionInfo(id: string, value: Uint8Array): VersionInfo {
  return versionInfoFromHeader(id, headerOf(value), value.byteLength)
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
