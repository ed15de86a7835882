/**
 * Rich-text documents over HTTP (issue 18): GET ?format=prosemirror|text&field= and
 * PUT /api/rooms/{room}/content against y-prosemirror's own conversion (used here only as the
 * reference; weft converts by itself), with a real server, real LevelDB and a stock y-websocket
 * client bound to the same document.
 */
import assert from 'node:assert/strict'
import { request, type IncomingHttpHeaders } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { Schema, type Node as PMNode } from 'prosemirror-model'
import { schema as basicSchema } from 'prosemirror-schema-basic'
import { addListNodes } from 'prosemirror-schema-list'
import { prosemirrorToYXmlFragment, yXmlFragmentToProsemirrorJSON } from 'y-prosemirror'
import type { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { destroy, provider, synced } from './harness/clients.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until, withDeadline } from './harness/wait.js'

const SECRET = 'prosemirror-api-test-secret-0123456789abcdef'
/** --max-message-bytes, which bounds HTTP bodies too. */
const MAX_BODY_BYTES = 1024 * 1024
const MAX_CONTENT_BYTES = 256 * 1024

/** prosemirror-schema-basic with lists, and a comment mark that overlaps itself (y-prosemirror hashes its names). */
const schema = new Schema({
  nodes: addListNodes(basicSchema.spec.nodes, 'paragraph block*', 'block'),
  marks: basicSchema.spec.marks.addToEnd('comment', { attrs: { id: {} }, excludes: '', inclusive: false }),
})

/** Headings with attrs, marks with attrs, overlapping marks, lists nested in lists, hard breaks, an empty paragraph, an inline image, a quote, code, a rule. */
const RICH = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 1 }, content: [{ type: 'text', text: 'Weft ' }, { type: 'text', text: 'rich', marks: [{ type: 'strong' }] }, { type: 'text', text: ' text' }] },
    {
      type: 'paragraph',
      content: [
        { type: 'text', text: 'Plain, ' },
        { type: 'text', text: 'bold', marks: [{ type: 'strong' }] },
        { type: 'text', text: ', ' },
        { type: 'text', text: 'both', marks: [{ type: 'em' }, { type: 'strong' }] },
        { type: 'text', text: ', a ' },
        { type: 'text', text: 'link', marks: [{ type: 'link', attrs: { href: 'https://example.com/', title: 'Example' } }] },
        { type: 'text', text: ', and' },
        { type: 'hard_break' },
        { type: 'text', text: 'a new line with ' },
        { type: 'text', text: 'two comments', marks: [{ type: 'comment', attrs: { id: 'a' } }, { type: 'comment', attrs: { id: 'b' } }] },
      ],
    },
    { type: 'paragraph' },
    {
      type: 'bullet_list',
      content: [
        { type: 'list_item', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'one' }] }] },
        {
          type: 'list_item',
          content: [
            { type: 'paragraph', content: [{ type: 'text', text: 'two' }] },
            { type: 'ordered_list', attrs: { order: 3 }, content: [{ type: 'list_item', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'nested' }] }] }] },
          ],
        },
      ],
    },
    { type: 'blockquote', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'quoted' }] }, { type: 'heading', attrs: { level: 3 }, content: [{ type: 'text', text: 'inside' }] }] },
    { type: 'paragraph', content: [{ type: 'text', text: 'image: ' }, { type: 'image', attrs: { src: 'https://example.com/a.png', alt: 'A' } }, { type: 'text', text: ' after' }] },
    { type: 'code_block', content: [{ type: 'text', text: 'const x = 1' }] },
    { type: 'horizontal_rule' },
  ],
}

const RICH_TEXT = 'Weft rich text\nPlain, bold, both, a link, and\na new line with two comments\n\none\ntwo\nnested\nquoted\ninside\nimage:  after\nconst x = 1\n'

/** A second document for PUTs: different structure, marks and attrs. */
const REPLACEMENT = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 2 }, content: [{ type: 'text', text: 'Replaced', marks: [{ type: 'em' }] }] },
    { type: 'ordered_list', attrs: { order: 1 }, content: [{ type: 'list_item', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'first ' }, { type: 'text', text: 'code', marks: [{ type: 'code' }] }] }] }] },
    { type: 'paragraph', content: [{ type: 'text', text: 'see ' }, { type: 'text', text: 'docs', marks: [{ type: 'link', attrs: { href: 'https://example.org/docs', title: null } }, { type: 'strong' }] }, { type: 'hard_break' }, { type: 'text', text: 'end' }] },
    { type: 'paragraph' },
  ],
}

/** ProseMirror's own JSON of a document (attrs with their defaults, marks in schema order). */
function normalized(json: unknown): unknown {
  return schema.nodeFromJSON(json).toJSON()
}

/**
 * y-prosemirror's JSON of a fragment as it goes over the wire (ProseMirror's attrs objects have a
 * null prototype until serialised).
 */
function reference(fragment: Y.XmlFragment): unknown {
  return JSON.parse(JSON.stringify(yXmlFragmentToProsemirrorJSON(fragment))) as unknown
}

/** What y-prosemirror reads from a fragment, as ProseMirror JSON through the schema. */
function readByYProsemirror(fragment: Y.XmlFragment): unknown {
  return normalized(yXmlFragmentToProsemirrorJSON(fragment))
}

/** A Y.Doc whose `field` y-prosemirror filled from `json`, plus other shared types an editor app has. */
function docWith(json: unknown, field = 'default'): Y.Doc {
  const doc = new Y.Doc()
  const node: PMNode = schema.nodeFromJSON(json)
  prosemirrorToYXmlFragment(node, doc.getXmlFragment(field))
  doc.getText('title').insert(0, 'The title')
  doc.getMap('meta').set('owner', 'ada')
  return doc
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  text: string
}

function http(base: string, method: string, path: string, options: { body?: Uint8Array | string; token?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body))
  return withDeadline(
    new Promise<Reply>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(new URL(base).port), method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }))
      })
      req.on('error', reject)
      req.end(options.body)
    }),
    `${method} ${path}`,
  )
}

const room = (name: string): string => `/api/rooms/${encodeURIComponent(name)}`
const jsonHeaders = { 'content-type': 'application/json' }

describe('ProseMirror/Tiptap JSON over HTTP', () => {
  let data: { path: string; remove(): Promise<void> }
  let weft: InProcessServer
  let admin: string
  let writer: string
  let reader: string
  const providers: WebsocketProvider[] = []

  const start = async (): Promise<void> => {
    weft = await startServer({ data: data.path, authSecret: SECRET, maxMessageBytes: MAX_BODY_BYTES, maxContentBytes: MAX_CONTENT_BYTES, keepData: true })
  }
  const put = (name: string, body: unknown, query = '', token = writer): Promise<Reply> =>
    http(weft.http, 'PUT', `${room(name)}/content${query}`, { body: typeof body === 'string' ? body : JSON.stringify(body), token, headers: jsonHeaders })
  const getJson = async (path: string, token = reader): Promise<unknown> => {
    const reply = await http(weft.http, 'GET', path, { token })
    assert.equal(reply.status, 200, reply.text)
    assert.match(String(reply.headers['content-type']), /^application\/json/)
    return JSON.parse(reply.text) as unknown
  }
  const seed = async (name: string, doc: Y.Doc): Promise<void> => {
    const reply = await http(weft.http, 'POST', `${room(name)}/updates`, { body: Y.encodeStateAsUpdate(doc), token: writer, headers: { 'content-type': 'application/octet-stream' } })
    assert.equal(reply.status, 204, reply.text)
  }

  before(async () => {
    data = await tempDir('weft-prosemirror-')
    await start()
    const sign = (access: string): Promise<string> => signToken({ rooms: ['*'], access }, { secret: SECRET, subject: `pm-${access}` })
    admin = await sign('admin')
    writer = await sign('write')
    reader = await sign('read')
  })

  after(async () => {
    destroy(...providers)
    await weft?.stop()
    await data?.remove()
  })

  it('GET ?format=prosemirror equals y-prosemirror’s JSON of the same fragment, for the default field and a named one', async () => {
    const doc = docWith(RICH)
    prosemirrorToYXmlFragment(schema.nodeFromJSON(REPLACEMENT), doc.getXmlFragment('body'))
    await seed('pm-read', doc)
    const expected = reference(doc.getXmlFragment('default'))
    // The reference really holds the hard cases: attrs, mark attrs, two comments under hashed names.
    const stored = doc.getXmlFragment('default').toJSON()
    assert.match(stored, /comment--/)
    assert.deepEqual(await getJson(`${room('pm-read')}?format=prosemirror`), expected)
    assert.deepEqual(await getJson(`${room('pm-read')}?format=prosemirror&field=default`), expected)
    assert.deepEqual(await getJson(`${room('pm-read')}?format=prosemirror&field=body`), reference(doc.getXmlFragment('body')))
    // And it is the document the editor had.
    assert.deepEqual(normalized(await getJson(`${room('pm-read')}?format=prosemirror`)), normalized(RICH))
    // A field nobody wrote is an empty document, as an editor would start it.
    assert.deepEqual(await getJson(`${room('pm-read')}?format=prosemirror&field=nothing-here`), { type: 'doc', content: [] })
  })

  it('GET ?format=text gives plain text, one line per block, hard breaks as newlines', async () => {
    const reply = await http(weft.http, 'GET', `${room('pm-read')}?format=text`, { token: reader })
    assert.equal(reply.status, 200, reply.text)
    assert.match(String(reply.headers['content-type']), /^text\/plain/)
    assert.equal(reply.text, RICH_TEXT)
  })

  it('GET has an ETag per format and field; a room that does not exist is 404', async () => {
    const first = await http(weft.http, 'GET', `${room('pm-read')}?format=prosemirror`, { token: reader })
    const text = await http(weft.http, 'GET', `${room('pm-read')}?format=text`, { token: reader })
    const etag = String(first.headers.etag)
    assert.notEqual(etag, String(text.headers.etag))
    assert.equal((await http(weft.http, 'GET', `${room('pm-read')}?format=prosemirror`, { token: reader, headers: { 'if-none-match': etag } })).status, 304)
    const missing = await http(weft.http, 'GET', `${room('pm-never')}?format=prosemirror`, { token: reader })
    assert.equal(missing.status, 404, missing.text)
  })

  it('PUT replaces the field live for a connected y-websocket client, as one update, leaving its other shared types alone', async () => {
    const name = 'pm-live'
    await seed(name, docWith(RICH))
    const clientDoc = new Y.Doc()
    const client = provider(weft.url, name, clientDoc, { params: { token: writer } })
    providers.push(client)
    await synced(client)
    const fragment = clientDoc.getXmlFragment('default')
    assert.deepEqual(readByYProsemirror(fragment), normalized(RICH))
    // Another field the editor has; it must not change either.
    prosemirrorToYXmlFragment(schema.nodeFromJSON(RICH), clientDoc.getXmlFragment('notes'))
    const notesBefore = clientDoc.getXmlFragment('notes').toJSON()
    const updates: Uint8Array[] = []
    clientDoc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === client) updates.push(update)
    })

    const body = normalized(REPLACEMENT)
    const reply = await put(name, body)
    assert.equal(reply.status, 204, reply.text)
    await until(() => JSON.stringify(readByYProsemirror(fragment)) === JSON.stringify(body), 'the client to see the PUT')
    assert.deepEqual(readByYProsemirror(fragment), body)
    assert.equal(updates.length, 1, 'the PUT reached the client as one update')
    assert.equal(clientDoc.getText('title').toString(), 'The title')
    assert.deepEqual(clientDoc.getMap('meta').toJSON(), { owner: 'ada' })
    assert.equal(clientDoc.getXmlFragment('notes').toJSON(), notesBefore)
    // weft reads back what y-prosemirror reads in the client.
    assert.deepEqual(await getJson(`${room(name)}?format=prosemirror`), reference(fragment))
  })

  it('PUT of what the field already holds changes nothing (same state vector)', async () => {
    const before = await http(weft.http, 'GET', `${room('pm-live')}/state-vector`, { token: reader })
    assert.equal((await put('pm-live', normalized(REPLACEMENT))).status, 204)
    const afterPut = await http(weft.http, 'GET', `${room('pm-live')}/state-vector`, { token: reader })
    assert.equal(afterPut.text, before.text)
  })

  it('PUT into a room that does not exist creates it; overlapping marks read back as y-prosemirror reads them', async () => {
    const body = normalized(RICH)
    assert.equal((await put('pm-new', body)).status, 204)
    const reply = await withDeadline(
      new Promise<Buffer>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: weft.port, path: `${room('pm-new')}?format=update`, headers: { authorization: `Bearer ${reader}` }, agent: false }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve(Buffer.concat(chunks)))
        })
        req.on('error', reject)
        req.end()
      }),
      'binary state',
    )
    const doc = new Y.Doc()
    Y.applyUpdate(doc, new Uint8Array(reply))
    assert.deepEqual(readByYProsemirror(doc.getXmlFragment('default')), body)
    // Two comments on one text: stored under y-prosemirror's hashed names, both come back.
    assert.match(doc.getXmlFragment('default').toJSON(), /comment--[a-zA-Z0-9+/=]{8}/)
    // PUT into a named field leaves the default one as it was.
    assert.equal((await put('pm-new', normalized(REPLACEMENT), '?field=body')).status, 204)
    assert.deepEqual(normalized(await getJson(`${room('pm-new')}?format=prosemirror&field=body`)), normalized(REPLACEMENT))
    assert.deepEqual(normalized(await getJson(`${room('pm-new')}?format=prosemirror`)), body)
  })

  it('what a PUT answered 204 for is stored: a restarted server on the same data reads it back', async () => {
    destroy(...providers.splice(0))
    await weft.stop()
    await start()
    assert.deepEqual(normalized(await getJson(`${room('pm-live')}?format=prosemirror`)), normalized(REPLACEMENT))
    assert.deepEqual(normalized(await getJson(`${room('pm-new')}?format=prosemirror`)), normalized(RICH))
    const title = await getJson(`${room('pm-live')}?types=title:text`)
    assert.equal((title as { title: string }).title, 'The title')
  })

  it('versions: GET /versions/{id}?format=prosemirror|text reads the version, not the room now', async () => {
    const name = 'pm-versions'
    assert.equal((await put(name, normalized(RICH))).status, 204)
    const created = await http(weft.http, 'POST', `${room(name)}/versions`, { body: JSON.stringify({ name: 'rich' }), token: writer, headers: jsonHeaders })
    assert.equal(created.status, 201, created.text)
    const { id } = JSON.parse(created.text) as { id: string }
    assert.equal((await put(name, normalized(REPLACEMENT))).status, 204)
    const referenceDoc = docWith(RICH)
    assert.deepEqual(await getJson(`${room(name)}/versions/${id}?format=prosemirror`), reference(referenceDoc.getXmlFragment('default')))
    const text = await http(weft.http, 'GET', `${room(name)}/versions/${id}?format=text&field=default`, { token: reader })
    assert.equal(text.status, 200)
    assert.equal(text.text, RICH_TEXT)
    assert.deepEqual(normalized(await getJson(`${room(name)}?format=prosemirror`)), normalized(REPLACEMENT))
  })

  it('a read-only token may GET but gets 403 for PUT, and the document is unchanged', async () => {
    const reply = await put('pm-live', normalized(RICH), '', reader)
    assert.equal(reply.status, 403, reply.text)
    assert.equal((JSON.parse(reply.text) as { error: string }).error, 'forbidden')
    assert.deepEqual(normalized(await getJson(`${room('pm-live')}?format=prosemirror`)), normalized(REPLACEMENT))
  })

  it('bad bodies get 400 saying what is wrong and where; the document is unchanged', async () => {
    let deep: Record<string, unknown> = { type: 'paragraph' }
    for (let i = 0; i < 150; i++) deep = { type: 'blockquote', content: [deep] }
    // As text: JSON.stringify itself overflows on such nesting.
    const deepValue = `${'['.repeat(100_000)}${']'.repeat(100_000)}`
    const cases: Array<[unknown, RegExp]> = [
      ['{"type": "doc", ', /the body is not JSON/],
      [[1, 2], /the body must be a JSON object/],
      [{ type: 'paragraph' }, /type must be "doc"/],
      [{ type: 'doc', content: 'text' }, /^content must be an array/],
      [{ type: 'doc', content: [{ type: 'paragraph' }, 7] }, /^content\[1\] must be a node object/],
      [{ type: 'doc', content: [{ content: [] }] }, /^content\[0\]\.type must be a non-empty string/],
      [{ type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text' }] }] }, /^content\[0\]\.content\[0\]\.text must be a non-empty string/],
      [{ type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: '' }] }] }, /^content\[0\]\.content\[0\]\.text must be a non-empty string/],
      [{ type: 'doc', content: [{ type: 'paragraph' }, { type: 'paragraph' }, { type: 'paragraph', content: [{ type: 'text', text: 'x', marks: [{ attrs: {} }] }] }] }, /^content\[2\]\.content\[0\]\.marks\[0\]\.type must be a non-empty string/],
      [{ type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'x', marks: 'strong' }] }] }, /^content\[0\]\.content\[0\]\.marks must be an array/],
      [{ type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'x', marks: [{ type: 'link', attrs: 'https://x' }] }] }] }, /^content\[0\]\.content\[0\]\.marks\[0\]\.attrs must be an object/],
      [{ type: 'doc', content: [{ type: 'heading', attrs: [1] }] }, /^content\[0\]\.attrs must be an object/],
      [{ type: 'doc', content: [deep] }, /nested deeper than 100 levels/],
      [`{"type":"doc","content":[{"type":"paragraph","content":[{"type":"text","text":"x","marks":[{"type":"link","attrs":{"href":${deepValue}}}]}]}]}`, /^content\[0\]\.content\[0\]\.marks\[0\]\.attrs holds values nested deeper than 32 levels/],
      [`{"type":"doc","content":[{"type":"image","attrs":{"src":${deepValue}}}]}`, /^content\[0\]\.attrs holds values nested deeper than 32 levels/],
    ]
    for (const [body, message] of cases) {
      const reply = await put('pm-live', body)
      assert.equal(reply.status, 400, `${(typeof body === 'string' ? body : JSON.stringify(body)).slice(0, 80)}: ${reply.text}`)
      const answer = JSON.parse(reply.text) as { error: string; message: string }
      assert.equal(answer.error, 'bad_request')
      assert.match(answer.message, message)
    }
    const badField = await http(weft.http, 'PUT', `${room('pm-live')}/content?field=`, { body: JSON.stringify(REPLACEMENT), token: writer, headers: jsonHeaders })
    assert.equal(badField.status, 400, badField.text)
    assert.match(badField.text, /field must be/)
    // Content types a form can send are refused before the body is read.
    const form = await http(weft.http, 'PUT', `${room('pm-live')}/content`, { body: JSON.stringify(REPLACEMENT), token: writer, headers: { 'content-type': 'text/plain' } })
    assert.equal(form.status, 415, form.text)
    // Too big: the server's body limit.
    const big = { type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'x'.repeat(MAX_BODY_BYTES) }] }] }
    assert.equal((await put('pm-live', big)).status, 413)
    // Under the message limit but over --max-content-bytes: the conversion is CPU-bound, so its own bound.
    const overContent = { type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'x'.repeat(MAX_CONTENT_BYTES + 1) }] }] }
    assert.ok(JSON.stringify(overContent).length < MAX_BODY_BYTES)
    assert.equal((await put('pm-live', overContent)).status, 413)
    assert.deepEqual(normalized(await getJson(`${room('pm-live')}?format=prosemirror`)), normalized(REPLACEMENT))
  })

  it('a field that holds a Y.Text is not a ProseMirror document: 400 for GET and PUT, and it is left alone', async () => {
    const doc = new Y.Doc()
    doc.getText('default').insert(0, 'plain text here')
    await seed('pm-text-field', doc)
    const read = await http(weft.http, 'GET', `${room('pm-text-field')}?format=prosemirror`, { token: reader })
    assert.equal(read.status, 400, read.text)
    assert.match(read.text, /field \\"default\\" holds/)
    const write = await put('pm-text-field', normalized(REPLACEMENT))
    assert.equal(write.status, 400, write.text)
    const all = await getJson(`${room('pm-text-field')}?types=default:text`, admin)
    assert.equal((all as { default: string }).default, 'plain text here')
  })
})
