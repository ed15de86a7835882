/**
 * The cluster's copy of versions (cluster/shared-state.ts) and the two-copy store that keeps it in
 * step with an instance's own (persistence/version-replicas.ts), against a real redis-server.
 */
import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { after, before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { RedisNamespace } from '../cluster/keys.js'
import { RedisSharedState } from '../cluster/index.js'
import { MemoryStore, newVersionId, ReplicatedVersions, VersionLimitError, type VersionRecord } from '../persistence/index.js'
import { encodeVersionValue } from '../persistence/version-value.js'
import { monitorRedis, startRedis, type RedisProcess } from './harness/redis.js'
import { eventually, once, until, withDeadline } from './harness/wait.js'

const ns = new RedisNamespace()

const silent = { debug() {}, info() {}, warn() {}, error() {} }
const version = (createdAt: number, name: string, size: number): VersionRecord => ({ id: newVersionId(createdAt), name, createdAt, update: new Uint8Array(size).fill(7) })

describe('versions in Redis', () => {
  let redis: RedisProcess
  let a: RedisSharedState
  let b: RedisSharedState
  let raw: Redis

  before(async () => {
    redis = await startRedis()
    a = new RedisSharedState({ redisUrl: redis.url, instanceId: 'A', logger: silent, epochCheckMs: 50 })
    b = new RedisSharedState({ redisUrl: redis.url, instanceId: 'B', logger: silent, epochCheckMs: 50 })
    raw = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  })

  after(async () => {
    raw.disconnect()
    await Promise.all([a.close(), b.close()])
    await redis.dispose()
  })

  it('limits hold across instances in one step: concurrent puts never pass them, and refusals store nothing', async () => {
    const limits = { maxCount: 4, maxBytes: 1_000 }
    const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).putVersion('limited', version(i, `v${i}`, 10), limits)))
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 4)
    for (const r of results) if (r.status === 'rejected') assert.ok(r.reason instanceof VersionLimitError && r.reason.limit === 'count')
    assert.equal((await b.listVersions('limited')).length, 4)
    const heavy = version(100, 'heavy', 600)
    await a.putVersion('bytes', heavy, limits)
    const refused = version(101, 'refused', 500)
    await assert.rejects(b.putVersion('bytes', refused, limits), (err: unknown) => err instanceof VersionLimitError && err.limit === 'bytes')
    assert.equal(await a.getVersion('bytes', refused.id), null)
    assert.equal(await raw.exists(ns.versions('bytes').contentPrefix + refused.id), 0)
    // Replacing counts the version once: 600 → 900 fits, 600 + 500 did not.
    await a.putVersion('bytes', { ...heavy, update: new Uint8Array(900) }, limits)
    assert.equal(await raw.get(ns.versions('bytes').bytes), '900')
    await a.deleteVersion('bytes', heavy.id)
    assert.equal(await raw.get(ns.versions('bytes').bytes), '0')
    assert.deepEqual(await b.listVersions('bytes'), [])
  })

  it('a listing reads descriptions only: no command of it touches a stored value', async () => {
    const room = 'monitored'
    const records = [version(1, 'one', 50_000), version(2, 'two', 50_000), version(3, 'three', 50_000)]
    for (const record of records) await a.putVersion(room, record)
    // A MONITOR of the harness's own: ioredis's monitor() can take a command printed just after
    // its MONITOR's OK for a reply it never asked for, and throw.
    const monitor = await monitorRedis(redis.port)
    try {
      const marker = `end-${newVersionId()}`
      const listed = await b.listVersions(room, { limit: 10 })
      assert.deepEqual(listed.map((v) => [v.name, v.bytes]), [['one', 50_000], ['two', 50_000], ['three', 50_000]])
      await raw.echo(marker)
      await until(() => monitor.seen.some((command) => command.args.includes(marker)), 'MONITOR to show the marker')
    } finally {
      monitor.stop()
    }
    const seen = monitor.seen.map((command) => command.args)
    const { contentPrefix } = ns.versions(room)
    const commands = seen.map((args) => args.map((arg) => arg.slice(0, 80)).join(' '))
    assert.ok(commands.some((c) => /^zrangebylex/i.test(c)), `the listing ran: ${commands.join(' | ')}`)
    // The instances' epoch checks (ENSURE_EPOCH, every 50 ms here) run meanwhile: the epoch is no stored value.
    for (const args of seen.filter((command) => !command.includes(ns.epochKey))) {
      const command = args.map((arg) => arg.slice(0, 80)).join(' ')
      // The script gets the prefix of value keys as an argument; no value key itself may appear.
      assert.ok(!args.some((arg) => arg.startsWith(contentPrefix) && arg.length > contentPrefix.length), `a listing touched a value: ${command}`)
      assert.ok(!/^(hgetall|hvals|get|mget)$/i.test(args[0] ?? ''), `a listing read values: ${command}`)
    }
  })

  it('pages by id, and hasVersions reads descriptions', async () => {
    const records = Array.from({ length: 5 }, (_, i) => version(10 + i, `p${i}`, 1))
    for (const record of records) await a.putVersion('paged', record)
    const ids = records.map((r) => r.id)
    assert.deepEqual((await b.listVersions('paged', { limit: 2 })).map((v) => v.id), ids.slice(0, 2))
    assert.deepEqual((await b.listVersions('paged', { after: ids[1], limit: 2 })).map((v) => v.id), ids.slice(2, 4))
    assert.deepEqual((await b.listVersions('paged', { after: ids[4] })).map((v) => v.id), [])
    assert.deepEqual(await b.hasVersions('paged', [ids[0] as string, newVersionId(), ids[4] as string]), [true, false, true])
  })

  it('versions in the layout before descriptions (one hash of whole values) are moved on first use, byte for byte', async () => {
    const room = 'legacy {room}'
    const old = [version(1_000, 'old one ✓', 30), version(2_000, 'old two', 40)]
    const keys = ns.versions(room)
    for (const record of old) await raw.hset(keys.legacy, record.id, Buffer.from(encodeVersionValue(record)))
    assert.deepEqual(await a.listVersions(room), old.map((r) => ({ id: r.id, name: r.name, createdAt: r.createdAt, bytes: r.update.byteLength })))
    assert.equal(await raw.exists(keys.legacy), 0)
    assert.equal(await raw.get(keys.bytes), '70')
    for (const record of old) assert.deepEqual(await b.getVersion(room, record.id), record)
    await a.deleteVersions(room)
    assert.equal(await raw.exists(keys.ids, keys.info, keys.bytes, keys.contentPrefix + (old[0] as VersionRecord).id), 0)
  })

  it('onEpoch tells the epoch at the first connection and the new one after FLUSHALL', async () => {
    const epochs: string[] = []
    const events = new EventEmitter()
    const c = new RedisSharedState({ redisUrl: redis.url, instanceId: 'C', logger: silent, epochCheckMs: 50 })
    try {
      c.onEpoch((epoch) => {
        epochs.push(epoch)
        events.emit('epoch')
      })
      await once(events, 'epoch', 5_000)
      assert.equal(epochs[0], await raw.get('weft:epoch'))
      await raw.flushall()
      await once(events, 'epoch', 5_000)
      assert.equal(epochs.length, 2)
      assert.notEqual(epochs[1], epochs[0])
      assert.equal(epochs[1], await raw.get('weft:epoch'))
    } finally {
      await c.close()
    }
  })

  describe('ReplicatedVersions', () => {
    it('a version is stored in both copies; one refused by the cluster-wide limits is stored in neither', async () => {
      const local = new MemoryStore()
      const replicas = new ReplicatedVersions({ local, shared: a, republishBytesPerSecond: 1 << 20, logger: silent })
      const kept = version(1, 'kept', 10)
      await replicas.putVersion('both', kept, { maxCount: 1, maxBytes: 100 })
      assert.deepEqual(await local.getVersion('both', kept.id), kept)
      assert.deepEqual(await b.getVersion('both', kept.id), kept)
      const refused = version(2, 'refused', 10)
      await assert.rejects(replicas.putVersion('both', refused, { maxCount: 1, maxBytes: 100 }), VersionLimitError)
      assert.equal(await local.getVersion('both', refused.id), null)
      // The local write failing takes the version out of Redis again: what was not acknowledged is nowhere.
      await local.close()
      const unstored = version(3, 'unstored', 10)
      await assert.rejects(replicas.putVersion('both-2', unstored), { code: 'PERSIST_STORE_CLOSED' })
      assert.equal(await b.getVersion('both-2', unstored.id), null)
    })

    it('republish puts back what Redis lacks, only that, at the configured rate; reads fall back to the local copy meanwhile', async () => {
      const local = new MemoryStore()
      // The pace's waits are counted, not timed: what they add up to is what a slow machine cannot change.
      const waitsMs: number[] = []
      const wait = async (ms: number): Promise<void> => {
        waitsMs.push(ms)
      }
      const replicas = new ReplicatedVersions({ local, shared: a, republishBytesPerSecond: 65_536, logger: silent, wait })
      const records = Array.from({ length: 4 }, (_, i) => version(i, `r${i}`, 16_384))
      for (const record of records) await replicas.putVersion('replicated', record)
      await raw.flushall()
      assert.deepEqual(await b.listVersions('replicated'), [])
      // Served from the local copy until re-published.
      assert.deepEqual((await replicas.listVersions('replicated')).map((v) => v.id), records.map((r) => r.id))
      assert.deepEqual(await replicas.getVersion('replicated', (records[2] as VersionRecord).id), records[2])
      // One is back already (as if another path had put it): it is not sent again.
      await b.putVersion('replicated', records[0] as VersionRecord)
      const result = await withDeadline(replicas.republish(), 'republish', 10_000)
      assert.deepEqual(result, { versions: 3, bytes: 3 * 16_384 })
      // 16 KiB at 64 KiB/s: a quarter of a second after each of the three sent.
      assert.deepEqual(waitsMs, [250, 250, 250])
      assert.deepEqual((await b.listVersions('replicated')).map((v) => v.id), records.map((r) => r.id))
      for (const record of records) assert.deepEqual(await b.getVersion('replicated', record.id), record)
      assert.deepEqual(await replicas.republish(), { versions: 0, bytes: 0 })
    })

    it('close ends a re-publication in the middle of a pace\'s wait', async () => {
      const local = new MemoryStore()
      // A rate at which the wait after the first version would last hours.
      const replicas = new ReplicatedVersions({ local, shared: a, republishBytesPerSecond: 1, logger: silent })
      const records = Array.from({ length: 2 }, (_, i) => version(i, `c${i}`, 16_384))
      for (const record of records) await local.putVersion('closing', record)
      await raw.flushall()
      const republishing = replicas.republish()
      await eventually(async () => (await b.listVersions('closing')).length === 1, 'the first version re-published')
      replicas.close()
      assert.deepEqual(await withDeadline(republishing, 'the re-publication to end at close', 10_000), { versions: 1, bytes: 16_384 })
    })

    it('syncEpoch re-publishes once per epoch: not again for the epoch the local store was published into', async () => {
      const local = new MemoryStore()
      // Empty at the start: syncEpoch also copies what Redis holds into the local store.
      await raw.flushall()
      const replicas = new ReplicatedVersions({ local, shared: a, republishBytesPerSecond: 1 << 24, logger: silent })
      const record = version(1, 'epoch', 10)
      await local.putVersion('epochs', record)
      assert.deepEqual(await replicas.syncEpoch('epoch-1'), { versions: 1, bytes: 10 })
      assert.equal(await local.readPublishedEpoch(), 'epoch-1')
      assert.equal(await replicas.syncEpoch('epoch-1'), null)
      await raw.flushall()
      assert.deepEqual(await replicas.syncEpoch('epoch-2'), { versions: 1, bytes: 10 })
      assert.deepEqual(await b.getVersion('epochs', record.id), record)
    })
  })
})
