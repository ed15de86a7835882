import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { request, type IncomingHttpHeaders } from 'node:http'
import { textUpdate } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { withDeadline } from './harness/wait.js'

// Issue 12, finding 7: --allow-origin protects the HTTP API as it protects upgrades, and a
// state-changing request needs a content type that a cross-site form or no-cors fetch cannot send
// (such a request goes out without a CORS preflight, so the browser never asks the server first).

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

function http(port: number, method: string, path: string, options: { body?: Uint8Array | string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.body !== undefined) headers['content-length'] = String(Buffer.byteLength(options.body))
  return withDeadline(
    new Promise<Reply>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('error', reject)
      if (options.body !== undefined) req.write(options.body)
      req.end()
    }),
    `${method} ${path}`,
  )
}

function assertError(reply: Reply, status: number, code: string): void {
  assert.equal(reply.status, status, `expected ${status} ${code}, got ${reply.status}: ${reply.body}`)
  assert.equal((JSON.parse(reply.body) as { error: string }).error, code)
}

const ALLOWED = 'https://app.example'
const EVIL = 'https://evil.com'
const binary = { 'content-type': 'application/octet-stream' }
const json = { 'content-type': 'application/json' }

/** Every API route with a body it would accept; `room` is seeded before. */
function routes(room: string): Array<{ method: string; path: string; body?: Uint8Array | string; type?: string }> {
  return [
    { method: 'GET', path: '/api/rooms' },
    { method: 'GET', path: `/api/rooms/${room}` },
    { method: 'GET', path: `/api/rooms/${room}/state-vector` },
    { method: 'GET', path: `/api/rooms/${room}/updates` },
    { method: 'GET', path: `/api/rooms/${room}/versions` },
    { method: 'POST', path: `/api/rooms/${room}/updates`, body: textUpdate('evil'), type: 'application/octet-stream' },
    { method: 'POST', path: `/api/rooms/${room}/stateless`, body: 'evil', type: 'application/octet-stream' },
    { method: 'POST', path: `/api/rooms/${room}/versions`, body: '{"name":"evil"}', type: 'application/json' },
    { method: 'POST', path: '/api/tickets', body: '{}', type: 'application/json' },
    { method: 'DELETE', path: `/api/rooms/${room}` },
  ]
}

describe('the HTTP API with --allow-origin', () => {
  let weft: InProcessServer

  before(async () => {
    weft = await startServer({ allowOrigins: [ALLOWED] })
    assert.equal((await http(weft.port, 'POST', '/api/rooms/seeded/updates', { body: textUpdate('kept'), headers: binary })).status, 204)
  })

  after(async () => {
    await weft?.stop()
  })

  it('the reproduction: a cross-site text/plain POST of an update is refused with 403 and changes nothing', async () => {
    const reply = await http(weft.port, 'POST', '/api/rooms/seeded/updates', { body: textUpdate('evil'), headers: { origin: EVIL, 'content-type': 'text/plain' } })
    assertError(reply, 403, 'forbidden')
    assert.equal(weft.server.loadedRoom('seeded')?.doc.getText('t').toString(), 'kept')
  })

  it('every API route refuses a browser request from another origin with 403, even with the right content type, and the document is unchanged', async () => {
    for (const route of routes('seeded')) {
      const headers: Record<string, string> = { origin: EVIL }
      if (route.type !== undefined) headers['content-type'] = route.type
      for (const origin of [EVIL, 'null', `${ALLOWED}.evil.com`, 'http://app.example']) {
        headers.origin = origin
        const reply = await http(weft.port, route.method, route.path, { body: route.body, headers })
        assertError(reply, 403, 'forbidden')
        assert.equal(reply.headers['access-control-allow-origin'], undefined)
      }
    }
    assert.equal(weft.server.loadedRoom('seeded')?.doc.getText('t').toString(), 'kept')
    assert.ok(((await metricValue(weft.http, 'weft_http_refusals_total', '{reason="origin"}')) ?? 0) >= routes('x').length * 4)
  })

  it('an allowed origin is served, with Access-Control-Allow-Origin naming it and Vary: Origin', async () => {
    const reply = await http(weft.port, 'POST', '/api/rooms/allowed/updates', { body: textUpdate('mine'), headers: { origin: ALLOWED, ...binary } })
    assert.equal(reply.status, 204)
    assert.equal(reply.headers['access-control-allow-origin'], ALLOWED)
    assert.match(String(reply.headers.vary), /Origin/)
    const read = await http(weft.port, 'GET', '/api/rooms/allowed', { headers: { origin: ALLOWED } })
    assert.equal(read.status, 200)
    assert.equal(read.headers['access-control-allow-origin'], ALLOWED)
    assert.deepEqual(JSON.parse(read.body), { t: 'mine' })
  })

  it('requests without Origin (curl, servers) are not affected', async () => {
    assert.equal((await http(weft.port, 'GET', '/api/rooms/seeded')).status, 200)
    assert.equal((await http(weft.port, 'POST', '/api/rooms/no-origin/updates', { body: textUpdate('x'), headers: binary })).status, 204)
  })

  it('preflights: an allowed origin gets 204 with the path methods and the headers weft reads; another origin 403', async () => {
    const preflight = { origin: ALLOWED, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' }
    const ok = await http(weft.port, 'OPTIONS', '/api/rooms/seeded/updates', { headers: preflight })
    assert.equal(ok.status, 204)
    assert.equal(ok.headers['access-control-allow-origin'], ALLOWED)
    assert.deepEqual(String(ok.headers['access-control-allow-methods']).split(', ').sort(), ['GET', 'HEAD', 'POST'])
    assert.match(String(ok.headers['access-control-allow-headers']), /content-type/)
    assert.match(String(ok.headers['access-control-allow-headers']), /authorization/)
    const room = await http(weft.port, 'OPTIONS', '/api/rooms/seeded', { headers: preflight })
    assert.deepEqual(String(room.headers['access-control-allow-methods']).split(', ').sort(), ['DELETE', 'GET', 'HEAD'])
    assertError(await http(weft.port, 'OPTIONS', '/api/rooms/seeded/updates', { headers: { ...preflight, origin: EVIL } }), 403, 'forbidden')
    assertError(await http(weft.port, 'OPTIONS', '/api/nothing-here', { headers: preflight }), 404, 'not_found')
  })
})

describe('content types of state-changing requests', () => {
  let weft: InProcessServer

  before(async () => {
    weft = await startServer()
    assert.equal((await http(weft.port, 'POST', '/api/rooms/typed/updates', { body: textUpdate('kept'), headers: binary })).status, 204)
  })

  after(async () => {
    await weft?.stop()
  })

  // What a page on another site can send without a preflight: the three form encodings, and none at all.
  const SIMPLE = ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', null]

  it('without --allow-origin, every POST with a content type a cross-site form can send (or none) gets 415 and changes nothing', async () => {
    for (const route of routes('typed').filter((r) => r.method === 'POST')) {
      for (const type of SIMPLE) {
        const headers: Record<string, string> = { origin: EVIL }
        if (type !== null) headers['content-type'] = type
        const reply = await http(weft.port, 'POST', route.path, { body: route.body, headers })
        assertError(reply, 415, 'unsupported_media_type')
        // No CORS without --allow-origin: a page elsewhere cannot read answers either.
        assert.equal(reply.headers['access-control-allow-origin'], undefined)
      }
    }
    assert.equal(weft.server.loadedRoom('typed')?.doc.getText('t').toString(), 'kept')
    assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="content_type"}'), 4 * SIMPLE.length)
  })

  it('each POST takes its own content type: updates binary, versions and tickets JSON, stateless binary or JSON', async () => {
    assertError(await http(weft.port, 'POST', '/api/rooms/typed/updates', { body: textUpdate('j'), headers: json }), 415, 'unsupported_media_type')
    assertError(await http(weft.port, 'POST', '/api/rooms/typed/versions', { body: '{"name":"v"}', headers: binary }), 415, 'unsupported_media_type')
    assert.equal((await http(weft.port, 'POST', '/api/rooms/typed/updates', { body: textUpdate('b'), headers: { 'content-type': 'Application/Octet-Stream; x=y' } })).status, 204)
    assert.equal((await http(weft.port, 'POST', '/api/rooms/typed/versions', { body: '{"name":"v"}', headers: { 'content-type': 'application/json; charset=utf-8' } })).status, 201)
    assert.equal((await http(weft.port, 'POST', '/api/rooms/typed/stateless', { body: 'hi', headers: binary })).status, 204)
    assert.equal((await http(weft.port, 'POST', '/api/rooms/typed/stateless', { body: '"hi"', headers: json })).status, 204)
    assert.equal((await http(weft.port, 'POST', '/api/tickets', { headers: json })).status, 200)
  })

  it('without --allow-origin there is no preflight answer: OPTIONS is 405', async () => {
    assertError(await http(weft.port, 'OPTIONS', '/api/rooms/typed/updates', { headers: { origin: EVIL, 'access-control-request-method': 'POST' } }), 405, 'method_not_allowed')
  })
})

describe('content types with --auth-secret', () => {
  const SECRET = 'http-origin-secret-with-at-least-32-bytes'
  let weft: InProcessServer
  let writer: string

  before(async () => {
    weft = await startServer({ authSecret: SECRET })
    writer = await signToken({ rooms: ['*'], access: 'write' }, { secret: SECRET, subject: 'w' })
  })

  after(async () => {
    await weft?.stop()
  })

  it('a POST without Content-Type passes with an Authorization header (which needs a preflight), not with ?token=', async () => {
    assert.equal((await http(weft.port, 'POST', '/api/rooms/auth/updates', { body: textUpdate('a'), headers: { authorization: `Bearer ${writer}` } })).status, 204)
    assert.equal((await http(weft.port, 'POST', '/api/tickets', { headers: { authorization: `Bearer ${writer}` } })).status, 200)
    assertError(await http(weft.port, 'POST', `/api/rooms/auth/updates?token=${writer}`, { body: textUpdate('b') }), 415, 'unsupported_media_type')
    assertError(await http(weft.port, 'POST', `/api/rooms/auth/updates?token=${writer}`, { body: textUpdate('b'), headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type')
    assertError(await http(weft.port, 'POST', `/api/tickets?token=${writer}`, { headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type')
    assert.equal(weft.server.loadedRoom('auth')?.doc.getText('t').toString(), 'a')
  })

  it('without a token the answer stays 401, whatever the content type', async () => {
    assertError(await http(weft.port, 'POST', '/api/rooms/auth/updates', { body: textUpdate('c'), headers: { 'content-type': 'text/plain' } }), 401, 'unauthorized')
  })
})
