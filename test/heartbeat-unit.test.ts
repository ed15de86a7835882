import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { test } from 'node:test'
import type { WebSocket } from 'ws'
import { Connection, type RawSocket } from '../server/connection.js'
import type { Clock } from '../server/token-bucket.js'

// Heartbeats with a controlled clock: each heartbeat() call is one tick of the server's interval,
// driven by the test, over a stand-in socket (the real-socket behaviour is in heartbeat.test.ts).

class FakeSocket extends EventEmitter {
  bufferedAmount = 0
  pings = 0
  terminated = false
  ping(): void {
    this.pings++
  }
  terminate(): void {
    this.terminated = true
    this.emit('close', 1006)
  }
  send(): void {}
  close(code: number): void {
    this.emit('close', code)
  }
  pause(): void {}
  resume(): void {}
}

/** The TCP stream under the socket: only the count of bytes read matters to liveness. */
class FakeRaw extends EventEmitter {
  bytesRead = 0
  /** Bytes arrive from the client (a pong frame, or part of any frame). */
  arrive(bytes: number): void {
    this.bytesRead += bytes
  }
}

class FakeClock implements Clock {
  t = 0
  now(): number {
    return this.t
  }
}

function connection(clock = new FakeClock()): { conn: Connection; socket: FakeSocket; raw: FakeRaw; clock: FakeClock } {
  const socket = new FakeSocket()
  const raw = new FakeRaw()
  const conn = new Connection(
    socket as unknown as WebSocket,
    raw as unknown as RawSocket,
    { ip: '127.0.0.1', release: () => {} },
    { sendQueueBytes: 1 << 20, slowConsumerGraceMs: 1000, inboundMessagesPerSecond: 1000, inboundBytesPerSecond: 1 << 20, maxMessageBytes: 1 << 20 },
    {},
    clock,
  )
  return { conn, socket, raw, clock }
}

test('a connection silent for a whole interval is terminated at the next tick, after one ping', () => {
  const { conn, socket } = connection()
  assert.equal(conn.heartbeat(), true, 'alive at the first tick (it just connected)')
  assert.equal(socket.pings, 1)
  assert.equal(conn.heartbeat(), false, 'no pong and no data since the last tick')
  assert.equal(socket.terminated, true)
})

test('a pong between ticks keeps it alive, tick after tick', () => {
  const { conn, socket, raw } = connection()
  for (let tick = 0; tick < 20; tick++) {
    assert.equal(conn.heartbeat(), true, `tick ${tick}`)
    raw.arrive(2) // a pong frame with no payload: two bytes on the wire
  }
  assert.equal(socket.terminated, false)
  assert.equal(socket.pings, 20)
})

test('bytes arriving on the raw socket count as life: a long upload that cannot answer pings is not cut off', () => {
  const { conn, socket, raw } = connection()
  for (let tick = 0; tick < 20; tick++) {
    assert.equal(conn.heartbeat(), true, `tick ${tick}`)
    raw.arrive(64 * 1024) // part of one large frame: no pong can come before it ends
  }
  assert.equal(socket.terminated, false)
})

test('a socket still writing out a large transfer counts as alive', () => {
  const { conn, socket } = connection()
  conn.heartbeat()
  socket.bufferedAmount = 8 << 20 // the client is downloading a big sync step 2
  assert.equal(conn.heartbeat(), true)
  assert.equal(conn.heartbeat(), true)
  socket.bufferedAmount = 0
  assert.equal(conn.heartbeat(), false, 'once the transfer is done, silence counts again')
})

test('a paused socket (inbound limit) is not terminated for the pongs it cannot read', () => {
  const clock = new FakeClock()
  const { conn, socket } = connection(clock)
  // Exhaust the message bucket (burst 2000 at 1000/s): the socket pauses.
  for (let i = 0; i < 2100; i++) socket.emit('message', Buffer.from([0]), true)
  assert.equal(conn.paused, true)
  conn.heartbeat()
  assert.equal(conn.heartbeat(), true, 'paused: its pongs wait in the kernel, unread')
  assert.equal(socket.terminated, false)
  // The clock is the test's: it never runs on by itself, so the connection is closed to end the pause.
  socket.emit('close', 1000)
  assert.equal(conn.state, 'closed')
})
