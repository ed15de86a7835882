/**
 * Issue 19 (the cluster): the commands an instance sends on a timer, whatever the traffic. Three
 * weft instances share a real redis-server, each with a client of one room whose awareness the
 * others hold, so every periodic read has something to read: the epoch, the room's `last`, the
 * other instances' heartbeats. MONITOR shows every command the instances send. Each tick of an
 * instance (one heartbeat write) must cost one command: heartbeat, check and the shared state's
 * epoch read in one script. They were five: SET, GET, MGET, MGET and the epoch script.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { RedisRelay, RedisSharedState, type RelayLogger } from '../cluster/index.js'
import { destroy, provider, synced } from './harness/clients.js'
import { clientNames, monitorRedis, startRedis, type MonitoredCommand, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { once, until } from './harness/wait.js'
import type { WebsocketProvider } from 'y-websocket'
import { EventEmitter } from 'node:events'

const INSTANCES = ['a', 'b', 'c']
/** Ticks watched per instance: enough that one command more per tick could not hide in the slack. */
const TICKS = 6
const silent: RelayLogger = { debug() {}, info() {}, warn() {}, error() {} }

/** A write of `instance`'s heartbeat key: by the instance itself (SET) or inside its tick script (lua). */
const isBeat = (entry: MonitoredCommand, instance: string): boolean => entry.command === 'set' && entry.key === `weft:instance:${instance}`

describe('Redis commands on a timer, per instance (issue 19)', () => {
  let redis: RedisProcess
  const servers: InProcessServer[] = []
  const providers: WebsocketProvider[] = []

  before(async () => {
    redis = await startRedis()
    for (const instanceId of INSTANCES) servers.push(await startServer({ redisUrl: redis.url, instanceId }))
    for (const [i, server] of servers.entries()) {
      const p = provider(server.url, 'timers')
      p.awareness.setLocalStateField('user', { name: INSTANCES[i] })
      providers.push(p)
    }
    await Promise.all(providers.map((p) => synced(p)))
    // Each client sees the other two: every instance holds the others' awareness, so it checks their heartbeats.
    await until(() => providers.every((p) => p.awareness.getStates().size === INSTANCES.length), 'every client sees every cursor')
  })

  after(async () => {
    destroy(...providers)
    for (const server of servers) await server.stop()
    await redis?.dispose()
  })

  it('an idle instance sends one command per tick (heartbeat, check and epoch together), one a second', async () => {
    const monitor = await monitorRedis(redis.port)
    let seen: MonitoredCommand[]
    let names: Map<string, string>
    try {
      names = await clientNames(redis)
      await until(() => INSTANCES.every((id) => monitor.seen.filter((entry) => isBeat(entry, id)).length >= TICKS), `${TICKS} heartbeats of every instance`, 30_000)
      seen = [...monitor.seen]
    } finally {
      monitor.stop()
    }
    for (const id of INSTANCES) {
      const own = (entry: MonitoredCommand): boolean => names.get(entry.client)?.startsWith(`weft:${id}:`) === true
      const beats = seen.flatMap((entry, i) => (isBeat(entry, id) ? [i] : []))
      const first = beats[0] as number
      const last = beats[beats.length - 1] as number
      // From this instance's first tick to its last; PUBLISH is messages (awareness re-sent), not timers.
      const window = seen.slice(first, last + 1)
      const commands = window.filter((entry) => own(entry) && entry.command !== 'publish')
      const seconds = (seen[last] as MonitoredCommand).seconds - (seen[first] as MonitoredCommand).seconds
      const perSecond = commands.length / seconds
      const kinds = [...new Set(commands.map((entry) => entry.command))].join(' ')
      console.log(`# instance ${id}: ${commands.length} commands (${kinds}) in ${beats.length} ticks over ${seconds.toFixed(2)} s: ${perSecond.toFixed(2)} a second`)
      assert.ok(commands.length >= 1, `instance ${id} sent its ticks`)
      // The window's ends may cut one tick's command from its heartbeat write: one of slack.
      assert.ok(commands.length <= beats.length + 1, `instance ${id}: ${commands.length} commands for ${beats.length} ticks (${kinds})`)
      // Ticks are checkMs (1 s) apart at least; a slow machine only spaces them further.
      assert.ok(perSecond <= 1.5, `instance ${id}: ${perSecond.toFixed(2)} timer commands a second`)
    }
  })
})

describe('the shared state follows the relay\'s epoch reads', () => {
  let redis: RedisProcess
  let relay: RedisRelay
  let shared: RedisSharedState

  before(async () => {
    redis = await startRedis()
    relay = new RedisRelay({ redisUrl: redis.url, instanceId: 'R', logger: silent })
    shared = new RedisSharedState({ redisUrl: redis.url, instanceId: 'R', logger: silent, epochReads: relay })
  })

  after(async () => {
    await shared?.close()
    await relay?.close()
    await redis?.dispose()
  })

  it('with no timer of its own, it still hears of a FLUSHALL through the relay\'s check, and reads the epoch only then', async () => {
    const events = new EventEmitter()
    const epochs: string[] = []
    shared.onEpoch((epoch) => {
      epochs.push(epoch)
      events.emit('epoch')
    })
    await until(() => epochs.length >= 1, 'the epoch at the first connection')
    const first = epochs[0] as string
    const monitor = await monitorRedis(redis.port)
    try {
      const names = await clientNames(redis)
      const sharedEpochReads = (): number => monitor.seen.filter((entry) => names.get(entry.client) === 'weft:R:shared-cmd' && entry.command === 'evalsha').length
      const ticks = (): number => monitor.seen.filter((entry) => entry.command === 'set' && entry.key === 'weft:instance:R').length
      await until(() => ticks() >= 3, 'three ticks of the relay', 15_000)
      assert.equal(sharedEpochReads(), 0, 'the shared state reads no epoch while it is unchanged')
      const changed = once(events, 'epoch', 15_000)
      await redis.command('FLUSHALL')
      await changed
      // MONITOR's line comes on another connection than the read's reply, so it may come after.
      await until(() => sharedEpochReads() >= 1, 'the shared state read the new epoch itself')
    } finally {
      monitor.stop()
    }
    assert.notEqual(epochs[1], first)
    // `$<length>\r\n<epoch>\r\n`
    assert.equal((await redis.command('GET', 'weft:epoch')).split('\r\n')[1], epochs[1])
  })
})

describe('a heartbeat setting shorter than the check', () => {
  let redis: RedisProcess
  let relay: RedisRelay

  before(async () => {
    redis = await startRedis()
    relay = new RedisRelay({ redisUrl: redis.url, instanceId: 'H', logger: silent, heartbeatMs: 100, instanceTtlMs: 400, checkMs: 2000 })
    // A client's awareness in a quiet room: the others would read this heartbeat, so it is due
    // (an instance whose awareness nobody holds may let it lapse between checks).
    const cursor = { clientId: 1, clock: 1, state: JSON.stringify({ user: 'h' }) }
    await relay.joinRoom('h', null, {
      onUpdate() {},
      onAwareness() {},
      onInstanceGone() {},
      localAwareness: () => [cursor],
      localState: () => new Uint8Array([0, 0]),
    })
  })

  after(async () => {
    await relay?.close()
    await redis?.dispose()
  })

  it('still refreshes the heartbeat that often: SETs of its own between the checks, which carry one too', async () => {
    const monitor = await monitorRedis(redis.port)
    let seen: MonitoredCommand[]
    try {
      const checks = (): number => monitor.seen.filter((entry) => entry.client === 'lua' && entry.command === 'set' && entry.key === 'weft:instance:H').length
      await until(() => checks() >= 2, 'two checks', 15_000)
      seen = [...monitor.seen]
    } finally {
      monitor.stop()
    }
    const beats = seen.filter((entry) => entry.command === 'set' && entry.key === 'weft:instance:H')
    const own = beats.filter((entry) => entry.client !== 'lua').length
    const inChecks = beats.length - own
    console.log(`# heartbeatMs 100, checkMs 2000: ${own} heartbeat SETs, ${inChecks} heartbeats inside checks`)
    assert.ok(inChecks >= 2, `${inChecks} heartbeats written by the check script`)
    // About 19 between two checks; one only if every 100 ms tick came 2 s late.
    assert.ok(own >= 2, 'heartbeats of their own between the checks')
  })
})
