/* eslint-disable @typescript-eslint/no-explicit-any -- Yjs types are generic over their event type, which does not matter here */
import * as Y from 'yjs'

/** The kinds a top-level shared type can be read as. */
export type ShareKind = 'text' | 'map' | 'array' | 'xml'

/**
 * Guesses what a top-level type is from its content. An update does not record which constructor
 * a client used for a top-level name, so weft looks at what the type holds:
 * keyed entries → map; strings, formats or embeds → text; XML nodes → xml; anything else → array.
 * A sequence whose content has all been deleted and collected cannot be told apart; it reads as
 * an empty array.
 */
export function inferShareKind(type: Y.AbstractType<any>): ShareKind {
  if (type._map.size > 0 && type._start === null) return 'map'
  for (let item = type._start; item !== null; item = item.right) {
    const content = item.content
    if (content instanceof Y.ContentString || content instanceof Y.ContentFormat || content instanceof Y.ContentEmbed) return 'text'
    if (content instanceof Y.ContentType) {
      const inner = content.type
      if (inner instanceof Y.XmlElement || inner instanceof Y.XmlText || inner instanceof Y.XmlHook) return 'xml'
      return 'array'
    }
    if (content instanceof Y.ContentAny || content instanceof Y.ContentJSON || content instanceof Y.ContentBinary || content instanceof Y.ContentDoc) {
      return 'array'
    }
  }
  return type._map.size > 0 ? 'map' : 'array'
}

/** The kind of a type some code already instantiated with a concrete constructor. */
function concreteKind(type: Y.AbstractType<any>): ShareKind | null {
  if (type instanceof Y.Text) return 'text'
  if (type instanceof Y.Map) return 'map'
  if (type instanceof Y.Array) return 'array'
  if (type instanceof Y.XmlFragment) return 'xml'
  return null
}

/** Reads every top-level type of `doc` as JSON (Y.Text → string, Y.Map → object, Y.Array → array, XML → string). */
export function documentToJson(doc: Y.Doc, kinds: Readonly<Record<string, ShareKind>> = {}, options: { textAsDelta?: boolean } = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [name, type] of [...doc.share.entries()]) {
    const kind = concreteKind(type) ?? kinds[name] ?? inferShareKind(type)
    switch (kind) {
      case 'text':
        // The delta keeps formatting and embeds ({insert, attributes}); the string drops them.
        out[name] = options.textAsDelta === true ? doc.getText(name).toDelta() : doc.getText(name).toString()
        break
      case 'map':
        out[name] = doc.getMap(name).toJSON()
        break
      case 'array':
        out[name] = doc.getArray(name).toJSON()
        break
      case 'xml':
        out[name] = doc.getXmlFragment(name).toString()
        break
    }
  }
  return out
}
