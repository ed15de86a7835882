import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import { Connection } from '../server/connection.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

// Heartbeats are spread over the interval: a server never pings every connection in one loop
// (with 100,000 connections that loop would hold up every broadcast the way a broadcast to all
// of them does), yet each connection is pinged once an interval.

const INTERVAL_MS = 1_600
const CLIENTS = 48

describe('heartbeat spreading', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer({ heartbeatIntervalMs: INTERVAL_MS })
  })
  after(() => server.stop())

  it(`pings ${CLIENTS} connections in many separate ticks over an interval`, async (t) => {
    // The server's own schedule, not the wall clock: every Connection.heartbeat() call is recorded
    // with the tick it belongs to. The calls of one tick run in one synchronous loop, so a tick
    // ends at the next microtask checkpoint.
    const calls: Array<{ tick: number; id: number }> = []
    let tick = 0
    let inTick = false
    const heartbeat = Connection.prototype.heartbeat
    t.after(() => {
      Connection.prototype.heartbeat = heartbeat
    })
    Connection.prototype.heartbeat = function (this: Connection) {
      if (!inTick) {
        inTick = true
        tick++
        queueMicrotask(() => (inTick = false))
      }
      calls.push({ tick, id: this.id })
      return heartbeat.call(this)
    }

    const sockets: WebSocket[] = []
    const pinged: boolean[] = []
    try {
      for (let i = 0; i < CLIENTS; i++) {
        const socket = new WebSocket(`${server.url}/spread`)
        pinged.push(false)
        socket.on('ping', () => (pinged[i] = true))
        await withDeadline(new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject)), `client ${i} to open`)
        sockets.push(socket)
      }
      const firstTick = tick + 1
      pinged.fill(false)
      // Every connection's slot comes up once an interval, and its ping arrives over the wire.
      await until(() => pinged.every(Boolean), 'every client to be pinged', 2 * INTERVAL_MS + 10_000)

      const window = calls.filter((call) => call.tick >= firstTick)
      const ticksOf = new Map<number, number[]>()
      for (const { tick: at, id } of window) ticksOf.set(id, [...(ticksOf.get(id) ?? []), at])
      const perTick = new Map<number, number>()
      for (const { tick: at } of window) perTick.set(at, (perTick.get(at) ?? 0) + 1)
      const busiest = Math.max(...perTick.values())
      t.diagnostic(`${window.length} heartbeat checks over ${perTick.size} ticks; the busiest tick checked ${busiest} connections`)
      assert.equal(ticksOf.size, CLIENTS, 'every connection was checked')
      // Never all in one loop: each tick checks one slice, a small share of the connections.
      assert.ok(busiest <= CLIENTS / 4, `one tick checked ${busiest} of ${CLIENTS} connections`)
      // Spread: the connections' first checks fall into many different ticks.
      const firsts = new Set([...ticksOf.values()].map((ticks) => ticks[0]))
      assert.ok(firsts.size >= 8, `the first checks fell into only ${firsts.size} distinct ticks`)
    } finally {
      for (const socket of sockets) socket.terminate()
    }
  })
})
