/**
 * Issue #13, isolation: deployments that share one redis-server but differ in DB number
 * ("staging" on db 7, "prod" on db 6) or in --redis-prefix (prod and "other", both on db 6) never
 * see each other's edits, awareness, heartbeats, tickets or deletions, while the two instances of
 * each deployment still do. Every deployment names its instances alike (weft-1, weft-2), as
 * compose files do.
 *
 * Before the fix, channels were `weft:{<room>}:ch` whatever the DB (pub/sub ignores DB numbers)
 * and every key started with a fixed `weft:`: prod's document took staging's edits.
 *
 * Barriers instead of sleeps: each negative check comes after a positive one on the same room
 * whose message was published later; had the channel been shared, Redis would have delivered the
 * earlier foreign message first.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import type { WebsocketProvider } from 'y-websocket'
import { Redis } from 'ioredis'
import { RawClient, destroy, provider, synced } from './harness/clients.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

const ROOM = 'collide'

interface Deployment {
  name: string
  servers: [InProcessServer, InProcessServer]
  clients: [WebsocketProvider, WebsocketProvider]
}

const text = (p: WebsocketProvider): string => p.doc.getText('t').toString()

describe('deployments on one Redis are isolated by DB number and by --redis-prefix', () => {
  let redis: RedisProcess
  const deployments: Deployment[] = []
  const extra: WebsocketProvider[] = []
  let staging: Deployment
  let prod: Deployment
  let other: Deployment

  const deploy = async (name: string, db: number, prefix: string): Promise<Deployment> => {
    const servers = [] as unknown as [InProcessServer, InProcessServer]
    for (const id of ['weft-1', 'weft-2']) {
      servers.push(await startServer({ redisUrl: `${redis.url}/${db}`, redisPrefix: prefix, instanceId: id, roomUnloadDelayMs: -1 }))
    }
    const clients = servers.map((s) => provider(s.url, ROOM)) as [WebsocketProvider, WebsocketProvider]
    await Promise.all(clients.map((c) => synced(c)))
    const deployment = { name, servers, clients }
    deployments.push(deployment)
    return deployment
  }

  before(async () => {
    redis = await startRedis()
    staging = await deploy('staging', 7, 'weft')
    prod = await deploy('prod', 6, 'weft')
    other = await deploy('other', 6, 'other')
  })

  after(async () => {
    destroy(...deployments.flatMap((d) => d.clients), ...extra)
    for (const d of deployments) for (const s of d.servers) await s.stop()
    await redis?.dispose()
  })

  it('edits stay in their deployment', async () => {
    for (const d of [staging, prod, other]) {
      d.clients[0].doc.getText('t').insert(0, `${d.name.toUpperCase()} EDIT `)
      await until(() => text(d.clients[1]).includes(`${d.name.toUpperCase()} EDIT`), `${d.name}'s edit to reach its second instance`, 5000)
    }
    for (const d of [staging, prod, other]) {
      for (const c of d.clients) assert.equal(text(c), `${d.name.toUpperCase()} EDIT `, `${d.name} holds only its own edit`)
    }
    // And in Redis: each deployment's keys hold its own document only.
    const keysOf = async (db: number): Promise<string[]> => {
      const client = new Redis(`${redis.url}/${db}`)
      try {
        return (await client.keys('*')).sort()
      } finally {
        client.disconnect()
      }
    }
    const db6 = await keysOf(6)
    assert.ok(db6.some((k) => k.startsWith('weft:')) && db6.some((k) => k.startsWith('other:')), `db 6 has both prefixes: ${db6.join(' ')}`)
    assert.ok((await keysOf(7)).every((k) => k.startsWith('weft:')))
  })

  it('awareness and heartbeats stay in their deployment', async () => {
    for (const d of [staging, prod, other]) d.clients[0].awareness.setLocalStateField('user', d.name)
    for (const d of [staging, prod, other]) {
      const id = d.clients[0].awareness.clientID
      await until(() => d.clients[1].awareness.getStates().get(id)?.user === d.name, `${d.name}'s presence on its second instance`, 5000)
    }
    for (const d of [staging, prod, other]) {
      const users = [...d.clients[1].awareness.getStates().values()].map((s) => s.user as string | undefined).filter((u) => u !== undefined)
      assert.deepEqual([...new Set(users)], [d.name], `${d.name} sees only its own presence`)
      for (const server of d.servers) {
        const room = server.server.loadedRoom(ROOM)
        assert.ok(room !== undefined)
      }
    }
    // Instances of the same name in other deployments come and go: a heartbeat key or a goodbye
    // of theirs must not touch prod's presence.
    await other.servers[0].stop()
    await staging.servers[0].stop()
    const prodId = prod.clients[0].awareness.clientID
    // A fresh prod client that syncs sees prod's presence still there (its awareness came after the goodbyes).
    const fresh = provider(prod.servers[1].url, ROOM)
    extra.push(fresh)
    await synced(fresh)
    await until(() => fresh.awareness.getStates().get(prodId)?.user === 'prod', "prod's presence on a fresh client", 5000)
    assert.equal(prod.clients[1].awareness.getStates().get(prodId)?.user, 'prod', 'prod presence survived the goodbyes of other deployments')
  })

  it('tickets are redeemable only in the deployment that issued them', async () => {
    const issue = async (server: InProcessServer): Promise<string> => {
      const res = await fetch(`${server.http}/api/tickets`, { method: 'POST', headers: { 'content-type': 'application/json' } })
      assert.equal(res.status, 200)
      return ((await res.json()) as { ticket: string }).ticket
    }
    const upgrade = async (server: InProcessServer, ticket: string): Promise<'open' | string> => {
      const client = new RawClient(new WebSocket(`${server.url}/ticket-room?ticket=${encodeURIComponent(ticket)}`))
      try {
        await withDeadline(client.opened, 'a ticket upgrade', 5000)
        client.close()
        return 'open'
      } catch (err) {
        return /HTTP (\d+)/.exec(String(err))?.[1] ?? String(err)
      }
    }
    // Same DB, other prefix; then other DB, same prefix.
    assert.equal(await upgrade(other.servers[1], await issue(prod.servers[0])), '401', 'a prod ticket is unknown to "other" (same DB)')
    assert.equal(await upgrade(staging.servers[1], await issue(prod.servers[0])), '401', 'a prod ticket is unknown to staging (other DB)')
    assert.equal(await upgrade(prod.servers[1], await issue(prod.servers[0])), 'open', 'a prod ticket works on the other prod instance')
  })

  it('deletions stay in their deployment', async () => {
    const closes: number[] = []
    prod.clients[1].on('connection-close', (event: { code: number } | null) => {
      if (event !== null) closes.push(event.code)
    })
    const del = async (server: InProcessServer, room: string): Promise<void> => {
      const res = await fetch(`${server.http}/api/rooms/${encodeURIComponent(room)}`, { method: 'DELETE' })
      assert.equal(res.status, 204)
    }
    await del(staging.servers[1], ROOM)
    await del(other.servers[1], ROOM)
    // Barrier: a deletion in prod, announced after the two others, reaches the other prod instance.
    const barrier = provider(prod.servers[0].url, 'barrier')
    extra.push(barrier)
    await synced(barrier)
    barrier.doc.getText('t').insert(0, 'x')
    const watcher = provider(prod.servers[1].url, 'barrier')
    extra.push(watcher)
    await until(() => watcher.doc.getText('t').toString() === 'x', 'the barrier room on the second prod instance', 5000)
    const deleted = new Promise<void>((resolve) => {
      watcher.on('connection-close', (event: { code: number } | null) => {
        if (event?.code === 4404) resolve()
      })
    })
    await del(prod.servers[0], 'barrier')
    await withDeadline(deleted, "prod's own deletion to reach its second instance", 5000)
    assert.deepEqual(closes, [], 'no prod client of the room was closed')
    for (const server of prod.servers) {
      const res = await fetch(`${server.http}/api/rooms/${ROOM}`)
      assert.equal(res.status, 200, "prod's room still exists")
      assert.deepEqual(await res.json(), { t: 'PROD EDIT ' })
    }
  })
})

