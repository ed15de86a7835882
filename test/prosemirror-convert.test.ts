/**
 * server/prosemirror.ts against y-prosemirror without a server: the Yjs structure weft writes is
 * the one y-prosemirror writes (the hashed names of overlapping marks included), and the edge
 * cases of reading that no editor test reaches.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Schema } from 'prosemirror-model'
import { schema as basicSchema } from 'prosemirror-schema-basic'
import { prosemirrorToYXmlFragment, yXmlFragmentToProsemirrorJSON } from 'y-prosemirror'
import * as Y from 'yjs'
import { fragmentToProsemirrorJSON, fragmentToText, markTypeOf, NotXmlFieldError, parseProsemirrorDoc, prosemirrorToXmlNodes } from '../server/prosemirror.js'

const schema = new Schema({
  nodes: basicSchema.spec.nodes,
  marks: basicSchema.spec.marks.addToEnd('comment', { attrs: { id: {} }, excludes: '', inclusive: false }),
})

/** Every text run of a fragment with its formatting attribute names and values, in order. */
function deltasOf(fragment: Y.XmlFragment): unknown[] {
  const out: unknown[] = []
  const walk = (node: Y.XmlElement | Y.XmlText | Y.XmlFragment): void => {
    if (node instanceof Y.XmlText) out.push(JSON.parse(JSON.stringify(node.toDelta())))
    else for (const child of node.toArray()) walk(child as Y.XmlElement | Y.XmlText)
  }
  walk(fragment)
  return out
}

function weftFragment(json: unknown): Y.XmlFragment {
  const doc = new Y.Doc()
  const fragment = doc.getXmlFragment('default')
  fragment.insert(0, prosemirrorToXmlNodes(parseProsemirrorDoc(json)))
  return fragment
}

function yProsemirrorFragment(json: unknown): Y.XmlFragment {
  const doc = new Y.Doc()
  return prosemirrorToYXmlFragment(schema.nodeFromJSON(json), doc.getXmlFragment('default'))
}

describe('ProseMirror JSON <-> Y.XmlFragment', () => {
  it('writes overlapping marks under the same hashed names y-prosemirror gives them, and plain marks as y-prosemirror does', () => {
    const json = schema
      .nodeFromJSON({
        type: 'doc',
        content: [
          {
            type: 'paragraph',
            content: [
              { type: 'text', text: 'a ' },
              { type: 'text', text: 'both', marks: [{ type: 'strong' }, { type: 'comment', attrs: { id: 'x' } }, { type: 'comment', attrs: { id: 'y' } }] },
              { type: 'text', text: ' link', marks: [{ type: 'link', attrs: { href: 'https://example.com', title: null } }] },
            ],
          },
        ],
      })
      .toJSON()
    const ours = deltasOf(weftFragment(json))
    const theirs = deltasOf(yProsemirrorFragment(json))
    assert.deepEqual(ours, theirs)
    assert.match(JSON.stringify(ours), /"comment--[a-zA-Z0-9+/=]{8}"/)
    assert.equal(JSON.stringify(fragmentToProsemirrorJSON(weftFragment(json), 'default')), JSON.stringify(yXmlFragmentToProsemirrorJSON(weftFragment(json))))
  })

  it('reads hashed names as their mark type and leaves other names alone', () => {
    assert.equal(markTypeOf('comment--AbC+/9=z'), 'comment')
    assert.equal(markTypeOf('comment--short'), 'comment--short')
    assert.equal(markTypeOf('bold'), 'bold')
  })

  it('reads like y-prosemirror where editors write; lists text in the fragment flat and non-object formatting as marks without attrs', () => {
    const doc = new Y.Doc()
    const fragment = doc.getXmlFragment('default')
    const paragraph = new Y.XmlElement('paragraph')
    const emptyText = new Y.XmlText()
    const loose = new Y.XmlText()
    fragment.insert(0, [paragraph, loose])
    paragraph.insert(0, [emptyText])
    loose.insert(0, 'loose', { bold: true })
    const json = fragmentToProsemirrorJSON(fragment, 'default')
    // An element with only an empty text child has `content: []`, like y-prosemirror.
    const reference = yXmlFragmentToProsemirrorJSON(fragment) as { content: unknown[] }
    assert.deepEqual(json.content[0], reference.content[0])
    assert.deepEqual(json.content[0], { type: 'paragraph', content: [] })
    assert.deepEqual(json.content[1], { type: 'text', text: 'loose', marks: [{ type: 'bold' }] })
    assert.equal(json.content.length, 2)
  })

  it('plain text: textblocks are lines, containers are not, hard breaks are newlines', () => {
    const fragment = weftFragment({
      type: 'doc',
      content: [
        { type: 'heading', attrs: { level: 1 }, content: [{ type: 'text', text: 'Title' }] },
        { type: 'paragraph', content: [{ type: 'text', text: 'one' }, { type: 'hardBreak' }, { type: 'text', text: 'two' }] },
        { type: 'paragraph' },
        { type: 'bulletList', content: [{ type: 'listItem', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'item', marks: [{ type: 'bold' }] }] }] }] },
      ],
    })
    assert.equal(fragmentToText(fragment, 'default'), 'Title\none\ntwo\n\nitem')
  })

  it('a field used as a Y.Text is not a ProseMirror document', () => {
    const doc = new Y.Doc()
    doc.getText('default').insert(0, 'plain')
    const copy = new Y.Doc()
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc))
    assert.throws(() => fragmentToProsemirrorJSON(copy.getXmlFragment('default'), 'default'), NotXmlFieldError)
    assert.throws(() => fragmentToText(copy.getXmlFragment('default'), 'default'), NotXmlFieldError)
  })

  it('null attrs are left out and marks on non-text nodes are not kept, as y-prosemirror does', () => {
    const fragment = weftFragment({ type: 'doc', content: [{ type: 'image', attrs: { src: 's', title: null }, marks: [{ type: 'link', attrs: { href: 'h' } }] }] })
    assert.deepEqual(fragmentToProsemirrorJSON(fragment, 'default'), { type: 'doc', content: [{ type: 'image', attrs: { src: 's' } }] })
  })
})
