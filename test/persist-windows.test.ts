/**
 * The writer's persist windows (persistence/persist-windows.ts): one timer ends every room's
 * window, never late, and with it those about to end. A controlled clock moves with the mocked
 * timers, so the tests see which windows end at which millisecond.
 */
import { test, type TestContext } from 'node:test'
import assert from 'node:assert/strict'
import { PersistWindows } from '../persistence/persist-windows.js'
import { RoomWork } from '../persistence/room-work.js'

function setup (t: TestContext, windowMs: number): { windows: PersistWindows, ended: string[], advance: (ms: number) => void, endedAt: Map<string, number>, stall: (ms: number) => void } {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  let now = 1_000
  const ended: string[] = []
  const endedAt = new Map<string, number>()
  const windows = new PersistWindows(windowMs, (work) => {
    ended.push(work.room)
    endedAt.set(work.room, now)
  }, () => now)
  // One millisecond at a time, so a window's end is seen at the millisecond it happens.
  const advance = (ms: number): void => {
    for (let i = 0; i < ms; i++) {
      now += 1
      t.mock.timers.tick(1)
    }
  }
  // The clock moves but the timers wait: a busy event loop.
  const stall = (ms: number): void => {
    now += ms
  }
  return { windows, ended, advance, endedAt, stall }
}

test('a window ends when its first update has waited the window, not before', (t) => {
  const { windows, ended, advance } = setup(t, 100)
  const a = new RoomWork('a')
  windows.start(a)
  advance(40)
  windows.start(a) // a later update does not extend the window
  advance(59)
  assert.deepEqual(ended, [])
  advance(1)
  assert.deepEqual(ended, ['a'])
  assert.equal(a.windowEndsAt, null)
  advance(500)
  assert.deepEqual(ended, ['a'], 'ended once')
})

test('windows ending within a quarter window of the first end with it; the others at their time', (t) => {
  const { windows, ended, advance, endedAt } = setup(t, 100)
  const rooms = ['a', 'b', 'c', 'd'].map((name) => new RoomWork(name))
  windows.start(rooms[0] as RoomWork) // ends at 100
  advance(10)
  windows.start(rooms[1] as RoomWork) // 110
  advance(15)
  windows.start(rooms[2] as RoomWork) // 125
  advance(5)
  windows.start(rooms[3] as RoomWork) // 130
  advance(69)
  assert.deepEqual(ended, [])
  advance(1)
  // At 100: a, and b and c, which end within 25 ms of it; d (130) not.
  assert.deepEqual(ended, ['a', 'b', 'c'])
  advance(29)
  assert.deepEqual(ended, ['a', 'b', 'c'])
  advance(1)
  assert.deepEqual(ended, ['a', 'b', 'c', 'd'])
  // None ended late: each at or before its own end.
  assert.equal(endedAt.get('b'), 1_100)
  assert.equal(endedAt.get('d'), 1_130)
})

test('a cancelled window never ends; the timer moves on to the next one', (t) => {
  const { windows, ended, advance } = setup(t, 100)
  const a = new RoomWork('a')
  const b = new RoomWork('b')
  windows.start(a) // 100
  advance(50)
  windows.start(b) // 150
  windows.cancel(a)
  advance(99)
  assert.deepEqual(ended, [], 'b ended early, on the timer armed for a')
  advance(1)
  assert.deepEqual(ended, ['b'])
  windows.cancel(b) // ended already: nothing to do
  windows.start(a)
  advance(100)
  assert.deepEqual(ended, ['b', 'a'], 'a window starts again in full after a cancel')
})

test('every window that ended while the event loop was busy ends when the timer fires', (t) => {
  const { windows, ended, advance, stall } = setup(t, 0)
  for (const name of ['a', 'b', 'c']) {
    windows.start(new RoomWork(name))
    stall(5)
  }
  assert.deepEqual(ended, [])
  advance(1)
  assert.deepEqual(ended, ['a', 'b', 'c'], 'one turn for all, not a turn each')
})
