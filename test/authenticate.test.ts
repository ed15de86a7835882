/**
 * The application's `authenticate` (issue 15): it decides for y-websocket upgrades, each
 * Hocuspocus document and HTTP API requests, replaces the built-in token check, and can fall back
 * to it through `weft.defaultAuthenticate`. A failing `authenticate` refuses and is counted.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import type { Authenticate, AuthenticateRequest, WeftServer } from '../server/index.js'
import { destroy, hocuspocusProvider, provider, RawClient, synced } from './harness/clients.js'
import { httpRequest, upgradeStatus } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until, withDeadline } from './harness/wait.js'

const SECRET = 'authenticate-test-secret-0123456789abcdef'

/** The application's sessions: cookie value → user. */
const SESSIONS = new Map([
  ['s-alice', 'alice'],
  ['s-mallory', 'mallory'],
])

function sessionOf(headers: AuthenticateRequest['headers']): string | null {
  const cookie = headers.cookie
  const match = typeof cookie === 'string' ? /(?:^|;\s*)session=([^;]+)/.exec(cookie) : null
  return match === null ? null : (SESSIONS.get(match[1] as string) ?? null)
}

/** Alice may write everywhere; mallory may read rooms starting with `public-`; others are not logged in. */
const cookieAuthenticate: Authenticate = ({ room, headers }) => {
  const user = sessionOf(headers)
  if (user === null) return { refuse: 'unauthenticated', message: 'log in first' }
  if (user === 'alice') return { subject: user, access: 'admin' }
  if (room === null) return { subject: user, access: 'read', rooms: ['public-*'] }
  if (!room.startsWith('public-')) return { refuse: 'forbidden', message: 'not your room' }
  return { subject: user, access: 'read' }
}

const servers: InProcessServer[] = []
async function serve(options: Parameters<typeof startServer>[0]): Promise<InProcessServer> {
  const weft = await startServer(options)
  servers.push(weft)
  return weft
}
after(async () => {
  await Promise.all(servers.map((weft) => weft.stop()))
})

const failures = (weft: InProcessServer, reason: string): Promise<number | undefined> => metricValue(weft.http, 'weft_hook_failures_total', `{hook="authenticate",reason="${reason}"}`)

describe('authenticate', () => {
  it('decides y-websocket upgrades from the request: 401 and 403 refusals, the grant for the room asked', async () => {
    const asked: AuthenticateRequest[] = []
    const weft = await serve({ authenticate: (request) => (asked.push(request), cookieAuthenticate(request)) })
    const alice = provider(weft.url, 'private-doc', undefined, { headers: { cookie: 'theme=dark; session=s-alice' }, params: { token: 'not-a-jwt' } })
    try {
      await synced(alice)
      alice.doc.getText('text').insert(0, 'by alice')
      await until(() => weft.server.loadedRoom('private-doc')?.doc.getText('text').toString() === 'by alice', 'the edit of a write grant')
      const request = asked.find((r) => r.room === 'private-doc')
      assert.ok(request !== undefined)
      assert.equal(request.protocol, 'y-websocket')
      assert.equal(request.token, 'not-a-jwt')
      assert.equal(request.remoteAddress, '127.0.0.1')
      assert.match(String(request.headers.cookie), /session=s-alice/)
    } finally {
      destroy(alice)
    }
    assert.equal(await upgradeStatus(`${weft.url}/private-doc`), 401)
    const mallory = (room: string) => upgradeStatus(`${weft.url}/${room}`, { cookie: 'session=s-mallory' })
    assert.equal(await mallory('private-doc'), 403)
    assert.equal(await mallory('public-doc'), 101)
  })

  it('decides each Hocuspocus document on its own, with the socket\'s request', async () => {
    const asked: AuthenticateRequest[] = []
    const weft = await serve({
      authenticate: ({ token, room, protocol, headers, remoteAddress }) => {
        asked.push({ token, room, protocol, headers, remoteAddress })
        return token === 'letmein' ? { subject: 'hp-user', access: 'write' } : { refuse: 'forbidden', message: 'wrong password' }
      },
    })
    const good = hocuspocusProvider(weft.url, 'hp-good', 'letmein')
    const bad = hocuspocusProvider(weft.url, 'hp-bad', 'guess')
    try {
      const denied = new Promise<string>((resolve) => bad.provider.on('authenticationFailed', ({ reason }: { reason: string }) => resolve(reason)))
      await until(() => good.provider.isSynced, 'the authenticated document to sync')
      assert.equal(await withDeadline(denied, 'the denial'), 'wrong password')
      const forGood = asked.find((r) => r.room === 'hp-good')
      assert.equal(forGood?.protocol, 'hocuspocus')
      assert.equal(forGood?.token, 'letmein')
      assert.equal(forGood?.remoteAddress, '127.0.0.1')
      assert.equal(typeof forGood?.headers['sec-websocket-key'], 'string', 'the headers of the socket\'s upgrade')
    } finally {
      good.destroy()
      bad.destroy()
    }
  })

  it('decides HTTP API requests: 401, 403, room scope, and `rooms` for requests about no room', async () => {
    const weft = await serve({ authenticate: cookieAuthenticate })
    const get = (path: string, session?: string) => httpRequest(weft.port, path, session === undefined ? {} : { headers: { cookie: `session=${session}` } })
    const update = (session: string, room: string) =>
      httpRequest(weft.port, `/api/rooms/${room}/updates`, { method: 'POST', headers: { cookie: `session=${session}`, 'content-type': 'application/octet-stream' }, body: Buffer.from([0, 0]) })
    assert.equal((await get('/api/rooms/private-doc')).status, 401)
    assert.equal((await get('/api/rooms/private-doc', 's-mallory')).status, 403)
    assert.equal((await update('s-alice', 'private-doc')).status, 204, 'alice writes')
    assert.equal((await update('s-alice', 'public-doc')).status, 204)
    assert.equal((await update('s-mallory', 'public-doc')).status, 403, 'a read grant does not write')
    assert.equal((await get('/api/rooms/public-doc', 's-mallory')).status, 404, 'read allowed; the room holds nothing')
    const listed = await get('/api/rooms', 's-alice')
    assert.equal(listed.status, 200)
    const all = await get('/api/rooms', 's-mallory')
    assert.equal(all.status, 403, 'listing needs admin')
    // A ticket is about no room: it covers the grant's `rooms`.
    const ticketFor = async () => {
      const answer = await httpRequest(weft.port, '/api/tickets', { method: 'POST', headers: { cookie: 'session=s-mallory', 'content-type': 'application/json' }, body: '{}' })
      assert.equal(answer.status, 200, answer.body)
      return (JSON.parse(answer.body) as { ticket: string }).ticket
    }
    assert.equal(await upgradeStatus(`${weft.url}/private-doc?ticket=${await ticketFor()}`), 403)
    assert.equal(await upgradeStatus(`${weft.url}/public-doc?ticket=${await ticketFor()}`), 101)
  })

  it('a grant with expiresAt ends the connection with 4401 when it passes', async () => {
    const weft = await serve({ authenticate: () => ({ subject: 'brief', access: 'write', expiresAt: Date.now() + 300 }) })
    const client = new RawClient(new WebSocket(`${weft.url}/brief`))
    await withDeadline(client.opened, 'the connection to open')
    assert.equal(await client.waitClosed(), 4401)
  })

  it('an authenticate that throws or hangs refuses (401) and is counted; it never admits', async () => {
    let mode: 'throw' | 'hang' = 'throw'
    const weft = await serve({
      hookTimeoutMs: 200,
      authenticate: () => {
        if (mode === 'throw') throw new Error('session database down')
        return new Promise(() => {})
      },
    })
    assert.equal(await upgradeStatus(`${weft.url}/doc`), 401)
    assert.equal((await httpRequest(weft.port, '/api/rooms/doc')).status, 401)
    assert.equal(await failures(weft, 'error'), 2)
    mode = 'hang'
    assert.equal(await upgradeStatus(`${weft.url}/doc`), 401)
    assert.equal(await failures(weft, 'timeout'), 1)
    assert.equal(weft.server.state, 'serving')
  })

  it('replaces the JWT check; the application can fall back to it through weft.defaultAuthenticate', async () => {
    const jwt = await signToken({ rooms: ['jwt-*'], access: 'write' }, { secret: SECRET, subject: 'script' })
    const replacing = await serve({ authSecret: SECRET, authenticate: cookieAuthenticate })
    assert.equal(await upgradeStatus(`${replacing.url}/jwt-doc?token=${jwt}`), 401, 'a valid JWT alone no longer opens a room')

    let weftServer: WeftServer | null = null
    const composed = await serve({
      authSecret: SECRET,
      // Our session cookie, else a weft access token.
      authenticate: (request) => (sessionOf(request.headers) !== null ? cookieAuthenticate(request) : (weftServer as WeftServer).defaultAuthenticate(request)),
    })
    weftServer = composed.server
    assert.equal(await upgradeStatus(`${composed.url}/jwt-doc?token=${jwt}`), 101)
    assert.equal(await upgradeStatus(`${composed.url}/other-doc?token=${jwt}`), 403, 'the token\'s rooms still bound it')
    assert.equal(await upgradeStatus(`${composed.url}/jwt-doc`), 401)
    const ticket = await httpRequest(composed.port, '/api/tickets', { method: 'POST', headers: { authorization: `Bearer ${jwt}` } })
    assert.equal(ticket.status, 200)
    const { ticket: value } = JSON.parse(ticket.body) as { ticket: string }
    assert.equal(await upgradeStatus(`${composed.url}/other-doc?ticket=${value}`), 403, 'a ticket keeps the token\'s scope')
  })
})
