/**
 * Issue #13: no failure hides a stored room. Three in-process instances on one redis-server:
 *
 * - a Redis without AOF or RDB is warned about (one log line, weft_redis_persistence_missing);
 * - after FLUSHALL every room an instance has *stored* (not only loaded) goes back into Redis, at
 *   a bounded rate with progress in /health/ready, and another instance serves such a room in
 *   full at once (it asks the cluster instead of answering 404 or syncing an empty document);
 * - with one instance's data directory destroyed and Redis flushed, the others still serve all;
 * - with a short --redis-retention-seconds, an idle room's keys leave Redis while a held room's
 *   stay, and the idle room comes back in full from the instance that stored it.
 *
 * Before the fix B answered 404 for a room stored only on A after a FLUSHALL, keys never expired,
 * and nothing warned about a Redis without persistence.
 */
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import { RedisNamespace } from '../cluster/keys.js'
import { destroy, provider, synced, textUpdate } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { eventually, until } from './harness/wait.js'

const ROOMS = Array.from({ length: 20 }, (_, i) => `stored-${i}`)
const REPUBLISH_PER_SECOND = 10
const ns = new RedisNamespace()

/** A pino logger whose JSON lines a test can read. */
function capturingLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  return { logger: pino({ level: 'info' }, stream), lines }
}

async function postUpdate(server: InProcessServer, room: string, update: Uint8Array): Promise<void> {
  const res = await fetch(`${server.http}/api/rooms/${encodeURIComponent(room)}/updates`, { method: 'POST', body: update, headers: { 'content-type': 'application/octet-stream' } })
  assert.equal(res.status, 204, await res.text())
}

async function roomJson(server: InProcessServer, room: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${server.http}/api/rooms/${encodeURIComponent(room)}`)
  return { status: res.status, body: await res.json() }
}

/** How many of the room's stream and `last` keys exist (the snapshot key comes with the first compaction). */
async function keyCount(redis: RedisProcess, room: string): Promise<number> {
  const keys = ns.room(room)
  return Number((await redis.command('EXISTS', keys.log, keys.last)).slice(1).trim())
}

describe('no failure hides a stored room', () => {
  let redis: RedisProcess
  let a: InProcessServer
  let b: InProcessServer
  let aLog: ReturnType<typeof capturingLogger>
  const dirs: Array<{ remove(): Promise<void> }> = []

  const start = async (id: string, data: string, extra: Record<string, unknown> = {}): Promise<InProcessServer> =>
    startServer({ redisUrl: redis.url, instanceId: id, data, roomUnloadDelayMs: 50, republishRoomsPerSecond: REPUBLISH_PER_SECOND, keepData: true, ...extra })

  before(async () => {
    redis = await startRedis()
    aLog = capturingLogger()
    const aDir = await tempDir('weft-a-')
    const bDir = await tempDir('weft-b-')
    dirs.push(aDir, bDir)
    a = await start('a', aDir.path, { logger: aLog.logger })
    b = await start('b', bDir.path)
  })

  after(async () => {
    await a?.stop()
    await b?.stop()
    for (const dir of dirs) await dir.remove()
    await redis?.dispose()
  })

  it('warns once (log line and metric) when Redis keeps neither an AOF nor RDB snapshots', async () => {
    await eventually(async () => (await metricValue(a.http, 'weft_redis_persistence_missing')) === 1, 'the persistence metric of a Redis without persistence', 5000)
    const warnings = aLog.lines.filter((line) => String(line.msg).startsWith('redis keeps neither an AOF nor RDB snapshots'))
    assert.equal(warnings.length, 1)
    assert.equal(warnings[0]?.level, 40, 'a warning')
    // Turned on, a new instance sees AOF and says nothing.
    assert.match(await redis.command('CONFIG', 'SET', 'appendonly', 'yes'), /^\+OK/)
    const log = capturingLogger()
    const dir = await tempDir('weft-c-')
    dirs.push(dir)
    const withAof = await start('c', dir.path, { logger: log.logger })
    try {
      await eventually(async () => (await metricValue(withAof.http, 'weft_redis_persistence_missing')) === 0, 'the persistence metric of a Redis with AOF', 5000)
      assert.equal(log.lines.filter((line) => String(line.msg).startsWith('redis keeps neither')).length, 0)
    } finally {
      await withAof.stop()
      assert.match(await redis.command('CONFIG', 'SET', 'appendonly', 'no'), /^\+OK/)
    }
  })

  it('after FLUSHALL, every stored room is re-published (paced, with progress) and served in full by another instance at once', async () => {
    for (const room of ROOMS) await postUpdate(a, room, textUpdate(`content of ${room}`))
    await until(() => ROOMS.every((room) => a.server.loadedRoom(room) === undefined), 'every room to unload on a', 5000)
    assert.equal(await keyCount(redis, ROOMS[0] as string), 2)
    assert.match(await redis.command('FLUSHALL'), /^\+OK/)
    // At once, before any re-publish: b has never stored these rooms and Redis has nothing.
    assert.deepEqual(await roomJson(b, 'stored-7'), { status: 200, body: { t: 'content of stored-7' } })
    const client = provider(b.url, 'stored-8')
    try {
      await synced(client)
      assert.equal(client.doc.getText('t').toString(), 'content of stored-8', 'a y-websocket client on b gets the whole document')
    } finally {
      destroy(client)
    }
    // a re-publishes all twenty in the background, REPUBLISH_PER_SECOND a second, and says how far it is.
    const seen: Array<{ done: number; total: number }> = []
    await eventually(async () => {
      const ready = (await (await fetch(`${a.http}/health/ready`)).json()) as { republish?: { done: number; total: number } }
      if (ready.republish !== undefined) seen.push(ready.republish)
      return (await Promise.all(ROOMS.map((room) => keyCount(redis, room)))).every((n) => n === 2)
    }, 'every stored room back in Redis', 10_000, 50)
    assert.ok(seen.length > 0 && seen.every((p) => p.total === ROOMS.length && p.done <= p.total), `progress in /health/ready: ${JSON.stringify(seen.slice(0, 3))}`)
    assert.ok(seen.some((p) => p.done < p.total / 2), 'the re-publish was paced, not done in one burst')
    await eventually(async () => (await metricValue(a.http, 'weft_cluster_republished_rooms_total')) === ROOMS.length, 'the re-publish metric', 5000)
    for (const room of ROOMS) assert.deepEqual((await roomJson(b, room)).body, { t: `content of ${room}` })
  })

  it('with a data directory destroyed and Redis flushed, the other instances still serve every room', async () => {
    // b has stored every room now (it served each). a loses its data directory and comes back empty.
    await until(() => ROOMS.every((room) => b.server.loadedRoom(room) === undefined), 'every room to unload on b', 5000)
    await a.stop()
    await dirs[0]?.remove()
    const fresh = await tempDir('weft-a2-')
    dirs.push(fresh)
    a = await start('a', fresh.path)
    assert.match(await redis.command('FLUSHALL'), /^\+OK/)
    for (const room of ROOMS.slice(0, 5)) assert.deepEqual(await roomJson(a, room), { status: 200, body: { t: `content of ${room}` } }, `a serves ${room}`)
    assert.ok(((await metricValue(a.http, 'weft_cluster_asks_found_total')) ?? 0) >= 1, 'a asked the cluster')
  })

  it('an instance that was down while Redis lost its data re-publishes its stored rooms when it returns', async () => {
    await postUpdate(b, 'only-on-b', textUpdate('b alone'))
    await until(() => b.server.loadedRoom('only-on-b') === undefined, 'the room to unload on b', 5000)
    const bData = b.data
    const lossesBefore = (await metricValue(a.http, 'weft_cluster_redis_data_losses_total')) ?? 0
    await b.stop()
    assert.match(await redis.command('FLUSHALL'), /^\+OK/)
    await eventually(async () => ((await metricValue(a.http, 'weft_cluster_redis_data_losses_total')) ?? 0) > lossesBefore, 'a to notice the loss', 5000)
    b = await start('b', bData)
    // Nobody asks for the room: b puts it back by itself.
    await eventually(async () => (await keyCount(redis, 'only-on-b')) === 2, "b's stored room back in Redis", 10_000, 50)
  })

  it('a room that exists nowhere is still 404 (all instances said no)', async () => {
    const res = await fetch(`${b.http}/api/rooms/never-was`)
    assert.equal(res.status, 404)
  })
})

describe('Redis retention (--redis-retention-seconds)', () => {
  let redis: RedisProcess
  let a: InProcessServer
  let b: InProcessServer

  before(async () => {
    redis = await startRedis()
    const common = { redisUrl: redis.url, roomUnloadDelayMs: 50, redisRetentionSeconds: 2 }
    a = await startServer({ ...common, instanceId: 'a' })
    b = await startServer({ ...common, instanceId: 'b' })
  })

  after(async () => {
    await a?.stop()
    await b?.stop()
    await redis?.dispose()
  })

  it('idle rooms leave Redis, held rooms stay, and an expired room comes back in full from the instance that stored it', async () => {
    // A room with a client that stays connected but idle, then a room nobody holds.
    const holder = provider(a.url, 'held')
    try {
      await synced(holder)
      holder.doc.getText('t').insert(0, 'held content')
      await eventually(async () => (await keyCount(redis, 'held')) === 2, 'the held room in Redis', 5000)
      await postUpdate(a, 'idle', textUpdate('idle content'))
      const ttl = Number((await redis.command('PTTL', ns.room('idle').log)).slice(1).trim())
      assert.ok(ttl > 0 && ttl <= 2000, `the idle room's keys expire (PTTL ${ttl})`)
      await until(() => a.server.loadedRoom('idle') === undefined, 'the idle room to unload', 5000)
      await eventually(async () => (await keyCount(redis, 'idle')) === 0, 'the idle room to leave Redis', 10_000, 100)
      assert.equal(await keyCount(redis, 'held'), 2, 'the held room (older, idle as well) keeps its keys')
      const asked = (await metricValue(b.http, 'weft_cluster_asks_found_total')) ?? 0
      assert.deepEqual(await roomJson(b, 'idle'), { status: 200, body: { t: 'idle content' } })
      assert.equal((await metricValue(b.http, 'weft_cluster_asks_found_total')) ?? 0, asked + 1, 'it came from the cluster')
    } finally {
      destroy(holder)
    }
  })
})
