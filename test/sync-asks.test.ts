import assert from 'node:assert/strict'
import { test } from 'node:test'
import { SyncAsks } from '../server/sync-asks.js'

const SYNC_ASK_INTERVAL_MS = 1_000

// SyncAsks on a clock of its own and Node's mock timers: when a repeated sync step 1 is answered.

test('the first ask is answered at once; repeats wait for the interval and for the last big reply to leave, then the newest is answered once', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  let now = 0
  let replyOnItsWay = false
  let deferred = 0
  const answered: number[] = []
  const asks = new SyncAsks(
    { answer: (stateVector) => answered.push(stateVector[0] as number), replyOnItsWay: () => replyOnItsWay, mayBuild: () => true, onDeferred: () => deferred++ },
    SYNC_ASK_INTERVAL_MS,
    () => now,
  )

  asks.ask(Uint8Array.of(1))
  assert.deepEqual(answered, [1])
  replyOnItsWay = true
  asks.ask(Uint8Array.of(2))
  asks.ask(Uint8Array.of(3))
  assert.deepEqual(answered, [1], 'repeats within the interval wait')
  assert.equal(deferred, 2)

  now = SYNC_ASK_INTERVAL_MS
  t.mock.timers.tick(SYNC_ASK_INTERVAL_MS)
  assert.deepEqual(answered, [1], 'past the interval, but the last reply is still on its way')
  now += 500
  t.mock.timers.tick(500)
  assert.deepEqual(answered, [1])

  replyOnItsWay = false
  now += 100
  t.mock.timers.tick(100)
  assert.deepEqual(answered, [1, 3], 'once it has left, the newest ask is answered, once')
  now += 10 * SYNC_ASK_INTERVAL_MS
  t.mock.timers.tick(10 * SYNC_ASK_INTERVAL_MS)
  assert.deepEqual(answered, [1, 3])

  // Long after the last answer, with nothing on its way, an ask is answered at once again.
  asks.ask(Uint8Array.of(4))
  assert.deepEqual(answered, [1, 3, 4])
  asks.ask(Uint8Array.of(5))
  asks.close()
  now += 10 * SYNC_ASK_INTERVAL_MS
  t.mock.timers.tick(10 * SYNC_ASK_INTERVAL_MS)
  assert.deepEqual(answered, [1, 3, 4], 'nothing is answered after close')
  assert.equal(deferred, 3)
})

test('an ask whose reply may not be built yet (reply memory taken) waits, the first one too, and is answered, the newest only, once it may', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  let now = 0
  let memoryFree = false
  let deferred = 0
  const asked: number[] = []
  const answered: number[] = []
  let settled = 0
  const asks = new SyncAsks(
    {
      answer: (stateVector) => answered.push(stateVector[0] as number),
      replyOnItsWay: () => false,
      mayBuild: (stateVector) => {
        asked.push(stateVector[0] as number)
        return memoryFree
      },
      onDeferred: () => deferred++,
      settled: () => settled++,
    },
    SYNC_ASK_INTERVAL_MS,
    () => now,
  )
  asks.ask(Uint8Array.of(1))
  assert.deepEqual(answered, [], 'the first ask waits for memory')
  assert.deepEqual(asked, [1])
  asks.ask(Uint8Array.of(2))
  for (let i = 0; i < 5; i++) {
    now += 100
    t.mock.timers.tick(100)
  }
  assert.deepEqual(answered, [], 'still no memory')
  assert.equal(settled, 0, 'it keeps its place in line while it waits')
  assert.ok(asked.length > 2, 'it looked again')
  assert.ok(asked.slice(1).every((vector) => vector === 2), 'for the newest state vector')
  memoryFree = true
  now += 100
  t.mock.timers.tick(100)
  assert.deepEqual(answered, [2])
  assert.equal(deferred, 2)
  assert.equal(settled, 1, 'answered: its place in line is given up')
  memoryFree = false
  now += 10 * SYNC_ASK_INTERVAL_MS
  asks.ask(Uint8Array.of(3))
  asks.close()
  assert.equal(settled, 2, 'closed while waiting: given up too')
})
