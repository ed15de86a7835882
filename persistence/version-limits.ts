import { VersionLimitError } from './errors.js'
import type { VersionInfo, VersionLimits, VersionPageRequest } from './store.js'

/** What a room holds in versions now. */
export interface VersionUsage {
  count: number
  bytes: number
}

/**
 * Throws VersionLimitError when storing a version of `bytes` (replacing `replaced`, a version
 * stored under the same id, when there is one) would take the room past `limits`. The same rule
 * in every store, and in the Redis script of cluster/shared-state.ts.
 */
export function checkVersionLimits(room: string, usage: VersionUsage, bytes: number, replaced: number | null, limits: VersionLimits): void {
  const count = usage.count + (replaced === null ? 1 : 0)
  const total = usage.bytes + bytes - (replaced ?? 0)
  if (count > limits.maxCount) throw new VersionLimitError('count', room, `already holds ${usage.count} versions, the most allowed (--max-versions-per-room ${limits.maxCount})`)
  if (total > limits.maxBytes) {
    throw new VersionLimitError('bytes', room, `would hold ${total} bytes of versions, more than allowed (--max-version-bytes-per-room ${limits.maxBytes})`)
  }
}

/** Applies a page request to a full, ordered listing (the stores that hold descriptions in memory). */
export function pageOf(versions: VersionInfo[], page: VersionPageRequest = {}): VersionInfo[] {
  const after = page.after
  const from = after === undefined ? 0 : versions.findIndex((v) => v.id > after)
  if (from === -1) return []
  return versions.slice(from, page.limit === undefined ? undefined : from + page.limit)
}
