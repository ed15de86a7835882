import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
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

  it(`pings ${CLIENTS} connections at many different moments over an interval`, async () => {
    const sockets: WebSocket[] = []
    const pingTimes: number[][] = []
    try {
      for (let i = 0; i < CLIENTS; i++) {
        const socket = new WebSocket(`${server.url}/spread`)
        const times: number[] = []
        socket.on('ping', () => times.push(performance.now()))
        await withDeadline(new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject)), `client ${i} to open`)
        sockets.push(socket)
        pingTimes.push(times)
      }
      const started = performance.now()
      const since = (times: number[]): number[] => times.filter((t) => t >= started)
      // Every connection's slot comes up once an interval.
      await until(() => pingTimes.every((times) => since(times).length >= 1), 'every client to be pinged', 2 * INTERVAL_MS + 5_000)
      const inWindow = pingTimes.map(since)
      const firsts = inWindow.map((times) => times[0] as number)
      // One tick is INTERVAL_MS / 16 = 100 ms: pings of the same tick land within a few ms.
      const moments = new Set(firsts.map((t) => Math.round((t - started) / 50)))
      assert.ok(moments.size >= 8, `the first pings fell into only ${moments.size} distinct 50 ms windows`)
      assert.ok(Math.max(...firsts) - Math.min(...firsts) >= INTERVAL_MS / 2, 'the pings are spread over the interval')
    } finally {
      for (const socket of sockets) socket.terminate()
    }
  })
})
