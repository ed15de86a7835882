import type * as Y from 'yjs'
import type { Logger } from './logger.js'
import type { ConnectionInfo, UpdateOrigin, WeftHooks } from './hooks.js'
import type { Room } from './room.js'
import type { RoomEvents } from './room-events.js'

/** A hook of WeftHooks, or `authenticate` (bounded and counted the same way). */
export type HookName = keyof WeftHooks | 'authenticate'

/** Why a hook call counts as failed (`weft_hook_failures_total{hook,reason}`). */
export type HookFailure = 'error' | 'timeout' | 'overflow'

export interface HookRunnerOptions {
  /** Longest one call may take; then it counts as failed and the next call of its queue starts. */
  timeoutMs: number
  /** Calls waiting per queue (one per room, one per connection); past it notifications are dropped. */
  maxPending: number
  log: Logger
  onFailure(hook: HookName, reason: HookFailure): void
}

const TIMED_OUT = Symbol('timed out')

/** One queue of calls that run one after another: a room's events, or one connection's. */
interface CallQueue {
  calls: Array<() => Promise<void>>
  running: boolean
}

/**
 * Runs the embedding application's hooks. Each call is bounded by `timeoutMs`, so a slow hook
 * cannot stall a room; a call that throws or times out is logged and counted and never reaches the
 * caller, so it can neither take the process down nor undo the edit it was told about (the edit is
 * applied and stored before the hook hears of it). Calls for one room (or one connection) run in
 * the order the events happened; different rooms never wait for each other.
 */
export class HookRunner implements RoomEvents {
  private readonly queues = new Map<unknown, CallQueue>()
  /** Rooms with an onStored call queued and not started: a second report adds nothing. */
  private readonly storedQueued = new Set<string>()
  private idleWaiters: Array<() => void> = []

  constructor(
    private readonly hooks: Readonly<WeftHooks>,
    private readonly options: Readonly<HookRunnerOptions>,
  ) {}

  /**
   * Runs `call` bounded by the timeout; resolves (never rejects) with its result, or with `fallback`
   * when it threw or took too long. The timed-out call is left to finish on its own.
   */
  async bounded<T>(hook: HookName, context: Record<string, unknown>, call: () => Promise<T> | T, fallback: T): Promise<T> {
    let timer: NodeJS.Timeout | null = null
    try {
      const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), this.options.timeoutMs)
      })
      const outcome = await Promise.race([Promise.resolve().then(call), timeout])
      if (outcome !== TIMED_OUT) return outcome
      this.fail(hook, 'timeout', context, null)
    } catch (err) {
      this.fail(hook, 'error', context, err)
    } finally {
      if (timer !== null) clearTimeout(timer)
    }
    return fallback
  }

  /** Logs and counts one failed call. */
  fail(hook: HookName, reason: HookFailure, context: Record<string, unknown>, err: unknown): void {
    this.options.onFailure(hook, reason)
    const message = reason === 'timeout' ? `hook ${hook} took longer than ${this.options.timeoutMs} ms` : reason === 'overflow' ? `hook ${hook} dropped: too many calls waiting` : `hook ${hook} threw`
    this.options.log.error({ hook, reason, ...context, ...(err === null ? {} : { err }) }, message)
  }

  /**
   * Queues a call behind the others of `key`; resolves when it ran (or failed). A notification
   * (`droppable`: onChange) that finds the queue full is dropped and counted; the others never
   * are, and are few (one onLoad/onUnload per load, one waiting onStored per room).
   */
  private enqueue(key: unknown, hook: HookName, context: Record<string, unknown>, call: () => Promise<void> | void, droppable: boolean): Promise<void> {
    let queue = this.queues.get(key)
    if (queue === undefined) {
      queue = { calls: [], running: false }
      this.queues.set(key, queue)
    }
    if (droppable && queue.calls.length >= this.options.maxPending) {
      this.fail(hook, 'overflow', context, null)
      return Promise.resolve()
    }
    const done = new Promise<void>((resolve) => {
      ;(queue as CallQueue).calls.push(() => this.bounded(hook, context, call, undefined).then(resolve))
    })
    if (!queue.running) void this.run(key, queue)
    return done
  }

  private async run(key: unknown, queue: CallQueue): Promise<void> {
    queue.running = true
    for (let next = queue.calls.shift(); next !== undefined; next = queue.calls.shift()) await next()
    queue.running = false
    this.queues.delete(key)
    if (this.queues.size === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
  }

  /** Resolves once every queued call has run or failed: for shutdown, after the last events. */
  idle(): Promise<void> {
    if (this.queues.size === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  changed({ name: room }: Room, update: Uint8Array, origin: UpdateOrigin): void {
    const { hooks } = this
    // Storage origins are what the room loaded: nothing the application has not seen before.
    if (hooks.onChange === undefined || origin.kind === 'storage') return
    // Called as methods: hooks may be a class instance that uses `this`.
    void this.enqueue(room, 'onChange', { room, origin: origin.kind }, () => hooks.onChange?.(room, update, origin), true)
  }

  stored({ name: room }: Room): void {
    const { hooks } = this
    if (hooks.onStored === undefined || this.storedQueued.has(room)) return
    this.storedQueued.add(room)
    const call = (): Promise<void> | void => {
      this.storedQueued.delete(room)
      return hooks.onStored?.(room)
    }
    // Never dropped: coalesced, a room has at most one waiting.
    void this.enqueue(room, 'onStored', { room }, call, false)
  }

  loaded({ name: room }: Room, doc: Y.Doc): Promise<void> {
    const { hooks } = this
    if (hooks.onLoad === undefined) return Promise.resolve()
    return this.enqueue(room, 'onLoad', { room }, () => hooks.onLoad?.(room, doc), false)
  }

  unloaded({ name: room }: Room): void {
    const { hooks } = this
    if (hooks.onUnload !== undefined) void this.enqueue(room, 'onUnload', { room }, () => hooks.onUnload?.(room), false)
  }

  /** `key` identifies the connection (or Hocuspocus document): its disconnect runs after its connect. */
  connected(key: object, info: ConnectionInfo): void {
    const { hooks } = this
    if (hooks.onConnect !== undefined) void this.enqueue(key, 'onConnect', { room: info.room, protocol: info.protocol }, () => hooks.onConnect?.(info), false)
  }

  disconnected(key: object, info: ConnectionInfo, code: number): void {
    const { hooks } = this
    if (hooks.onDisconnect !== undefined) void this.enqueue(key, 'onDisconnect', { room: info.room, protocol: info.protocol, code }, () => hooks.onDisconnect?.(info, code), false)
  }
}
