/**
 * Tokens from an identity provider (issue 16): RS256, ES256 and EdDSA tokens signed with keys
 * generated here, verified against a JWKS served by a real local HTTP server (or read from a
 * file), through the stock y-websocket and Hocuspocus providers and the HTTP API. Key rotation,
 * unknown `kid`s (without hammering the JWKS server), issuer and audience, expiry and clock skew,
 * a key removed from the set, and an identity provider that is down at start.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { JWK } from 'jose'
import { destroy, provider, synced } from './harness/clients.js'
import { destroyHocuspocus, hocuspocus, hocuspocusSynced, nextEvent } from './harness/hocuspocus.js'
import { httpBytes, upgradeStatus } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { freePort } from './harness/redis.js'
import { runCli, startServer, tempDir, type InProcessServer } from './harness/server.js'
import { identityProviderKey, signToken, signWithKey, type IdentityProviderKey } from './harness/tokens.js'
import { eventually, until } from './harness/wait.js'

const ISSUER = 'https://idp.test.example'
const AUDIENCE = 'weft-tests'
const SECRET = 'auth-jwks-test-hs256-secret-0123456789abcdef'

/** A JWKS endpoint on a real loopback port: its key set can change, and it counts the fetches. */
class JwksServer {
  fetches = 0
  keys: JWK[]
  private server: Server | null = null
  port = 0

  constructor(keys: JWK[]) {
    this.keys = keys
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/.well-known/jwks.json`
  }

  async listen(port = 0): Promise<void> {
    this.server = createServer((req, res) => {
      this.fetches++
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys: this.keys }))
    })
    const server = this.server
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
    this.port = (server.address() as { port: number }).port
  }

  async close(): Promise<void> {
    const server = this.server
    if (server === null) return
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

function claims(room: string, access = 'write'): Record<string, unknown> {
  return { rooms: [room], access }
}

async function apiStatus(base: string, path: string, token: string): Promise<{ status: number; message: string }> {
  const answer = await httpBytes(base, 'GET', path, { headers: { authorization: `Bearer ${token}` } })
  const body = answer.body.length > 0 ? (JSON.parse(answer.body.toString()) as { message?: string }) : {}
  return { status: answer.status, message: body.message ?? '' }
}

describe('tokens verified against a JWKS URL (RS256, ES256, EdDSA)', () => {
  let rsa: IdentityProviderKey
  let ec: IdentityProviderKey
  let ed: IdentityProviderKey
  let jwks: JwksServer
  let server: InProcessServer

  before(async () => {
    ;[rsa, ec, ed] = await Promise.all([identityProviderKey('RS256', 'rsa-1'), identityProviderKey('ES256', 'ec-1'), identityProviderKey('EdDSA', 'ed-1')])
    jwks = new JwksServer([rsa.jwk, ec.jwk, ed.jwk])
    await jwks.listen()
    server = await startServer({ authJwks: jwks.url, authIssuer: ISSUER, authAudience: AUDIENCE, authJwksRefreshSeconds: 1 })
  })
  after(async () => {
    await server.stop()
    await jwks.close()
  })

  for (const which of ['rsa', 'ec', 'ed'] as const) {
    it(`${which}: the stock y-websocket and Hocuspocus providers and the HTTP API accept a token signed with the key`, async () => {
      const key = { rsa, ec, ed }[which]
      const room = `jwks-${which}`
      const token = await signWithKey(key, claims(room), { subject: `user-${which}`, issuer: ISSUER, audience: AUDIENCE })
      const yws = provider(server.url, room, undefined, { params: { token } })
      const hp = hocuspocus(server.url, room, { token })
      try {
        const authenticated = nextEvent<{ scope: string }>(hp.provider, 'authenticated', 'the Hocuspocus provider to authenticate')
        assert.equal((await authenticated).scope, 'read-write')
        await Promise.all([synced(yws), hocuspocusSynced(hp)])
        yws.doc.getText('t').insert(0, `signed with ${key.alg}`)
        await until(() => hp.doc.getText('t').toString() === `signed with ${key.alg}`, 'the edit to reach the Hocuspocus provider')
      } finally {
        destroy(yws)
        destroyHocuspocus(hp)
      }
      assert.equal((await apiStatus(server.http, `/api/rooms/${room}`, token)).status, 200)
    })
  }

  it('a wrong issuer, a wrong audience, an expired token: 401 with a reason on every protocol; a token expired within the clock skew passes', async () => {
    const room = 'jwks-claims'
    const wrongIssuer = await signWithKey(rsa, claims(room), { subject: 'u', issuer: 'https://other.example', audience: AUDIENCE })
    const wrongAudience = await signWithKey(ec, claims(room), { subject: 'u', issuer: ISSUER, audience: 'another-service' })
    const expired = await signWithKey(ed, claims(room), { subject: 'u', issuer: ISSUER, audience: AUDIENCE, expiresInSeconds: -120 })
    const noIssuer = await signWithKey(rsa, claims(room), { subject: 'u', audience: AUDIENCE })
    for (const [token, reason] of [
      [wrongIssuer, /wrong issuer/],
      [wrongAudience, /wrong audience/],
      [expired, /expired/],
      [noIssuer, /not valid|issuer/],
    ] as const) {
      assert.equal(await upgradeStatus(`${server.url}/${room}?token=${token}`), 401)
      const answer = await apiStatus(server.http, `/api/rooms/${room}`, token)
      assert.equal(answer.status, 401)
      assert.match(answer.message, reason)
      const hp = hocuspocus(server.url, room, { token })
      try {
        const failure = await nextEvent<{ reason: string }>(hp.provider, 'authenticationFailed', 'authenticationFailed')
        assert.match(failure.reason, reason)
      } finally {
        destroyHocuspocus(hp)
      }
    }
    // The default skew is 30 s: a token whose exp passed 5 s ago is still accepted.
    const withinSkew = await signWithKey(rsa, claims(room), { subject: 'u', issuer: ISSUER, audience: AUDIENCE, expiresInSeconds: -5 })
    assert.equal((await apiStatus(server.http, `/api/rooms/${room}`, withinSkew)).status, 404)
  })

  it('tokens of an unknown kid are refused, and a flood of them loads the JWKS at most once per cooldown', async () => {
    // A cooldown no test run lasts (the cooldown's arithmetic on a controlled clock is in
    // auth-revocation-list.test.ts): the flood falls in one cooldown however slow the machine.
    const cooled = await startServer({ authJwks: jwks.url, authIssuer: ISSUER, authAudience: AUDIENCE, authJwksRefreshSeconds: 3600 })
    try {
      const stranger = await identityProviderKey('ES256', 'not-published')
      const before = jwks.fetches
      const tokens = await Promise.all(Array.from({ length: 40 }, (_, i) => signWithKey(stranger, claims('jwks-flood'), { subject: 'u', issuer: ISSUER, audience: AUDIENCE, kid: `made-up-${i}` })))
      const answers = await Promise.all(tokens.map((token) => apiStatus(cooled.http, '/api/rooms/jwks-flood', token)))
      for (const answer of answers) {
        assert.equal(answer.status, 401)
        assert.match(answer.message, /unknown key/)
      }
      for (const token of tokens.slice(0, 10)) assert.equal(await upgradeStatus(`${cooled.url}/jwks-flood?token=${token}`), 401)
      assert.ok(jwks.fetches - before <= 1, `${jwks.fetches - before} fetches within one cooldown for 50 tokens of unknown kids`)
      // A key that is not in the set never verifies, whatever its kid says: a published kid with the wrong key.
      const impostor = await signWithKey(stranger, claims('jwks-flood'), { subject: 'u', issuer: ISSUER, audience: AUDIENCE, kid: rsa.kid })
      assert.equal((await apiStatus(cooled.http, '/api/rooms/jwks-flood', impostor)).status, 401)
    } finally {
      await cooled.stop()
    }
  })

  it('rotation: a key published after start is picked up by the first token that needs it (after the cooldown)', async () => {
    const rotated = await identityProviderKey('RS256', 'rsa-2')
    const token = await signWithKey(rotated, claims('jwks-rotation'), { subject: 'rotated', issuer: ISSUER, audience: AUDIENCE })
    assert.equal((await apiStatus(server.http, '/api/rooms/jwks-rotation', token)).status, 401, 'not published yet')
    jwks.keys = [...jwks.keys, rotated.jwk]
    const before = jwks.fetches
    await eventually(async () => (await apiStatus(server.http, '/api/rooms/jwks-rotation', token)).status === 404, 'the rotated key to verify', 10_000, 100)
    assert.ok(jwks.fetches - before <= 3, `${jwks.fetches - before} fetches to pick up one new key`)
    const yws = provider(server.url, 'jwks-rotation', undefined, { params: { token } })
    try {
      await synced(yws)
    } finally {
      destroy(yws)
    }
    assert.ok(((await metricValue(server.http, 'weft_jwks_loads_total', '{result="ok"}')) ?? 0) >= 2)
  })

  it('HS256 tokens are refused when only --auth-jwks is set: the server is not in open mode', async () => {
    const hs = await signToken(claims('jwks-hs'), { secret: SECRET, subject: 'u' })
    assert.equal(await upgradeStatus(`${server.url}/jwks-hs?token=${hs}`), 401)
    assert.equal(await upgradeStatus(`${server.url}/jwks-hs`), 401)
    assert.equal((await httpBytes(server.http, 'GET', '/api/rooms')).status, 401)
    assert.equal((await apiStatus(server.http, '/api/rooms/jwks-hs', hs)).status, 401)
  })
})

describe('keys removed from the JWKS, and an identity provider down at start', () => {
  it('a key removed from the set stops verifying once the cached set is older than --auth-jwks-max-age-seconds', async () => {
    const kept = await identityProviderKey('ES256', 'kept')
    const removed = await identityProviderKey('EdDSA', 'removed')
    const jwks = new JwksServer([kept.jwk, removed.jwk])
    await jwks.listen()
    const server = await startServer({ authJwks: jwks.url, authJwksMaxAgeSeconds: 1, authJwksRefreshSeconds: 1 })
    try {
      const token = await signWithKey(removed, claims('jwks-removed'), { subject: 'u' })
      const other = await signWithKey(kept, claims('jwks-removed'), { subject: 'u' })
      assert.equal((await apiStatus(server.http, '/api/rooms/jwks-removed', token)).status, 404)
      jwks.keys = [kept.jwk]
      await eventually(async () => (await apiStatus(server.http, '/api/rooms/jwks-removed', token)).status === 401, 'the removed key to stop verifying', 10_000, 100)
      assert.equal((await apiStatus(server.http, '/api/rooms/jwks-removed', other)).status, 404, 'the kept key still verifies')
    } finally {
      await server.stop()
      await jwks.close()
    }
  })

  it('a JWKS URL unreachable at start: weft serves (ready 200, HS256 still works), refuses JWKS tokens, and accepts them once the URL answers', async () => {
    const key = await identityProviderKey('RS256', 'late')
    const port = await freePort()
    const jwks = new JwksServer([key.jwk])
    const server = await startServer({ authJwks: `http://127.0.0.1:${port}/.well-known/jwks.json`, authSecret: SECRET, authJwksRefreshSeconds: 1 })
    try {
      assert.equal((await httpBytes(server.http, 'GET', '/health/ready')).status, 200)
      const token = await signWithKey(key, claims('jwks-late'), { subject: 'u' })
      const refused = await apiStatus(server.http, '/api/rooms/jwks-late', token)
      assert.equal(refused.status, 401)
      assert.match(refused.message, /not available/)
      assert.ok(((await metricValue(server.http, 'weft_jwks_loads_total', '{result="error"}')) ?? 0) >= 1)
      // Both settings: an HS256 token verifies with the secret meanwhile.
      const hs = await signToken(claims('jwks-late'), { secret: SECRET, subject: 'u' })
      assert.equal((await apiStatus(server.http, '/api/rooms/jwks-late', hs)).status, 404)
      await jwks.listen(port)
      await eventually(async () => (await apiStatus(server.http, '/api/rooms/jwks-late', token)).status === 404, 'the JWKS token to verify once the URL answers', 10_000, 100)
      assert.equal(await upgradeStatus(`${server.url}/jwks-late?token=${token}`), 101)
    } finally {
      await server.stop()
      await jwks.close()
    }
  })
})

describe('a JWKS file', () => {
  let dir: { path: string; remove(): Promise<void> }
  before(async () => {
    dir = await tempDir('weft-jwks-')
  })
  after(async () => {
    await dir.remove()
  })

  it('verifies tokens of its keys (with issuer and audience also on HS256 tokens when both are set)', async () => {
    const key = await identityProviderKey('ES256', 'file-1')
    const file = join(dir.path, 'jwks.json')
    await writeFile(file, JSON.stringify({ keys: [key.jwk] }))
    const server = await startServer({ authJwks: file, authSecret: SECRET, authIssuer: ISSUER, authAudience: AUDIENCE })
    try {
      const token = await signWithKey(key, claims('jwks-file'), { subject: 'u', issuer: ISSUER, audience: [AUDIENCE, 'other'] })
      assert.equal((await apiStatus(server.http, '/api/rooms/jwks-file', token)).status, 404)
      const hp = hocuspocus(server.url, 'jwks-file', { token })
      try {
        await hocuspocusSynced(hp)
      } finally {
        destroyHocuspocus(hp)
      }
      // The HS256 token of harness/tokens.ts has no iss/aud: refused once they are required.
      const hs = await signToken(claims('jwks-file'), { secret: SECRET, subject: 'u' })
      assert.equal((await apiStatus(server.http, '/api/rooms/jwks-file', hs)).status, 401)
      // `weft token` takes them from the same environment variables as the server.
      const cli = await runCli(['token', '--room', 'jwks-file'], { WEFT_AUTH_SECRET: SECRET, WEFT_AUTH_ISSUER: ISSUER, WEFT_AUTH_AUDIENCE: AUDIENCE })
      assert.equal(cli.status, 0, cli.stderr)
      assert.equal((await apiStatus(server.http, '/api/rooms/jwks-file', cli.stdout.toString().trim())).status, 404)
    } finally {
      await server.stop()
    }
  })

  it('weft serve exits 2 naming --auth-jwks for a missing file, a file that is no JWKS, or a URL of another scheme; --auth-issuer alone is refused too', async () => {
    const notJwks = join(dir.path, 'not-jwks.json')
    await writeFile(notJwks, JSON.stringify({ issuer: ISSUER }))
    for (const [args, setting] of [
      [['--auth-jwks', join(dir.path, 'missing.json')], '--auth-jwks'],
      [['--auth-jwks', notJwks], '--auth-jwks'],
      [['--auth-jwks', 'ftp://idp.example/jwks.json'], '--auth-jwks'],
      [['--auth-issuer', ISSUER], '--auth-issuer'],
    ] as const) {
      const { status, stderr } = await runCli(['serve', '--host', '127.0.0.1', '--port', '0', '--data', 'memory', ...args])
      assert.equal(status, 2, stderr)
      assert.ok(stderr.includes(setting), stderr)
    }
  })
})
