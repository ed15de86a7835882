/**
 * The HTTP document API with an auth secret: HS256 JWTs (sub, exp, rooms, access) decide who may
 * read, write and administer which rooms; tickets stand in for a token once on a WebSocket; and a
 * read-only client cannot change the stored document by any route.
 */
import assert from 'node:assert/strict'
import { request, type IncomingHttpHeaders } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { encodeSyncStep1, encodeSyncStep2, encodeSyncUpdate } from '../protocol/index.js'
import { canonicalState, canonicalUpdate, destroy, RawClient, synced } from './harness/clients.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { signToken } from './harness/tokens.js'
import { refusedWith } from './harness/http.js'

const SECRET = 'http-api-auth-test-secret-0123456789abcdef'

function token(access: string, rooms: string[], options: { secret?: string; expiresInSeconds?: number } = {}): Promise<string> {
  return signToken({ rooms, access }, { secret: options.secret ?? SECRET, subject: 'user-1', expiresInSeconds: options.expiresInSeconds })
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
}

function http(base: string, method: string, path: string, options: { body?: Uint8Array | string; token?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const { port } = new URL(base)
  const headers: Record<string, string> = { ...options.headers }
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body))
  return withDeadline(
    new Promise<Reply>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: Number(port), method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      })
      req.on('error', reject)
      if (options.body !== undefined) req.write(options.body)
      req.end()
    }),
    `${method} ${path}`,
  )
}

function assertError(reply: Reply, status: number, code: string): void {
  const text = reply.body.toString('utf8')
  assert.equal(reply.status, status, `expected ${status} ${code}, got ${reply.status}: ${text}`)
  assert.match(String(reply.headers['content-type']), /^application\/json/)
  const body = JSON.parse(text) as Record<string, unknown>
  assert.deepEqual(Object.keys(body).sort(), ['error', 'message'])
  assert.equal(body.error, code)
  assert.doesNotMatch(text, /\bat .+:\d+:\d+|node_modules/)
}

const room = (name: string): string => `/api/rooms/${encodeURIComponent(name)}`
const binary = { 'content-type': 'application/octet-stream' }

function updateOf(edit: (doc: Y.Doc) => void): Uint8Array {
  const doc = new Y.Doc()
  edit(doc)
  return Y.encodeStateAsUpdate(doc)
}

process.setMaxListeners(32)

describe('HTTP document API with --auth-secret', () => {
  let data: { path: string; remove(): Promise<void> }
  let weft: InProcessServer
  let admin: string
  let writer: string
  let reader: string
  const providers: WebsocketProvider[] = []

  const restart = async (): Promise<void> => {
    await weft.stop()
    weft = await startServer({ data: data.path, authSecret: SECRET, roomUnloadDelayMs: 200 })
  }

  before(async () => {
    data = await tempDir('weft-http-auth-')
    weft = await startServer({ data: data.path, authSecret: SECRET, roomUnloadDelayMs: 200 })
    admin = await token('admin', ['*'])
    writer = await token('write', ['doc-*'])
    reader = await token('read', ['doc-*'])
    for (const name of ['doc-a', 'doc-del', 'doc-ro']) {
      const update = updateOf((doc) => doc.getText('t').insert(0, `seed of ${name}`))
      assert.equal((await http(weft.http, 'POST', `${room(name)}/updates`, { body: update, token: admin, headers: binary })).status, 204)
    }
  })

  after(async () => {
    destroy(...providers)
    await weft?.stop()
    await data?.remove()
  })

  it('401 without a token, with a token signed with another secret, expired, or malformed', async () => {
    const wrongSecret = await token('admin', ['*'], { secret: 'another secret' })
    const expired = await token('admin', ['*'], { expiresInSeconds: -60 })
    for (const credential of [undefined, wrongSecret, expired, 'not.a.jwt', '']) {
      assertError(await http(weft.http, 'GET', room('doc-a'), { token: credential }), 401, 'unauthorized')
      assertError(await http(weft.http, 'GET', '/api/rooms', { token: credential }), 401, 'unauthorized')
      assertError(await http(weft.http, 'POST', '/api/tickets', { token: credential }), 401, 'unauthorized')
      const update = updateOf((doc) => doc.getText('t').insert(0, 'intruder'))
      assertError(await http(weft.http, 'POST', `${room('doc-a')}/updates`, { token: credential, body: update, headers: binary }), 401, 'unauthorized')
      assertError(await http(weft.http, 'DELETE', room('doc-a'), { token: credential }), 401, 'unauthorized')
    }
    // A token without an access claim is not a valid token either.
    const noAccess = await signToken({ rooms: ['*'] }, { secret: SECRET, subject: 'u', expiresInSeconds: 60, issuedAt: false })
    assertError(await http(weft.http, 'GET', room('doc-a'), { token: noAccess }), 401, 'unauthorized')
    assert.equal(JSON.parse((await http(weft.http, 'GET', room('doc-a'), { token: admin })).body.toString()).t, 'seed of doc-a')
  })

  it('read: GET works; POST updates, versions and stateless, DELETE and the room list are 403', async () => {
    assert.deepEqual(JSON.parse((await http(weft.http, 'GET', room('doc-a'), { token: reader })).body.toString()), { t: 'seed of doc-a' })
    assert.equal((await http(weft.http, 'GET', `${room('doc-a')}/state-vector`, { token: reader })).status, 200)
    assert.equal((await http(weft.http, 'GET', `${room('doc-a')}/versions`, { token: reader })).status, 200)
    // ?token= works where a header cannot be set.
    assert.equal((await http(weft.http, 'GET', `${room('doc-a')}?token=${reader}`)).status, 200)
    const update = updateOf((doc) => doc.getText('t').insert(0, 'reader was here'))
    assertError(await http(weft.http, 'POST', `${room('doc-a')}/updates`, { token: reader, body: update, headers: binary }), 403, 'forbidden')
    assertError(await http(weft.http, 'POST', `${room('doc-a')}/versions`, { token: reader, body: '{"name":"x"}' }), 403, 'forbidden')
    assertError(await http(weft.http, 'POST', `${room('doc-a')}/stateless`, { token: reader, body: 'x' }), 403, 'forbidden')
    assertError(await http(weft.http, 'DELETE', room('doc-a'), { token: reader }), 403, 'forbidden')
    assertError(await http(weft.http, 'GET', '/api/rooms', { token: reader }), 403, 'forbidden')
    assert.deepEqual(JSON.parse((await http(weft.http, 'GET', room('doc-a'), { token: admin })).body.toString()), { t: 'seed of doc-a' })
  })

  it('write: POST updates and versions work; DELETE and the room list are 403', async () => {
    const update = updateOf((doc) => doc.getMap('m').set('by', 'writer'))
    assert.equal((await http(weft.http, 'POST', `${room('doc-a')}/updates`, { token: writer, body: update, headers: binary })).status, 204)
    assert.equal((await http(weft.http, 'POST', `${room('doc-a')}/versions`, { token: writer, body: '{"name":"w"}' })).status, 201)
    assertError(await http(weft.http, 'DELETE', room('doc-a'), { token: writer }), 403, 'forbidden')
    assertError(await http(weft.http, 'GET', '/api/rooms', { token: writer }), 403, 'forbidden')
    assert.deepEqual(JSON.parse((await http(weft.http, 'GET', room('doc-a'), { token: reader })).body.toString()), { t: 'seed of doc-a', m: { by: 'writer' } })
  })

  it('admin: the room list and DELETE work', async () => {
    const list = JSON.parse((await http(weft.http, 'GET', '/api/rooms', { token: admin })).body.toString()) as { rooms: Array<{ room: string }> }
    assert.ok(list.rooms.some((r) => r.room === 'doc-del'))
    assert.equal((await http(weft.http, 'DELETE', room('doc-del'), { token: admin })).status, 204)
    assertError(await http(weft.http, 'GET', room('doc-del'), { token: admin }), 404, 'not_found')
  })

  it('rooms out of the token\'s scope are 403; `prefix*` covers the prefix only, a plain name only itself', async () => {
    const update = updateOf((doc) => doc.getText('t').insert(0, 'x'))
    assertError(await http(weft.http, 'GET', room('other'), { token: reader }), 403, 'forbidden')
    assertError(await http(weft.http, 'POST', `${room('xdoc-a')}/updates`, { token: writer, body: update, headers: binary }), 403, 'forbidden')
    assertError(await http(weft.http, 'POST', `${room('doc')}/updates`, { token: writer, body: update, headers: binary }), 403, 'forbidden')
    assert.equal((await http(weft.http, 'POST', `${room('doc-zzz/deep')}/updates`, { token: writer, body: update, headers: binary })).status, 204)
    const exact = await token('write', ['exact'])
    assert.equal((await http(weft.http, 'POST', `${room('exact')}/updates`, { token: exact, body: update, headers: binary })).status, 204)
    assertError(await http(weft.http, 'POST', `${room('exact2')}/updates`, { token: exact, body: update, headers: binary }), 403, 'forbidden')
    assertError(await http(weft.http, 'GET', room('doc-a'), { token: exact }), 403, 'forbidden')
    // An admin token scoped to some rooms is no admin of the others.
    const scopedAdmin = await token('admin', ['doc-*'])
    assertError(await http(weft.http, 'DELETE', room('exact'), { token: scopedAdmin }), 403, 'forbidden')
    assert.equal((await http(weft.http, 'GET', room('exact'), { token: admin })).status, 200)
  })

  it('tickets: POST /api/tickets gives {ticket, expiresAt}; the ticket connects a stock provider once, then 401', async () => {
    const issued = await http(weft.http, 'POST', '/api/tickets', { token: writer })
    assert.equal(issued.status, 200)
    const { ticket, expiresAt } = JSON.parse(issued.body.toString()) as { ticket: string; expiresAt: number }
    assert.equal(typeof ticket, 'string')
    assert.ok(ticket.length >= 16)
    assert.ok(expiresAt > Date.now() && expiresAt <= Date.now() + 31_000, `expiresAt ${expiresAt} is within 30 s`)

    const doc = new Y.Doc()
    const p = new WebsocketProvider(weft.url, 'doc-ticket', doc, { WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true, params: { ticket } })
    providers.push(p)
    await synced(p)
    doc.getText('t').insert(0, 'through a ticket')
    await until(() => weft.server.loadedRoom('doc-ticket')?.doc.getText('t').toString() === 'through a ticket', 'the ticket holder\'s edit to reach the server')
    assert.equal(await refusedWith(`${weft.url}/doc-ticket?ticket=${encodeURIComponent(ticket)}`), 401)
    // A ticket carries its token's scope.
    const other = JSON.parse((await http(weft.http, 'POST', '/api/tickets', { token: writer })).body.toString()) as { ticket: string }
    assert.equal(await refusedWith(`${weft.url}/other-room?ticket=${encodeURIComponent(other.ticket)}`), 403)
    assert.equal(await refusedWith(`${weft.url}/doc-ticket?ticket=made-up`), 401)
    destroy(p)
  })

  it('a ticket of a read token gives read-only access: the provider syncs, its edits are refused', async () => {
    const { ticket } = JSON.parse((await http(weft.http, 'POST', '/api/tickets', { token: reader })).body.toString()) as { ticket: string }
    const doc = new Y.Doc()
    const p = new WebsocketProvider(weft.url, 'doc-a', doc, { WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket, disableBc: true, params: { ticket } })
    providers.push(p)
    await synced(p)
    assert.equal(doc.getText('t').toString(), 'seed of doc-a')
    const before = canonicalState(weft.server.loadedRoom('doc-a')?.doc as Y.Doc)
    const denied = new Promise<void>((resolve) => {
      // y-protocols auth message (2), permission denied (0): the server's answer to the refused edit.
      ;(p.ws as unknown as WebSocket).addEventListener('message', (event) => {
        const bytes = new Uint8Array(event.data as ArrayBuffer)
        if (bytes[0] === 2 && bytes[1] === 0) resolve()
      })
    })
    doc.getText('t').insert(0, 'read-only edit ')
    await withDeadline(denied, 'the permission-denied answer')
    assert.deepEqual(canonicalState(weft.server.loadedRoom('doc-a')?.doc as Y.Doc), before)
    destroy(p)
  })

  it('a read-only client changes nothing in storage: sync step 2, update message, HTTP POST', async () => {
    const stored = async (): Promise<{ state: Uint8Array; entries: number; bytes: number }> => {
      const reply = await http(weft.http, 'GET', `${room('doc-ro')}?format=update`, { token: admin })
      assert.equal(reply.status, 200)
      const list = JSON.parse((await http(weft.http, 'GET', '/api/rooms', { token: admin })).body.toString()) as { rooms: Array<{ room: string; entries: number; storedBytes: number }> }
      const entry = list.rooms.find((r) => r.room === 'doc-ro')
      assert.ok(entry !== undefined)
      return { state: canonicalUpdate(reply.body), entries: entry.entries, bytes: entry.storedBytes }
    }
    await restart()
    const before = await stored()

    const current = new Y.Doc()
    Y.applyUpdate(current, before.state)
    const sv = Y.encodeStateVector(current)
    current.getText('t').insert(0, 'forbidden ')
    current.getMap('m').set('x', 1)
    const change = Y.encodeStateAsUpdate(current, sv)
    const fresh = updateOf((doc) => doc.getArray('a').push(['unrelated new content']))

    for (const via of [`?token=${reader}`, `?ticket=${(JSON.parse((await http(weft.http, 'POST', '/api/tickets', { token: reader })).body.toString()) as { ticket: string }).ticket}`]) {
      const client = await RawClient.open(`${weft.url}/doc-ro${via}`)
      try {
        const denials = (): number => client.frames.filter((f) => f[0] === 2 && f[1] === 0).length
        for (const frame of [encodeSyncStep2(change), encodeSyncUpdate(change), encodeSyncStep2(fresh), encodeSyncUpdate(fresh)]) {
          const seen = denials()
          client.send(frame)
          await until(() => denials() > seen, 'the refused write to be answered with permission denied')
        }
        // Messages are handled in order: the answer to this step 1 comes after all of the above.
        client.send(encodeSyncStep1(new Uint8Array([0])))
        await client.frame((f) => f[0] === 0 && f[1] === 1, 'the sync step 2 answer')
        assert.equal(client.closeCode, null, 'the read-only connection stays open')
      } finally {
        client.close()
      }
    }
    assertError(await http(weft.http, 'POST', `${room('doc-ro')}/updates`, { token: reader, body: change, headers: binary }), 403, 'forbidden')
    assertError(await http(weft.http, 'POST', `${room('doc-ro')}/updates?token=${reader}`, { body: fresh, headers: binary }), 403, 'forbidden')

    await restart()
    const afterwards = await stored()
    assert.deepEqual(afterwards.state, before.state)
    assert.equal(afterwards.entries, before.entries)
    assert.equal(afterwards.bytes, before.bytes)
  })
})
