import * as Y from 'yjs'

type DeleteRanges = Map<number, Array<[number, number]>>

function rangesOf(update: Uint8Array): DeleteRanges {
  const ranges: DeleteRanges = new Map()
  for (const [client, items] of Y.decodeUpdate(update).ds.clients) {
    const sorted = items.map((item): [number, number] => [item.clock, item.clock + item.len]).sort((a, b) => a[0] - b[0])
    const merged: Array<[number, number]> = []
    for (const range of sorted) {
      const last = merged[merged.length - 1]
      if (last !== undefined && range[0] <= last[1]) last[1] = Math.max(last[1], range[1])
      else merged.push([range[0], range[1]])
    }
    ranges.set(client, merged)
  }
  return ranges
}

function covers(outer: DeleteRanges, inner: DeleteRanges): boolean {
  for (const [client, wanted] of inner) {
    const have = outer.get(client) ?? []
    for (const [start, end] of wanted) {
      if (!have.some(([from, to]) => from <= start && end <= to)) return false
    }
  }
  return true
}

/**
 * What `local` holds that `cluster` lacks, as an update, or null when nothing. Y.diffUpdate keeps
 * the whole delete set of `local` in every diff, so a diff without structs still counts as empty
 * when its deletions are all in the cluster's copy already; otherwise every room load would
 * publish the room's delete set again.
 */
export function missingFrom(local: Uint8Array, cluster: Uint8Array | null): Uint8Array | null {
  if (cluster === null) return isEmpty(local) ? null : local
  const diff = Y.diffUpdate(local, Y.encodeStateVectorFromUpdate(cluster))
  const decoded = Y.decodeUpdate(diff)
  if (decoded.structs.length > 0) return diff
  if (decoded.ds.clients.size === 0) return null
  return covers(rangesOf(cluster), rangesOf(diff)) ? null : diff
}

function isEmpty(update: Uint8Array): boolean {
  const decoded = Y.decodeUpdate(update)
  return decoded.structs.length === 0 && decoded.ds.clients.size === 0
}
