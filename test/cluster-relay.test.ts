import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import { CLUSTER_DEFAULTS, RedisRelay, type RedisRelayOptions, type RelayHealth } from '../cluster/index.js'
import type { RelayMessage } from '../cluster/relay-message.js'
import type { AwarenessEntry } from '../protocol/index.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { eventually, until, withDeadline } from './harness/wait.js'

const print = (level: string) => (obj: object, msg: string): void => console.log(JSON.stringify({ level, t: Date.now() % 100000, msg, ...obj }))
const silent = process.env.WEFT_TEST_LOG === undefined
  ? { debug() {}, info() {}, warn() {}, error() {} }
  : { debug: print('debug'), info: print('info'), warn: print('warn'), error: print('error') }
const RELAYED = Symbol('relayed')

/** One instance: a relay and, per room, a real Y.Doc plus the awareness it heard, as the server keeps them. */
class Peer {
  readonly relay: RedisRelay
  readonly docs = new Map<string, Y.Doc>()
  /** room → instance → clientId → state */
  readonly remote = new Map<string, Map<string, Map<number, string>>>()
  readonly local = new Map<string, AwarenessEntry[]>()
  readonly healthLog: boolean[] = []
  /** Scripts Redis answered (EVALSHA: the periodic check, and an edit's publish): counts checks while nothing is edited. */
  scriptsAnswered = 0
  /** Per instance this peer dropped (onInstanceGone): `scriptsAnswered` then. */
  readonly goneAfterScripts = new Map<string, number>()

  constructor(readonly id: string, url: string, options: Partial<RedisRelayOptions> = {}) {
    const log = silent
    const onCommand = (name: string): void => {
      if (name === 'evalsha') this.scriptsAnswered++
    }
    this.relay = new RedisRelay({ redisUrl: url, instanceId: id, logger: { debug: (o, m) => log.debug({ id, ...o }, m), info: (o, m) => log.info({ id, ...o }, m), warn: (o, m) => log.warn({ id, ...o }, m), error: (o, m) => log.error({ id, ...o }, m) }, onCommand, ...options })
    this.relay.on('health', (health: RelayHealth) => this.healthLog.push(health.up))
  }

  async join(room: string, doc = new Y.Doc()): Promise<Y.Doc> {
    this.docs.set(room, doc)
    this.remote.set(room, new Map())
    const state = await this.relay.joinRoom(room, Y.encodeStateAsUpdate(doc), {
      onUpdate: (update) => Y.applyUpdate(doc, update, RELAYED),
      onAwareness: (entries, instance) => {
        const states = this.remote.get(room)?.get(instance) ?? new Map<number, string>()
        for (const entry of entries) {
          if (entry.state === 'null') states.delete(entry.clientId)
          else states.set(entry.clientId, entry.state)
        }
        this.remote.get(room)?.set(instance, states)
      },
      onInstanceGone: (instance) => {
        this.goneAfterScripts.set(instance, this.scriptsAnswered)
        this.remote.get(room)?.delete(instance)
      },
      localAwareness: () => this.local.get(room) ?? [],
      localState: () => Y.encodeStateAsUpdate(doc),
    })
    if (state !== null) Y.applyUpdate(doc, state, RELAYED)
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin !== RELAYED) this.relay.publishUpdate(room, update)
    })
    return doc
  }

  edit(room: string, text: string): void {
    const doc = this.docs.get(room) as Y.Doc
    doc.getArray<string>('log').push([text])
  }

  setAwareness(room: string, clientId: number, clock: number, state: object | null): void {
    const entry = { clientId, clock, state: JSON.stringify(state) }
    this.local.set(room, state === null ? [] : [entry])
    this.relay.publishAwareness(room, [entry])
  }

  remoteStates(room: string, instance: string): number {
    return this.remote.get(room)?.get(instance)?.size ?? 0
  }

  canonical(room: string): Buffer {
    return canonical(Y.encodeStateAsUpdate(this.docs.get(room) as Y.Doc))
  }

  length(room: string): number {
    return this.docs.get(room)?.getArray('log').length ?? 0
  }
}

function canonical(update: Uint8Array): Buffer {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  return Buffer.from(Y.encodeStateAsUpdate(doc))
}

function converged(peers: Peer[], room: string): boolean {
  const first = peers[0]?.canonical(room) as Buffer
  return peers.every((peer) => peer.canonical(room).equals(first))
}

async function commandStats(redis: RedisProcess): Promise<Map<string, number>> {
  const text = await redis.command('INFO', 'commandstats')
  const calls = new Map<string, number>()
  for (const match of text.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) calls.set(match[1] as string, Number(match[2]))
  return calls
}

/** Kills the Redis connections of one instance from the server side (CLIENT KILL), as a network cut would. */
async function cutConnections(redis: RedisProcess, instanceId: string): Promise<number> {
  const list = await redis.command('CLIENT', 'LIST')
  let killed = 0
  for (const line of list.split('\n')) {
    const id = /\bid=(\d+)/.exec(line)?.[1]
    const name = /\bname=(\S*)/.exec(line)?.[1]
    if (id !== undefined && name?.startsWith(`weft:${instanceId}:`) === true) {
      await redis.command('CLIENT', 'KILL', 'ID', id)
      killed++
    }
  }
  return killed
}

/**
 * `edits` scripts in Redis's counts since RESETSTAT, besides the periodic checks that sent one in
 * the window. A check goes on its relay's own connection, so one sent as the window opened or
 * closed can reach Redis on the other side of RESETSTAT or INFO: the EVALSHA count may be one
 * off at either end. The PUBLISH count is exact (a check publishes nothing): one per script.
 */
function assertScripts(stats: Map<string, number>, edits: number, checks: number, what: string): void {
  const evalsha = stats.get('evalsha') ?? 0
  assert.ok(Math.abs(evalsha - (edits + checks)) <= 1, `${what}: ${evalsha} EVALSHA with ${checks} periodic checks in the window`)
  assert.equal(stats.get('publish') ?? 0, edits, `${what}: the PUBLISH inside the script, once each`)
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
/** The relay merges a room's updates of one task (the microtasks after it included); edits after this are another burst. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('RedisRelay against a real redis-server', () => {
  let redis: RedisProcess
  const peers: Peer[] = []
  /** Periodic checks that sent a command (an EVALSHA), by every peer: one can fall in a test's window on a slow machine. */
  const checksSent = (): number => peers.reduce((sum, p) => sum + p.relay.stats().checks, 0)
  const peer = async (id: string, options: Partial<RedisRelayOptions> = {}): Promise<Peer> => {
    const p = new Peer(id, redis.url, options)
    peers.push(p)
    await until(() => p.relay.health().up, `${id} up`, 5000)
    return p
  }

  before(async () => {
    redis = await startRedis()
  })
  after(async () => {
    await Promise.all(peers.map((p) => p.relay.close()))
    await redis.dispose()
  })

  it('relays live both ways, ignores its own messages, and sends one EVALSHA per edit', async () => {
    const a = await peer('live-a')
    const b = await peer('live-b')
    await a.join('live')
    await b.join('live')
    const checksBefore = checksSent()
    const scriptsBefore = a.scriptsAnswered + b.scriptsAnswered
    await redis.command('CONFIG', 'RESETSTAT')
    const commandsBefore = a.relay.stats().commands + b.relay.stats().commands
    const started = Date.now()
    for (let i = 0; i < 20; i++) {
      a.edit('live', `a${i}`)
      b.edit('live', `b${i}`)
      await nextTurn()
    }
    await until(() => a.length('live') === 40 && b.length('live') === 40, 'both sides have 40 items', 5000)
    const elapsed = Date.now() - started
    assert.ok(converged([a, b], 'live'))
    const checksInWindow = checksSent() - checksBefore
    await until(() => a.scriptsAnswered + b.scriptsAnswered - scriptsBefore >= 40 + checksInWindow, 'every script answered', 5000)
    const stats = await commandStats(redis)
    assertScripts(stats, 40, checksInWindow, 'one EVALSHA per edit')
    assert.equal(stats.get('eval') ?? 0, 0)
    assert.equal(a.relay.stats().published, 20)
    assert.equal(a.relay.stats().received, 20, 'own messages are not applied back')
    assert.equal(b.relay.stats().received, 20)
    const perEdit = (a.relay.stats().commands + b.relay.stats().commands - commandsBefore - checksInWindow) / 40
    // Heartbeats written alone may fall into the window too (the checks are taken out), so allow a little over 1.
    assert.ok(perEdit < 1.5, `commands per edit ${perEdit}, besides ${checksInWindow} periodic checks`)
    console.log(`# live: 40 edits in ${elapsed} ms; client commands per edit ${perEdit.toFixed(2)}; redis evalsha=${stats.get('evalsha')}`)
  })

  it('sends a burst of edits made in one turn as one merged update: one EVALSHA for the burst', async () => {
    const a = await peer('burst-a')
    const b = await peer('burst-b')
    await a.join('burst')
    await b.join('burst')
    const checksBefore = checksSent()
    await redis.command('CONFIG', 'RESETSTAT')
    const publishedBefore = a.relay.stats().published
    for (let i = 0; i < 50; i++) a.edit('burst', `e${i}`)
    await until(() => b.length('burst') === 50, 'b has the 50 edits', 5000)
    assert.ok(converged([a, b], 'burst'))
    const stats = await commandStats(redis)
    assertScripts(stats, 1, checksSent() - checksBefore, 'one EVALSHA for the burst')
    assert.equal(a.relay.stats().published - publishedBefore, 1)
  })

  it('sends a burst on to Redis before the task that made it ends: before any I/O callback, before the room fans it out', async () => {
    const a = await peer('task-a')
    const b = await peer('task-b')
    await a.join('task')
    await b.join('task')
    await redis.command('CONFIG', 'RESETSTAT')
    const before = a.relay.stats().commands
    for (let i = 0; i < 30; i++) a.edit('task', `e${i}`)
    assert.equal(a.relay.stats().commands, before, 'nothing is sent while the burst is still being made')
    // The microtasks queued by the edits run now; no timer, no I/O callback (and no room
    // broadcast, which a server queues after the publish) can run before this line.
    await Promise.resolve()
    assert.equal(a.relay.stats().commands - before, 1, 'the one command of the burst is already on its way')
    await until(() => b.length('task') === 30, 'b has the 30 edits', 5000)
    assert.ok(converged([a, b], 'task'))
    const stats = await commandStats(redis)
    assert.equal(stats.get('xadd'), 1, 'one stream entry for the burst')
    a.edit('task', 'after')
    await until(() => b.length('task') === 31, 'a later task is a burst of its own', 5000)
    assert.equal((await commandStats(redis)).get('xadd'), 2)
  })

  it('heals lost messages: a gap before a later message at once, a lost final message by the periodic check', async () => {
    let drop = false
    const dropUpdates = (_room: string, message: RelayMessage): boolean => drop && message.kind === 'update'
    const a = await peer('gap-a')
    const b = await peer('gap-b', { faults: { dropMessage: dropUpdates } })
    await a.join('gap')
    await b.join('gap')
    a.edit('gap', 'first')
    await until(() => b.length('gap') === 1, 'first edit relayed', 5000)
    drop = true
    a.edit('gap', 'lost-1')
    await nextTurn()
    a.edit('gap', 'lost-2')
    await until(() => b.relay.stats().commands > 0 && a.relay.stats().published === 3, 'published', 5000)
    await sleep(100)
    assert.equal(b.length('gap'), 1, 'b really lost the two messages')
    drop = false
    a.edit('gap', 'next')
    await until(() => b.length('gap') === 4, 'gap healed when the next message names its prev', 5000)
    assert.ok(b.relay.stats().healed >= 2, `healed ${b.relay.stats().healed}`)
    // The final message lost: nothing follows it, only the check of `last` can notice.
    drop = true
    a.edit('gap', 'final')
    await sleep(50)
    drop = false
    const lostAt = Date.now()
    await until(() => b.length('gap') === 5, 'lost final message healed by the check', 5000)
    console.log(`# gap: lost final message healed after ${Date.now() - lostAt} ms`)
    assert.ok(converged([a, b], 'gap'))
  })

  it('gives a late joiner the whole document, also after compaction trimmed the stream; the compactions ride on publishes', async () => {
    // No compaction is written alone within this test: each must ride on a publish.
    const a = await peer('late-a', { compactAfterEntries: 20, compactWaitMs: 60_000 })
    await a.join('late')
    const commandsBefore = a.relay.stats().commands
    const checksBefore = a.relay.stats().checks
    // One edit per publish's reply, as a room edited at a human pace publishes: a compaction's
    // write needs a publish after its read.
    for (let i = 0; i < 75; i++) {
      a.edit('late', `e${i}`)
      await until(() => a.relay.stats().published === i + 1, `edit ${i} published`, 5000)
    }
    const version = Number(/\$\d+\r?\n(\d+)/.exec(await redis.command('HGET', roomKey('late', 'doc'), 'v'))?.[1])
    assert.ok(version >= 2, `the snapshot was written ${version} times`)
    assert.equal(a.relay.stats().compacted, version, 'every write counted')
    const xlen = Number(/:(\d+)/.exec(await redis.command('XLEN', roomKey('late', 'log')))?.[1])
    assert.ok(xlen < 20, `stream trimmed to ${xlen} entries`)
    // Each compaction's read came back with a publish, and its write went with the next one.
    assert.equal(a.relay.stats().commands - commandsBefore - (a.relay.stats().checks - checksBefore), 75, 'one command per edit, compactions included')
    const c = await peer('late-c')
    await c.join('late')
    assert.equal(c.length('late'), 75)
    assert.ok(converged([a, c], 'late'))
  })

  it('writes a compaction alone when its room goes quiet before the next publish', async () => {
    const a = await peer('quiet-a', { compactAfterEntries: 5, compactWaitMs: 100 })
    await a.join('quiet')
    for (let i = 0; i < 5; i++) {
      a.edit('quiet', `e${i}`)
      await nextTurn()
    }
    await until(() => a.relay.stats().published === 5, 'all published', 5000)
    // The fifth publish brought the room whole; nothing follows it, so the write goes alone.
    await eventually(async () => (await redis.command('XLEN', roomKey('quiet', 'log'))).startsWith(':0'), 'the stream folded into the snapshot', 5000)
    const last = await redis.command('GET', roomKey('quiet', 'last'))
    const upto = await redis.command('HGET', roomKey('quiet', 'doc'), 'upto')
    assert.equal(upto, last, 'the snapshot covers the last entry')
    const c = await peer('quiet-c')
    await c.join('quiet')
    assert.equal(c.length('quiet'), 5)
    assert.ok(converged([a, c], 'quiet'))
  })

  it('never writes a compaction back into a room deleted since its read', async () => {
    const compacted: Array<{ applied: boolean }> = []
    const logger = { ...silent, debug: (obj: object, msg: string) => void (msg === 'room stream compacted' && compacted.push(obj as { applied: boolean })) }
    const a = await peer('gone-a', { compactAfterEntries: 5, compactWaitMs: 300, logger })
    await a.join('gone')
    for (let i = 0; i < 5; i++) {
      a.edit('gone', `e${i}`)
      await nextTurn()
    }
    await until(() => a.relay.stats().published === 5, 'all published', 5000)
    // The fifth publish brought the room whole, and its compaction waits for a next publish; the
    // room is deleted meanwhile, as deleteRoom (or the retention) deletes it.
    assert.equal(compacted.length, 0, 'not written yet')
    await redis.command('DEL', roomKey('gone', 'log'), roomKey('gone', 'doc'), roomKey('gone', 'last'))
    await until(() => compacted.length === 1, 'the compaction was written alone', 5000)
    assert.equal(compacted[0]?.applied, false, 'refused')
    assert.equal((await redis.command('EXISTS', roomKey('gone', 'log'), roomKey('gone', 'doc'), roomKey('gone', 'last'))).trim(), ':0')
  })

  it('keeps a compaction whose write failed for the next publish, which writes it once Redis takes writes again', async () => {
    const logged: Array<{ msg: string; applied?: boolean }> = []
    const logger = { ...silent, debug: (obj: object, msg: string) => void (msg.startsWith('room stream compact') && logged.push({ msg, ...obj })) }
    const kept = (): number => logged.filter((entry) => entry.msg === 'room stream compaction kept for the next publish').length
    const a = await peer('kept-a', { compactAfterEntries: 5, compactWaitMs: 300, logger })
    await a.join('kept')
    for (let i = 0; i < 5; i++) {
      a.edit('kept', `e${i}`)
      await nextTurn()
    }
    await until(() => a.relay.stats().published === 5, 'all published', 5000)
    // Redis refuses every write (OOM) while the fifth publish's compaction waits to go alone.
    await redis.command('CONFIG', 'SET', 'maxmemory', '1')
    try {
      await until(() => logged.length > 0, 'the compaction written alone', 5000)
      assert.equal(kept(), 1, `refused on its way, kept: ${JSON.stringify(logged)}`)
      // The next publish carries it, and fails too: kept again, with the update held.
      a.edit('kept', 'e5')
      await until(() => kept() === 2, 'the carrying publish failed', 5000)
    } finally {
      await redis.command('CONFIG', 'SET', 'maxmemory', '0')
    }
    // The held update goes again, with the compaction.
    await until(() => logged.some((entry) => entry.applied === true), 'the kept compaction written', 10_000)
    assert.equal(a.relay.stats().compacted, 1)
    const xlen = Number(/:(\d+)/.exec(await redis.command('XLEN', roomKey('kept', 'log')))?.[1])
    assert.equal(xlen, 1, 'only the update after the snapshot is left in the stream')
    const c = await peer('kept-c')
    await c.join('kept')
    assert.equal(c.length('kept'), 6)
    assert.ok(converged([a, c], 'kept'))
  })

  it('relays awareness and removes a killed instance within 5 s', async () => {
    const a = await peer('aw-a')
    const b = await peer('aw-b')
    const c = await peer('aw-c')
    await a.join('aw')
    await b.join('aw')
    await c.join('aw')
    b.setAwareness('aw', 11, 1, { user: 'b' })
    c.setAwareness('aw', 12, 1, { user: 'c' })
    await until(() => a.remoteStates('aw', 'aw-b') === 1 && a.remoteStates('aw', 'aw-c') === 1, 'awareness relayed', 5000)
    // A newcomer gets the states already there (its join asks the others to re-send).
    const d = await peer('aw-d')
    await d.join('aw')
    await until(() => d.remoteStates('aw', 'aw-b') === 1 && d.remoteStates('aw', 'aw-c') === 1, 'newcomer got awareness', 5000)

    b.relay.abort()
    const killedAt = Date.now()
    // Issue #6, no ghost after 5 s, counted instead of timed: b's heartbeat key outlives b's last
    // beat by instanceTtlMs, and the others drop b at their first check after it expired. A check
    // in flight when it expired answers too, so at most two checks: the settings fit the 5 s.
    assert.ok(CLUSTER_DEFAULTS.instanceTtlMs + 2 * CLUSTER_DEFAULTS.checkMs <= 5000)
    await eventually(async () => (await redis.command('EXISTS', b.relay.namespace.instance('aw-b'))).startsWith(':0'), "b's heartbeat key to expire", 20_000)
    const expiredAfter = [a.scriptsAnswered, d.scriptsAnswered]
    await until(() => a.remoteStates('aw', 'aw-b') === 0 && d.remoteStates('aw', 'aw-b') === 0, 'killed instance removed', 20_000)
    for (const [i, p] of [a, d].entries()) {
      const checks = (p.goneAfterScripts.get('aw-b') ?? Infinity) - (expiredAfter[i] as number)
      assert.ok(checks <= 2, `${p.id} dropped b ${checks} checks after b's heartbeat key expired`)
    }
    console.log(`# awareness: killed instance removed after ${Date.now() - killedAt} ms`)
    assert.equal(a.remoteStates('aw', 'aw-c'), 1, 'the live instance stays')
  })

  it('removes a closed instance at its goodbye, without waiting for a check', async () => {
    // Checks and heartbeats an hour apart: within this test only the goodbye can remove it (a
    // check would too, since close deletes the heartbeat key, so with 1 s checks a lost goodbye went unnoticed).
    const hourly = { heartbeatMs: 3_600_000, checkMs: 3_600_000, instanceTtlMs: 7_200_000 }
    const a = await peer('bye-a', hourly)
    const c = await peer('bye-c', hourly)
    await a.join('bye')
    await c.join('bye')
    c.setAwareness('bye', 12, 1, { user: 'c' })
    await until(() => a.remoteStates('bye', 'bye-c') === 1, 'awareness relayed', 5000)
    await c.relay.close()
    await until(() => a.remoteStates('bye', 'bye-c') === 0, 'the closed instance removed at its goodbye', 10_000)
  })

  it('publishes what a joining instance holds that the cluster lacks', async () => {
    const a = await peer('seed-a')
    const local = new Y.Doc()
    local.getArray<string>('log').push(['from local storage'])
    await a.join('seed', local)
    const b = await peer('seed-b')
    await b.join('seed')
    assert.deepEqual(b.docs.get('seed')?.getArray('log').toArray(), ['from local storage'])
    // Joining again with nothing new publishes nothing.
    const published = b.relay.stats().published
    await b.relay.leaveRoom('seed')
    await b.join('seed', b.docs.get('seed'))
    assert.equal(b.relay.stats().published, published)
  })

  it('survives a cut connection (CLIENT KILL) and catches up on what it missed', async () => {
    const a = await peer('cut-a')
    const b = await peer('cut-b')
    await a.join('cut')
    await b.join('cut')
    b.setAwareness('cut', 21, 1, { user: 'b' })
    await until(() => a.remoteStates('cut', 'cut-b') === 1, 'awareness relayed', 5000)
    assert.equal(await cutConnections(redis, 'cut-b'), 2)
    for (let i = 0; i < 5; i++) a.edit('cut', `while-cut-${i}`)
    b.edit('cut', 'b-while-cut')
    const cutAt = Date.now()
    await until(() => a.length('cut') === 6 && converged([a, b], 'cut'), 'converged after the cut', 5000)
    console.log(`# client kill: converged ${Date.now() - cutAt} ms after the cut`)
    assert.ok(b.healthLog.includes(false), 'b noticed')
    assert.equal(b.relay.health().up, true)
    // A short cut is not a death: b's awareness stays (its heartbeat key outlives the reconnect).
    await sleep(1500)
    assert.equal(a.remoteStates('cut', 'cut-b'), 1)
  })

  it('keeps room names with braces, colons, spaces and unicode apart', async () => {
    const names = ['{a}:b c', '{a}', 'a}:{b', 'zürich 🚀 文档', 'a', 'a:b', ' ']
    const a = await peer('names-a')
    const b = await peer('names-b')
    for (const name of names) {
      await a.join(name)
      await b.join(name)
    }
    names.forEach((name, i) => a.edit(name, `${i}:${name}`))
    await until(() => names.every((name) => b.length(name) === 1), 'every room relayed', 5000)
    names.forEach((name, i) => assert.deepEqual(b.docs.get(name)?.getArray('log').toArray(), [`${i}:${name}`]))
    const keys = await redis.command('KEYS', 'weft:{*}:log')
    for (const name of names) assert.ok(keys.includes(roomKey(name, 'log')), `${name} has its own stream`)
  })
})

describe('RedisRelay through Redis faults', () => {
  it('converges byte-identical after Redis is SIGKILLed and restarts empty, and re-seeds Redis', async () => {
    const redis = await startRedis()
    const peers: Peer[] = []
    try {
      const a = new Peer('kill-a', redis.url)
      const b = new Peer('kill-b', redis.url)
      peers.push(a, b)
      await until(() => a.relay.health().up && b.relay.health().up, 'up', 5000)
      await a.join('doc')
      await b.join('doc')
      for (let i = 0; i < 10; i++) {
        a.edit('doc', `a${i}`)
        b.edit('doc', `b${i}`)
      }
      await until(() => converged([a, b], 'doc') && a.length('doc') === 20, 'converged before the fault', 5000)
      await redis.kill()
      await until(() => !a.relay.health().up && !b.relay.health().up, 'health down', 5000)
      a.edit('doc', 'a-down')
      b.edit('doc', 'b-down')
      assert.ok(a.relay.stats().heldBytes > 0, 'held while down')
      await redis.restart()
      const restartedAt = Date.now()
      await until(() => a.length('doc') === 22 && b.length('doc') === 22 && converged([a, b], 'doc'), 'converged after restart', 5000)
      console.log(`# redis kill+restart empty: converged ${Date.now() - restartedAt} ms after restart`)
      assert.deepEqual(a.healthLog.slice(-2), [false, true])
      assert.equal(a.relay.stats().heldBytes, 0)
      // Redis holds the whole document again: a newcomer gets all of it.
      const c = new Peer('kill-c', redis.url)
      peers.push(c)
      await until(() => c.relay.health().up, 'c up', 5000)
      await c.join('doc')
      assert.equal(c.length('doc'), 22)
      assert.ok(converged([a, b, c], 'doc'))
    } finally {
      await Promise.all(peers.map((p) => p.relay.close()))
      await redis.dispose()
    }
  })

  it('converges after Redis was stopped for ~3 s while both instances kept editing', async () => {
    const redis = await startRedis()
    const peers: Peer[] = []
    try {
      // a waits ten minutes for Redis when a join must wait (joinWaitMs): a join that returns by a
      // generous deadline below did not wait.
      const a = new Peer('stop-a', redis.url, { joinWaitMs: 600_000 })
      const b = new Peer('stop-b', redis.url)
      peers.push(a, b)
      await until(() => a.relay.health().up && b.relay.health().up, 'up', 5000)
      await a.join('doc')
      await b.join('doc')
      a.edit('doc', 'before')
      await until(() => b.length('doc') === 1, 'relayed', 5000)
      await redis.stop()
      const stoppedAt = Date.now()
      let i = 0
      while (Date.now() - stoppedAt < 3000) {
        a.edit('doc', `a${i}`)
        b.edit('doc', `b${i}`)
        i++
        await sleep(100)
      }
      assert.equal(a.relay.health().up, false)
      // A room loaded while Redis is down is served from local state and reconciled later.
      const local = new Y.Doc()
      local.getArray<string>('log').push(['joined while down'])
      await withDeadline(a.join('offline', local), 'a join that does not wait for a Redis that was up before', 30_000)
      await redis.restart()
      const restartedAt = Date.now()
      await b.join('offline')
      await until(() => a.length('doc') === 1 + 2 * i && converged([a, b], 'doc'), 'converged after restart', 5000)
      await until(() => b.length('offline') === 1, 'room joined while down reached the cluster', 5000)
      console.log(`# redis stopped 3 s: ${2 * i} offline edits, converged ${Date.now() - restartedAt} ms after restart`)
    } finally {
      await Promise.all(peers.map((p) => p.relay.close()))
      await redis.dispose()
    }
  })

  it('converges byte-identical after random edits on 3 instances with faults at random moments', async () => {
    const redis = await startRedis()
    const peers: Peer[] = []
    let dropRate = 0
    const faults = { dropMessage: (): boolean => Math.random() < dropRate }
    try {
      for (const id of ['r-a', 'r-b', 'r-c']) peers.push(new Peer(id, redis.url, { faults, compactAfterEntries: 40 }))
      await until(() => peers.every((p) => p.relay.health().up), 'up', 5000)
      const rooms = ['r1', 'r{2}', 'r 3']
      for (const p of peers) for (const room of rooms) await p.join(room)
      const faultsSeen: string[] = []
      const started = Date.now()
      let step = 0
      while (Date.now() - started < 8000) {
        const p = peers[Math.floor(Math.random() * peers.length)] as Peer
        const room = rooms[Math.floor(Math.random() * rooms.length)] as string
        const doc = p.docs.get(room) as Y.Doc
        const text = doc.getText('t')
        if (text.length > 0 && Math.random() < 0.3) text.delete(Math.floor(Math.random() * text.length), 1)
        else text.insert(Math.floor(Math.random() * (text.length + 1)), String.fromCharCode(97 + (step % 26)))
        step++
        const dice = Math.random()
        if (dice < 0.01) {
          faultsSeen.push('cut')
          await cutConnections(redis, p.id)
        } else if (dice < 0.014) {
          faultsSeen.push('redis-restart')
          await redis.kill()
          await sleep(200 + Math.random() * 500)
          await redis.restart()
        } else if (dice < 0.03) {
          dropRate = dropRate > 0 ? 0 : 0.3
          faultsSeen.push(`drop=${dropRate}`)
        }
        await sleep(Math.random() * 15)
      }
      dropRate = 0
      const calmAt = Date.now()
      await until(() => rooms.every((room) => converged(peers, room)), 'all rooms converged', 5000)
      const compacted = peers.reduce((sum, p) => sum + p.relay.stats().compacted, 0)
      console.log(`# random: ${step} edits, ${compacted} compactions, faults ${faultsSeen.join(',') || 'none'}; converged ${Date.now() - calmAt} ms after the last fault`)
      assert.ok(compacted > 0, 'the streams were compacted meanwhile')
      // And Redis agrees: a newcomer reads the same document.
      const d = new Peer('r-d', redis.url)
      peers.push(d)
      await until(() => d.relay.health().up, 'd up', 5000)
      for (const room of rooms) {
        await d.join(room)
        // The last fault may be a Redis restart whose re-seeding (on the next epoch check, about a
        // second) is still under way: the newcomer converges on what arrives, within the 5 s bound.
        await until(() => d.canonical(room).equals(peers[0]?.canonical(room) as Buffer), `redis copy of ${room} to match`, 5000)
      }
    } finally {
      await Promise.all(peers.map((p) => p.relay.close()))
      await redis.dispose()
    }
  })
})

function roomKey(room: string, part: 'log' | 'doc' | 'last'): string {
  return `weft:{${Buffer.from(room, 'utf8').toString('base64url')}}:${part}`
}
