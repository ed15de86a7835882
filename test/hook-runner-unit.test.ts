/**
 * HookRunner's queues with a gate the test opens: order per room, rooms independent, onChange
 * bounded by maxPending (the rest dropped and counted), onStored coalesced, failures counted.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { HookRunner, type HookFailure, type HookName } from '../server/hook-runner.js'
import type { UpdateOrigin, WeftHooks } from '../server/hooks.js'
import type { Room } from '../server/room.js'
import { until } from './harness/wait.js'

/** The runner reads only a room's name. */
const room = (name: string): Room => ({ name }) as Room

const ORIGIN: UpdateOrigin = { kind: 'http', subject: null }

function runner(hooks: WeftHooks, maxPending = 100, timeoutMs = 60_000): { runner: HookRunner; failures: Array<[HookName, HookFailure]> } {
  const failures: Array<[HookName, HookFailure]> = []
  const log = pino({ level: 'silent' })
  return { runner: new HookRunner(hooks, { timeoutMs, maxPending, log, onFailure: (hook, reason) => failures.push([hook, reason]) }), failures }
}

function gate(): { wait: Promise<void>; open(): void } {
  let open = (): void => {}
  const wait = new Promise<void>((resolve) => (open = resolve))
  return { wait, open }
}

describe('HookRunner', () => {
  it('runs one room\'s calls in order, one at a time; another room does not wait for it', async () => {
    const held = gate()
    const calls: string[] = []
    const { runner: hooks } = runner({
      onChange: async (room, update) => {
        calls.push(`${room} ${update[0]} start`)
        if (room === 'slow') await held.wait
        calls.push(`${room} ${update[0]} end`)
      },
    })
    hooks.changed(room('slow'), Uint8Array.of(1), ORIGIN)
    hooks.changed(room('slow'), Uint8Array.of(2), ORIGIN)
    hooks.changed(room('fast'), Uint8Array.of(3), ORIGIN)
    await until(() => calls.includes('fast 3 end'), 'the other room\'s call')
    assert.deepEqual(calls, ['slow 1 start', 'fast 3 start', 'fast 3 end'])
    held.open()
    await hooks.idle()
    assert.deepEqual(calls.filter((call) => call.startsWith('slow')), ['slow 1 start', 'slow 1 end', 'slow 2 start', 'slow 2 end'])
  })

  it('drops onChange past maxPending waiting calls and counts each; coalesces waiting onStored calls', async () => {
    const held = gate()
    const seen: string[] = []
    const { runner: hooks, failures } = runner({
      onChange: async (_room, update) => {
        seen.push(`change ${update[0]}`)
        await held.wait
      },
      onStored: () => void seen.push('stored'),
    }, 2)
    for (let i = 0; i < 5; i++) hooks.changed(room('r'), Uint8Array.of(i), ORIGIN)
    for (let i = 0; i < 3; i++) hooks.stored(room('r'))
    assert.deepEqual(failures, [['onChange', 'overflow'], ['onChange', 'overflow']])
    held.open()
    await hooks.idle()
    assert.deepEqual(seen, ['change 0', 'change 1', 'change 2', 'stored'])
    hooks.stored(room('r'))
    await hooks.idle()
    assert.equal(seen.at(-1), 'stored', 'a later write is reported again')
    assert.equal(seen.length, 5)
  })

  it('calls hooks as methods: a class instance keeps its `this`', async () => {
    class Audit implements WeftHooks {
      readonly rooms: string[] = []
      onChange(room: string): void {
        this.rooms.push(room)
      }
    }
    const audit = new Audit()
    const { runner: hooks, failures } = runner(audit)
    hooks.changed(room('r'), Uint8Array.of(1), ORIGIN)
    await hooks.idle()
    assert.deepEqual(failures, [])
    assert.deepEqual(audit.rooms, ['r'])
  })

  it('counts a throw and a timeout, resolves loaded() either way, and never rejects', async () => {
    const { runner: hooks, failures } = runner({
      onLoad: () => new Promise(() => {}),
      onUnload: () => {
        throw new Error('boom')
      },
    }, 10, 50)
    await hooks.loaded(room('r'), {} as never)
    hooks.unloaded(room('r'))
    await hooks.idle()
    assert.deepEqual(failures, [['onLoad', 'timeout'], ['onUnload', 'error']])
    const answer = await hooks.bounded('authenticate', {}, () => Promise.reject(new Error('down')), 'fallback')
    assert.equal(answer, 'fallback')
  })
})
