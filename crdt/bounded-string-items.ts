import * as Y from 'yjs'

/**
 * Longest string (UTF-16 code units) two text items of a bounded document are merged into.
 *
 * Yjs merges a client's consecutive insertions into one item, `left.str += right.str`, which V8
 * keeps as a rope (a cons string). Right after merging, Yjs encodes the transaction's update for
 * the `update` event, and writing the new text slices the merged item at the old end: the slice
 * flattens the rope, a copy of the whole item. Appending to a 20 MB text (one item once loaded)
 * so copied 20 MB per update: 13-25 ms each, and 120-190 ms of event loop for one socket read of
 * bulk writes (issue 19, bench 14). Past this length items stay apart: the same document, a few
 * more structs, and a flatten costs at most ~0.3 ms.
 */
export const MAX_MERGED_STRING_LENGTH = 256 * 1024

const bounded = new WeakSet<Y.Doc>()
let installed = false

/**
 * Keeps the text items of `doc` at most MAX_MERGED_STRING_LENGTH long when Yjs merges them
 * (longer single insertions stay as they are). Other documents in the process are not affected.
 */
export function boundStringItems(doc: Y.Doc): void {
  installOnce()
  bounded.add(doc)
}

function installOnce(): void {
  if (installed) return
  installed = true
  // Item.mergeWith is the only place Yjs merges integrated items; mergeUpdates also calls it, on
  // items of no document, which are left alone here.
  const prototype = Y.Item.prototype as { mergeWith(right: Y.Item): boolean }
  const mergeWith = prototype.mergeWith
  prototype.mergeWith = function (this: Y.Item, right: Y.Item): boolean {
    const left = this.content
    if (
      left instanceof Y.ContentString &&
      right.content instanceof Y.ContentString &&
      left.str.length + right.content.str.length > MAX_MERGED_STRING_LENGTH &&
      this.parent instanceof Y.AbstractType &&
      this.parent.doc !== null &&
      bounded.has(this.parent.doc)
    ) {
      return false
    }
    return mergeWith.call(this, right)
  }
}
