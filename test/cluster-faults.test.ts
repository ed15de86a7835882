/**
 * Issue #6, faults through whole processes: three `weft serve` processes on one real
 * redis-server, stock y-websocket clients on each, and a fault injected while they edit.
 * After the fault clears, every instance holding a room converges within 5 s and no edit is lost.
 *
 * The Redis outage lasts WEFT_FAULT_SECONDS (default 5; the issue names 30, which CI cannot
 * afford on every run: `WEFT_FAULT_SECONDS=30 node --test dist/test/cluster-faults.test.js`).
 *
 * The scenarios share the cluster and run in order; the instance kill -9 comes last because
 * it leaves two instances.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { canonicalState, converged, destroy, provider, synced } from './harness/clients.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { eventually, until, withDeadline } from './harness/wait.js'
import { unlabelledSamples } from './harness/metrics.js'

const FAULT_SECONDS = Number(process.env.WEFT_FAULT_SECONDS ?? 5)
/** Issue #6: every instance holding a room converges within this after the fault clears. */
const CONVERGE_MS = 5000
const EDIT_EVERY_MS = 20

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
  instance: Instance
  doc: Y.Doc
  provider: WebsocketProvider
  /** Everything this client pushed to `log`. */
  made: string[]
}


async function metric(instance: Instance, name: string): Promise<number> {
  const value = (await unlabelledSamples(instance.weft.http)).get(name)
  assert.ok(value !== undefined, `${instance.name} reports ${name}`)
  return value
}

async function readiness(instance: Instance): Promise<{ status: number; redis: string }> {
  const res = await fetch(`${instance.weft.http}/health/ready`)
  const body = (await res.json()) as { redis: string }
  return { status: res.status, redis: body.redis }
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))

describe(`faults in a 3-instance weft cluster (Redis outage ${FAULT_SECONDS} s; WEFT_FAULT_SECONDS)`, () => {
  let redis: RedisProcess
  const instances: Instance[] = []
  const providers: WebsocketProvider[] = []
  const live = (): Instance[] => instances.filter(({ weft }) => weft.child.exitCode === null && weft.child.signalCode === null)

  const open = (instance: Instance, room: string, doc = new Y.Doc()): WebsocketProvider => {
    const p = provider(instance.weft.url, room, doc)
    providers.push(p)
    return p
  }

  /** Two rooms, one client per live instance in each, all synced. */
  const clientsFor = async (scenario: string): Promise<Client[]> => {
    const clients: Client[] = []
    for (const room of [`${scenario}-a`, `${scenario}-b`]) {
      for (const instance of live()) {
        const doc = new Y.Doc()
        clients.push({ name: `${room}@${instance.name}`, room, instance, doc, provider: open(instance, room, doc), made: [] })
      }
    }
    await Promise.all(clients.map((c) => synced(c.provider)))
    return clients
  }

  /** Every client pushes a fresh id every EDIT_EVERY_MS until stopped; returns the stop. */
  const startEditing = (clients: Client[]): (() => void) => {
    const timers = clients.map((client) =>
      setInterval(() => {
        const id = `${client.name}#${client.made.length}`
        client.doc.getArray<string>('log').push([id])
        client.made.push(id)
      }, EDIT_EVERY_MS),
    )
    return () => timers.forEach((timer) => clearInterval(timer))
  }

  /** Mid-edit: every client has seen an edit of every other client of its room. */
  const editsFlowing = (clients: Client[]): Promise<void> =>
    until(
      () => clients.every((c) => clients.filter((o) => o.room === c.room).every((o) => c.doc.getArray<string>('log').toArray().some((id) => id.startsWith(`${o.name}#`)))),
      'edits to flow between every pair of clients',
      5000,
    )

  /**
   * After a fault cleared at `clearedAt`: every room's clients converge within CONVERGE_MS,
   * every live instance serves that state, nothing any client made is missing, and the cluster
   * relays live again. Returns the convergence time in ms from `clearedAt`.
   */
  const checkRecovered = async (clients: Client[], clearedAt: number, what: string): Promise<number> => {
    const rooms = [...new Set(clients.map((c) => c.room))]
    for (const room of rooms) {
      const docs = clients.filter((c) => c.room === room).map((c) => c.doc)
      await converged(docs, `${room} to converge after ${what}`, Math.max(1, CONVERGE_MS - (Date.now() - clearedAt)))
    }
    const convergedMs = Date.now() - clearedAt
    for (const room of rooms) {
      const inRoom = clients.filter((c) => c.room === room)
      const state = canonicalState((inRoom[0] as Client).doc)
      const ids = (inRoom[0] as Client).doc.getArray<string>('log').toArray()
      const made = inRoom.flatMap((c) => c.made)
      assert.equal(new Set(ids).size, ids.length, `no edit of ${room} appears twice`)
      assert.deepEqual(new Set(ids), new Set(made), `every edit made in ${room} is there, and nothing else`)
      for (const instance of live()) {
        const fresh = open(instance, room)
        await synced(fresh, 5000)
        assert.deepEqual(Buffer.from(canonicalState(fresh.doc)), Buffer.from(state), `${instance.name} serves ${room} as its clients hold it`)
        destroy(fresh)
      }
    }
    // Live relaying works again: one more edit from every client reaches the others quickly.
    for (const client of clients) {
      const id = `${client.name}#after`
      client.doc.getArray<string>('log').push([id])
      client.made.push(id)
    }
    await until(() => clients.every((c) => clients.filter((o) => o.room === c.room).every((o) => c.doc.getArray<string>('log').toArray().includes(`${o.name}#after`))), `live edits after ${what}`, CONVERGE_MS)
    for (const instance of instances.filter((i) => !live().includes(i) && i.name !== killedName)) assert.fail(`${instance.name} died during ${what}: ${instance.weft.stderr()}`)
    console.log(`${what}: converged ${convergedMs} ms after the fault cleared (${clients.reduce((n, c) => n + c.made.length, 0)} edits)`)
    return convergedMs
  }

  let killedName = ''

  before(async () => {
    redis = await startRedis()
    for (let i = 1; i <= 3; i++) {
      const name = `weft-${i}`
      const data = await tempDir(`weft-${name}-`)
      const weft = await spawnWeft(['--redis', redis.url, '--instance-id', name, '--data', data.path, '--drain-seconds', '2'])
      instances.push({ name, weft, data })
    }
    await eventually(async () => (await Promise.all(instances.map(readiness))).every((r) => r.redis === 'up'), 'every instance to reach redis', 5000)
  })

  after(async () => {
    destroy(...providers)
    for (const { weft } of instances) if (weft.child.exitCode === null && weft.child.signalCode === null) weft.kill('SIGKILL')
    await Promise.all(instances.map(({ weft }) => weft.exited))
    await Promise.all(instances.map(({ data }) => data.remove()))
    await redis?.dispose()
  })

  it(`Redis stopped for ${FAULT_SECONDS} s mid-edit, then started empty on the same port`, async () => {
    const clients = await clientsFor('stopped')
    const stop = startEditing(clients)
    try {
      await editsFlowing(clients)
      const publishedBefore = await Promise.all(instances.map((i) => metric(i, 'weft_relay_published_total')))
      const stoppedAt = Date.now()
      await redis.stop()
      // Down is reported, and only as that: the instances keep serving their own clients (200).
      await eventually(async () => (await Promise.all(instances.map(readiness))).every((r) => r.redis === 'down' && r.status === 200), '/health/ready to show redis: down (and stay 200)', 5000)
      await eventually(async () => (await Promise.all(instances.map((i) => metric(i, 'weft_redis_up')))).every((v) => v === 0), 'weft_redis_up 0', 2000)
      // Edits keep coming: each instance holds its clients' updates for the cluster.
      await eventually(async () => (await Promise.all(instances.map((i) => metric(i, 'weft_relay_held_bytes')))).every((v) => v > 0), 'every instance to hold updates', 3000)
      await pause(FAULT_SECONDS * 1000 - (Date.now() - stoppedAt))
      await redis.restart()
      const clearedAt = Date.now()
      await eventually(async () => (await Promise.all(instances.map(readiness))).every((r) => r.redis === 'up' && r.status === 200), '/health/ready to show redis: up', CONVERGE_MS)
      stop()
      await checkRecovered(clients, clearedAt, `Redis stopped for ${FAULT_SECONDS} s`)
      const after = await Promise.all(instances.map((i) => unlabelledSamples(i.weft.http)))
      after.forEach((m, i) => {
        assert.equal(m.get('weft_redis_up'), 1, `${instances[i]?.name} weft_redis_up 1`)
        assert.equal(m.get('weft_relay_held_bytes'), 0, `${instances[i]?.name} sent everything it held`)
        assert.ok((m.get('weft_relay_published_total') ?? 0) > (publishedBefore[i] as number), `${instances[i]?.name} published after the outage`)
      })
      // Redis came back empty and was refilled from the instances' documents.
      assert.match(await redis.command('EXISTS', 'weft:epoch'), /^:1/)
    } finally {
      stop()
      destroy(...clients.map((c) => c.provider))
    }
  })

  it('Redis SIGKILLed mid-edit and restarted empty', async () => {
    const clients = await clientsFor('killed')
    const stop = startEditing(clients)
    try {
      await editsFlowing(clients)
      const before = await Promise.all(instances.map((i) => unlabelledSamples(i.weft.http)))
      const killedAt = Date.now()
      await redis.kill()
      await eventually(async () => (await Promise.all(instances.map(readiness))).every((r) => r.redis === 'down'), '/health/ready to show redis: down', 5000)
      // Down long enough for every client to edit through it (the outage test above is the long one).
      await pause(Math.min(FAULT_SECONDS, 2) * 1000 - (Date.now() - killedAt))
      await redis.restart()
      const clearedAt = Date.now()
      stop()
      await checkRecovered(clients, clearedAt, 'Redis SIGKILLed and restarted empty')
      const after = await Promise.all(instances.map((i) => unlabelledSamples(i.weft.http)))
      after.forEach((m, i) => {
        const was = before[i] as Map<string, number>
        assert.equal(m.get('weft_redis_up'), 1, `${instances[i]?.name} weft_redis_up 1`)
        const moved = (m.get('weft_relay_published_total') ?? 0) - (was.get('weft_relay_published_total') ?? 0) + (m.get('weft_relay_healed_total') ?? 0) - (was.get('weft_relay_healed_total') ?? 0)
        assert.ok(moved > 0, `${instances[i]?.name} published or healed after the restart`)
      })
    } finally {
      stop()
      destroy(...clients.map((c) => c.provider))
    }
  })

  for (const type of ['normal', 'pubsub'] as const) {
    it(`every instance's ${type === 'normal' ? 'command' : 'pub/sub'} connection cut with CLIENT KILL TYPE ${type} mid-edit`, async () => {
      const clients = await clientsFor(`cut-${type}`)
      const stop = startEditing(clients)
      const downs = (instance: Instance): number => instance.weft.logs.filter((line) => typeof line.msg === 'string' && line.msg.startsWith('redis relay down')).length
      try {
        await editsFlowing(clients)
        const downsBefore = instances.map(downs)
        const named = (await redis.command('CLIENT', 'LIST', 'TYPE', type)).match(/ name=weft:weft-\d+:/g) ?? []
        const reply = await redis.command('CLIENT', 'KILL', 'TYPE', type)
        // Every instance's relay connection of this type went (and any other weft connection of
        // that type; the harness's own is skipped: SKIPME yes).
        assert.ok(named.length >= instances.length, `each instance has a ${type} connection named weft:<id>:… (${named.length})`)
        assert.ok(Number(/^:(\d+)/.exec(reply)?.[1]) >= instances.length, `CLIENT KILL TYPE ${type} cut at least one connection per instance (${reply.trim()})`)
        const clearedAt = Date.now()
        await until(() => instances.every((instance, i) => downs(instance) > (downsBefore[i] as number)), 'every instance to notice the cut', 3000)
        await eventually(async () => (await Promise.all(instances.map(readiness))).every((r) => r.redis === 'up'), '/health/ready to show redis: up again', CONVERGE_MS)
        // Edits go on across the reconnect, then stop so convergence can be measured.
        await pause(300)
        stop()
        await checkRecovered(clients, clearedAt, `CLIENT KILL TYPE ${type}`)
      } finally {
        stop()
        destroy(...clients.map((c) => c.provider))
      }
    })
  }

  it('an instance killed with kill -9 mid-edit, never restarted: the others keep everything it relayed; its clients reconnect elsewhere', async () => {
    const clients = await clientsFor('victim')
    const victim = instances[0] as Instance
    killedName = victim.name
    const stop = startEditing(clients)
    try {
      await editsFlowing(clients)
      await until(() => clients.every((c) => c.made.length >= 25), 'a few hundred edits before the kill', 5000)
      victim.weft.kill('SIGKILL')
      const killedAt = Date.now()
      await withDeadline(victim.weft.exited, 'the victim to die', 2000)
      const orphans = clients.filter((c) => c.instance === victim)
      const survivors = clients.filter((c) => c.instance !== victim)
      // What the victim applied and relayed: its clients' edits that reached a client elsewhere.
      const relayed = new Set(survivors.flatMap((c) => c.doc.getArray<string>('log').toArray()).filter((id) => id.includes(`@${victim.name}#`)))
      assert.ok(relayed.size > 0, 'the victim had relayed edits before it died')
      for (const orphan of orphans) orphan.provider.destroy()
      // Without the orphans, the survivors converge and keep every relayed edit of the victim.
      const rooms = [...new Set(clients.map((c) => c.room))]
      for (const room of rooms) {
        await converged(survivors.filter((c) => c.room === room).map((c) => c.doc), `survivors of ${room} to converge`, Math.max(1, CONVERGE_MS - (Date.now() - killedAt)))
      }
      const survivorsMs = Date.now() - killedAt
      for (const room of rooms) {
        for (const instance of live()) {
          const fresh = open(instance, room)
          await synced(fresh, 5000)
          const served = new Set(fresh.doc.getArray<string>('log').toArray())
          for (const id of relayed) if (id.startsWith(`${room}@`)) assert.ok(served.has(id), `${instance.name} still serves ${id}, relayed by the killed instance`)
          destroy(fresh)
        }
      }
      // The victim's clients come back on the instances left, with what they still had (and
      // kept editing meanwhile): a stock provider with the same doc, as a load balancer would do.
      const reconnectedAt = Date.now()
      live().forEach((instance, i) => {
        for (const orphan of orphans.filter((_, j) => j % live().length === i)) {
          orphan.instance = instance
          orphan.provider = open(instance, orphan.room, orphan.doc)
        }
      })
      await Promise.all(orphans.map((c) => synced(c.provider)))
      stop()
      const allMs = await checkRecovered(clients, reconnectedAt, 'an instance killed with -9')
      console.log(`kill -9: survivors converged ${survivorsMs} ms after the kill and kept all ${relayed.size} edits the victim had relayed; everyone ${allMs} ms after the orphans reconnected`)
    } finally {
      stop()
      destroy(...clients.map((c) => c.provider))
    }
  })

  it('no instance crashed: the ones left are ready and exit with 0 on SIGTERM', async () => {
    const left = live()
    assert.deepEqual(left.map((i) => i.name), instances.filter((i) => i.name !== killedName).map((i) => i.name), 'only the killed instance is gone')
    for (const instance of left) assert.deepEqual(await readiness(instance), { status: 200, redis: 'up' })
    for (const { weft } of left) weft.kill('SIGTERM')
    const codes = await Promise.all(left.map(({ weft }) => withDeadline(weft.exited, 'weft to exit after SIGTERM', 10_000)))
    assert.deepEqual(codes, left.map(() => 0))
  })
})
