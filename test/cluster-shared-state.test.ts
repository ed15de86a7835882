import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import { RedisRelay, RedisSharedState, RedisUnavailableError, TicketExistsError, type RelayLogger } from '../cluster/index.js'
import { RedisNamespace } from '../cluster/keys.js'
import { deletionsLogKey, ticketKey } from '../cluster/shared-state.js'

const ns = new RedisNamespace()
import { newVersionId, type VersionRecord } from '../persistence/index.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { until } from './harness/wait.js'

const print = (level: string) => (obj: object, msg: string): void => console.log(JSON.stringify({ level, t: Date.now() % 100000, msg, ...obj }))
const logger: RelayLogger = process.env.WEFT_TEST_LOG === undefined
  ? { debug() {}, info() {}, warn() {}, error() {} }
  : { debug: print('debug'), info: print('info'), warn: print('warn'), error: print('error') }

/** One instance's shared state and every room its onRoomDeleted listener heard, in order. */
class Instance {
  readonly state: RedisSharedState
  readonly deleted: string[] = []

  constructor(readonly id: string, url: string) {
    this.state = new RedisSharedState({ redisUrl: url, instanceId: id, logger })
    this.state.onRoomDeleted((room) => this.deleted.push(room))
  }

  count(room: string): number {
    return this.deleted.filter((r) => r === room).length
  }
}

const version = (createdAt: number, name: string, update: number[]): VersionRecord => ({ id: newVersionId(createdAt), name, createdAt, update: Uint8Array.from(update) })

/** `:1\r\n` → 1: the harness answers raw RESP. */
const integer = (reply: string): number => Number(reply.slice(1).trim())

/**
 * Deletes a barrier room from `from` and waits until every instance heard it. Pub/sub keeps the
 * order of one channel, so whatever was announced before has been delivered by then: a count
 * checked afterwards is final, without sleeping.
 */
async function barrier(from: Instance, all: Instance[]): Promise<void> {
  const room = `barrier-${newVersionId()}`
  await from.state.deleteRoom(room)
  await until(() => all.every((instance) => instance.count(room) === 1), `every instance heard ${room}`)
}

describe('RedisSharedState', () => {
  let redis: RedisProcess
  let a: Instance
  let b: Instance

  before(async () => {
    redis = await startRedis()
    a = new Instance('A', redis.url)
    b = new Instance('B', redis.url)
  })

  after(async () => {
    await Promise.all([a.state.close(), b.state.close()])
    await redis.dispose()
  })

  it('versions put on one instance are visible from another', async () => {
    // The first calls run right after construction: they wait for the first connection.
    const later = version(2_000, 'second', [4, 5, 6, 7])
    const earlier = version(1_000, 'first ✓', [1, 2, 3])
    await a.state.putVersion('doc', later)
    await a.state.putVersion('doc', earlier)
    assert.deepEqual(await b.state.listVersions('doc'), [
      { id: earlier.id, name: 'first ✓', createdAt: 1_000, bytes: 3 },
      { id: later.id, name: 'second', createdAt: 2_000, bytes: 4 },
    ])
    const got = await b.state.getVersion('doc', later.id)
    assert.deepEqual(got, later)
    assert.equal(Buffer.isBuffer(got?.update), false, 'a plain Uint8Array, as the local stores return')
    assert.equal(await b.state.getVersion('doc', newVersionId()), null)
    assert.equal(await b.state.getVersion('doc', 'not/an id'), null)
    assert.equal(await b.state.getVersion('doc2', later.id), null)
    assert.deepEqual(await b.state.listVersions('never'), [])
    assert.equal(integer(await redis.command('ZCARD', ns.versions('doc').ids)), 2)
    await b.state.deleteVersions('doc')
    assert.deepEqual(await a.state.listVersions('doc'), [])
  })

  it('rooms that are prefixes of each other keep their versions apart', async () => {
    const rooms = ['a', 'ab', 'a:b', 'a}', '{a', '文档/1:2']
    const records = new Map(rooms.map((room, i) => [room, version(i, room, [i])]))
    for (const [room, record] of records) await a.state.putVersion(room, record)
    for (const [room, record] of records) {
      assert.deepEqual(await b.state.listVersions(room), [{ id: record.id, name: room, createdAt: record.createdAt, bytes: 1 }])
    }
    await Promise.all(rooms.map((room) => a.state.deleteVersions(room)))
  })

  it('refuses a malformed version id and an unstorable room name before touching Redis', async () => {
    await assert.rejects(a.state.putVersion('doc', { id: 'a b', name: 'n', createdAt: 1, update: new Uint8Array() }), RangeError)
    await assert.rejects(a.state.listVersions('bad\u0000room'), { code: 'PERSIST_INVALID_ROOM_NAME' })
  })

  it('a ticket issued on one instance is redeemed once on another', async () => {
    await a.state.issueTicket('t-1', '{"sub":"u1"}', 30_000)
    await assert.rejects(b.state.issueTicket('t-1', 'other', 30_000), TicketExistsError)
    const [first, second] = await Promise.all([b.state.redeemTicket('t-1'), a.state.redeemTicket('t-1')])
    assert.deepEqual([first, second].sort(), [null, '{"sub":"u1"}'].sort(), 'exactly one of two concurrent redeems wins')
    assert.equal(await b.state.redeemTicket('t-1'), null)
    assert.equal(await b.state.redeemTicket('never-issued'), null)
    assert.equal(await b.state.redeemTicket(''), null)
  })

  it('the key of a ticket does not contain the ticket', async () => {
    await a.state.issueTicket('secret-ticket', 'p', 30_000)
    const keys = await redis.command('KEYS', 'weft:ticket:*')
    assert.ok(keys.includes(ticketKey(ns, 'secret-ticket').slice('weft:ticket:'.length)))
    assert.ok(!keys.includes('secret-ticket'))
    assert.equal(await b.state.redeemTicket('secret-ticket'), 'p')
  })

  it('an expired ticket cannot be redeemed', async () => {
    await a.state.issueTicket('short', 'p', 100)
    const ttl = integer(await redis.command('PTTL', ticketKey(ns, 'short')))
    assert.ok(ttl > 0 && ttl <= 100, `PTTL ${ttl}`)
    let exists = 1
    const deadline = Date.now() + 5_000
    while (exists === 1) {
      assert.ok(Date.now() < deadline, 'ticket key still exists 5 s after a 100 ms ttl')
      await new Promise((resolve) => setTimeout(resolve, 20))
      exists = integer(await redis.command('EXISTS', ticketKey(ns, 'short')))
    }
    assert.equal(await b.state.redeemTicket('short'), null)
    await assert.rejects(a.state.issueTicket('bad-ttl', 'p', 0), RangeError)
  })

  it('deleteRoom deletes the relay\'s keys and the versions, and every instance hears it once', async () => {
    const room = 'doomed {room}'
    const relay = new RedisRelay({ redisUrl: redis.url, instanceId: 'R', logger, compactAfterEntries: 3 })
    try {
      const doc = new Y.Doc()
      await relay.joinRoom(room, null, { onUpdate() {}, onAwareness() {}, onInstanceGone() {}, localAwareness: () => [], localState: () => Y.encodeStateAsUpdate(doc) })
      doc.on('update', (update: Uint8Array) => relay.publishUpdate(room, update))
      // One turn each: the relay merges a room's updates of one turn into one entry.
      for (let i = 0; i < 6; i++) {
        doc.getArray<number>('a').push([i])
        await new Promise((resolve) => setImmediate(resolve))
      }
      const keys = ns.room(room)
      await until(() => relay.stats().published === 6, 'six updates published')
      const existing = async (): Promise<number> => integer(await redis.command('EXISTS', keys.log, keys.doc, keys.last))
      // The compaction after the third entry writes the snapshot; wait for it.
      const deadline = Date.now() + 5_000
      while ((await existing()) !== 3) {
        assert.ok(Date.now() < deadline, 'relay wrote log, doc and last')
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      await b.state.putVersion(room, version(1, 'v', [1]))

      await a.state.deleteRoom(room)
      assert.equal(a.count(room), 1, 'the sender has heard its own deletion when deleteRoom resolves')
      const versions = ns.versions(room)
      assert.equal(integer(await redis.command('EXISTS', keys.log, keys.doc, keys.last, versions.ids, versions.info, versions.bytes)), 0)
      assert.equal((await redis.command('KEYS', `${versions.contentPrefix}*`)).trim(), '*0')
      await barrier(b, [a, b])
      assert.equal(a.count(room), 1)
      assert.equal(b.count(room), 1)
    } finally {
      await relay.close()
    }
  })

  it('a deletion announced while an instance\'s subscriber reconnects still reaches it once', async () => {
    const list = await redis.command('CLIENT', 'LIST')
    const id = /id=(\d+) [^\n]*name=weft:B:shared-sub/.exec(list)?.[1]
    assert.ok(id !== undefined, 'B\'s subscriber connection is listed')
    await redis.command('CLIENT', 'KILL', 'ID', id)
    await a.state.deleteRoom('while-away')
    await barrier(a, [a, b])
    assert.equal(a.count('while-away'), 1)
    assert.equal(b.count('while-away'), 1)
    assert.ok(integer(await redis.command('XLEN', deletionsLogKey(ns))) >= 1)
  })

  it('a throwing listener does not stop the others or the deletion', async () => {
    const heard: string[] = []
    a.state.onRoomDeleted(() => {
      throw new Error('listener bug')
    })
    a.state.onRoomDeleted((room) => heard.push(room))
    await b.state.deleteRoom('with-bad-listener')
    await until(() => heard.includes('with-bad-listener'), 'the listener after the throwing one ran')
  })

  it('while Redis is down every call rejects with "Redis is unavailable"; all works again after a restart', async () => {
    await redis.stop()
    const unavailable = (err: unknown): boolean => err instanceof RedisUnavailableError && /Redis is unavailable/.test(err.message) && err.code === 'CLUSTER_REDIS_UNAVAILABLE'
    // The connections notice the stop asynchronously; each call must still reject, either way.
    await assert.rejects(a.state.putVersion('doc', version(1, 'v', [1])), unavailable)
    await assert.rejects(a.state.listVersions('doc'), unavailable)
    await assert.rejects(b.state.getVersion('doc', newVersionId()), unavailable)
    await assert.rejects(b.state.deleteVersions('doc'), unavailable)
    await assert.rejects(a.state.issueTicket('t', 'p', 30_000), unavailable)
    await assert.rejects(b.state.redeemTicket('t'), unavailable)
    await assert.rejects(a.state.deleteRoom('doc'), unavailable)
    assert.equal(a.count('doc'), 0, 'a deletion that failed is not announced')

    await redis.restart()
    // Until each instance has reconnected, its calls keep failing the same clear way.
    for (const instance of [a, b]) {
      const deadline = Date.now() + 10_000
      while (true) {
        try {
          assert.equal(await instance.state.redeemTicket('probe'), null)
          break
        } catch (err) {
          assert.ok(unavailable(err), `unexpected error: ${String(err)}`)
          assert.ok(Date.now() < deadline, `${instance.id} back within 10 s of the restart`)
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      }
    }
    await a.state.issueTicket('after-restart', 'p', 30_000)
    assert.equal(await b.state.redeemTicket('after-restart'), 'p')
    const record = version(5, 'after', [5])
    await b.state.putVersion('doc', record)
    assert.deepEqual(await a.state.getVersion('doc', record.id), record)
    // Both subscribers are back: deletions reach both instances again.
    await barrier(b, [a, b])
  })

  it('close is idempotent and every call rejects afterwards', async () => {
    const c = new Instance('C', redis.url)
    await c.state.putVersion('doc-c', version(1, 'v', [1]))
    await Promise.all([c.state.close(), c.state.close()])
    await c.state.close()
    await assert.rejects(c.state.listVersions('doc-c'), RedisUnavailableError)
    await assert.rejects(c.state.deleteRoom('doc-c'), RedisUnavailableError)
    assert.equal((await a.state.listVersions('doc-c')).length, 1)
  })
})
