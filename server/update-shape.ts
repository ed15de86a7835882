import * as Y from 'yjs'
import type { UpdateSummary } from '../protocol/index.js'

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
 * The deepest shared type the update would create, counting the document's root types as 1, or
 * `Infinity` once it exceeds `maxDepth` (the walk stops there). Yjs deletes, encodes and
 * serialises nested types recursively, so one deep enough overflows the stack in the middle of a
 * transaction (issue 12: a chain of 20,000 Y.Maps). Depth builds up across updates too, so a
 * parent already in the document counts with its own depth there.
 *
 * Call only once dependenciesPresent holds: every origin and parent is then in the document or
 * in the update.
 */
export function deepestNewType(doc: Y.Doc, update: Uint8Array, maxDepth: number): number {
  const { structs } = Y.decodeUpdate(update)
  const byClient = new Map<number, Y.Item[]>()
  for (const struct of structs) {
    if (!(struct instanceof Y.Item)) continue
    let list = byClient.get(struct.id.client)
    if (list === undefined) {
      list = []
      byClient.set(struct.id.client, list)
    }
    list.push(struct)
  }
  /** Depth of the type each item of the update sits in; computed once per item. */
  const containerDepth = new Map<Y.Item, number>()
  let deepest = 0
  for (const struct of structs) {
    if (!(struct instanceof Y.Item) || !(struct.content instanceof Y.ContentType)) continue
    const depth = resolveDepth(doc, byClient, containerDepth, struct, maxDepth) + 1
    if (depth > maxDepth) return Infinity
    if (depth > deepest) deepest = depth
  }
  return deepest
}

/** Where an item's parent comes from: a reference to resolve further, or a known depth. */
type ParentLink = { item: Y.Item; plusOne: boolean } | { depth: number }

/**
 * The depth of the type `start` sits in. Iterative with an explicit stack: chains of origins in
 * one update can be as long as the update has structs, deeper than the JavaScript stack.
 */
function resolveDepth(doc: Y.Doc, byClient: Map<number, Y.Item[]>, memo: Map<Y.Item, number>, start: Y.Item, maxDepth: number): number {
  const chain: Array<{ item: Y.Item; plusOne: boolean }> = []
  const onChain = new Set<Y.Item>()
  let current: Y.Item = start
  let depth: number
  while (true) {
    const known = memo.get(current)
    if (known !== undefined) {
      depth = known
      break
    }
    // A cycle of origins: Yjs could never integrate it; it counts as too deep rather than loop.
    if (onChain.has(current)) {
      depth = Infinity
      break
    }
    onChain.add(current)
    const link = parentLink(doc, byClient, current, maxDepth)
    if ('depth' in link) {
      memo.set(current, link.depth)
      depth = link.depth
      break
    }
    chain.push({ item: current, plusOne: link.plusOne })
    current = link.item
  }
  // Unwind: each item's depth is its link's depth, one more when the link is its parent type.
  for (let i = chain.length - 1; i >= 0; i--) {
    const { item, plusOne } = chain[i] as { item: Y.Item; plusOne: boolean }
    depth = Math.min(Infinity, plusOne ? depth + 1 : depth)
    memo.set(item, depth)
  }
  return depth
}

function parentLink(doc: Y.Doc, byClient: Map<number, Y.Item[]>, item: Y.Item, maxDepth: number): ParentLink {
  // Before integration a decoded item holds its parent as a root key or an ID, or null when it
  // inherits the parent of its origin (or right origin).
  const parent = item.parent as unknown
  if (typeof parent === 'string') return { depth: 1 }
  if (parent instanceof Y.ID) return linkTo(doc, byClient, parent, true, maxDepth)
  const neighbour = item.origin ?? item.rightOrigin
  if (neighbour === null) return { depth: 1 }
  return linkTo(doc, byClient, neighbour, false, maxDepth)
}

function linkTo(doc: Y.Doc, byClient: Map<number, Y.Item[]>, id: Y.ID, isParent: boolean, maxDepth: number): ParentLink {
  const inUpdate = findInUpdate(byClient, id)
  if (inUpdate !== null) return { item: inUpdate, plusOne: isParent }
  if (id.clock >= Y.getState(doc.store, id.client)) return { depth: 1 } // not there: Yjs keeps it pending
  const existing = Y.getItem(doc.store, id) as Y.Item | Y.GC
  // Garbage collected: Yjs turns the new item into garbage too, so it nests nothing.
  if (!(existing instanceof Y.Item)) return { depth: 0 }
  if (isParent) {
    if (!(existing.content instanceof Y.ContentType)) return { depth: 0 }
    return { depth: typeDepth(existing.content.type, maxDepth) }
  }
  const container = existing.parent
  return { depth: container instanceof Y.AbstractType ? typeDepth(container, maxDepth) : 0 }
}

/** Binary search among the update's items of one client (they are in clock order). */
function findInUpdate(byClient: Map<number, Y.Item[]>, id: Y.ID): Y.Item | null {
  const items = byClient.get(id.client)
  if (items === undefined) return null
  let low = 0
  let high = items.length - 1
  while (low <= high) {
    const middle = (low + high) >>> 1
    const item = items[middle] as Y.Item
    if (id.clock < item.id.clock) high = middle - 1
    else if (id.clock >= item.id.clock + item.length) low = middle + 1
    else return item
  }
  return null
}

/** The depth of a type in the document (a root type is 1), counted up to one past `maxDepth`. */
function typeDepth(type: Y.AbstractType<unknown>, maxDepth: number): number {
  let depth = 1
  let item = type._item
  while (item !== null && depth <= maxDepth) {
    depth++
    const parent = item.parent
    item = parent instanceof Y.AbstractType ? parent._item : null
  }
  return depth
}
