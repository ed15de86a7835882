/**
 * POST /api/connections/revoke (issue 16) on two weft instances sharing a real redis-server: the
 * subject's connections on both close with 4403 (stock y-websocket providers), its Hocuspocus
 * documents get the permission-denied message the stock provider turns into
 * `authenticationFailed`, the reconnect with the same token is refused everywhere (also by an
 * instance started later), and a token issued after the revocation is accepted.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { WebsocketProvider } from 'y-websocket'
import { destroy, provider, synced } from './harness/clients.js'
import { destroyHocuspocus, hocuspocus, hocuspocusSocket, hocuspocusSynced, nextEvent } from './harness/hocuspocus.js'
import { httpBytes, upgradeStatus } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { eventually, until } from './harness/wait.js'

const SECRET = 'auth-revocation-test-secret-0123456789abcdef'

function token(subject: string, access = 'write', rooms = ['rev-*']): Promise<string> {
  return signToken({ rooms, access }, { secret: SECRET, subject })
}

interface RevokeAnswer {
  status: number
  body: { closed?: number; instances?: number | null; error?: string; message?: string }
}

async function revoke(base: string, credential: string, body: unknown): Promise<RevokeAnswer> {
  const answer = await httpBytes(base, 'POST', '/api/connections/revoke', {
    headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: answer.status, body: JSON.parse(answer.body.toString()) as RevokeAnswer['body'] }
}

/** Close codes a stock y-websocket provider saw, in order. */
function closeCodes(p: WebsocketProvider): number[] {
  const codes: number[] = []
  p.on('connection-close', (event) => {
    if (event !== null) codes.push(event.code)
  })
  return codes
}

describe('revoking a subject across two instances on one Redis', () => {
  let redis: RedisProcess
  let a: InProcessServer
  let b: InProcessServer
  let admin: string
  let revokedToken = ''
  const extra: InProcessServer[] = []

  before(async () => {
    redis = await startRedis()
    a = await startServer({ redisUrl: redis.url, instanceId: 'rev-a', authSecret: SECRET })
    b = await startServer({ redisUrl: redis.url, instanceId: 'rev-b', authSecret: SECRET })
    admin = await token('the-admin', 'admin', ['*'])
    // Both instances listen on the revocation channel before anything is revoked.
    await eventually(async () => (await redis.command('PUBSUB', 'NUMSUB', 'weft:0:revocations')).includes(':2'), 'both instances to subscribe to the revocation channel')
  })
  after(async () => {
    for (const server of [...extra, a, b]) await server.stop()
    await redis.dispose()
  })

  it("closes the subject's connections on both instances with 4403 (Hocuspocus: permission denied), keeps everyone else's, and refuses the reconnect", async () => {
    const mallory = await token('mallory')
    revokedToken = mallory
    const alice = await token('alice')
    const onA = provider(a.url, 'rev-1', undefined, { params: { token: mallory } })
    const onB = provider(b.url, 'rev-1', undefined, { params: { token: mallory } })
    const bystander = provider(a.url, 'rev-1', undefined, { params: { token: alice } })
    const hp = hocuspocus(b.url, 'rev-1', { token: mallory })
    const codesA = closeCodes(onA)
    const codesB = closeCodes(onB)
    const bystanderCodes = closeCodes(bystander)
    try {
      await Promise.all([synced(onA), synced(onB), synced(bystander), hocuspocusSynced(hp)])
      const denied = nextEvent<{ reason: string }>(hp.provider, 'authenticationFailed', 'the Hocuspocus provider to hear permission denied')
      const socketClosed = nextEvent<{ event: { code: number } }>(hp.socket, 'close', 'the Hocuspocus socket to close with 4403', ({ event }) => event.code === 4403)

      const answer = await revoke(a.http, admin, { subject: 'mallory' })
      const revokedBy = Date.now()
      assert.equal(answer.status, 200, JSON.stringify(answer.body))
      assert.deepEqual(answer.body, { closed: 1, instances: 1 })

      await until(() => codesA.includes(4403) && codesB.includes(4403), 'both y-websocket providers to see 4403')
      assert.match((await denied).reason, /revoked/)
      await socketClosed
      // The providers reconnect on their own with the same token: refused on both instances.
      const deniedAgain = await nextEvent<{ reason: string }>(hp.provider, 'authenticationFailed', 'the Hocuspocus reconnect to be refused')
      assert.match(deniedAgain.reason, /revoked/)
      for (const server of [a, b]) assert.equal(await upgradeStatus(`${server.url}/rev-1?token=${mallory}`), 403)
      await eventually(async () => ((await metricValue(a.http, 'weft_revoked_refusals_total')) ?? 0) >= 1, 'the refusals to be counted')
      assert.ok(!onA.wsconnected && !onB.wsconnected)
      // A ticket is no way around it, and neither is the HTTP API.
      const ticket = await httpBytes(b.http, 'POST', '/api/tickets', { headers: { authorization: `Bearer ${mallory}`, 'content-type': 'application/json' }, body: '{}' })
      assert.equal(ticket.status, 403)
      assert.equal((await httpBytes(a.http, 'GET', '/api/rooms/rev-1', { headers: { authorization: `Bearer ${mallory}` } })).status, 403)

      // Everyone else stays, and edits still flow between the instances.
      assert.deepEqual(bystanderCodes, [])
      assert.ok(bystander.wsconnected)
      bystander.doc.getText('t').insert(0, 'still here')
      await until(() => b.server.loadedRoom('rev-1')?.doc.getText('t').toString() === 'still here', 'the bystander edit to reach instance B')

      assert.equal(await metricValue(a.http, 'weft_revoked_connections_total', '{protocol="y-websocket"}'), 1)
      assert.equal(await metricValue(b.http, 'weft_revoked_connections_total', '{protocol="y-websocket"}'), 1)
      assert.equal(await metricValue(b.http, 'weft_revoked_connections_total', '{protocol="hocuspocus"}'), 1)

      // A token issued after the revocation is a new credential: accepted.
      await until(() => Math.floor(Date.now() / 1000) * 1000 > revokedBy, 'the next second, so the new token is issued after the revocation')
      const fresh = await token('mallory')
      assert.equal(await upgradeStatus(`${b.url}/rev-1?token=${fresh}`), 101)
    } finally {
      destroy(onA, onB, bystander)
      destroyHocuspocus(hp)
    }
  })

  it('an instance started after the revocation refuses the revoked token too (it reads the revocations in force from Redis)', async () => {
    assert.notEqual(revokedToken, '')
    const c = await startServer({ redisUrl: redis.url, instanceId: 'rev-c', authSecret: SECRET })
    extra.push(c)
    assert.equal(await upgradeStatus(`${c.url}/rev-1?token=${revokedToken}`), 403)
    assert.equal(await upgradeStatus(`${c.url}/rev-1?token=${await token('alice')}`), 101)
  })

  it("a revocation for one room ends only that room's connections of the subject", async () => {
    const bob = await token('bob')
    const inRoom = provider(a.url, 'rev-2', undefined, { params: { token: bob } })
    const elsewhere = provider(b.url, 'rev-3', undefined, { params: { token: bob } })
    const hpOther = hocuspocus(b.url, 'rev-3', { token: bob })
    const inRoomCodes = closeCodes(inRoom)
    const elsewhereCodes = closeCodes(elsewhere)
    try {
      await Promise.all([synced(inRoom), synced(elsewhere), hocuspocusSynced(hpOther)])
      // Sent to B, which holds none of bob's rev-2 connections: A closes its own.
      const answer = await revoke(b.http, admin, { subject: 'bob', room: 'rev-2' })
      assert.equal(answer.status, 200)
      assert.equal(answer.body.closed, 0)
      assert.ok((answer.body.instances ?? 0) >= 1)
      await until(() => inRoomCodes.includes(4403), 'the rev-2 connection to close with 4403')
      for (const server of [a, b]) {
        assert.equal(await upgradeStatus(`${server.url}/rev-2?token=${bob}`), 403)
        assert.equal(await upgradeStatus(`${server.url}/rev-3?token=${bob}`), 101)
      }
      assert.deepEqual(elsewhereCodes, [])
      assert.ok(elsewhere.wsconnected && hpOther.provider.isAuthenticated)
    } finally {
      destroy(inRoom, elsewhere)
      destroyHocuspocus(hpOther)
    }
  })

  it('one Hocuspocus socket with two documents: revoking one room denies that document and keeps the socket and the other', async () => {
    const carol = await token('carol')
    const socket = hocuspocusSocket(a.url)
    const revoked = hocuspocus(a.url, 'rev-4', { socket, token: carol })
    const kept = hocuspocus(a.url, 'rev-5', { socket, token: carol })
    let socketCloses = 0
    socket.on('close', () => socketCloses++)
    try {
      await Promise.all([hocuspocusSynced(revoked), hocuspocusSynced(kept)])
      const denied = nextEvent<{ reason: string }>(revoked.provider, 'authenticationFailed', 'the rev-4 document to be denied')
      const answer = await revoke(a.http, admin, { subject: 'carol', room: 'rev-4' })
      assert.equal(answer.body.closed, 1, 'one document, not the socket it shares')
      assert.ok((answer.body.instances ?? 0) >= 1)
      assert.match((await denied).reason, /revoked/)
      // The socket stays for the other document, which still edits.
      kept.doc.getText('t').insert(0, 'kept')
      await until(() => a.server.loadedRoom('rev-5')?.doc.getText('t').toString() === 'kept', 'the kept document to still edit')
      assert.equal(socketCloses, 0)
      assert.ok(kept.provider.isAuthenticated && !revoked.provider.isAuthenticated)
    } finally {
      destroyHocuspocus(revoked, kept)
    }
  })

  it('bad requests get documented errors: not JSON, no subject, a bad room (400), a write token or a scoped admin revoking everywhere (403)', async () => {
    assert.equal((await revoke(a.http, admin, 'not json')).status, 400)
    assert.equal((await revoke(a.http, admin, { room: 'rev-1' })).status, 400)
    assert.equal((await revoke(a.http, admin, { subject: '' })).status, 400)
    const badRoom = await revoke(a.http, admin, { subject: 'x', room: 'a\u0001b' })
    assert.equal(badRoom.status, 400)
    assert.equal(badRoom.body.error, 'invalid_room')
    assert.equal((await revoke(a.http, await token('writer', 'write', ['*']), { subject: 'x' })).status, 403)
    const scoped = await token('tenant-admin', 'admin', ['rev-*'])
    assert.equal((await revoke(a.http, scoped, { subject: 'x' })).status, 403)
    assert.equal((await revoke(a.http, scoped, { subject: 'x', room: 'other' })).status, 403)
    assert.equal((await revoke(a.http, scoped, { subject: 'x', room: 'rev-9' })).status, 200)
    // Junk on the Redis channel is ignored (logged), never a crash: the instances keep revoking.
    for (const junk of ['not json', '{"subject":5}', '[]', JSON.stringify({ subject: 's', room: null, at: 2, until: 1 })]) {
      const receivers = Number((await redis.command('PUBLISH', 'weft:0:revocations', junk)).slice(1))
      assert.ok(receivers >= 2, `${receivers} instances heard it`)
    }
    assert.equal((await revoke(b.http, admin, { subject: 'after-junk' })).status, 200)
    const unauthenticated = await httpBytes(a.http, 'POST', '/api/connections/revoke', { headers: { 'content-type': 'application/json' }, body: '{"subject":"x"}' })
    assert.equal(unauthenticated.status, 401)
  })
})

describe('revoking while Redis is down', () => {
  it('closes the connections here, answers 503 so the request is sent again, and the retry reaches the cluster once Redis is back', async () => {
    const redis = await startRedis()
    const server = await startServer({ redisUrl: redis.url, instanceId: 'rev-down', authSecret: SECRET })
    const dave = await token('dave')
    const client = provider(server.url, 'rev-down', undefined, { params: { token: dave } })
    const codes = closeCodes(client)
    try {
      await synced(client)
      await redis.stop()
      const admin = await token('the-admin', 'admin', ['*'])
      const answer = await revoke(server.http, admin, { subject: 'dave' })
      assert.equal(answer.status, 503)
      assert.equal(answer.body.error, 'unavailable')
      await until(() => codes.includes(4403), 'the local connection to close with 4403 all the same')
      assert.equal(await upgradeStatus(`${server.url}/rev-down?token=${dave}`), 403, 'refused here meanwhile')
      await redis.restart()
      await eventually(async () => (await revoke(server.http, admin, { subject: 'dave' })).status === 200, 'the retry to succeed once Redis is back', 15_000, 200)
      assert.match(await redis.command('ZCARD', 'weft:revocations'), /^:1/)
    } finally {
      destroy(client)
      await server.stop()
      await redis.dispose()
    }
  })
})
