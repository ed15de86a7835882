import assert from 'node:assert/strict'
import { EventEmitter } from 'node:events'
import { test } from 'node:test'
import type { WebSocket } from 'ws'
import { Connection, type ConnectionEvents, type ConnectionLimits, type RawSocket } from '../server/connection.js'
import { ReplyGate } from '../server/reply-gate.js'
import type { SharedFrames, WireFormat } from '../server/wire-format.js'
import { once, until } from './harness/wait.js'

/** Resolves after the event loop's next check phase: immediates set before this call have run. */
const nextLoopTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

// The outbound path and the close of one connection over a stand-in socket whose buffer empties
// only when the test says so. The connection creates its send queue only once the socket falls
// behind; these tests pin that nothing changes for the reader because of it.

class FakeSocket extends EventEmitter {
  bufferedAmount = 0
  sent: Uint8Array[] = []
  send(frame: Uint8Array): void {
    this.sent.push(frame)
    this.bufferedAmount += frame.length
  }
  /** Starts the close handshake; the test plays the peer and decides when and how it ends. */
  close(code: number): void {
    this.emit('closing', code)
  }
  terminate(): void {
    this.emit('close', 1006)
  }
  ping(): void {}
  pause(): void {}
  resume(): void {}
}

class FakeRaw extends EventEmitter {
  bytesRead = 0
}

const LIMITS: ConnectionLimits = { sendQueueBytes: 4000, slowConsumerGraceMs: 20, inboundMessagesPerSecond: 1000, inboundBytesPerSecond: 1 << 20, maxMessageBytes: 1 << 20 }

const format: WireFormat = { name: 'test', update: (_doc, update) => update, awareness: () => new Uint8Array() }
const shared = (frame: Uint8Array): SharedFrames => ({ get: () => frame })

function connection(events: ConnectionEvents = {}, released: { count: number } = { count: 0 }, limits: ConnectionLimits = LIMITS): { conn: Connection; socket: FakeSocket; raw: FakeRaw } {
  const socket = new FakeSocket()
  const raw = new FakeRaw()
  const ticket = { ip: '127.0.0.1', release: () => released.count++ }
  const conn = new Connection(socket as unknown as WebSocket, raw as unknown as RawSocket, ticket, limits, events)
  return { conn, socket, raw }
}

test('below the soft mark frames go straight out, the shared buffer itself; a reader behind it has broadcasts held until the socket drains', () => {
  let coalesced = 0
  const { conn, socket, raw } = connection({ onCoalesced: (count) => (coalesced += count) })
  const frame = new Uint8Array(100)
  conn.sendUpdate('d', frame, shared(frame), format)
  assert.equal(socket.sent[0], frame, 'the same buffer, not a copy')
  assert.equal(conn.heldBytes, 0)
  socket.bufferedAmount = 1000 // the soft mark: a quarter of the 4000-byte budget
  conn.sendUpdate('d', new Uint8Array(10), shared(new Uint8Array(10)), format)
  conn.send(new Uint8Array(20))
  assert.equal(socket.sent.length, 1, 'nothing more is written while the reader is behind')
  assert.equal(conn.heldBytes, 30)
  assert.equal(conn.queuedBytes, 1030, 'the socket buffer plus what weft holds')
  socket.bufferedAmount = 0
  raw.emit('drain')
  assert.equal(conn.heldBytes, 0)
  assert.deepEqual(
    socket.sent.slice(1).map((f) => f.length),
    [20, 10],
    'frames that must arrive as they are first, then the held update',
  )
  assert.equal(coalesced, 0)
})

test('one frame that takes an idle connection past its budget starts the grace period, and it is closed with 1013 when still over', async () => {
  let slow = 0
  const { conn, socket } = connection({ onSlowConsumer: () => slow++ })
  const closing = once<[number]>(socket, 'closing', 2_000)
  conn.send(new Uint8Array(5000)) // a sync step 2 larger than the whole budget
  assert.equal(conn.state, 'open', 'the grace period comes first')
  const [code] = await closing
  assert.equal(code, 1013)
  assert.equal(conn.closeCode, 1013)
  assert.equal(slow, 1)
})

test('a reader that drains within the grace period after one large frame stays open', async () => {
  const { conn, socket } = connection({ onSlowConsumer: () => assert.fail('it caught up in time') })
  conn.send(new Uint8Array(5000))
  socket.bufferedAmount = 0
  conn.heartbeat() // a tick (or any send) sees it back under the budget
  await new Promise((resolve) => setTimeout(resolve, LIMITS.slowConsumerGraceMs * 3))
  assert.equal(conn.state, 'open')
})

test('on close the admission slot is given back once, then the server and the session hear of it, with the code weft closed with', () => {
  const order: string[] = []
  const released = { count: 0 }
  const { conn, socket } = connection({ onClose: (c, code) => order.push(`server ${c === conn ? 'this' : 'other'} ${code} released=${released.count}`) }, released)
  conn.bind({ receive: () => {}, closed: (code) => order.push(`session ${code}`) })
  conn.close(4404, 'document deleted')
  assert.deepEqual(order, [], 'nothing is reported before the socket has closed')
  socket.emit('close', 1005) // the peer answered without a code: weft's own is the one reported
  assert.equal(released.count, 1)
  assert.deepEqual(order, ['server this 4404 released=1', 'session 4404'])
  conn.send(new Uint8Array(1))
  assert.equal(socket.sent.length, 0, 'nothing is sent after the close')
})

test('big sync replies take turns: a waiting reply holds back what follows it, and a drain, a close or the end of a turn hands the turn to the next in line', async () => {
  let waits = 0
  const gate = new ReplyGate(1, 100, () => waits++)
  const limits: ConnectionLimits = { ...LIMITS, replyGate: gate }
  const joiner = (): ReturnType<typeof connection> => connection({}, { count: 0 }, limits)
  const [a, b, c, d] = [joiner(), joiner(), joiner(), joiner()]
  const reply = new Uint8Array(2000) // over the soft mark: a big reply
  a.conn.sendSyncReply(reply)
  assert.equal(a.socket.sent.length, 1, 'the first reply takes the only turn')
  b.conn.sendSyncReply(reply)
  b.conn.send(new Uint8Array(7))
  c.conn.sendSyncReply(reply)
  assert.deepEqual([b.socket.sent.length, c.socket.sent.length, waits], [0, 0, 2], 'the others wait, and what b sends after its reply waits with it')
  // a's reply is out of its socket: the turn goes to b, which came before c.
  a.socket.bufferedAmount = 0
  a.raw.emit('drain')
  assert.deepEqual(b.socket.sent.map((f) => f.length), [2000], 'b writes its reply; the frame after it waits for b\'s socket to drain')
  assert.equal(c.socket.sent.length, 0)
  b.socket.bufferedAmount = 0
  b.raw.emit('drain')
  assert.deepEqual(b.socket.sent.map((f) => f.length), [2000, 7], 'then the frame that followed it')
  // a's and b's turns started in this turn of the event loop: c's starts in the next.
  assert.equal(c.socket.sent.length, 0)
  await nextLoopTurn()
  assert.deepEqual(c.socket.sent.map((f) => f.length), [2000], 'and b\'s drain handed the turn to c')
  // c never drains: its turn ends after the gate's turn, and d's reply goes out without waiting for c.
  d.conn.sendSyncReply(reply)
  assert.equal(d.socket.sent.length, 0)
  await until(() => d.socket.sent.length === 1, 'c\'s turn to end', 2_000)
  // A connection that closes while it waits leaves the line; one that closes while it writes gives its turn back.
  const [e, f] = [joiner(), joiner()]
  e.conn.sendSyncReply(reply)
  f.conn.sendSyncReply(reply)
  e.socket.terminate()
  d.socket.terminate()
  assert.deepEqual([e.socket.sent.length, f.socket.sent.length], [0, 1], 'd\'s close handed the turn past e (closed) to f')
})

test('big replies start at most two to a turn of the event loop, the others in the next turns, in order, without counting as waits', async () => {
  let waits = 0
  const gate = new ReplyGate(8, 1_000, () => waits++)
  const limits: ConnectionLimits = { ...LIMITS, replyGate: gate }
  const joiners = Array.from({ length: 5 }, () => connection({}, { count: 0 }, limits))
  const reply = new Uint8Array(2000)
  // A crowd's shared reply resolves for all of them in one run of microtasks.
  for (const j of joiners) j.conn.sendSyncReply(reply)
  const written = (): number[] => joiners.map((j) => j.socket.sent.length)
  assert.deepEqual(written(), [1, 1, 0, 0, 0], 'two start now: each first write is copied into the kernel on the event loop')
  await nextLoopTurn()
  assert.deepEqual(written(), [1, 1, 1, 1, 0], 'two more in the next turn, in the order they asked')
  await nextLoopTurn()
  assert.deepEqual(written(), [1, 1, 1, 1, 1])
  assert.equal(waits, 0, 'turns were free: none waited for one')
  for (const j of joiners) j.socket.terminate()
})
