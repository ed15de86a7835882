import * as Y from 'yjs'
import {
  ContentShapeError,
  fragmentToProsemirrorJSON,
  fragmentToText,
  NotXmlFieldError,
  parseProsemirrorDoc,
  prosemirrorToXmlNodes,
  type ProsemirrorDoc,
} from './prosemirror.js'

/**
 * Rich-text documents over HTTP (issue 18): the representations `?format=prosemirror|text` of
 * GET /api/rooms/{room} and of a version, and the update a PUT /api/rooms/{room}/content makes.
 * The HTTP API does the routing, access and storage; this module only turns documents into
 * answers and request bodies into one Yjs update.
 */

export type ContentFormat = 'prosemirror' | 'text'

export interface ContentQuery {
  format: ContentFormat
  /** The top-level Y.XmlFragment: Tiptap's Collaboration extension calls it `default`. */
  field: string
}

/** Tiptap's default `field`; y-prosemirror's own helpers default to `prosemirror`. */
export const DEFAULT_FIELD = 'default'

/** Longest field name accepted (a top-level name, like a room name). */
const MAX_FIELD_LENGTH = 512

/** A bad `field` parameter or body: the HTTP API answers 400 with the message. */
export class ContentRequestError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ContentRequestError'
  }
}

export { ContentShapeError, NotXmlFieldError }

/** `?field=`, defaulting to Tiptap's `default`. */
export function contentField(query: URLSearchParams): string {
  const field = query.get('field') ?? DEFAULT_FIELD
  if (field === '' || field.length > MAX_FIELD_LENGTH) throw new ContentRequestError(`field must be the name of a top-level XML fragment (1 to ${MAX_FIELD_LENGTH} characters)`)
  return field
}

/** The rich-text format a GET asks for, or null for weft's other representations (JSON of all types, binary). */
export function contentQuery(query: URLSearchParams): ContentQuery | null {
  const format = query.get('format')
  if (format !== 'prosemirror' && format !== 'text') return null
  return { format, field: contentField(query) }
}

/** A document's field in the format asked for: the body and its content type. */
export function renderContent(update: Uint8Array, { format, field }: ContentQuery): { contentType: string; body: string } {
  // Read from a copy: naming a top-level type is one-way in Yjs, and the live document must stay
  // free for whatever its clients call the name.
  const copy = new Y.Doc()
  try {
    Y.applyUpdate(copy, update)
    const fragment = xmlFragmentOf(copy, field)
    if (format === 'text') return { contentType: 'text/plain; charset=utf-8', body: fragmentToText(fragment, field) }
    return { contentType: 'application/json; charset=utf-8', body: JSON.stringify(fragmentToProsemirrorJSON(fragment, field)) }
  } finally {
    copy.destroy()
  }
}

/** A PUT body: JSON that is a ProseMirror document (see parseProsemirrorDoc for what is checked). */
export function parseContentBody(body: Uint8Array): ProsemirrorDoc {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(body).toString('utf8'))
  } catch (err) {
    throw new ContentRequestError(`the body is not JSON: ${(err as Error).message}`)
  }
  return parseProsemirrorDoc(value)
}

/**
 * The one update that makes `field` of `doc` hold `content`, nothing else changed: built on a
 * copy of the document (its own client id, so concurrent writers never share clocks), the old
 * children deleted and the new ones inserted in one transaction, and the copy's difference to
 * `doc` returned. When the field already reads as `content`, the update changes nothing (it is
 * still applied, so the answer waits for what is pending to be stored). Call it and apply the
 * update without awaiting in between, so `doc` cannot change under it.
 */
export function replacementUpdate(doc: Y.Doc, field: string, content: ProsemirrorDoc): { update: Uint8Array; changed: boolean } {
  return replacementFromState(Y.encodeStateAsUpdate(doc), field, content)
}

/** replacementUpdate for the document whose whole state is `state` (a worker has no live document). */
export function replacementFromState(state: Uint8Array, field: string, content: ProsemirrorDoc): { update: Uint8Array; changed: boolean } {
  const copy = new Y.Doc()
  try {
    Y.applyUpdate(copy, state)
    const before = Y.encodeStateVector(copy)
    const fragment = xmlFragmentOf(copy, field)
    const old = JSON.stringify(fragmentToProsemirrorJSON(fragment, field))
    copy.transact(() => {
      fragment.delete(0, fragment.length)
      fragment.insert(0, prosemirrorToXmlNodes(content))
    })
    // Compared as it reads back (adjacent runs merged, null attrs dropped), not as it was sent.
    if (JSON.stringify(fragmentToProsemirrorJSON(fragment, field)) === old) return { update: Y.diffUpdate(state, before), changed: false }
    return { update: Y.encodeStateAsUpdate(copy, before), changed: true }
  } finally {
    copy.destroy()
  }
}

/** The field as an XML fragment; a name used as a map (keys, no children) is not one. */
function xmlFragmentOf(doc: Y.Doc, field: string): Y.XmlFragment {
  const fragment = doc.getXmlFragment(field)
  if (fragment._map.size > 0) throw new NotXmlFieldError(field, 'map entries (it looks like a Y.Map)')
  return fragment
}
