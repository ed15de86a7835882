/**
 * The cluster behind a real nginx running deploy/nginx/ (nginx.conf and weft.conf.template):
 * stock y-websocket clients connect through nginx to three `weft serve` processes on one
 * redis-server. Rooms are routed by consistent hashing of the path, X-Forwarded-For reaches
 * weft, and a drained instance's clients come back through nginx to the others with nothing lost.
 *
 * The tests share the cluster and run in order; the drain comes last.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { RawClient, canonicalState, converged, destroy, provider, synced } from './harness/clients.js'
import { NGINX_DIR, startNginx, type NginxProcess } from './harness/nginx.js'
import { freePort, startRedis, type RedisProcess } from './harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { eventually, until, withDeadline } from './harness/wait.js'
import { metricValue } from './harness/metrics.js'

const ROOMS = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta']
const CLIENTS_PER_ROOM = 3
const MAX_PER_IP = 24
const EDIT_EVERY_MS = 25

// Every stock provider adds a process 'exit' listener; a few dozen are expected here.
process.setMaxListeners(100)

interface Instance {
  name: string
  weft: WeftProcess
  data: { path: string; remove(): Promise<void> }
}

interface Client {
  name: string
  room: string
  doc: Y.Doc
  provider: WebsocketProvider
  made: string[]
  closeCodes: number[]
}

async function connections(instance: Instance): Promise<number> {
  const value = await metricValue(instance.weft.http, 'weft_connections')
  assert.ok(value !== undefined, `${instance.name} reports weft_connections`)
  return value
}

const alive = (instance: Instance): boolean => instance.weft.child.exitCode === null && instance.weft.child.signalCode === null

describe('weft instances behind nginx (deploy/nginx)', () => {
  let redis: RedisProcess
  let nginx: NginxProcess
  const instances: Instance[] = []
  const clients: Client[] = []
  const extra: WebsocketProvider[] = []
  /** room → the instance its clients landed on. */
  const home = new Map<string, Instance>()

  before(async () => {
    redis = await startRedis()
    for (let i = 1; i <= 3; i++) {
      const name = `weft-${i}`
      const data = await tempDir(`weft-${name}-`)
      const weft = await spawnWeft([
        '--redis', redis.url, '--instance-id', name, '--data', data.path, '--drain-seconds', '2',
        '--trusted-proxies', '127.0.0.1', '--max-connections-per-ip', String(MAX_PER_IP),
      ])
      instances.push({ name, weft, data })
    }
    nginx = await startNginx({ upstreams: instances.map(({ weft }) => `127.0.0.1:${weft.port}`) })
  })

  after(async () => {
    destroy(...clients.map((c) => c.provider), ...extra)
    await nginx?.stop()
    for (const { weft } of instances) if (alive({ weft } as Instance)) weft.kill('SIGKILL')
    await Promise.all(instances.map(({ weft }) => weft.exited))
    await Promise.all(instances.map(({ data }) => data.remove()))
    await redis?.dispose()
  })

  it('runs the committed configuration: WebSocket headers, hashing by path, passive checks, next upstream on 503', async () => {
    const template = await readFile(join(NGINX_DIR, 'weft.conf.template'), 'utf8')
    for (const directive of [
      /hash \$weft_room consistent;/,
      /proxy_set_header Upgrade \$http_upgrade;/,
      /proxy_set_header Connection \$weft_connection_header;/,
      /proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;/,
      /proxy_next_upstream error timeout http_503;/,
      /proxy_read_timeout 1h;/,
      /proxy_buffering off;/,
    ]) assert.match(template, directive)
    assert.match(nginx.config, /server 127\.0\.0\.1:\d+ max_fails=0;/)
    // Plain HTTP goes through too.
    const res = await fetch(`${nginx.http}/health/ready`)
    assert.equal(res.status, 200)
    assert.equal(((await res.json()) as { redis: string }).redis, 'up')
  })

  it('every client of a room lands on the same instance', async () => {
    for (const room of ROOMS) {
      const before = await Promise.all(instances.map(connections))
      for (let i = 0; i < CLIENTS_PER_ROOM; i++) {
        const doc = new Y.Doc()
        // A query string (as a token would add) must not change where the room goes.
        const p = provider(nginx.url, room, doc, { connect: false })
        if (i === 1) p.params = { token: `client-${i}` }
        p.connect()
        const client: Client = { name: `${room}#${i}`, room, doc, provider: p, made: [], closeCodes: [] }
        p.on('connection-close', (event: { code: number } | null) => {
          if (event !== null) client.closeCodes.push(event.code)
        })
        clients.push(client)
      }
      await Promise.all(clients.filter((c) => c.room === room).map((c) => synced(c.provider)))
      const now = await Promise.all(instances.map(connections))
      const deltas = now.map((n, i) => n - (before[i] as number))
      assert.equal(deltas.filter((d) => d === CLIENTS_PER_ROOM).length, 1, `all ${CLIENTS_PER_ROOM} clients of ${room} on one instance (deltas ${deltas.join(',')})`)
      assert.equal(deltas.filter((d) => d === 0).length, instances.length - 1, `no client of ${room} elsewhere (deltas ${deltas.join(',')})`)
      home.set(room, instances[deltas.indexOf(CLIENTS_PER_ROOM)] as Instance)
    }
    console.log(`rooms by instance: ${[...home].map(([room, i]) => `${room}→${i.name}`).join(' ')}`)
  })

  it('weft believes X-Forwarded-For from nginx: the per-address limit applies to the real client', async () => {
    const open = async (forwardedFor: string): Promise<RawClient | number> => {
      const client = new RawClient(new WebSocket(`${nginx.url}/xff-room`, { headers: { 'X-Forwarded-For': forwardedFor } }))
      try {
        await withDeadline(client.opened, 'a raw socket through nginx', 5000)
        return client
      } catch (err) {
        const status = /HTTP (\d+)/.exec(String(err))?.[1]
        if (status === undefined) throw err
        return Number(status)
      }
    }
    const sockets: RawClient[] = []
    try {
      // Distinct client addresses: none is over the per-address limit, so all are admitted.
      for (let i = 0; i < MAX_PER_IP + 2; i++) {
        const result = await open(`198.51.100.${i + 1}`)
        assert.ok(typeof result !== 'number', `client 198.51.100.${i + 1} admitted (got HTTP ${String(result)})`)
        sockets.push(result)
      }
      // One address: admitted up to the limit, then 429 (which nginx passes on, not retries).
      const statuses: number[] = []
      for (let i = 0; i < MAX_PER_IP + 2; i++) {
        const result = await open('203.0.113.9')
        if (typeof result === 'number') statuses.push(result)
        else sockets.push(result)
      }
      assert.deepEqual(statuses, [429, 429], `the 2 connections past ${MAX_PER_IP} from 203.0.113.9 are refused with 429`)
    } finally {
      for (const socket of sockets) socket.close()
    }
  })

  it('draining an instance (SIGTERM): its clients get 1012, come back through nginx to the others, nothing is lost', async () => {
    const counts = new Map<Instance, number>()
    for (const instance of home.values()) counts.set(instance, (counts.get(instance) ?? 0) + 1)
    const victim = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] as Instance
    const moved = ROOMS.filter((room) => home.get(room) === victim)
    const movedClients = clients.filter((c) => moved.includes(c.room))
    const timers = clients.map((client) =>
      setInterval(() => {
        const id = `${client.name}:${client.made.length}`
        client.doc.getArray<string>('log').push([id])
        client.made.push(id)
      }, EDIT_EVERY_MS),
    )
    const stop = (): void => timers.forEach((timer) => clearInterval(timer))
    try {
      const made = (): number => clients.reduce((n, c) => n + c.made.length, 0)
      await until(() => clients.every((c) => c.made.length >= 5), 'edits before the drain', 5000)
      const beforeDrain = made()
      const drainedAt = Date.now()
      victim.weft.kill('SIGTERM')
      await until(() => movedClients.every((c) => c.closeCodes.includes(1012)), `the clients of ${moved.join(', ')} to be closed with 1012`, 5000)
      const code = await withDeadline(victim.weft.exited, `${victim.name} to finish its drain`, 10_000)
      assert.equal(code, 0, `${victim.name} exits with 0 after the drain`)
      // Stock providers reconnect by themselves, to the same nginx URL.
      await until(() => movedClients.every((c) => c.provider.wsconnected && c.provider.synced), 'the drained clients to reconnect through nginx', 10_000)
      const reconnectedMs = Date.now() - drainedAt
      const duringDrain = made() - beforeDrain
      const afterReconnect = made()
      await until(() => made() >= afterReconnect + clients.length * 5, 'edits after the reconnect', 5000)
      stop()
      const left = instances.filter(alive)
      for (const room of ROOMS) {
        const inRoom = clients.filter((c) => c.room === room)
        await converged(inRoom.map((c) => c.doc), `${room} to converge after the drain`, 5000)
        const ids = (inRoom[0] as Client).doc.getArray<string>('log').toArray()
        assert.equal(new Set(ids).size, ids.length, `no edit of ${room} twice`)
        assert.deepEqual(new Set(ids), new Set(inRoom.flatMap((c) => c.made)), `every edit of ${room}, before, during and after the drain, is there`)
        const state = canonicalState((inRoom[0] as Client).doc)
        for (const instance of left) {
          const fresh = provider(instance.weft.url, room)
          extra.push(fresh)
          await synced(fresh, 5000)
          assert.deepEqual(Buffer.from(canonicalState(fresh.doc)), Buffer.from(state), `${instance.name} serves ${room} in full`)
          destroy(fresh)
        }
      }
      // Each moved room went to one instance as a whole: disconnecting its clients drops one count by 3.
      const total = async (): Promise<number> => (await Promise.all(left.map(connections))).reduce((a, b) => a + b, 0)
      let expected = clients.length
      await eventually(async () => (await total()) === expected, 'only the clients to be connected (the fresh providers gone)', 5000)
      for (const room of moved) {
        const before = await Promise.all(left.map(connections))
        for (const c of clients.filter((c) => c.room === room)) c.provider.disconnect()
        expected -= CLIENTS_PER_ROOM
        await eventually(async () => (await total()) === expected, `${room}'s clients to leave`, 5000)
        const now = await Promise.all(left.map(connections))
        const deltas = now.map((n, i) => (before[i] as number) - n)
        assert.ok(deltas.includes(CLIENTS_PER_ROOM), `${room}'s clients were together on one instance after the drain (deltas ${deltas.join(',')})`)
      }
      // nginx itself took the draining instance's 503 and went on to the next instance
      // (proxy_next_upstream http_503): the client only ever saw the upgrade succeed. The access
      // log line of a WebSocket is written when it ends, which the disconnects above did.
      const victimAddress = `127.0.0.1:${victim.weft.port}`
      let retried: string | undefined
      await eventually(async () => {
        retried = (await nginx.accessLog()).find((line) => line.includes(`upstream=${victimAddress}, `) && / upstream_status=503, 101$/.test(line))
        return retried !== undefined
      }, 'an upgrade that nginx retried on the next instance after a 503 from the draining one', 5000)
      console.log(`retried by nginx: ${retried}`)
      console.log(`drain of ${victim.name} (${moved.length} rooms, ${movedClients.length} clients): all back through nginx ${reconnectedMs} ms after SIGTERM; ${duringDrain} edits made by all clients from SIGTERM to the last reconnect`)
    } finally {
      stop()
    }
  })
})

describe('nginx after every instance was down at once (a restart of the whole cluster)', () => {
  it('lets every reconnecting client back at once, with no other traffic to clear a failure mark', { timeout: 60_000 }, async () => {
    const ports = [await freePort(), await freePort(), await freePort()]
    const nginx = await startNginx({ upstreams: ports.map((port) => `127.0.0.1:${port}`) })
    const wefts: WeftProcess[] = []
    const providers: WebsocketProvider[] = []
    try {
      // Nothing listens yet: each request is refused by every instance in turn.
      for (let i = 0; i < ports.length; i++) assert.equal((await fetch(`${nginx.http}/api/rooms/down-${i}`)).status, 502)
      for (const port of ports) wefts.push(await spawnWeft(['--port', String(port), '--data', 'memory']))
      // Only WebSockets from here on. With `max_fails=1 fail_timeout=5s` nginx let one upgrade
      // per instance through every 5 s, and nothing cleared the marks: 12 of 30 clients after 20 s.
      for (let i = 0; i < 30; i++) providers.push(provider(nginx.url, `storm-${i}`))
      await until(() => providers.every((p) => p.wsconnected && p.synced), 'all 30 clients connected and synced through nginx', 15_000).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}: ${providers.filter((p) => p.synced).length} of 30 made it`, { cause: err })
      })
      const counts = await Promise.all(wefts.map(async (weft) => (await metricValue(weft.http, 'weft_connections')) ?? 0))
      assert.equal(counts.reduce((a, b) => a + b, 0), 30, `every client holds one connection (${counts.join(', ')})`)
    } finally {
      destroy(...providers)
      await nginx.stop()
      for (const weft of wefts) weft.kill('SIGKILL')
      await Promise.all(wefts.map((weft) => weft.exited))
    }
  })
})
