/**
 * The HTTP document API in open mode (no --auth-secret), against real sockets, real LevelDB in a
 * temp dir and the official clients: what GET answers is compared with what a connected stock
 * y-websocket client holds, updates posted over HTTP are checked in clients and after restarts
 * (and after a kill -9 of a child process), and every error status is provoked once.
 */
import assert from 'node:assert/strict'
import { request, type IncomingHttpHeaders } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { canonicalState, canonicalUpdate, destroy, provider, synced } from './harness/clients.js'
import { spawnWeft, startServer, tempDir, type InProcessServer } from './harness/server.js'
import { eventually, until, withDeadline } from './harness/wait.js'

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

interface RequestOptions {
  body?: Uint8Array | string
  headers?: Record<string, string>
  /** Send the body with chunked transfer encoding (no Content-Length). */
  chunked?: boolean
}

/** One HTTP request on its own connection (no keep-alive agent to outlive the test). */
function http(base: string, method: string, path: string, options: RequestOptions = {}): Promise<Reply> {
  const { port } = new URL(base)
  const headers: Record<string, string> = { ...options.headers }
  if (options.body !== undefined && options.chunked !== true) headers['content-length'] = String(Buffer.byteLength(options.body))
  return withDeadline(
    new Promise<Reply>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(port), method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      })
      req.on('error', reject)
      if (options.body !== undefined) req.write(options.body)
      req.end()
    }),
    `${method} ${path}`,
  )
}

function json<T = Record<string, unknown>>(reply: Reply): T {
  assert.match(String(reply.headers['content-type']), /^application\/json/, `JSON expected, got ${reply.headers['content-type']}: ${reply.body.toString()}`)
  return JSON.parse(reply.body.toString('utf8')) as T
}

/** The contract's error: the status, a JSON `{error, message}` body, and no stack trace in it. */
function assertError(reply: Reply, status: number, code: string): void {
  const text = reply.body.toString('utf8')
  assert.equal(reply.status, status, `expected ${status} ${code}, got ${reply.status}: ${text}`)
  const body = json(reply)
  assert.deepEqual(Object.keys(body).sort(), ['error', 'message'])
  assert.equal(body.error, code)
  assert.equal(typeof body.message, 'string')
  assert.ok((body.message as string).length > 0)
  assert.doesNotMatch(text, /\bat .+:\d+:\d+|node_modules|\.ts:\d+|\.js:\d+/, `stack trace in ${text}`)
}

const room = (name: string): string => `/api/rooms/${encodeURIComponent(name)}`
const binary = { 'content-type': 'application/octet-stream' }

/** An update that makes `edit` on a fresh doc. */
function updateOf(edit: (doc: Y.Doc) => void): Uint8Array {
  const doc = new Y.Doc()
  edit(doc)
  const update = Y.encodeStateAsUpdate(doc)
  doc.destroy()
  return update
}

/** The document the server holds, as a fresh doc from `?format=update`. */
async function served(base: string, name: string): Promise<Y.Doc> {
  const reply = await http(base, 'GET', `${room(name)}?format=update`)
  assert.equal(reply.status, 200, reply.body.toString())
  const doc = new Y.Doc()
  Y.applyUpdate(doc, reply.body)
  return doc
}

/** Waits until the server holds exactly what `doc` holds (canonical bytes of `?format=update`). */
async function serverHolds(base: string, name: string, doc: Y.Doc, timeoutMs = 10_000): Promise<void> {
  const want = Buffer.from(canonicalState(doc))
  const deadline = Date.now() + timeoutMs
  while (true) {
    const reply = await http(base, 'GET', `${room(name)}?format=update`)
    if (reply.status === 200 && Buffer.from(canonicalUpdate(reply.body)).equals(want)) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for the server to hold room ${name} (last: ${reply.status})`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Resolves with the first 'closed' event of a y-websocket v3 provider (a 44xx close stops it). */
function closedWith(p: WebsocketProvider, timeoutMs = 10_000): Promise<number> {
  return withDeadline(
    new Promise<number>((resolve) => {
      p.on('closed', (event: { code: number }) => resolve(event.code))
    }),
    `provider of ${p.roomname} to be closed by the server`,
    timeoutMs,
  )
}

const UNLOAD_DELAY_MS = 200

// Every stock provider adds a process 'exit' listener.
process.setMaxListeners(32)

describe('HTTP document API (open mode)', () => {
  let data: { path: string; remove(): Promise<void> }
  let weft: InProcessServer
  const providers: WebsocketProvider[] = []

  const open = (name: string, doc = new Y.Doc()): WebsocketProvider => {
    const p = provider(weft.url, name, doc)
    providers.push(p)
    return p
  }

  /** Stops the server (real shutdown, flush) and starts a new one on the same LevelDB directory. */
  const restart = async (): Promise<void> => {
    await weft.stop()
    weft = await startServer({ data: data.path, roomUnloadDelayMs: UNLOAD_DELAY_MS })
  }

  before(async () => {
    data = await tempDir('weft-http-api-')
    weft = await startServer({ data: data.path, roomUnloadDelayMs: UNLOAD_DELAY_MS })
  })

  after(async () => {
    destroy(...providers)
    await weft?.stop()
    await data?.remove()
  })

  it('GET answers what a connected client holds: text, formatted text, maps, arrays, XML, nesting', async () => {
    const p = open('content')
    await synced(p)
    const doc = p.doc
    doc.transact(() => {
      doc.getText('title').insert(0, 'Hello world')
      const rich = doc.getText('rich')
      rich.insert(0, 'bold', { bold: true })
      // Explicit empty attributes: an insert after bold text would otherwise be bold too.
      rich.insert(4, ' plain ', {})
      rich.insert(11, 'link', { link: 'https://example.com', italic: true })
      rich.insertEmbed(15, { image: 'cat.png' })
      const meta = doc.getMap('meta')
      meta.set('done', false)
      meta.set('count', 3)
      meta.set('tags', ['a', 'b'])
      meta.set('note', new Y.Text('text inside a map'))
      doc.getArray('items').push([1, 'two', { three: 3 }, null])
      const tree = doc.getMap('tree')
      const list = new Y.Array<Y.Map<unknown>>()
      tree.set('list', list)
      const inner = new Y.Map<unknown>()
      list.push([inner])
      inner.set('leaf', 'x')
      inner.set('deep', new Y.Text('deep text'))
      const body = doc.getXmlFragment('body')
      const heading = new Y.XmlElement('h1')
      heading.setAttribute('id', 'top')
      heading.insert(0, [new Y.XmlText('Title')])
      const para = new Y.XmlElement('p')
      para.setAttribute('class', 'lead')
      const em = new Y.XmlElement('em')
      em.insert(0, [new Y.XmlText('very')])
      para.insert(0, [new Y.XmlText('a '), em, new Y.XmlText(' good start')])
      body.insert(0, [heading, para])
      // Written, then emptied: the bytes no longer tell that this was a Y.Text.
      const cleared = doc.getText('cleared')
      cleared.insert(0, 'gone')
      cleared.delete(0, 4)
    })
    await serverHolds(weft.http, 'content', doc)

    const reply = await http(weft.http, 'GET', `${room('content')}?types=cleared:text`)
    assert.equal(reply.status, 200)
    const got = json(reply)
    assert.equal(got.title, doc.getText('title').toString())
    assert.equal(got.rich, doc.getText('rich').toString())
    assert.deepEqual(got.meta, doc.getMap('meta').toJSON())
    assert.equal((got.meta as { note: string }).note, 'text inside a map')
    assert.deepEqual(got.items, doc.getArray('items').toJSON())
    assert.deepEqual(got.tree, doc.getMap('tree').toJSON())
    assert.deepEqual(got.tree, { list: [{ leaf: 'x', deep: 'deep text' }] })
    assert.equal(got.body, doc.getXmlFragment('body').toString())
    assert.equal(got.body, '<h1 id="top">Title</h1><p class="lead">a <em>very</em> good start</p>')
    assert.equal(got.cleared, '')
    assert.deepEqual(Object.keys(got).sort(), ['body', 'cleared', 'items', 'meta', 'rich', 'title', 'tree'])

    // ?types= also names a type nobody wrote yet: it reads as that type, empty.
    const withEmpty = json(await http(weft.http, 'GET', `${room('content')}?types=${encodeURIComponent('never:map,body:xml')}`))
    assert.deepEqual(withEmpty.never, {})
    assert.equal(withEmpty.body, doc.getXmlFragment('body').toString())

    const delta = json(await http(weft.http, 'GET', `${room('content')}?text=delta`))
    assert.deepEqual(delta.rich, JSON.parse(JSON.stringify(doc.getText('rich').toDelta())))
    assert.deepEqual(delta.rich, [
      { insert: 'bold', attributes: { bold: true } },
      { insert: ' plain ' },
      { insert: 'link', attributes: { link: 'https://example.com', italic: true } },
      { insert: { image: 'cat.png' } },
    ])
    assert.deepEqual(delta.title, doc.getText('title').toDelta())
  })

  it('?format=update and Accept: application/octet-stream return the whole state as a Yjs update', async () => {
    const p = open('content')
    await synced(p)
    for (const headers of [{}, { accept: 'application/octet-stream' }] as Array<Record<string, string>>) {
      const path = 'accept' in headers ? room('content') : `${room('content')}?format=update`
      const reply = await http(weft.http, 'GET', path, { headers })
      assert.equal(reply.status, 200)
      assert.equal(reply.headers['content-type'], 'application/octet-stream')
      assert.deepEqual(canonicalUpdate(reply.body), canonicalState(p.doc))
    }
  })

  it('ETag: If-None-Match answers 304 while the document is unchanged, a new ETag once it changes', async () => {
    const p = open('etag')
    await synced(p)
    p.doc.getText('t').insert(0, 'first')
    await serverHolds(weft.http, 'etag', p.doc)
    const first = await http(weft.http, 'GET', room('etag'))
    const etag = first.headers.etag as string
    assert.equal(first.status, 200)
    assert.ok(etag !== undefined && etag.length > 2)
    const again = await http(weft.http, 'GET', room('etag'), { headers: { 'if-none-match': etag } })
    assert.equal(again.status, 304)
    assert.equal(again.body.length, 0)
    assert.equal(again.headers.etag, etag)
    // The binary and delta answers are other representations: other tags.
    const binaryTag = (await http(weft.http, 'GET', `${room('etag')}?format=update`)).headers.etag
    const deltaTag = (await http(weft.http, 'GET', `${room('etag')}?text=delta`)).headers.etag
    assert.equal(new Set([etag, binaryTag, deltaTag]).size, 3)

    p.doc.getText('t').insert(5, ' and second')
    await serverHolds(weft.http, 'etag', p.doc)
    const changed = await http(weft.http, 'GET', room('etag'), { headers: { 'if-none-match': etag } })
    assert.equal(changed.status, 200)
    assert.notEqual(changed.headers.etag, etag)
    assert.deepEqual(json(changed), { t: 'first and second' })
  })

  it('ETag: a change that only deletes gives a new ETag too', async () => {
    const p = open('etag-delete')
    await synced(p)
    p.doc.getText('t').insert(0, 'keep drop')
    await serverHolds(weft.http, 'etag-delete', p.doc)
    const before = await http(weft.http, 'GET', room('etag-delete'))
    assert.deepEqual(json(before), { t: 'keep drop' })
    // A deletion adds no struct: the state vector stays the same, the document does not.
    p.doc.getText('t').delete(4, 5)
    await serverHolds(weft.http, 'etag-delete', p.doc)
    const after = await http(weft.http, 'GET', room('etag-delete'), { headers: { 'if-none-match': before.headers.etag as string } })
    assert.equal(after.status, 200, `a stale 304 for a changed document (ETag ${before.headers.etag})`)
    assert.deepEqual(json(after), { t: 'keep' })
  })

  it('GET state-vector, and ?since= returns exactly what an older copy lacks', async () => {
    const p = open('since')
    await synced(p)
    const text = p.doc.getText('t')
    text.insert(0, 'x'.repeat(2000))
    await serverHolds(weft.http, 'since', p.doc)
    const older = new Y.Doc()
    Y.applyUpdate(older, Y.encodeStateAsUpdate(p.doc))
    text.insert(2000, ' and a tail')
    text.delete(0, 10)
    p.doc.getMap('m').set('k', 'v')
    await serverHolds(weft.http, 'since', p.doc)

    const sv = await http(weft.http, 'GET', `${room('since')}/state-vector`)
    assert.equal(sv.status, 200)
    assert.equal(sv.headers['content-type'], 'application/octet-stream')
    assert.deepEqual(new Uint8Array(sv.body), Y.encodeStateVector(p.doc))

    const since = encodeURIComponent(Buffer.from(Y.encodeStateVector(older)).toString('base64'))
    const missing = await http(weft.http, 'GET', `${room('since')}/updates?since=${since}`)
    assert.equal(missing.status, 200)
    const full = await http(weft.http, 'GET', `${room('since')}/updates`)
    assert.equal(full.status, 200)
    assert.deepEqual(canonicalUpdate(full.body), canonicalState(p.doc))
    assert.ok(missing.body.length < full.body.length / 4, `the missing part (${missing.body.length} B) should be far smaller than the whole (${full.body.length} B)`)
    Y.applyUpdate(older, missing.body)
    assert.deepEqual(canonicalState(older), canonicalState(p.doc))
    assert.equal(older.getText('t').toString(), text.toString())
  })

  it('POST /updates answers 204, reaches connected clients, and survives a restart', async () => {
    const p = open('posted')
    await synced(p)
    const update = updateOf((doc) => {
      doc.getText('t').insert(0, 'from http')
      doc.getArray('a').push([1, 2, 3])
    })
    const reply = await http(weft.http, 'POST', `${room('posted')}/updates`, { body: update, headers: binary })
    assert.equal(reply.status, 204)
    assert.equal(reply.body.length, 0)
    await until(() => p.doc.getText('t').toString() === 'from http', 'the connected client to get the posted update')
    assert.deepEqual(p.doc.getArray('a').toJSON(), [1, 2, 3])
    destroy(p)
    await restart()
    assert.deepEqual(json(await http(weft.http, 'GET', room('posted'))), { t: 'from http', a: [1, 2, 3] })
  })

  it('a 204 means stored: kill -9 right after it, with a 4 s persist window, loses nothing', async () => {
    const dir = await tempDir('weft-http-kill-')
    let child = await spawnWeft(['--data', dir.path, '--persist-window-ms', '4000', '--log-level', 'warn'])
    try {
      const update = updateOf((doc) => doc.getMap('m').set('durable', 'yes'))
      const reply = await http(child.http, 'POST', `${room('killed')}/updates`, { body: update, headers: binary })
      assert.equal(reply.status, 204)
      child.kill('SIGKILL')
      assert.equal(await withDeadline(child.exited, 'weft to die'), 'SIGKILL')
      child = await spawnWeft(['--data', dir.path, '--log-level', 'warn'])
      assert.deepEqual(json(await http(child.http, 'GET', room('killed'))), { m: { durable: 'yes' } })
    } finally {
      if (child.child.exitCode === null && child.child.signalCode === null) child.kill('SIGTERM')
      await withDeadline(child.exited, 'weft to stop', 10_000).catch(() => child.kill('SIGKILL'))
      await dir.remove()
    }
  })

  it('DELETE closes connected clients with 4404; then GET is 404, the room is not listed, and storage is gone after restart', async () => {
    const p = open('doomed')
    await synced(p)
    p.doc.getText('t').insert(0, 'short-lived')
    await serverHolds(weft.http, 'doomed', p.doc)
    await eventually(async () => {
      const listed = json<{ rooms: Array<{ room: string }> }>(await http(weft.http, 'GET', '/api/rooms'))
      return listed.rooms.some((r) => r.room === 'doomed')
    }, 'doomed to be stored')
    const closed = closedWith(p)
    const reply = await http(weft.http, 'DELETE', room('doomed'))
    assert.equal(reply.status, 204)
    assert.equal(await closed, 4404)
    assertError(await http(weft.http, 'GET', room('doomed')), 404, 'not_found')
    const after = json<{ rooms: Array<{ room: string }> }>(await http(weft.http, 'GET', '/api/rooms'))
    assert.ok(!after.rooms.some((r) => r.room === 'doomed'))
    await restart()
    assertError(await http(weft.http, 'GET', room('doomed')), 404, 'not_found')
    const restarted = json<{ rooms: Array<{ room: string }> }>(await http(weft.http, 'GET', '/api/rooms'))
    assert.ok(!restarted.rooms.some((r) => r.room === 'doomed'))
  })

  it('GET /api/rooms pages through stored rooms with limit and nextCursor, with sizes and `loaded`', async () => {
    const own = await startServer({ roomUnloadDelayMs: UNLOAD_DELAY_MS })
    const p = provider(own.url, 'page-3')
    try {
      for (let i = 0; i < 7; i++) {
        const update = updateOf((doc) => doc.getText('t').insert(0, `room ${i}`))
        assert.equal((await http(own.http, 'POST', `${room(`page-${i}`)}/updates`, { body: update, headers: binary })).status, 204)
      }
      await synced(p)
      // The posted rooms unload after the grace delay; page-3 stays, held by its client.
      await until(() => own.server.loadedRoom('page-5') === undefined, 'page-5 to unload', 5000)
      type Page = { rooms: Array<{ room: string; storedBytes: number; entries: number; loaded: boolean }>; nextCursor: string | null }
      const pages: Page[] = []
      let cursor: string | null = null
      do {
        const query: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`
        const page: Page = json<Page>(await http(own.http, 'GET', `/api/rooms?limit=3${query}`))
        pages.push(page)
        cursor = page.nextCursor
      } while (cursor !== null && pages.length < 10)
      assert.deepEqual(pages.map((page) => page.rooms.length), [3, 3, 1])
      const rooms = pages.flatMap((page) => page.rooms)
      assert.deepEqual(rooms.map((r) => r.room), ['page-0', 'page-1', 'page-2', 'page-3', 'page-4', 'page-5', 'page-6'])
      for (const r of rooms) {
        assert.ok(r.storedBytes > 0, `${r.room} storedBytes`)
        assert.ok(r.entries >= 1, `${r.room} entries`)
      }
      assert.equal(rooms.find((r) => r.room === 'page-3')?.loaded, true)
      assert.equal(rooms.find((r) => r.room === 'page-5')?.loaded, false)
      assert.equal(pages[2]?.nextCursor, null)
      // Without limit, one page of all of them.
      const all = json<Page>(await http(own.http, 'GET', '/api/rooms'))
      assert.equal(all.rooms.length, 7)
      assert.equal(all.nextCursor, null)
    } finally {
      destroy(p)
      await own.stop()
    }
  })

  it('GET /api/rooms lists a loaded room whose edits are not stored yet (the contract: stored and loaded rooms)', async () => {
    const slow = await startServer({ persistWindowMs: 5000 })
    const p = provider(slow.url, 'fresh-edits')
    try {
      await synced(p)
      p.doc.getText('t').insert(0, 'not yet in LevelDB')
      await serverHolds(slow.http, 'fresh-edits', p.doc)
      const listed = json<{ rooms: Array<{ room: string; loaded: boolean }> }>(await http(slow.http, 'GET', '/api/rooms'))
      assert.deepEqual(
        listed.rooms.filter((r) => r.room === 'fresh-edits').map((r) => r.loaded),
        [true],
        `a loaded room with content is missing from ${JSON.stringify(listed)}`,
      )
    } finally {
      destroy(p)
      await slow.stop()
    }
  })

  it('versions: create, list, fetch as JSON and binary, diff to now, and all of it after a restart', async () => {
    const author = new Y.Doc()
    author.getText('t').insert(0, 'version one text')
    author.getMap('m').set('k', 1)
    const post = (update: Uint8Array) => http(weft.http, 'POST', `${room('versioned')}/updates`, { body: update, headers: binary })
    assert.equal((await post(Y.encodeStateAsUpdate(author))).status, 204)
    const atVersion = canonicalState(author)

    const created = await http(weft.http, 'POST', `${room('versioned')}/versions`, { body: JSON.stringify({ name: 'first draft' }), headers: { 'content-type': 'application/json' } })
    assert.equal(created.status, 201)
    const version = json<{ id: string; name: string; createdAt: number }>(created)
    assert.equal(version.name, 'first draft')
    assert.equal(typeof version.id, 'string')
    assert.ok(Math.abs(version.createdAt - Date.now()) < 60_000)

    // Changes after the version: an insertion, a deletion, a new key.
    const sv = Y.encodeStateVector(author)
    author.getText('t').delete(0, 8)
    author.getText('t').insert(author.getText('t').length, ' and more')
    author.getMap('m').set('later', true)
    assert.equal((await post(Y.encodeStateAsUpdate(author, sv))).status, 204)

    const check = async (): Promise<void> => {
      const list = json<{ versions: Array<{ id: string; name: string; createdAt: number; bytes: number }> }>(await http(weft.http, 'GET', `${room('versioned')}/versions`))
      assert.equal(list.versions.length, 1)
      assert.deepEqual({ ...list.versions[0], bytes: undefined }, { ...version, bytes: undefined })
      assert.ok((list.versions[0]?.bytes ?? 0) > 0)

      const asJson = json(await http(weft.http, 'GET', `${room('versioned')}/versions/${encodeURIComponent(version.id)}`))
      assert.deepEqual(asJson, { ...version, content: { t: 'version one text', m: { k: 1 } } })

      const asBinary = await http(weft.http, 'GET', `${room('versioned')}/versions/${encodeURIComponent(version.id)}?format=update`)
      assert.equal(asBinary.status, 200)
      assert.equal(asBinary.headers['content-type'], 'application/octet-stream')
      assert.deepEqual(canonicalUpdate(asBinary.body), atVersion)
      const accepted = await http(weft.http, 'GET', `${room('versioned')}/versions/${encodeURIComponent(version.id)}`, { headers: { accept: 'application/octet-stream' } })
      assert.deepEqual(canonicalUpdate(accepted.body), atVersion)

      const diff = await http(weft.http, 'GET', `${room('versioned')}/versions/${encodeURIComponent(version.id)}/diff`)
      assert.equal(diff.status, 200)
      const replay = new Y.Doc()
      Y.applyUpdate(replay, asBinary.body)
      Y.applyUpdate(replay, diff.body)
      assert.deepEqual(canonicalState(replay), canonicalState(author))
      assert.equal(replay.getText('t').toString(), 'one text and more')
      const now = await served(weft.http, 'versioned')
      assert.deepEqual(canonicalState(now), canonicalState(replay))
    }
    await check()
    await restart()
    await check()
  })

  it('reading a room that is not loaded loads it for the request and unloads it after the grace delay', async () => {
    const update = updateOf((doc) => doc.getText('t').insert(0, 'cold'))
    assert.equal((await http(weft.http, 'POST', `${room('cold')}/updates`, { body: update, headers: binary })).status, 204)
    await until(() => weft.server.loadedRoom('cold') === undefined, 'cold to unload after the POST', 5000)
    assert.deepEqual(json(await http(weft.http, 'GET', room('cold'))), { t: 'cold' })
    assert.equal((await http(weft.http, 'GET', `${room('cold')}/state-vector`)).status, 200)
    await until(() => weft.server.loadedRoom('cold') === undefined, 'cold to unload after the GET', 5000)
  })

  it('reading a room that does not exist answers 404 and creates nothing, not even after a restart', async () => {
    for (const path of ['', '?format=update', '/state-vector', '/updates', '/versions/0000000000000000']) {
      assertError(await http(weft.http, 'GET', `${room('never-was')}${path}`), 404, 'not_found')
    }
    assertError(await http(weft.http, 'DELETE', room('never-was')), 404, 'not_found')
    assertError(
      await http(weft.http, 'POST', `${room('never-was')}/versions`, { body: JSON.stringify({ name: 'v' }), headers: { 'content-type': 'application/json' } }),
      404,
      'not_found',
    )
    await until(() => weft.server.loadedRoom('never-was') === undefined, 'the probed room to leave memory', 5000)
    const listed = json<{ rooms: Array<{ room: string }> }>(await http(weft.http, 'GET', '/api/rooms'))
    assert.ok(!listed.rooms.some((r) => r.room === 'never-was'))
    await restart()
    assertError(await http(weft.http, 'GET', room('never-was')), 404, 'not_found')
    const relisted = json<{ rooms: Array<{ room: string }> }>(await http(weft.http, 'GET', '/api/rooms'))
    assert.ok(!relisted.rooms.some((r) => r.room === 'never-was'))
  })

  it('the versions of a room that does not exist are 404, like its other reads', async () => {
    assertError(await http(weft.http, 'GET', `${room('never-was-either')}/versions`), 404, 'not_found')
  })

  it('POST /stateless reaches a Hocuspocus provider of the room', async () => {
    const socket = new HocuspocusProviderWebsocket({ url: `${weft.url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
    const doc = new Y.Doc()
    const hp = new HocuspocusProvider({ websocketProvider: socket, name: 'hp-room', document: doc, token: null })
    hp.attach()
    try {
      await withDeadline(new Promise<void>((resolve) => (hp.isSynced ? resolve() : hp.on('synced', () => resolve()))), 'the hocuspocus provider to sync')
      const received = withDeadline(
        new Promise<string>((resolve) => hp.on('stateless', ({ payload }: { payload: string }) => resolve(payload))),
        'the stateless message',
      )
      const reply = await http(weft.http, 'POST', `${room('hp-room')}/stateless`, { body: 'hello, ünïcode', headers: { 'content-type': 'application/octet-stream' } })
      assert.equal(reply.status, 204)
      assert.equal(await received, 'hello, ünïcode')
    } finally {
      hp.destroy()
      socket.destroy()
    }
  })

  it('400: bad bodies, bad since, bad types, bad limits, invalid room names', async () => {
    const seed = updateOf((doc) => doc.getText('t').insert(0, 'x'))
    assert.equal((await http(weft.http, 'POST', `${room('errors')}/updates`, { body: seed, headers: binary })).status, 204)
    const before = await served(weft.http, 'errors')
    assertError(await http(weft.http, 'POST', `${room('errors')}/updates`, { body: new Uint8Array([0xff, 0xff, 0xff, 0xff]), headers: binary }), 400, 'bad_request')
    assertError(await http(weft.http, 'POST', `${room('errors')}/updates`, { body: seed.subarray(0, seed.length - 3), headers: binary }), 400, 'bad_request')
    assertError(await http(weft.http, 'POST', `${room('errors')}/updates`, { body: new Uint8Array(), headers: binary }), 400, 'bad_request')
    assert.deepEqual(canonicalState(await served(weft.http, 'errors')), canonicalState(before))

    const jsonHeaders = { 'content-type': 'application/json' }
    assertError(await http(weft.http, 'POST', `${room('errors')}/versions`, { body: 'not json', headers: jsonHeaders }), 400, 'bad_request')
    assertError(await http(weft.http, 'POST', `${room('errors')}/versions`, { body: '{"name": ""}', headers: jsonHeaders }), 400, 'bad_request')
    assertError(await http(weft.http, 'POST', `${room('errors')}/versions`, { body: '{"name": 7}', headers: jsonHeaders }), 400, 'bad_request')

    for (const since of ['', 'AQ', 'not%20base64!', 'AAAA']) {
      assertError(await http(weft.http, 'GET', `${room('errors')}/updates?since=${since}`), 400, 'bad_request')
    }
    for (const types of ['t:banana', ':text', 't', 't:text,x:']) {
      assertError(await http(weft.http, 'GET', `${room('errors')}?types=${encodeURIComponent(types)}`), 400, 'bad_request')
    }
    for (const limit of ['0', '-1', 'abc', '1.5']) {
      assertError(await http(weft.http, 'GET', `/api/rooms?limit=${limit}`), 400, 'bad_request')
    }
    assertError(await http(weft.http, 'GET', '/api/rooms/bad%00name'), 400, 'invalid_room')
    assertError(await http(weft.http, 'GET', `/api/rooms/${'r'.repeat(513)}`), 400, 'invalid_room')
    assertError(await http(weft.http, 'POST', '/api/rooms/bad%0Aname/updates', { body: seed, headers: binary }), 400, 'invalid_room')
    assertError(await http(weft.http, 'GET', '/api/rooms/%E0%A4%A'), 400, 'bad_request')
  })

  it('404 for unknown rooms, versions and routes; 405 for a wrong method on a route', async () => {
    const seed = updateOf((doc) => doc.getText('t').insert(0, 'x'))
    assert.equal((await http(weft.http, 'POST', `${room('routes')}/updates`, { body: seed, headers: binary })).status, 204)
    assertError(await http(weft.http, 'GET', room('no-such-room')), 404, 'not_found')
    assertError(await http(weft.http, 'GET', `${room('routes')}/versions/0000000000000000`), 404, 'not_found')
    assertError(await http(weft.http, 'GET', `${room('routes')}/versions/not-an-id/diff`), 404, 'not_found')
    for (const path of ['/api', '/api/', '/api/nothing', `${room('routes')}/nothing`, `${room('routes')}/versions/a/b/c`, '/nothing']) {
      assertError(await http(weft.http, 'GET', path), 404, 'not_found')
    }
    const wrong: Array<[string, string]> = [
      ['PUT', room('routes')],
      ['POST', room('routes')],
      ['DELETE', '/api/rooms'],
      ['POST', `${room('routes')}/state-vector`],
      ['DELETE', `${room('routes')}/versions`],
      ['GET', `${room('routes')}/stateless`],
      ['GET', '/api/tickets'],
      ['POST', '/health/live'],
      ['DELETE', '/metrics'],
    ]
    for (const [method, path] of wrong) assertError(await http(weft.http, method, path), 405, 'method_not_allowed')
    // The wrong method changed nothing.
    assert.deepEqual(json(await http(weft.http, 'GET', room('routes'))), { t: 'x' })
  })

  it('413 for a body over --max-message-bytes, with or without Content-Length; the document is unchanged', async () => {
    const small = await startServer({ maxMessageBytes: 1024 })
    try {
      const seed = updateOf((doc) => doc.getText('t').insert(0, 'small'))
      assert.equal((await http(small.http, 'POST', `${room('big')}/updates`, { body: seed, headers: binary })).status, 204)
      const big = updateOf((doc) => doc.getText('t').insert(0, 'y'.repeat(4096)))
      assertError(await http(small.http, 'POST', `${room('big')}/updates`, { body: big, headers: binary }), 413, 'payload_too_large')
      assertError(await http(small.http, 'POST', `${room('big')}/updates`, { body: big, headers: binary, chunked: true }), 413, 'payload_too_large')
      assertError(await http(small.http, 'POST', `${room('big')}/stateless`, { body: 'z'.repeat(4096), headers: binary }), 413, 'payload_too_large')
      assert.deepEqual(json(await http(small.http, 'GET', room('big'))), { t: 'small' })
      // Just under the limit is fine.
      const fits = updateOf((doc) => doc.getText('u').insert(0, 'f'.repeat(900)))
      assert.ok(fits.length <= 1024)
      assert.equal((await http(small.http, 'POST', `${room('big')}/updates`, { body: fits, headers: binary })).status, 204)
    } finally {
      await small.stop()
    }
  })
})
