/**
 * Issue 19 (the cluster, front 5): under traffic the relay's timer sends nothing, because what
 * flows already proves what its check would read (RedisRelay.planCheck), and every guarantee the
 * check stood for still holds. Real redis-server, real RedisRelays with short timings; MONITOR
 * shows what each instance sends. Bounds are counted in the watching relay's own checks (its
 * `onCheck` hook), not in wall time: a loaded machine makes checks later, never fewer per bound.
 */
import assert from 'node:assert/strict'
import { after, afterEach, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import { RedisRelay, type RedisRelayOptions, type RelayLogger } from '../cluster/index.js'
import type { RelayMessage } from '../cluster/relay-message.js'
import { CHECK_TICK } from '../cluster/scripts.js'
import type { AwarenessEntry } from '../protocol/index.js'
import { clientNames, monitorRedis, startRedis, type MonitoredCommand, type RedisProcess } from './harness/redis.js'
import { until } from './harness/wait.js'

const silent: RelayLogger = { debug() {}, info() {}, warn() {}, error() {} }
const RELAYED = Symbol('relayed')
/** Short timings with the defaults' ratios (TTL = 4 heartbeats, at least the 3 that skipping needs). */
const TIMINGS = { heartbeatMs: 250, checkMs: 250, instanceTtlMs: 1000, epochCheckMs: 60_000 }
/** Checks of a watcher within which a dead instance must be gone: TTL, one check, and one of slack. */
const GONE_WITHIN_CHECKS = Math.ceil(TIMINGS.instanceTtlMs / TIMINGS.checkMs) + 2
/** Pace of the steady edits: several per heartbeat from each instance. */
const EDIT_EVERY_MS = 40

/** One instance: a relay, one Y.Doc per room, the awareness it holds, and its checks counted. */
class Peer {
  readonly relay: RedisRelay
  readonly docs = new Map<string, Y.Doc>()
  /** room → instance → client ids */
  readonly remote = new Map<string, Map<string, Set<number>>>()
  readonly local = new Map<string, AwarenessEntry[]>()
  /** One entry per check: whether it sent a command. */
  readonly checks: boolean[] = []
  private editing: NodeJS.Timeout | null = null

  constructor(readonly id: string, url: string, options: Partial<RedisRelayOptions> = {}) {
    this.relay = new RedisRelay({ redisUrl: url, instanceId: id, logger: silent, ...TIMINGS, onCheck: (sent) => this.checks.push(sent), ...options })
  }

  async join(room: string): Promise<void> {
    const doc = new Y.Doc()
    this.docs.set(room, doc)
    this.remote.set(room, new Map())
    const state = await this.relay.joinRoom(room, null, {
      onUpdate: (update) => Y.applyUpdate(doc, update, RELAYED),
      onAwareness: (entries, instance) => {
        const ids = this.remote.get(room)?.get(instance) ?? new Set<number>()
        for (const entry of entries) {
          if (entry.state === 'null') ids.delete(entry.clientId)
          else ids.add(entry.clientId)
        }
        this.remote.get(room)?.set(instance, ids)
      },
      onInstanceGone: (instance) => this.remote.get(room)?.delete(instance),
      localAwareness: () => this.local.get(room) ?? [],
      localState: () => Y.encodeStateAsUpdate(doc),
    })
    if (state !== null) Y.applyUpdate(doc, state, RELAYED)
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin !== RELAYED) this.relay.publishUpdate(room, update)
    })
  }

  setAwareness(room: string, clientId: number): void {
    const entry = { clientId, clock: 1, state: JSON.stringify({ user: this.id }) }
    this.local.set(room, [entry])
    this.relay.publishAwareness(room, [entry])
  }

  edit(room: string, text: string): void {
    ;(this.docs.get(room) as Y.Doc).getArray<string>('log').push([text])
  }

  /** Edits `room` every EDIT_EVERY_MS until `stopEditing` (pacing, not synchronisation). */
  startEditing(room: string): void {
    let n = 0
    this.editing = setInterval(() => this.edit(room, `${this.id}${n++}`), EDIT_EVERY_MS)
  }

  stopEditing(): void {
    if (this.editing !== null) clearInterval(this.editing)
    this.editing = null
  }

  holds(room: string, instance: string): boolean {
    return (this.remote.get(room)?.get(instance)?.size ?? 0) > 0
  }

  has(room: string, text: string): boolean {
    return this.docs.get(room)?.getArray<string>('log').toArray().includes(text) === true
  }
}

/** Waits for `condition`, failing once `peer` ran more than `checks` checks since the call. */
async function withinChecks(peer: Peer, checks: number, condition: () => boolean, what: string): Promise<number> {
  const from = peer.checks.length
  await until(() => condition() || peer.checks.length - from > checks, what, 60_000)
  const used = peer.checks.length - from
  assert.ok(condition(), `${what}: not within ${checks} checks of ${peer.id}`)
  return used
}

/** The timer's commands in `seen` per instance: CHECK_TICK scripts and heartbeat SETs of their own. */
function timerCommands(seen: readonly MonitoredCommand[], names: Map<string, string>, id: string): number {
  return seen.filter((entry) => names.get(entry.client) === `weft:${id}:cmd` && ((entry.command === 'evalsha' && entry.key === CHECK_TICK.sha) || (entry.command === 'set' && entry.key === `weft:instance:${id}`))).length
}

describe('the relay timer under traffic (issue 19)', () => {
  let redis: RedisProcess
  let peers: Peer[] = []
  const peer = async (id: string, options: Partial<RedisRelayOptions> = {}): Promise<Peer> => {
    const p = new Peer(id, redis.url, options)
    peers.push(p)
    await until(() => p.relay.health().up, `${id} up`, 5000)
    return p
  }

  before(async () => {
    redis = await startRedis()
  })
  afterEach(async () => {
    for (const p of peers) p.stopEditing()
    await Promise.all(peers.map((p) => p.relay.close()))
    peers = []
  })
  after(async () => {
    await redis?.dispose()
  })

  /** Two instances, `<room>-a` and `<room>-b` (with `bOptions`), both in `room`. */
  const pair = async (room: string, bOptions: Partial<RedisRelayOptions> = {}): Promise<[Peer, Peer]> => {
    const a = await peer(`${room}-a`)
    const b = await peer(`${room}-b`, bOptions)
    await a.join(room)
    await b.join(room)
    return [a, b]
  }

  /** Watches Redis while each of `peers` runs `checks` more checks: each one's timer commands (MONITOR) and its checks meanwhile. */
  const watchChecks = async (peers: readonly Peer[], checks: number, what: string, timeoutMs = 30_000): Promise<Array<{ sent: number; checks: boolean[] }>> => {
    const monitor = await monitorRedis(redis.port)
    const from = peers.map((p) => p.checks.length)
    let seen: MonitoredCommand[]
    let names: Map<string, string>
    try {
      names = await clientNames(redis)
      await until(() => peers.every((p, i) => p.checks.length - (from[i] as number) >= checks), what, timeoutMs)
      seen = [...monitor.seen]
    } finally {
      monitor.stop()
    }
    return peers.map((p, i) => ({ sent: timerCommands(seen, names, p.id), checks: p.checks.slice(from[i]) }))
  }

  /** Three instances in one room, each with a client's awareness, so each reads the others' liveness. */
  const cluster = async (room: string): Promise<Peer[]> => {
    const all = [await peer(`${room}-a`), await peer(`${room}-b`), await peer(`${room}-c`)]
    for (const p of all) await p.join(room)
    all.forEach((p, i) => p.setAwareness(room, 100 + i))
    await until(() => all.every((p) => all.every((q) => q === p || p.holds(room, q.id))), 'every instance holds the others\' awareness', 5000)
    return all
  }

  it('sends (nearly) no timer command while every instance edits a shared room, and declares nobody gone', async () => {
    const all = await cluster('steady')
    for (const p of all) p.startEditing('steady')
    // Warm-up: each has heard from the others and published for a few checks.
    const a = all[0] as Peer
    await withinChecks(a, 20, () => all.every((p) => p.checks.length >= 6), 'a few checks under traffic')
    const watched = await watchChecks(all, 12, '12 checks of every instance')
    for (const [i, p] of all.entries()) {
      const { sent, checks } = watched[i] as { sent: number; checks: boolean[] }
      console.log(`# ${p.id}: ${checks.length} checks under traffic, ${checks.filter(Boolean).length} sent a command; MONITOR: ${sent} timer commands`)
      // Before issue 19 front 5: one CHECK_TICK per check. One of slack for a check that found a chain still.
      assert.ok(sent <= 1, `${p.id} sent ${sent} timer commands in ${checks.length} checks`)
    }
    for (const p of all) p.stopEditing()
    assert.ok(all.every((p) => all.every((q) => q === p || p.holds('steady', q.id))), 'no live instance was declared gone')
    // Their heartbeat keys lapsed: the messages stood in for them.
    for (const p of all) assert.equal((await redis.command('EXISTS', `weft:instance:${p.id}`)).startsWith(':0'), true, `${p.id}'s heartbeat key lapsed`)
  })

  it('an instance that publishes reads the epoch with each publish: with the backstop due at every check, its checks still send nothing', async () => {
    // epochCheckMs as short as a check: without the epoch in the publish script, every check would read it.
    const a = await peer('epoch-a', { epochCheckMs: TIMINGS.checkMs })
    const b = await peer('epoch-b', { epochCheckMs: TIMINGS.checkMs })
    await a.join('epoch')
    await b.join('epoch')
    a.startEditing('epoch')
    b.startEditing('epoch')
    await withinChecks(a, 20, () => a.checks.length >= 6 && b.checks.length >= 6, 'a few checks under traffic')
    const watched = await watchChecks([a, b], 12, '12 checks of both instances')
    for (const [i, p] of [a, b].entries()) {
      const { sent } = watched[i] as { sent: number }
      console.log(`# ${p.id}: ${sent} timer commands in 12 checks with the epoch due at each`)
      assert.ok(sent <= 1, `${p.id} sent ${sent} timer commands in 12 checks`)
    }
    // And a loss is noticed by the next publish, without a check.
    await redis.command('FLUSHALL')
    await withinChecks(a, 3, () => [a, b].every((p) => p.relay.recovery().losses >= 1), 'both to notice the loss')
    a.stopEditing()
    b.stopEditing()
  })

  it('an instance that only receives learns the epoch from the relayed updates: with the backstop due at every check, its checks send nothing', async () => {
    // b edits nothing and holds no awareness: without the epoch's tag in a's messages, each of
    // b's checks would read the epoch (epochCheckMs as short as a check).
    const a = await peer('tag-a', { epochCheckMs: TIMINGS.checkMs })
    const b = await peer('tag-b', { epochCheckMs: TIMINGS.checkMs })
    await a.join('tag')
    await b.join('tag')
    a.startEditing('tag')
    await withinChecks(b, 20, () => b.checks.length >= 6, 'a few checks of b under a\'s traffic')
    const { sent } = (await watchChecks([b], 12, '12 checks of b'))[0] as { sent: number }
    console.log(`# receiving b: ${sent} timer commands in 12 checks with the epoch due at each`)
    assert.ok(sent <= 1, `b sent ${sent} timer commands in 12 checks`)
    assert.ok((b.docs.get('tag')?.getArray('log').length ?? 0) > 0, 'b received a\'s edits')
    a.stopEditing()
  })

  it('an instance that only receives notices another epoch from the tag of the next relayed update (epochCheckMs 60 s)', async () => {
    const [a, b] = await pair('retag')
    a.startEditing('retag')
    const from = b.checks.length
    await withinChecks(b, 20, () => b.checks.slice(from).filter((sent) => !sent).length >= 3, 'checks of b under a\'s traffic that sent nothing')
    // The data stays; only the epoch changes (as when another Redis took over under the same
    // address): no update names "no predecessor", so only the tag tells b.
    await redis.command('SET', 'weft:epoch', 'another-epoch')
    const checks = await withinChecks(b, 3, () => b.relay.recovery().losses >= 1, 'b to notice the other epoch')
    console.log(`# another epoch noticed by the receiving instance after ${checks} checks`)
    assert.ok(a.relay.recovery().losses >= 1, 'the publishing instance noticed it too')
    a.stopEditing()
    a.edit('retag', 'after')
    await until(() => b.has('retag', 'after'), 'edits relayed after the new epoch', 5000)
  })

  it(`a killed instance that was publishing (its heartbeat key lapsed) is gone within ${GONE_WITHIN_CHECKS} checks of the others`, async () => {
    const all = await cluster('kill')
    const [a, b, c] = all as [Peer, Peer, Peer]
    for (const p of all) p.startEditing('kill')
    // b stopped writing its heartbeat once its messages stood in for it: only they keep it alive.
    await withinChecks(a, 20, () => a.checks.length >= 8, 'traffic for a few checks')
    assert.equal((await redis.command('EXISTS', `weft:instance:${b.id}`)).startsWith(':0'), true, 'b wrote no heartbeat under traffic')
    assert.ok(a.holds('kill', b.id) && c.holds('kill', b.id), 'b is alive to the others')
    b.stopEditing()
    b.relay.abort()
    const checks = await Promise.all(
      [a, c].map((p) => withinChecks(p, GONE_WITHIN_CHECKS, () => !p.holds('kill', b.id), `b's awareness gone on ${p.id}`)),
    )
    console.log(`# killed instance gone after ${checks.join(' and ')} checks (bound ${GONE_WITHIN_CHECKS})`)
    assert.ok(a.holds('kill', c.id) && c.holds('kill', a.id), 'the live instances stay')
  })

  it('a message lost at the tail of a burst is still healed within two checks, though checks under the burst read no `last`', async () => {
    let drop = false
    const dropUpdates = (_room: string, message: RelayMessage): boolean => drop && message.kind === 'update'
    const [a, b] = await pair('tail', { faults: { dropMessage: dropUpdates } })
    a.startEditing('tail')
    const from = b.checks.length
    await withinChecks(b, 20, () => b.checks.slice(from).filter((sent) => !sent).length >= 3, 'checks of b under the burst that sent nothing')
    a.stopEditing()
    drop = true
    // From the edit on: two checks of b (the first may still see its chain moved), one of slack for the publish.
    a.edit('tail', 'final')
    const checks = await withinChecks(b, 3, () => b.has('tail', 'final'), 'the lost final edit healed on b')
    drop = false
    console.log(`# lost final message healed at b's check ${checks} after the edit`)
  })

  it('notices a FLUSHALL under traffic within two checks, though its checks read no epoch (epochCheckMs 60 s)', async () => {
    const [a, b] = await pair('flush')
    a.startEditing('flush')
    b.startEditing('flush')
    const from = [a, b].map((p) => p.checks.length)
    await withinChecks(a, 20, () => [a, b].every((p, i) => p.checks.slice(from[i]).filter((sent) => !sent).length >= 3), 'checks under traffic that sent nothing')
    await redis.command('FLUSHALL')
    // The next update of the room names no predecessor: each instance reads the epoch at its next check.
    const checks = await Promise.all([a, b].map((p) => withinChecks(p, 3, () => p.relay.recovery().losses >= 1, `${p.id} to notice the loss`)))
    console.log(`# FLUSHALL under traffic noticed after ${checks.join(' and ')} checks`)
    a.stopEditing()
    b.stopEditing()
    a.edit('flush', 'after')
    await until(() => b.has('flush', 'after'), 'edits relayed after the loss', 5000)
  })

  it('an edit held after its publish failed (Redis refused it, still up) is sent at the next check, though traffic covers the rest', async () => {
    const [a, b] = await pair('held')
    // b's edits keep the room's chain moving on a, and a hears from b: nothing else makes a's check send.
    b.startEditing('held')
    const from = a.checks.length
    await withinChecks(a, 20, () => a.checks.slice(from).filter((sent) => !sent).length >= 3, 'checks of a under traffic that sent nothing')
    // Redis refuses writes (OOM) but stays up: a's publish fails and a holds the edit.
    await redis.command('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
    await redis.command('CONFIG', 'SET', 'maxmemory', '1')
    try {
      a.edit('held', 'refused once')
      await until(() => a.relay.stats().heldBytes > 0, 'a to hold the refused edit', 5000)
    } finally {
      await redis.command('CONFIG', 'SET', 'maxmemory', '0')
    }
    const checks = await withinChecks(a, 2, () => b.has('held', 'refused once'), 'the held edit relayed to b')
    b.stopEditing()
    console.log(`# held edit sent at a's check ${checks} after Redis took writes again`)
    assert.equal(a.relay.stats().heldBytes, 0)
  })

  it('an instance whose awareness is held but which publishes nothing still writes its heartbeat, and stays', async () => {
    const [a, b] = await pair('quiet')
    b.setAwareness('quiet', 7)
    await until(() => a.holds('quiet', b.id), 'b\'s awareness on a', 5000)
    // a's edits keep the room's chain moving on b, so b has no `last` to read: only its heartbeat is due.
    a.startEditing('quiet')
    const watched = (await watchChecks([b], 2 * GONE_WITHIN_CHECKS, 'b\'s checks past its heartbeat TTL twice over', 60_000))[0] as { sent: number; checks: boolean[] }
    const checks = watched.checks.length
    const beats = watched.sent
    console.log(`# quiet b: ${beats} heartbeat writes in ${checks} checks while a edits`)
    assert.ok(beats >= checks - 2, `b wrote its heartbeat ${beats} times in ${checks} checks`)
    assert.ok(a.holds('quiet', b.id), 'the quiet instance was not declared gone')
  })
})
