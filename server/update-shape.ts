import * as Y from 'yjs'
import { deepestNesting, type NestingLookup, type UpdateSummary } from '../protocol/index.js'

/**
 * Checks of an update against the document it is about to be applied to: what the structural
 * validator (protocol/update.ts) cannot know because it never sees the document.
 */

/** True when every clock the update refers to is in `doc` or in the update itself (nothing would stay pending). */
export function dependenciesPresent(doc: Y.Doc, summary: UpdateSummary): boolean {
  for (const [client, clock] of summary.requires) {
    if (Y.getState(doc.store, client) < clock) return false
  }
  return true
}

/**
 * The deepest shared type the update would create (see deepestNesting), with the depth of parents
 * already in `doc` walked up at most `maxDepth` levels. Call only once dependenciesPresent holds.
 */
export function deepestNewType(doc: Y.Doc, update: Uint8Array, maxDepth: number): number {
  const typeDepth = (type: Y.AbstractType<unknown>): number => {
    let depth = 1
    let item = type._item
    while (item !== null && depth <= maxDepth) {
      depth++
      const parent = item.parent
      item = parent instanceof Y.AbstractType ? parent._item : null
    }
    return depth
  }
  const itemAt = (client: number, clock: number): Y.Item | Y.GC | null => {
    if (clock >= Y.getState(doc.store, client)) return null
    return Y.getItem(doc.store, new Y.ID(client, clock)) as Y.Item | Y.GC
  }
  const lookup: NestingLookup = {
    containerDepth(client, clock) {
      const item = itemAt(client, clock)
      if (item === null) return null
      // Garbage collected: Yjs turns a new item next to it into garbage too, so it nests nothing.
      if (!(item instanceof Y.Item)) return 0
      return item.parent instanceof Y.AbstractType ? typeDepth(item.parent) : 0
    },
    typeDepth(client, clock) {
      const item = itemAt(client, clock)
      if (item === null) return null
      return item instanceof Y.Item && item.content instanceof Y.ContentType ? typeDepth(item.content.type) : 0
    },
  }
  return deepestNesting(update, maxDepth, lookup)
}
