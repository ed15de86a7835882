import * as Y from 'yjs'
import { encodeAny, toBase64 } from 'lib0/buffer'
import { digest } from 'lib0/hash/sha256'

/**
 * ProseMirror/Tiptap JSON <-> a Y.XmlFragment, with the mapping y-prosemirror (and so Tiptap's
 * Collaboration extension) uses, so an editor bound to the fragment sees exactly what weft reads
 * and writes:
 * - an XmlElement is a node: nodeName = node type, element attributes = node attrs;
 * - an XmlText holds a run of text nodes: each delta insert is one text node, its formatting
 *   attributes are its marks (attribute name = mark type, value = the mark's attrs object);
 * - mark types that may overlap themselves (several links on one character) are stored under
 *   `type--<8 base64 chars>` names, the hash of the mark's JSON; the suffix is dropped on reading.
 * Written without a schema: weft stores what the JSON says and leaves schema checks to editors.
 */

export interface ProsemirrorMark {
  type: string
  attrs?: Record<string, unknown>
}

export interface ProsemirrorNode {
  type: string
  attrs?: Record<string, unknown>
  content?: ProsemirrorNode[]
  text?: string
  marks?: ProsemirrorMark[]
}

export interface ProsemirrorDoc {
  type: 'doc'
  content: ProsemirrorNode[]
}

/** Deepest node nesting a written document may have (the doc's children are at depth 1). */
export const MAX_CONTENT_DEPTH = 100

/**
 * Deepest nesting of objects and arrays inside one attrs value: attrs are stored and hashed by
 * recursive encoders, which a body of a million brackets would overflow.
 */
export const MAX_ATTRS_DEPTH = 32

/** Node types whose element is a line break inside a textblock (prosemirror-schema-basic's and Tiptap's names). */
const HARD_BREAKS: ReadonlySet<string> = new Set(['hard_break', 'hardBreak'])

/** y-prosemirror's overlapping-mark suffix: `--` and 8 base64 characters (6 bytes of hash). */
const HASHED_MARK_NAME = /(.*)(--[a-zA-Z0-9+/=]{8})$/

/** A ProseMirror document that is not well formed; the message names the place (`content[2].marks[0].type must be a string`). */
export class ContentShapeError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ContentShapeError'
  }
}

/** A field that holds something other than XML elements and text (a Y.Text or Y.Array used under that name). */
export class NotXmlFieldError extends Error {
  constructor(field: string, found: string) {
    super(`field "${field}" holds ${found}, not XML elements and text: it is not a ProseMirror document`)
    this.name = 'NotXmlFieldError'
  }
}

/** The mark type an XmlText formatting attribute stands for. */
export function markTypeOf(attributeName: string): string {
  return HASHED_MARK_NAME.exec(attributeName)?.[1] ?? attributeName
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'string') return 'text (it looks like a Y.Text)'
  return `a ${typeof value}`
}

// ---------------------------------------------------------------- reading

/**
 * The fragment as ProseMirror JSON, equal to y-prosemirror's `yXmlFragmentToProsemirrorJSON` with
 * two exceptions for content no ProseMirror editor writes: text directly in the fragment is
 * listed flat (y-prosemirror nests it in an array), and a formatting value that is not an object
 * (`bold: true` from a plain Y.Text editor) is a mark without attrs.
 */
export function fragmentToProsemirrorJSON(fragment: Y.XmlFragment, field: string): ProsemirrorDoc {
  return { type: 'doc', content: fragment.toArray().flatMap((child) => nodesOf(child, field)) }
}

function nodesOf(child: unknown, field: string): ProsemirrorNode[] {
  if (child instanceof Y.XmlText) return textNodesOf(child)
  if (child instanceof Y.XmlElement) {
    const node: ProsemirrorNode = { type: child.nodeName }
    const attrs = child.getAttributes() as Record<string, unknown>
    if (Object.keys(attrs).length > 0) node.attrs = attrs
    const children = child.toArray()
    // y-prosemirror lists content whenever the element has children, even empty XmlTexts only.
    if (children.length > 0) node.content = children.flatMap((c) => nodesOf(c, field))
    return [node]
  }
  throw new NotXmlFieldError(field, child instanceof Y.AbstractType ? `a ${child.constructor.name}` : describe(child))
}

function textNodesOf(text: Y.XmlText): ProsemirrorNode[] {
  const delta = text.toDelta() as Array<{ insert: unknown; attributes?: Record<string, unknown> }>
  return delta.map((op) => {
    const node: ProsemirrorNode = { type: 'text', text: op.insert as string }
    if (op.attributes !== undefined) {
      node.marks = Object.entries(op.attributes).map(([name, value]) => {
        const mark: ProsemirrorMark = { type: markTypeOf(name) }
        if (isPlainObject(value)) mark.attrs = value
        return mark
      })
    }
    return node
  })
}

/**
 * The fragment as plain text: every textblock (an element with text in it, or an empty leaf such
 * as an empty paragraph) is one line, blocks in document order; hard breaks are newlines inside
 * their line; elements inline in a textblock (mentions) give their text.
 */
export function fragmentToText(fragment: Y.XmlFragment, field: string): string {
  const lines: string[] = []
  for (const child of fragment.toArray()) blockLines(child, field, lines)
  return lines.join('\n')
}

function blockLines(node: unknown, field: string, lines: string[]): void {
  if (node instanceof Y.XmlText) {
    lines.push(plainTextOf(node))
    return
  }
  if (!(node instanceof Y.XmlElement)) throw new NotXmlFieldError(field, node instanceof Y.AbstractType ? `a ${node.constructor.name}` : describe(node))
  const children = node.toArray()
  if (children.length === 0 || children.some((c) => c instanceof Y.XmlText)) {
    lines.push(children.map((c) => inlineText(c, field)).join(''))
    return
  }
  for (const child of children) blockLines(child, field, lines)
}

function inlineText(node: unknown, field: string): string {
  if (node instanceof Y.XmlText) return plainTextOf(node)
  if (!(node instanceof Y.XmlElement)) throw new NotXmlFieldError(field, describe(node))
  if (HARD_BREAKS.has(node.nodeName)) return '\n'
  return node
    .toArray()
    .map((c) => inlineText(c, field))
    .join('')
}

/** The characters of an XmlText; embeds are not text. */
function plainTextOf(text: Y.XmlText): string {
  const delta = text.toDelta() as Array<{ insert: unknown }>
  return delta.map((op) => (typeof op.insert === 'string' ? op.insert : '')).join('')
}

// ---------------------------------------------------------------- checking

/**
 * Checks that `value` is a ProseMirror document (`{type: "doc", content: [...]}`) weft can store
 * and returns it typed. Unknown keys are ignored; marks on non-text nodes are checked but not
 * stored (y-prosemirror keeps marks on text only).
 */
export function parseProsemirrorDoc(value: unknown): ProsemirrorDoc {
  if (!isPlainObject(value)) throw new ContentShapeError(`the body must be a JSON object (a ProseMirror document), not ${describe(value)}`)
  if (value.type !== 'doc') throw new ContentShapeError(`type must be "doc" (the document's root), not ${JSON.stringify(value.type) ?? 'missing'}`)
  const content = value.content === undefined ? [] : checkContent(value.content, 'content', 1)
  return { type: 'doc', content }
}

function checkContent(value: unknown, path: string, depth: number): ProsemirrorNode[] {
  if (!Array.isArray(value)) throw new ContentShapeError(`${path} must be an array of nodes, not ${describe(value)}`)
  if (depth > MAX_CONTENT_DEPTH) throw new ContentShapeError(`${path} is nested deeper than ${MAX_CONTENT_DEPTH} levels`)
  return value.map((node, i) => checkNode(node, `${path}[${i}]`, depth))
}

function checkNode(value: unknown, path: string, depth: number): ProsemirrorNode {
  if (!isPlainObject(value)) throw new ContentShapeError(`${path} must be a node object, not ${describe(value)}`)
  const { type } = value
  if (typeof type !== 'string' || type === '') throw new ContentShapeError(`${path}.type must be a non-empty string`)
  const marks = value.marks === undefined ? undefined : checkMarks(value.marks, `${path}.marks`)
  if (value.attrs !== undefined && value.attrs !== null) checkAttrs(value.attrs, `${path}.attrs`)
  if (type === 'text') {
    if (typeof value.text !== 'string' || value.text === '') throw new ContentShapeError(`${path}.text must be a non-empty string (a text node without text)`)
    if (value.content !== undefined) throw new ContentShapeError(`${path} is a text node and cannot have content`)
    return marks === undefined ? { type, text: value.text } : { type, text: value.text, marks }
  }
  if (value.text !== undefined) throw new ContentShapeError(`${path}.text is only allowed on text nodes (type "text")`)
  const node: ProsemirrorNode = { type }
  if (isPlainObject(value.attrs)) node.attrs = value.attrs
  if (value.content !== undefined) node.content = checkContent(value.content, `${path}.content`, depth + 1)
  return node
}

function checkMarks(value: unknown, path: string): ProsemirrorMark[] {
  if (!Array.isArray(value)) throw new ContentShapeError(`${path} must be an array of marks, not ${describe(value)}`)
  return value.map((mark, i) => {
    const at = `${path}[${i}]`
    if (!isPlainObject(mark)) throw new ContentShapeError(`${at} must be a mark object, not ${describe(mark)}`)
    if (typeof mark.type !== 'string' || mark.type === '') throw new ContentShapeError(`${at}.type must be a non-empty string`)
    if (mark.attrs === undefined || mark.attrs === null) return { type: mark.type }
    return { type: mark.type, attrs: checkAttrs(mark.attrs, `${at}.attrs`) }
  })
}

function checkAttrs(value: unknown, path: string): Record<string, unknown> {
  if (!isPlainObject(value)) throw new ContentShapeError(`${path} must be an object`)
  if (nestedDeeperThan(value, MAX_ATTRS_DEPTH)) throw new ContentShapeError(`${path} holds values nested deeper than ${MAX_ATTRS_DEPTH} levels`)
  return value
}

function nestedDeeperThan(value: unknown, levels: number): boolean {
  if (typeof value !== 'object' || value === null) return false
  if (levels === 0) return true
  const children: unknown[] = Array.isArray(value) ? value : Object.values(value)
  return children.some((child) => nestedDeeperThan(child, levels - 1))
}

// ---------------------------------------------------------------- writing

/**
 * The document's nodes as Yjs types not yet in a document, built the way y-prosemirror's
 * `prosemirrorToYXmlFragment` builds them (consecutive text nodes share one XmlText; attrs that
 * are null are left out), ready for `fragment.insert(0, ...)` inside one transaction.
 */
export function prosemirrorToXmlNodes(doc: ProsemirrorDoc): Array<Y.XmlElement | Y.XmlText> {
  return typesOf(doc.content)
}

function typesOf(content: readonly ProsemirrorNode[]): Array<Y.XmlElement | Y.XmlText> {
  const types: Array<Y.XmlElement | Y.XmlText> = []
  for (let i = 0; i < content.length; i++) {
    const node = content[i] as ProsemirrorNode
    if (node.type !== 'text') {
      types.push(elementOf(node))
      continue
    }
    const run: ProsemirrorNode[] = []
    while (i < content.length && (content[i] as ProsemirrorNode).type === 'text') run.push(content[i++] as ProsemirrorNode)
    i--
    const text = new Y.XmlText()
    text.applyDelta(run.map((t) => ({ insert: t.text as string, attributes: formattingOf(t.marks ?? []) })))
    types.push(text)
  }
  return types
}

function elementOf(node: ProsemirrorNode): Y.XmlElement {
  const element = new Y.XmlElement(node.type)
  for (const [key, value] of Object.entries(node.attrs ?? {})) {
    // y-prosemirror's rules: a null attr is the schema default, `ychange` is its own bookkeeping.
    if (value !== null && value !== undefined && key !== 'ychange') element.setAttribute(key, value as string)
  }
  element.insert(0, typesOf(node.content ?? []))
  return element
}

/**
 * Marks as XmlText formatting attributes. A mark type that occurs more than once on one text
 * node overlaps itself, so each gets y-prosemirror's hashed name; other marks keep the plain type
 * name (which y-prosemirror reads the same way). A mark without attrs is stored as `{}`, as a
 * ProseMirror mark's empty attrs are.
 */
function formattingOf(marks: readonly ProsemirrorMark[]): Record<string, unknown> {
  const counts = new Map<string, number>()
  for (const mark of marks) counts.set(mark.type, (counts.get(mark.type) ?? 0) + 1)
  const attributes: Record<string, unknown> = {}
  for (const mark of marks) {
    const attrs = mark.attrs ?? {}
    const name = (counts.get(mark.type) as number) > 1 ? `${mark.type}--${hashOfMark(mark.type, attrs)}` : mark.type
    attributes[name] = attrs
  }
  return attributes
}

/** y-prosemirror's `hashOfJSON(mark.toJSON())`: sha256 of lib0's encoding, folded to 6 bytes, base64. */
function hashOfMark(type: string, attrs: Record<string, unknown>): string {
  const json: Record<string, unknown> = { type }
  if (Object.keys(attrs).length > 0) json.attrs = attrs
  const hash = digest(encodeAny(json))
  const size = 6
  for (let i = size; i < hash.length; i++) hash[i % size] = (hash[i % size] as number) ^ (hash[i] as number)
  return toBase64(hash.slice(0, size))
}
