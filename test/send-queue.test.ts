import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as Y from 'yjs'
import { SendQueue, type FrameSink } from '../server/send-queue.js'
import { TokenBucket, type Clock } from '../server/token-bucket.js'
import type { SharedFrames, WireFormat } from '../server/wire-format.js'
import { decodeAwarenessUpdate, decodeYMessage, encodeAwareness, encodeAwarenessUpdate, encodeSyncUpdate, type AwarenessEntry } from '../protocol/index.js'
import { withDeadline } from './harness/wait.js'

/** A socket stand-in whose buffer empties only when the test says so. */
class FakeSink implements FrameSink {
  sent: Uint8Array[] = []
  buffered = 0
  send(frame: Uint8Array): void {
    this.sent.push(frame)
    this.buffered += frame.length
  }
  bufferedAmount(): number {
    return this.buffered
  }
  /** The network took everything. */
  drainAll(): void {
    this.buffered = 0
  }
}

const encoder: WireFormat = {
  name: 'test',
  update: (_doc: string, update: Uint8Array) => encodeSyncUpdate(update),
  awareness: (_doc: string, entries: readonly AwarenessEntry[]) => encodeAwareness(encodeAwarenessUpdate(entries)),
}

/** The shared encoding a room would hand every recipient. */
const shared = (frame: Uint8Array): SharedFrames => ({ get: () => frame })

class FakeClock implements Clock {
  t = 0
  now(): number {
    return this.t
  }
}

function editUpdates(count: number): { doc: Y.Doc; updates: Uint8Array[] } {
  const doc = new Y.Doc()
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  for (let i = 0; i < count; i++) doc.getText('t').insert(i, 'x')
  return { doc, updates }
}

test('below the soft mark every frame goes straight out, the shared buffer itself', () => {
  const sink = new FakeSink()
  const queue = new SendQueue(sink, { softBytes: 1000, hardBytes: 4000, graceMs: 50 }, { onSlowConsumer: () => assert.fail('not slow') }, new FakeClock())
  const frame = encodeSyncUpdate(new Uint8Array([0, 0]))
  queue.sendUpdate('d', new Uint8Array([0, 0]), shared(frame), encoder)
  assert.equal(sink.sent.length, 1)
  assert.equal(sink.sent[0], frame, 'the same buffer, not a copy')
  assert.equal(queue.heldByteCount, 0)
})

test('above the soft mark updates are held and merged into one update that yields the same document', () => {
  const sink = new FakeSink()
  let coalesced = 0
  const queue = new SendQueue(sink, { softBytes: 10, hardBytes: 1_000_000, graceMs: 50 }, { onSlowConsumer: () => assert.fail('not slow'), onCoalesced: (n) => (coalesced += n) }, new FakeClock())
  sink.buffered = 100 // the reader is behind
  const { doc, updates } = editUpdates(500)
  for (const u of updates) queue.sendUpdate('d', u, shared(encodeSyncUpdate(u)), encoder)
  assert.equal(sink.sent.length, 0, 'nothing sent while the socket is over the soft mark')
  assert.ok(coalesced >= 64, 'updates were merged while held')
  const held = queue.heldByteCount
  const raw = updates.reduce((n, u) => n + u.length, 0)
  assert.ok(held < raw * 0.7, `held ${held} bytes for ${raw} bytes of updates`)
  sink.drainAll()
  queue.flush()
  assert.equal(sink.sent.length, 1, 'one merged update message')
  const message = decodeYMessage(sink.sent[0] as Uint8Array)
  assert.equal(message.kind, 'sync-update')
  const reader = new Y.Doc()
  if (message.kind === 'sync-update') Y.applyUpdate(reader, message.update)
  assert.equal(reader.getText('t').toString(), doc.getText('t').toString())
  assert.equal(queue.heldByteCount, 0)
})

test('held awareness keeps only the newest state per client', () => {
  const sink = new FakeSink()
  const queue = new SendQueue(sink, { softBytes: 10, hardBytes: 1_000_000, graceMs: 50 }, { onSlowConsumer: () => assert.fail('not slow') }, new FakeClock())
  sink.buffered = 100
  for (let clock = 1; clock <= 50; clock++) {
    const entries = [
      { clientId: 1, clock, state: JSON.stringify({ cursor: clock }) },
      { clientId: 2, clock, state: JSON.stringify({ cursor: -clock }) },
    ]
    queue.sendAwareness('d', entries, shared(encodeAwareness(encodeAwarenessUpdate(entries))), encoder)
  }
  sink.drainAll()
  queue.flush()
  assert.equal(sink.sent.length, 1)
  const message = decodeYMessage(sink.sent[0] as Uint8Array)
  assert.equal(message.kind, 'awareness')
  if (message.kind !== 'awareness') return
  const entries = decodeAwarenessUpdate(message.update)
  assert.deepEqual(
    entries.map((e) => [e.clientId, e.clock, JSON.parse(e.state)]),
    [
      [1, 50, { cursor: 50 }],
      [2, 50, { cursor: -50 }],
    ],
  )
})

test('frames keep their order and go before held updates', () => {
  const sink = new FakeSink()
  const queue = new SendQueue(sink, { softBytes: 10, hardBytes: 1_000_000, graceMs: 50 }, { onSlowConsumer: () => assert.fail('not slow') }, new FakeClock())
  sink.buffered = 100
  const a = new Uint8Array([1, 1])
  const b = new Uint8Array([2, 2])
  queue.sendFrame(a)
  const { updates } = editUpdates(3)
  for (const u of updates) queue.sendUpdate('d', u, shared(encodeSyncUpdate(u)), encoder)
  queue.sendFrame(b)
  sink.drainAll()
  queue.flush()
  assert.equal(sink.sent[0], a)
  assert.equal(sink.sent[1], b)
  assert.equal(sink.sent.length, 3)
})

test('over the hard mark for longer than the grace period: slow consumer', async () => {
  const sink = new FakeSink()
  let slow = 0
  const fired = new Promise<void>((resolve) => {
    const queue = new SendQueue(
      sink,
      { softBytes: 10, hardBytes: 100, graceMs: 20 },
      {
        onSlowConsumer: () => {
          slow++
          resolve()
        },
      },
      new FakeClock(),
    )
    sink.buffered = 1000 // a reader that stopped reading
    queue.sendFrame(new Uint8Array(10))
  })
  await withDeadline(fired, 'slow-consumer verdict', 2000)
  assert.equal(slow, 1)
})

test('a reader that catches up within the grace period is not closed', async () => {
  const sink = new FakeSink()
  const queue = new SendQueue(sink, { softBytes: 10, hardBytes: 100, graceMs: 30 }, { onSlowConsumer: () => assert.fail('caught up in time') }, new FakeClock())
  sink.buffered = 1000
  queue.sendFrame(new Uint8Array(10))
  sink.drainAll()
  queue.flush()
  // The grace timer was armed; prove it was disarmed by waiting past it for a later event.
  await new Promise((resolve) => setTimeout(resolve, 60))
  assert.equal(queue.heldByteCount, 0)
})

test('token bucket: burst, refill with the clock, debt and the wait it implies', () => {
  const clock = new FakeClock()
  const bucket = new TokenBucket(10, 5, clock)
  for (let i = 0; i < 5; i++) assert.equal(bucket.tryTake(), true)
  assert.equal(bucket.tryTake(), false)
  assert.equal(bucket.waitFor(1), 100)
  clock.t += 100
  assert.equal(bucket.tryTake(), true)
  assert.equal(bucket.take(20), 2000, 'twenty tokens of debt at 10/s take two seconds')
  clock.t += 2000
  assert.equal(bucket.waitFor(0), 0)
  clock.t += 1_000_000
  assert.equal(bucket.waitFor(5), 0)
  assert.equal(bucket.waitFor(6), 100, 'never more than the capacity')
})

test('large held updates are not merged, and every one of them goes out in order', () => {
  const sink = new FakeSink()
  let coalesced = 0
  const queue = new SendQueue(sink, { softBytes: 10, hardBytes: 100_000_000, graceMs: 50 }, { onSlowConsumer: () => assert.fail('not slow'), onCoalesced: (n) => (coalesced += n) }, new FakeClock())
  sink.buffered = 100
  const doc = new Y.Doc()
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  for (let i = 0; i < 100; i++) doc.getText('t').insert(0, String(i % 10).repeat(8192))
  for (const u of updates) queue.sendUpdate('d', u, shared(encodeSyncUpdate(u)), encoder)
  assert.equal(coalesced, 0, 'updates of 8 KiB are held as they are')
  sink.drainAll()
  queue.flush()
  assert.equal(sink.sent.length, updates.length)
  const reader = new Y.Doc()
  for (const frame of sink.sent) {
    const message = decodeYMessage(frame)
    if (message.kind === 'sync-update') Y.applyUpdate(reader, message.update)
  }
  assert.equal(reader.getText('t').toString(), doc.getText('t').toString())
})
