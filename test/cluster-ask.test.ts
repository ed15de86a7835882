/**
 * The "ask the cluster" messages and the bookkeeping of pending asks (cluster/ask.ts), without
 * Redis: what the relay relies on when it waits for the other instances' answers.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PendingAsks, decodeAsk, encodeAsk } from '../cluster/ask.js'

describe('ask messages', () => {
  it('round-trip and refuse anything else on the shared channel', () => {
    const ask = { kind: 'ask', id: 'a:1', room: 'r {x}', from: 'a' } as const
    const answer = { kind: 'answer', id: 'a:1', from: 'b', had: true } as const
    assert.deepEqual(decodeAsk(encodeAsk(ask)), ask)
    assert.deepEqual(decodeAsk(encodeAsk(answer)), answer)
    for (const bad of ['', 'null', '[]', '{"kind":"ask","id":"1","from":"a"}', '{"kind":"answer","id":"1","from":"a","had":"yes"}', '{"kind":"x","id":"1","from":"a"}', '{']) {
      assert.equal(decodeAsk(bad), null, bad)
    }
  })
})

describe('pending asks', () => {
  it('resolve true at the first answer with content', async () => {
    const asks = new PendingAsks()
    const found = asks.wait('1', 5000)
    asks.expect('1', 3)
    asks.answer('1', 'b', false)
    asks.answer('1', 'c', true)
    assert.equal(await found, true)
  })

  it('resolve false once every instance that received the ask said no, even when answers come before the count', async () => {
    const asks = new PendingAsks()
    const found = asks.wait('1', 5000)
    asks.answer('1', 'b', false)
    asks.answer('1', 'b', false) // a repeated answer counts once
    asks.answer('1', 'c', false)
    asks.expect('1', 2)
    assert.equal(await found, false)
  })

  it('resolve false at the deadline when an instance never answers, and ignore unknown ids', async (t) => {
    // A controlled clock: the ask is still open just before its deadline and settled at it.
    t.mock.timers.enable({ apis: ['setTimeout'] })
    const asks = new PendingAsks()
    let settled = false
    const found = asks.wait('1', 50).finally(() => (settled = true))
    asks.expect('1', 2)
    asks.answer('1', 'b', false)
    asks.answer('other', 'c', true)
    t.mock.timers.tick(49)
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(settled, false, 'settled before the deadline, with one instance still to answer')
    t.mock.timers.tick(1)
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(settled, true, 'still open after the deadline')
    assert.equal(await found, false)
  })

  it('clear settles every ask', async () => {
    const asks = new PendingAsks()
    const one = asks.wait('1', 60_000)
    const two = asks.wait('2', 60_000)
    asks.clear()
    assert.deepEqual(await Promise.all([one, two]), [false, false])
  })
})
