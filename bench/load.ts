/**
 * The coordinator's side of the load processes: start them on the load core, send commands,
 * await replies, merge their statistics.
 */
import type { ChildProcess } from 'node:child_process'
import { setPriority } from 'node:os'
import { fileURLToPath } from 'node:url'
import type { ClientSpec, Command, ConnectResult, GroupStats, Reply, StatsResult } from './load-protocol.js'
import { cpuSeconds, LOAD_CPU, spawnPinned, stopProcess } from './processes.js'
import type { RunningTarget } from './targets.js'

const WORKER = fileURLToPath(new URL('./load-worker.js', import.meta.url))
/** Niceness of the light clients' processes when a timer process has the writers and trackers. */
const LIGHT_NICENESS = 19

export class LoadWorker {
  private readonly child: ChildProcess
  private pending: { resolve: (reply: Reply) => void; reject: (err: Error) => void } | null = null

  constructor (index: number) {
    this.child = spawnPinned(LOAD_CPU, ['--max-old-space-size=4096', WORKER], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, BENCH_WORKER_INDEX: String(index) },
    })
    this.child.on('message', (reply: Reply) => {
      const pending = this.pending
      this.pending = null
      if (pending === null) return
      if (reply.type === 'error') pending.reject(new Error(`load process: ${reply.message}`))
      else pending.resolve(reply)
    })
    this.child.once('exit', (code) => {
      const pending = this.pending
      this.pending = null
      pending?.reject(new Error(`load process exited with status ${code}`))
    })
  }

  get pid (): number {
    return this.child.pid ?? -1
  }

  /** One command at a time per worker; the reply type is the caller's expectation. */
  request<T extends Reply> (command: Command): Promise<T> {
    if (this.pending !== null) return Promise.reject(new Error('load process busy'))
    return new Promise<T>((resolve, reject) => {
      this.pending = { resolve: resolve as (reply: Reply) => void, reject }
      this.child.send(command)
    })
  }

  async close (): Promise<void> {
    if (this.child.exitCode !== null) return
    await this.request({ type: 'close' }).catch(() => {})
    await stopProcess(this.child, 2_000)
  }
}

export interface MergedStats {
  delivered: number
  expected: number
  sent: number
  latenciesMs: number[]
  closed: number
  awarenessFrames: number
  cursorLatenciesMs: number[]
  /** Per `ClientSpec.group`, summed over the load processes. */
  groups: Map<string, GroupStats>
}

export function mergeStats (parts: StatsResult[]): MergedStats {
  const received = new Map<string, number>()
  const receivers = new Map<string, number>()
  const sent = new Map<string, number>()
  let closed = 0
  const latenciesMs: number[] = []
  const cursorLatenciesMs: number[] = []
  let awarenessFrames = 0
  const groups = new Map<string, GroupStats>()
  for (const part of parts) {
    for (const [name, g] of Object.entries(part.groups ?? {})) {
      const sum = groups.get(name) ?? { receivers: 0, received: 0, frames: 0, latenciesMs: [] }
      sum.receivers += g.receivers
      sum.received += g.received
      sum.frames += g.frames
      for (const l of g.latenciesMs) sum.latenciesMs.push(l)
      groups.set(name, sum)
    }
    awarenessFrames += part.awarenessFrames
    for (const l of part.cursorLatenciesMs) cursorLatenciesMs.push(l)
    for (const [room, n] of Object.entries(part.received)) received.set(room, (received.get(room) ?? 0) + n)
    for (const [room, n] of Object.entries(part.receivers)) receivers.set(room, (receivers.get(room) ?? 0) + n)
    for (const [room, n] of Object.entries(part.sent)) sent.set(room, (sent.get(room) ?? 0) + n)
    for (const l of part.latenciesMs) latenciesMs.push(l)
    closed += part.closed
  }
  let expected = 0
  let delivered = 0
  let sentTotal = 0
  for (const [room, n] of sent) {
    expected += n * (receivers.get(room) ?? 0)
    sentTotal += n
  }
  for (const n of received.values()) delivered += n
  return { delivered, expected, sent: sentTotal, latenciesMs, closed, awarenessFrames, cursorLatenciesMs, groups }
}

function mergeConnected (results: ConnectResult[]): ConnectResult {
  return {
    type: 'connected',
    synced: results.reduce((s, r) => s + r.synced, 0),
    failed: results.reduce((s, r) => s + r.failed, 0),
    allSyncedMs: Math.max(...results.map((r) => r.allSyncedMs)),
    completeMs: results.flatMap((r) => r.completeMs),
    logLengths: results.flatMap((r) => r.logLengths),
    stateBytes: Math.max(...results.map((r) => r.stateBytes)),
  }
}

/** A set of load processes with clients dealt out over them. */
export class LoadPool {
  readonly workers: LoadWorker[]

  /**
   * `count` load processes. With `timerProcess`, the first holds only the writers and trackers:
   * a tracker then times the server, not its own process working through hundreds of light
   * receivers' frames before it gets to the tracker's (every process shares the one load core).
   */
  constructor (count: number, private readonly timerProcess = false) {
    if (timerProcess && count < 2) throw new Error('a timer process needs at least one more load process')
    this.workers = Array.from({ length: count }, (_, i) => new LoadWorker(i))
    if (timerProcess) {
      // The light clients stand in for other people's machines: on the shared load core they
      // yield to the timer process, which then reads a frame when it arrives, not after them.
      for (const worker of this.workers.slice(1)) setPriority(worker.pid, LIGHT_NICENESS)
    }
  }

  private shareOf (spec: ClientSpec, i: number): number {
    const timing = spec.role === 'writer' || spec.role === 'tracker'
    if (!this.timerProcess) return timing ? 0 : i % this.workers.length
    return timing ? 0 : 1 + (i % (this.workers.length - 1))
  }

  /**
   * Connects `clients` spread round-robin over the workers (writers go to the first worker with
   * their room's first trackers, so send and receive times come from neighbouring clocks).
   */
  async connect (target: RunningTarget, clients: ClientSpec[], options: { concurrency: number; timeoutMs: number; completeLength?: number }): Promise<ConnectResult> {
    const shares: ClientSpec[][] = this.workers.map(() => [])
    clients.forEach((spec, i) => {
      ;(shares[this.shareOf(spec, i)] as ClientSpec[]).push(spec)
    })
    const perWorker = Math.max(1, Math.ceil(options.concurrency / this.workers.length))
    const results = await Promise.all(this.workers.map((w, i) => w.request<ConnectResult>({
      type: 'connect',
      port: target.port,
      dialect: target.dialect,
      clients: shares[i] as ClientSpec[],
      concurrency: options.concurrency > 0 ? perWorker : 0,
      timeoutMs: options.timeoutMs,
      ...(options.completeLength === undefined ? {} : { completeLength: options.completeLength }),
    })))
    return mergeConnected(results)
  }

  /**
   * Like `connect`, with each room's trackers joining at evenly spread places among its other
   * clients (in waves: a wave starts when the one before has synced). A server hands a broadcast
   * to its members in some order, usually the order they joined; trackers that all joined first
   * (or last) would time only the best (or worst) place in that order.
   */
  async connectSpread (target: RunningTarget, clients: ClientSpec[], options: { concurrency: number; timeoutMs: number }): Promise<ConnectResult> {
    const waves: ClientSpec[][] = []
    const rooms = new Map<string, ClientSpec[]>()
    for (const spec of clients) {
      const members = rooms.get(spec.room) ?? []
      members.push(spec)
      rooms.set(spec.room, members)
    }
    for (const members of rooms.values()) {
      const trackers = members.filter((c) => c.role === 'tracker')
      const others = members.filter((c) => c.role !== 'tracker')
      // Tracker j goes after this many of the others: the middles of equal slices.
      const places = trackers.map((_, j) => Math.round(((j + 0.5) * others.length) / trackers.length))
      let wave = 0
      others.forEach((spec, i) => {
        while (wave < places.length && (places[wave] as number) <= i) wave++
        ;(waves[wave] ??= []).push(spec)
      })
      trackers.forEach((spec, j) => (waves[j + 1] ??= []).unshift(spec))
    }
    const results: ConnectResult[] = []
    for (const wave of waves) {
      if (wave !== undefined && wave.length > 0) results.push(await this.connect(target, wave, options))
    }
    return mergeConnected(results)
  }

  /** CPU seconds all load processes have used so far. */
  cpuSeconds (): number {
    return this.workers.reduce((sum, w) => sum + cpuSeconds(w.pid), 0)
  }

  all<T extends Reply> (command: Command): Promise<T[]> {
    return Promise.all(this.workers.map((w) => w.request<T>(command)))
  }

  async stats (): Promise<MergedStats> {
    return mergeStats(await this.all<StatsResult>({ type: 'stats' }))
  }

  async close (): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()))
  }
}
