import * as Y from 'yjs'

/**
 * Whether applying `update` (already validated) would change `doc`: new structs, or deletions of
 * content that is not deleted yet. A read-only client's sync step 2 usually repeats what the
 * server has; that must be answered as harmless, while anything new is refused.
 */
export function updateChangesDocument(doc: Y.Doc, update: Uint8Array): boolean {
  const { structs, ds } = Y.decodeUpdate(update)
  const known = Y.decodeStateVector(Y.encodeStateVector(doc))
  for (const struct of structs) {
    if (struct instanceof Y.Skip) continue
    const have = known.get(struct.id.client) ?? 0
    if (struct.id.clock + struct.length > have) return true
  }
  if (ds.clients.size === 0) return false
  const deleted = Y.createDeleteSetFromStructStore(doc.store)
  for (const [client, ranges] of ds.clients) {
    const have = known.get(client) ?? 0
    const docRanges = deleted.clients.get(client) ?? []
    for (const range of ranges) {
      // Deleting content the server does not have yet would be kept pending: a change.
      if (range.clock + range.len > have) return true
      if (!covered(docRanges, range.clock, range.clock + range.len)) return true
    }
  }
  return false
}

/** Whether sorted, merged delete ranges cover [from, to) entirely. Linear in the ranges, not the length. */
function covered(ranges: ReadonlyArray<{ clock: number; len: number }>, from: number, to: number): boolean {
  let position = from
  for (const range of ranges) {
    if (range.clock + range.len <= position) continue
    if (range.clock > position) return false
    position = range.clock + range.len
    if (position >= to) return true
  }
  return position >= to
}
