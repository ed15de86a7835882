/**
 * The seven scenarios. Each runs against one target that the caller has not started yet (some
 * restart it), and returns flat metrics for the report. Every process a scenario starts is
 * ended in its `finally`.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ClientSpec, Reply } from './load-protocol.js'
import type { Dialect } from './wire.js'
import { LoadPool } from './load.js'
import { MEMORY_PROBE_FLAGS, readMemoryProbe } from './memory-probe.js'
import { cpuSeconds, freePort, LOAD_CPU, peakRssMb, rssMb, RssSampler, SERVER_CPU, spawnCommandPinned, stopProcess, waitForPort } from './processes.js'
import { startTarget, STATEFUL, type RunningTarget, type StartOptions, type TargetName } from './targets.js'
import { BIG_DOCUMENT_SCENARIOS } from './scenarios-bigdoc.js'
import { clusterCrowd } from './scenarios-cluster.js'
import { roomsScenario } from './scenarios-rooms.js'

export interface BenchConfig {
  quick: boolean
  /** Writing time of scenarios 1, 2 and 7, seconds. */
  liveSeconds: number
  /** Unmeasured writing before the measured window of scenarios 1, 2 and the first saturation step, seconds. */
  warmupSeconds: number
  /** Length of one saturation step, seconds. */
  stepSeconds: number
  /** Clients in the saturation room (1 writer, 2 trackers, the rest light). */
  saturationClients: number
  /** Updates in the cold-load history. */
  historyUpdates: number
  /** Size of the document the joiners sync, bytes. */
  joinDocumentBytes: number
  joinClients: number
  /** Idle connection counts to measure at, in order; 'max' = as many as the file limit allows. */
  idleCounts: number[]
  /** Healthy readers and update padding of the slow-reader scenario. */
  slowHealthyClients: number
  slowPaddingBytes: number
  /** Writing time of the slow-reader scenario, seconds. */
  slowSeconds: number
  /** Extra node flags for weft (e.g. --cpu-prof). */
  weftNodeFlags: string[]
  /** Run weft with its default rate limits instead of lifting them. */
  keepWeftLimits: boolean
  /** Multiplies every client and room count (1 = as the issue specifies; small values for smoke runs). */
  scale: number
  /** http-get: concurrent keep-alive clients, seconds per measurement, document size in bytes. */
  httpClients: number
  httpSeconds: number
  httpDocumentBytes: number
  /** http-get: cold GETs per format, each on an unloaded room. */
  httpColdSamples: number
  /** cluster: rooms (1 writer on instance A; 2 trackers and 2 light clients on instance B, each). */
  clusterRooms: number
  /** Runs of each scenario per target; the report gives medians and spreads when above 1. */
  rounds: number
  /** memory-over-time: updates over all rooms, and connect/disconnect cycles, in total. */
  memoryUpdates: number
  memoryCycles: number
  /** The relay's busy microseconds per forwarded message, in the scenarios started with startOptions (0: none). */
  relayWorkUs: number
  /** Set by `withHocuspocusPath`: weft is driven through its Hocuspocus path instead of y-websocket framing. */
  weftDialect?: Dialect
}

export function scaled (config: BenchConfig, n: number): number {
  return Math.max(3, Math.round(n * config.scale))
}

export type Metrics = Record<string, number | string | null>

export interface Scenario {
  id: number
  name: string
  title: string
  /** False: the target has no document to store or sync (the relay). */
  applies (target: TargetName): boolean
  /** Shown in the table for a target that `applies` rejects (default: the relay's "no document"). */
  skipReason? (target: TargetName): string
  run (target: TargetName, config: BenchConfig): Promise<Metrics>
}

export const GRACE_MS = 3_000

export function percentile (sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number
}

export const round = (n: number, digits = 1): number => Number(n.toFixed(digits))

/** BENCH_CPU_PROF_INTERVAL: the profiles' sampling interval in µs (node's default 1000 is too coarse to see millisecond stalls). */
function profileInterval (): string[] {
  const interval = process.env.BENCH_CPU_PROF_INTERVAL
  return interval === undefined || interval === '' ? [] : ['--cpu-prof-interval', interval]
}

export function startOptions (name: TargetName, config: BenchConfig, dataDir: string | null): Parameters<typeof startTarget>[1] {
  const profileDir = process.env.BENCH_CPU_PROF
  // A peer without a SIGTERM handler would die before writing its profile: exit cleanly instead.
  const profile = profileDir === undefined || profileDir === ''
    ? []
    : ['--cpu-prof', '--cpu-prof-dir', profileDir, ...profileInterval(), ...(name === 'weft' ? [] : ['--import', "data:text/javascript,process.on('SIGTERM',()=>process.exit(0))"])]
  if (name === 'ws-relay') return { dataDir, nodeFlags: profile, relayWorkUs: config.relayWorkUs }
  return { dataDir, ...(name === 'weft' ? { nodeFlags: [...profile, ...config.weftNodeFlags], keepWeftLimits: config.keepWeftLimits } : { nodeFlags: profile }) }
}

async function withTarget<T> (name: TargetName, config: BenchConfig, dataDir: string | null, body: (target: RunningTarget) => Promise<T>, extra: Partial<StartOptions> = {}): Promise<T> {
  const target = await startTarget(name, { ...startOptions(name, config, dataDir), ...extra })
  try {
    return await body(name === 'weft' && config.weftDialect !== undefined ? { ...target, dialect: config.weftDialect } : target)
  } finally {
    await target.stop(15_000, 1_000)
  }
}

export async function withPool<T> (workers: number, body: (pool: LoadPool) => Promise<T>, timerProcess = false): Promise<T> {
  const pool = new LoadPool(workers, timerProcess)
  try {
    return await body(pool)
  } finally {
    await pool.close()
  }
}

export function roomClients (room: string, total: number, trackers: number, slow = 0): ClientSpec[] {
  const specs: ClientSpec[] = [{ room, role: 'writer' }]
  for (let i = 0; i < trackers; i++) specs.push({ room, role: 'tracker' })
  for (let i = specs.length; i < total; i++) specs.push({ room, role: 'light' })
  for (let i = 0; i < slow; i++) specs.push({ room, role: 'slow' })
  return specs
}

interface LiveResult {
  metrics: Metrics
  deliveredPct: number
  p99: number | null
  deliveredPerSecond: number
  /** CPU the load processes used over the window, percent of their one core. */
  loadCpuPct: number
  /** Scheduled over actual writing time (below 1: the load core fell behind the offered rate). */
  sentShare: number
  writtenSeconds: number
}

/** Writes at `rate` per writer for `seconds`, waits for stragglers, and measures deliveries, latency and server CPU. */
async function live (target: RunningTarget, pool: LoadPool, rate: number, seconds: number, paddingBytes = 0, warmupSeconds = 0): Promise<LiveResult> {
  if (warmupSeconds > 0) {
    // Unmeasured: lets every process's JIT and buffers settle so the first sends do not set p99.
    await pool.all({ type: 'write', ratePerSecond: rate, durationMs: warmupSeconds * 1000, paddingBytes })
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  await pool.all({ type: 'reset' })
  const cpuBefore = cpuSeconds(target.pid)
  const loadCpuBefore = pool.cpuSeconds()
  const started = performance.now()
  await pool.all({ type: 'write', ratePerSecond: rate, durationMs: seconds * 1000, paddingBytes })
  const writtenMs = performance.now() - started
  let stats = await pool.stats()
  const graceUntil = performance.now() + GRACE_MS
  while (stats.delivered < stats.expected && performance.now() < graceUntil) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    stats = await pool.stats()
  }
  const cpu = cpuSeconds(target.pid) - cpuBefore
  const elapsedSeconds = (performance.now() - started) / 1000
  const loadCpuPct = (100 * (pool.cpuSeconds() - loadCpuBefore)) / elapsedSeconds
  const sorted = stats.latenciesMs.sort((a, b) => a - b)
  const deliveredPct = stats.expected === 0 ? 0 : (100 * stats.delivered) / stats.expected
  const p99 = percentile(sorted, 99)
  // Per nominal second: the writers' schedule spans `seconds`; stragglers arrive within the grace.
  const deliveredPerSecond = stats.delivered / seconds
  return {
    deliveredPct,
    p99,
    deliveredPerSecond,
    // Writers always finish their schedule; when the load core falls behind, it just takes longer.
    loadCpuPct,
    sentShare: seconds / Math.max(seconds, writtenMs / 1000 - 0.1),
    writtenSeconds: writtenMs / 1000,
    metrics: {
      sent: stats.sent,
      delivered: stats.delivered,
      expected: stats.expected,
      deliveredPct: round(deliveredPct, 2),
      p50Ms: percentile(sorted, 50) === null ? null : round(percentile(sorted, 50) as number, 2),
      p99Ms: p99 === null ? null : round(p99, 2),
      maxMs: sorted.length === 0 ? null : round(sorted[sorted.length - 1] as number, 2),
      latencySamples: sorted.length,
      cpuSeconds: round(cpu, 2),
      serverCpuPct: round((100 * cpu) / elapsedSeconds),
      loadCpuPct: round(loadCpuPct),
      peakRssMb: round(peakRssMb(target.pid)),
      clientsClosed: stats.closed,
    },
  }
}

export function connectFailure (what: string, synced: number, wanted: number): Error {
  return new Error(`${what}: ${synced} of ${wanted} clients synced`)
}

const bigRoom: Scenario = {
  id: 1,
  name: 'big-room',
  title: 'One big room: 500 clients, 1 writer at 20 updates/s',
  applies: () => true,
  run: (name, config) => withTarget(name, config, null, (target) => withPool(3, async (pool) => {
    const clients = roomClients('big-room', scaled(config, 500), 5)
    const connected = await pool.connectSpread(target, clients, { concurrency: 100, timeoutMs: 60_000 })
    if (connected.synced < clients.length) throw connectFailure('big-room', connected.synced, clients.length)
    const result = await live(target, pool, 20, config.liveSeconds, 0, config.warmupSeconds)
    return { clients: clients.length, ...result.metrics }
  }, true)),
}

const manyRooms: Scenario = {
  id: 2,
  name: 'many-rooms',
  title: 'Many rooms: 200 rooms x 5 clients, 1 writer each at 5 updates/s',
  applies: () => true,
  run: (name, config) => withTarget(name, config, null, (target) => withPool(3, async (pool) => {
    const clients: ClientSpec[] = []
    for (let r = 0; r < scaled(config, 200); r++) clients.push(...roomClients(`room-${r}`, 5, 1))
    const connected = await pool.connectSpread(target, clients, { concurrency: 100, timeoutMs: 60_000 })
    if (connected.synced < clients.length) throw connectFailure('many-rooms', connected.synced, clients.length)
    const result = await live(target, pool, 5, config.liveSeconds, 0, config.warmupSeconds)
    return { clients: clients.length, ...result.metrics }
  }, true)),
}

/** Offered update rates of the saturation steps, per second. */
export const SATURATION_RATES = [100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000, 32000, 48000, 64000, 96000]

const saturation: Scenario = {
  id: 3,
  name: 'saturation',
  title: 'Saturation: offered rate raised until p99 > 100 ms or deliveries < 99%',
  applies: () => true,
  run: (name, config) => withTarget(name, config, null, (target) => withPool(3, async (pool) => {
    const clients = roomClients('saturation', config.saturationClients, 2)
    const connected = await pool.connectSpread(target, clients, { concurrency: 100, timeoutMs: 60_000 })
    if (connected.synced < clients.length) throw connectFailure('saturation', connected.synced, clients.length)
    const cpuBefore = cpuSeconds(target.pid)
    const steps: string[] = []
    let best: LiveResult | null = null
    let bestRate = 0
    let stoppedBy = 'last step passed'
    for (const rate of SATURATION_RATES) {
      let step = await live(target, pool, rate, config.stepSeconds, 0, rate === SATURATION_RATES[0] ? config.warmupSeconds : 0)
      // One pause (GC, a timer) can decide a short step's p99: a failing step is run once more.
      if (step.p99 === null || step.p99 > 100 || step.deliveredPct < 99) {
        steps.push(`${rate}/s: ${round(step.deliveredPct, 1)}% p99 ${step.p99 === null ? '-' : round(step.p99, 1)} ms (retried)`)
        step = await live(target, pool, rate, config.stepSeconds)
      }
      steps.push(`${rate}/s: ${round(step.deliveredPct, 1)}% p99 ${step.p99 === null ? '-' : round(step.p99, 1)} ms, server ${step.metrics.serverCpuPct}% load ${step.metrics.loadCpuPct}% CPU`)
      if (step.p99 === null || step.p99 > 100 || step.deliveredPct < 99) {
        stoppedBy = `${rate}/s: ${step.p99 === null ? 'no latency samples' : step.p99 > 100 ? `p99 ${round(step.p99, 1)} ms` : `${round(step.deliveredPct, 1)}% delivered`}`
        break
      }
      // The writer itself could not keep up: the load core, not the server, is the limit.
      if (step.sentShare < 0.9) {
        stoppedBy = `${rate}/s: load generator sent only ${Math.round(100 * step.sentShare)}% of the schedule`
        best = step
        bestRate = rate
        break
      }
      best = step
      bestRate = rate
    }
    return {
      clients: clients.length,
      sustainedUpdatesPerSecond: bestRate,
      sustainedDeliveriesPerSecond: best === null ? 0 : Math.round(best.deliveredPerSecond),
      p99MsAtSustained: best?.p99 === null || best === null ? null : round(best.p99 as number, 2),
      serverCpuPctAtSustained: best?.metrics.serverCpuPct ?? null,
      loadCpuPctAtSustained: best?.metrics.loadCpuPct ?? null,
      stoppedBy,
      cpuSeconds: round(cpuSeconds(target.pid) - cpuBefore, 2),
      peakRssMb: round(peakRssMb(target.pid)),
      steps: steps.join('; '),
    }
  }, true)),
}

/** Apparent size of every file under a directory, bytes. */
function directoryBytes (dir: string): number {
  let total = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? directoryBytes(path) : statSync(path).size
  }
  return total
}

/** When the server is no longer running: its exit status and the last line it wrote on stderr. */
export function serverDied (target: RunningTarget): Metrics {
  const { exitCode, signalCode } = target.child
  if (exitCode === null && signalCode === null) return {}
  const lines = target.stderr.join('').trim().split('\n')
  const lastLine = lines.find((line) => /FATAL|Error|error/.test(line)) ?? lines.pop() ?? ''
  return { serverExited: `${signalCode ?? `status ${exitCode}`}: ${lastLine.slice(0, 200)}` }
}

const coldLoad: Scenario = {
  id: 5,
  name: 'cold-load',
  title: 'Cold load: 50,000-update history, SIGTERM 1 s after the last update, restart, load',
  applies: (target) => STATEFUL[target],
  run: async (name, config) => {
    const dataDir = mkdtempSync(join(tmpdir(), `weft-bench-${name}-`))
    try {
      const room = 'history'
      const count = config.historyUpdates
      // Phase 1: write the history, SIGTERM one second after the last update left the writer.
      const target = await startTarget(name, startOptions(name, config, dataDir))
      let writeSeconds = 0
      let stateBytes = 0
      let graceful = false
      let shutdownSeconds = 0
      let serverHadAll: number | null = null
      try {
        await withPool(1, async (pool) => {
          const connected = await pool.connect(target, [{ room, role: 'writer' }, { room, role: 'tracker' }], { concurrency: 0, timeoutMs: 20_000 })
          if (connected.synced < 2) throw connectFailure('cold-load', connected.synced, 2)
          const started = performance.now()
          const [written] = await pool.all<Extract<Reply, { type: 'written' }>>({ type: 'history', count })
          writeSeconds = (performance.now() - started) / 1000
          stateBytes = written?.stateBytes ?? 0
          await new Promise((resolve) => setTimeout(resolve, 1_000))
          // How many of the updates the server had broadcast by the time it was told to stop.
          const [reached] = await pool.all<Extract<Reply, { type: 'length-reached' }>>({ type: 'await-length', length: count, timeoutMs: 0 })
          serverHadAll = reached?.lengths[0] ?? null
          const stopAt = performance.now()
          graceful = await target.stop(30_000)
          shutdownSeconds = (performance.now() - stopAt) / 1000
        })
      } finally {
        await target.stop(1_000, 0)
      }
      const diskBytes = directoryBytes(dataDir)
      // Phase 2: restart on the same directory; time until a new client holds the whole history.
      const restartStarted = performance.now()
      const restarted = await startTarget(name, startOptions(name, config, dataDir))
      const listeningMs = performance.now() - restartStarted
      try {
        return await withPool(1, async (pool) => {
          const connected = await pool.connect(restarted, [{ room, role: 'tracker' }], { concurrency: 0, timeoutMs: 60_000, completeLength: count })
          const completeMs = connected.completeMs[0] ?? null
          return {
            updates: count,
            writeSeconds: round(writeSeconds, 2),
            relayedBeforeSigterm: serverHadAll,
            exitedOnSigterm: graceful ? 'yes' : 'no (killed)',
            shutdownSeconds: round(shutdownSeconds, 2),
            survived: connected.logLengths[0] ?? 0,
            survivedPct: round((100 * (connected.logLengths[0] ?? 0)) / count, 2),
            restartListeningMs: round(listeningMs, 1),
            firstSyncMs: round(connected.allSyncedMs, 1),
            coldLoadMs: completeMs === null ? null : round(completeMs, 1),
            diskBytes,
            stateBytes,
            diskOverState: stateBytes === 0 ? null : round(diskBytes / stateBytes, 2),
            peakRssMb: round(peakRssMb(restarted.pid)),
            ...serverDied(restarted),
          }
        })
      } finally {
        await restarted.stop(15_000, 1_000)
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  },
}

const joins: Scenario = {
  id: 6,
  name: 'joins',
  title: 'Joins: 200 clients join a room holding a 5 MB document at once',
  applies: (target) => STATEFUL[target],
  run: (name, config) => withTarget(name, config, null, (target) => withPool(2, async (pool) => {
    const room = 'big-document'
    const seeded = await pool.workers[0]?.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'writer' }], concurrency: 0, timeoutMs: 20_000 })
    if (seeded?.synced !== 1) throw connectFailure('joins', seeded?.synced ?? 0, 1)
    await pool.workers[0]?.request({ type: 'bulk-text', totalBytes: config.joinDocumentBytes, chunkBytes: 64 * 1024 })
    // The server holds the document once a fresh client's sync brings all of it.
    let documentBytes = 0
    const until = performance.now() + 60_000
    while (documentBytes < config.joinDocumentBytes && performance.now() < until) {
      const probe = await pool.workers[0]?.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'tracker' }], concurrency: 0, timeoutMs: 20_000 })
      documentBytes = probe?.stateBytes ?? 0
    }
    const rssBefore = rssMb(target.pid)
    const sampler = new RssSampler(target.pid, 25)
    const cpuBefore = cpuSeconds(target.pid)
    const joiners: ClientSpec[] = Array.from({ length: scaled(config, config.joinClients) }, () => ({ room, role: 'light' }))
    const connected = await pool.connect(target, joiners, { concurrency: 0, timeoutMs: 120_000 })
    sampler.stop()
    return {
      documentBytes,
      joiners: joiners.length,
      synced: connected.synced,
      allSyncedMs: round(connected.allSyncedMs, 1),
      cpuSeconds: round(cpuSeconds(target.pid) - cpuBefore, 2),
      rssBeforeMb: round(rssBefore),
      rssDuringJoinMaxMb: round(sampler.max),
      peakRssMb: round(peakRssMb(target.pid)),
    }
  })),
}

const slowReader: Scenario = {
  id: 7,
  name: 'slow-reader',
  title: 'Slow reader: big room plus 20 clients that stop reading',
  applies: () => true,
  run: (name, config) => withTarget(name, config, null, (target) => withPool(3, async (pool) => {
    const clients = roomClients('slow-room', scaled(config, config.slowHealthyClients), 5, scaled(config, 20))
    const connected = await pool.connectSpread(target, clients, { concurrency: 100, timeoutMs: 60_000 })
    if (connected.synced < clients.length) throw connectFailure('slow-reader', connected.synced, clients.length)
    await pool.all({ type: 'pause-slow' })
    const sampler = new RssSampler(target.pid, 1_000)
    const rssStart = rssMb(target.pid)
    const result = await live(target, pool, 20, config.slowSeconds, config.slowPaddingBytes)
    sampler.stop()
    // Reading again drains what the server kept for them; a socket the server dropped ends.
    const slow = await pool.all<Extract<Reply, { type: 'slow-closed' }>>({ type: 'resume-slow', waitMs: 3_000 })
    const series = sampler.series
    const step = Math.max(1, Math.floor(series.length / 8))
    return {
      healthyClients: scaled(config, config.slowHealthyClients),
      slowClients: scaled(config, 20),
      updateBytes: config.slowPaddingBytes,
      ...result.metrics,
      rssStartMb: round(rssStart),
      rssMaxMb: round(sampler.max),
      rssEndMb: round(series[series.length - 1]?.mb ?? 0),
      slowClosedByServer: slow.reduce((sum, r) => sum + r.closed, 0),
      rssOverTime: series.filter((_, i) => i % step === 0).map((s) => `${Math.round(s.t)}s:${Math.round(s.mb)}`).join(' '),
    }
  }, true)),
}

const idle: Scenario = {
  id: 4,
  name: 'idle',
  title: 'Idle connections over 1,000 rooms: RSS per connection',
  applies: () => true,
  run: (name, config) => withTarget(name, config, null, (target) => withPool(4, async (pool) => {
    await new Promise((resolve) => setTimeout(resolve, 500))
    const baseline = rssMb(target.pid)
    const metrics: Metrics = { baselineRssMb: round(baseline) }
    let opened = 0
    for (const wanted of config.idleCounts) {
      const batch: ClientSpec[] = []
      for (let i = opened; i < wanted; i++) batch.push({ room: `idle-${i % scaled(config, 1000)}`, role: 'light' })
      const started = performance.now()
      const connected = await pool.connect(target, batch, { concurrency: 400, timeoutMs: 180_000 })
      const connectSeconds = (performance.now() - started) / 1000
      opened = wanted
      // Let allocation settle before reading RSS.
      await new Promise((resolve) => setTimeout(resolve, 2_000))
      const stats = await pool.stats()
      const live = (metrics.connected as number | undefined ?? 0) + connected.synced
      metrics.connected = live
      const rss = rssMb(target.pid)
      metrics[`at${wanted}_connected`] = live - stats.closed
      metrics[`at${wanted}_failed`] = connected.failed
      metrics[`at${wanted}_connectSeconds`] = round(connectSeconds, 1)
      metrics[`at${wanted}_rssMb`] = round(rss)
      metrics[`at${wanted}_rssPerConnKb`] = live - stats.closed > 0 ? round(((rss - baseline) * 1024) / (live - stats.closed), 2) : null
    }
    metrics.peakRssMb = round(peakRssMb(target.pid))
    return metrics
  })),
}

export type ConnectResult = Extract<Reply, { type: 'connected' }>


/** Prefixes every metric name (two measurements in one scenario's column). */
export function prefixed (prefix: string, metrics: Metrics): Metrics {
  return Object.fromEntries(Object.entries(metrics).map(([k, v]) => [`${prefix}${k}`, v]))
}

/** Scenarios 1 and 2 with every client speaking the Hocuspocus framing: weft's Hocuspocus path (`/`) against @hocuspocus/server. */
const hocuspocusFanout: Scenario = {
  id: 8,
  name: 'hocuspocus-fanout',
  title: 'Hocuspocus protocol fan-out: scenarios 1 (bigRoom_) and 2 (manyRooms_) through the Hocuspocus framing',
  applies: (target) => target === 'weft' || target === 'hocuspocus',
  skipReason: () => 'does not speak the Hocuspocus protocol',
  run: async (name, config) => {
    // Each half on a fresh server, so peak RSS belongs to that half.
    const big = await withTarget(name, config, null, (started) => withPool(3, async (pool) => {
      const target: RunningTarget = { ...started, dialect: 'hocuspocus' }
      const clients = roomClients('big-room', scaled(config, 500), 5)
      const connected = await pool.connectSpread(target, clients, { concurrency: 100, timeoutMs: 60_000 })
      if (connected.synced < clients.length) throw connectFailure('hocuspocus big-room', connected.synced, clients.length)
      const result = await live(target, pool, 20, config.liveSeconds, 0, config.warmupSeconds)
      return { clients: clients.length, ...result.metrics }
    }, true))
    const many = await withTarget(name, config, null, (started) => withPool(3, async (pool) => {
      const target: RunningTarget = { ...started, dialect: 'hocuspocus' }
      const clients: ClientSpec[] = []
      for (let r = 0; r < scaled(config, 200); r++) clients.push(...roomClients(`room-${r}`, 5, 1))
      const connected = await pool.connectSpread(target, clients, { concurrency: 100, timeoutMs: 60_000 })
      if (connected.synced < clients.length) throw connectFailure('hocuspocus many-rooms', connected.synced, clients.length)
      const result = await live(target, pool, 5, config.liveSeconds, 0, config.warmupSeconds)
      return { clients: clients.length, ...result.metrics }
    }, true))
    return { ...prefixed('bigRoom_', big), ...prefixed('manyRooms_', many) }
  },
}

/** GET over plain HTTP from the coordinator (setup and checks, not measured). */
export async function httpGet (port: number, path: string): Promise<{ status: number; body: Buffer }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`)
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()) }
}

async function roomLoaded (port: number, room: string): Promise<boolean | null> {
  const { status, body } = await httpGet(port, '/api/rooms?limit=1000')
  if (status !== 200) return null
  const listed = (JSON.parse(body.toString('utf8')) as { rooms: { room: string; loaded: boolean }[] }).rooms.find((r) => r.room === room)
  return listed === undefined ? null : listed.loaded
}

/** Requests per second of GET /api/rooms/<room>, JSON and binary, with the room loaded and not. weft only. */
const httpGetScenario: Scenario = {
  id: 9,
  name: 'http-get',
  title: 'HTTP GET /api/rooms/<room> of a 1 MB document: requests/s, loaded (a client connected) and not loaded',
  applies: (target) => target === 'weft',
  skipReason: () => 'no HTTP document API',
  run: async (name, config) => {
    const dataDir = mkdtempSync(join(tmpdir(), `weft-bench-http-${name}-`))
    const room = 'http-document'
    const paths: Record<string, string> = { json: `/api/rooms/${room}`, update: `/api/rooms/${room}?format=update` }
    const metrics: Metrics = { clients: config.httpClients, seconds: config.httpSeconds }
    try {
      return await withTarget(name, config, dataDir, async (target) => {
        const measure = async (pool: LoadPool, phase: string): Promise<void> => {
          for (const [format, path] of Object.entries(paths)) {
            const cpuBefore = cpuSeconds(target.pid)
            const loadCpuBefore = pool.cpuSeconds()
            const [r] = await pool.all<Extract<Reply, { type: 'http-loaded' }>>({ type: 'http-load', port: target.port, path, concurrency: config.httpClients, durationMs: config.httpSeconds * 1000 })
            if (r === undefined) throw new Error('http-get: no reply from the load process')
            const sorted = r.latenciesMs.sort((a, b) => a - b)
            const key = `${phase}_${format}_`
            metrics[`${key}rps`] = round(r.requests / (r.elapsedMs / 1000), 1)
            metrics[`${key}MBps`] = round(r.bytes / 1024 / 1024 / (r.elapsedMs / 1000), 1)
            metrics[`${key}p50Ms`] = percentile(sorted, 50) === null ? null : round(percentile(sorted, 50) as number, 2)
            metrics[`${key}p99Ms`] = percentile(sorted, 99) === null ? null : round(percentile(sorted, 99) as number, 2)
            metrics[`${key}errors`] = r.errors
            if (r.errors > 0) metrics[`${key}statuses`] = JSON.stringify(r.statuses)
            metrics[`${key}serverCpuPct`] = round((100 * (cpuSeconds(target.pid) - cpuBefore)) / (r.elapsedMs / 1000))
            // Near 100: the load process (reading the bodies) is the limit, not the server.
            metrics[`${key}loadCpuPct`] = round((100 * (pool.cpuSeconds() - loadCpuBefore)) / (r.elapsedMs / 1000))
          }
        }
        // Loaded: the writer that built the document stays connected.
        await withPool(1, async (pool) => {
          const worker = pool.workers[0] as LoadPool['workers'][number]
          const seeded = await worker.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'writer' }], concurrency: 0, timeoutMs: 20_000 })
          if (seeded.synced !== 1) throw connectFailure('http-get', seeded.synced, 1)
          await worker.request({ type: 'bulk-text', totalBytes: config.httpDocumentBytes, chunkBytes: 64 * 1024 })
          const until = performance.now() + 30_000
          let bytes = 0
          while (performance.now() < until) {
            const probe = await httpGet(target.port, paths.update as string)
            bytes = probe.status === 200 ? probe.body.length : 0
            if (bytes >= config.httpDocumentBytes) break
            await new Promise((resolve) => setTimeout(resolve, 100))
          }
          metrics.documentUpdateBytes = bytes
          metrics.documentJsonBytes = (await httpGet(target.port, paths.json as string)).body.length
          metrics.loadedDuringLoaded = String(await roomLoaded(target.port, room))
          await measure(pool, 'loaded')
        })
        // Not loaded: the writer is gone; wait until weft has stored and unloaded the room.
        const unloaded = async (): Promise<boolean> => {
          const until = performance.now() + 60_000
          let loaded = await roomLoaded(target.port, room)
          while (loaded !== false && performance.now() < until) {
            await new Promise((resolve) => setTimeout(resolve, 100))
            loaded = await roomLoaded(target.port, room)
          }
          return loaded === false
        }
        // Cold: one GET at a time, each on an unloaded room (weft unloads a room ~5 s after its
        // last user, so every sample waits for that): time until the whole body has arrived.
        for (const [format, path] of Object.entries(paths)) {
          const samples: number[] = []
          for (let i = 0; i < config.httpColdSamples; i++) {
            if (!(await unloaded())) throw new Error('http-get: the room did not unload within 60 s')
            const started = performance.now()
            const { status } = await httpGet(target.port, path)
            if (status !== 200) throw new Error(`http-get: cold GET ${path} answered ${status}`)
            samples.push(performance.now() - started)
          }
          const sorted = [...samples].sort((x, y) => x - y)
          metrics[`cold_${format}_medianMs`] = round(percentile(sorted, 50) as number, 1)
          metrics[`cold_${format}_samplesMs`] = samples.map((ms) => round(ms, 1)).join(' ')
        }
        // Sustained from unloaded: the first request loads the room; weft then keeps it loaded
        // until ~5 s after the last request, so under back-to-back GETs it stays loaded.
        metrics.unloadedBeforeNotLoaded = (await unloaded()) ? 'yes' : 'no'
        await withPool(1, (pool) => measure(pool, 'notLoaded'))
        metrics.loadedAfterNotLoaded = String(await roomLoaded(target.port, room))
        metrics.peakRssMb = round(peakRssMb(target.pid))
        return metrics
      })
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  },
}

/** `INFO commandstats`: calls per command (the INFO calls of this benchmark left out). */
export function redisCommandCalls (port: number): Map<string, number> {
  const out = execFileSync('redis-cli', ['-p', String(port), 'INFO', 'commandstats'], { encoding: 'utf8' })
  const calls = new Map<string, number>()
  for (const match of out.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (match[1] !== 'info') calls.set(match[1] as string, Number(match[2]))
  }
  return calls
}

/**
 * `redis-cli MONITOR` on the load core: commands the clients sent (top level), told apart from
 * the ones scripts ran (`[0 lua]`), which INFO commandstats counts as well.
 */
/** A span of wall-clock time, ms since the epoch (Redis's MONITOR stamps each command with its clock, the same machine's). */
export interface ClockWindow { fromMs: number, toMs: number }

/**
 * The commands clients sent to Redis while it runs (MONITOR, without what scripts ran), counted
 * by name; with `window`, only those Redis received inside it.
 */
export function monitorRedis (port: number): { stop: (window?: ClockWindow) => Promise<Map<string, number>> } {
  const child = spawnCommandPinned(LOAD_CPU, 'redis-cli', ['-p', String(port), 'monitor'], { stdio: ['ignore', 'pipe', 'ignore'] })
  const seen: Array<{ atMs: number, command: string }> = []
  let rest = ''
  child.stdout?.setEncoding('utf8')
  child.stdout?.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop() ?? ''
    for (const line of lines) {
      const match = /^(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"/.exec(line)
      if (match === null || match[2] === 'lua') continue
      const command = (match[3] as string).toLowerCase()
      if (command !== 'info' && command !== 'monitor') seen.push({ atMs: Number(match[1]) * 1000, command })
    }
  })
  return {
    stop: async (window) => {
      await stopProcess(child, 2_000)
      const calls = new Map<string, number>()
      for (const { atMs, command } of seen) {
        if (window !== undefined && (atMs < window.fromMs || atMs > window.toMs)) continue
        calls.set(command, (calls.get(command) ?? 0) + 1)
      }
      return calls
    },
  }
}

/**
 * Two instances on one Redis: writers on instance A, trackers and light clients on instance B.
 * Cross-instance latency, and Redis commands per edit from INFO commandstats over the window.
 */
const cluster: Scenario = {
  id: 10,
  name: 'cluster',
  title: 'Cluster: 2 instances on one redis-server; writer on A, receivers on B; latency A to B and Redis commands per edit',
  applies: (target) => target === 'weft' || target === 'hocuspocus',
  skipReason: () => 'no Redis clustering',
  run: async (name, config) => {
    const redisPort = await freePort()
    const redis = spawnCommandPinned(SERVER_CPU, 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' })
    try {
      await waitForPort(redisPort, redis, 10_000)
      const redisUrl = `redis://127.0.0.1:${redisPort}`
      const a = await startTarget(name, { ...startOptions(name, config, null), redisUrl, instanceId: 'a' })
      let b: RunningTarget | null = null
      try {
        b = await startTarget(name, { ...startOptions(name, config, null), redisUrl, instanceId: 'b' })
        const instanceB = b
        return await withPool(1, async (pool) => {
          const worker = pool.workers[0] as LoadPool['workers'][number]
          const rooms = scaled(config, config.clusterRooms)
          const writers: ClientSpec[] = []
          const receivers: ClientSpec[] = []
          for (let r = 0; r < rooms; r++) {
            writers.push({ room: `cluster-${r}`, role: 'writer' })
            receivers.push({ room: `cluster-${r}`, role: 'tracker' }, { room: `cluster-${r}`, role: 'tracker' }, { room: `cluster-${r}`, role: 'light' }, { room: `cluster-${r}`, role: 'light' })
          }
          // One load process: writers and trackers share a clock.
          const onA = await worker.request<ConnectResult>({ type: 'connect', port: a.port, dialect: a.dialect, clients: writers, concurrency: 50, timeoutMs: 60_000 })
          if (onA.synced < writers.length) throw connectFailure('cluster writers on A', onA.synced, writers.length)
          const onB = await worker.request<ConnectResult>({ type: 'connect', port: instanceB.port, dialect: instanceB.dialect, clients: receivers, concurrency: 50, timeoutMs: 60_000 })
          if (onB.synced < receivers.length) throw connectFailure('cluster receivers on B', onB.synced, receivers.length)
          // Unmeasured: B's rooms catch up with A's and every JIT settles.
          await pool.all({ type: 'write', ratePerSecond: 5, durationMs: config.warmupSeconds * 1000, paddingBytes: 0 })
          await new Promise((resolve) => setTimeout(resolve, 1_000))
          const monitor = monitorRedis(redisPort)
          await new Promise((resolve) => setTimeout(resolve, 300))
          const callsBefore = redisCommandCalls(redisPort)
          const cpuB = cpuSeconds(instanceB.pid)
          const cpuRedis = cpuSeconds(redis.pid ?? -1)
          const result = await live(a, pool, 5, config.liveSeconds)
          const callsAfter = redisCommandCalls(redisPort)
          const topLevel = [...(await monitor.stop()).entries()].sort((x, y) => y[1] - x[1])
          const topLevelTotal = topLevel.reduce((sum, [, n]) => sum + n, 0)
          const perCommand: [string, number][] = []
          let total = 0
          for (const [command, after] of callsAfter) {
            const delta = after - (callsBefore.get(command) ?? 0)
            if (delta > 0) perCommand.push([command, delta])
            total += delta
          }
          perCommand.sort((x, y) => y[1] - x[1])
          const edits = result.metrics.sent as number
          const { cpuSeconds: cpuA, serverCpuPct: _a, peakRssMb: peakA, ...rest } = result.metrics
          return {
            rooms,
            clientsOnA: writers.length,
            clientsOnB: receivers.length,
            edits,
            ...rest,
            redisCalls: total,
            redisCallsPerEdit: edits === 0 ? null : round(total / edits, 2),
            redisCommands: perCommand.map(([c, n]) => `${c}:${n}`).join(' '),
            redisClientCalls: topLevelTotal,
            redisClientCallsPerEdit: edits === 0 ? null : round(topLevelTotal / edits, 2),
            redisClientCommands: topLevel.map(([c, n]) => `${c}:${n}`).join(' '),
            cpuSecondsA: cpuA ?? null,
            cpuSecondsB: round(cpuSeconds(instanceB.pid) - cpuB, 2),
            cpuSecondsRedis: round(cpuSeconds(redis.pid ?? -1) - cpuRedis, 2),
            peakRssMbA: peakA ?? null,
            peakRssMbB: round(peakRssMb(instanceB.pid)),
          }
        })
      } finally {
        await b?.stop(15_000, 1_000)
        await a.stop(15_000, 1_000)
      }
    } finally {
      await stopProcess(redis, 5_000)
    }
  },
}

/** One crowd moving cursors: server CPU, awareness delay at the trackers, frames each client read. */
async function cursorStorm (target: RunningTarget, pool: LoadPool, clients: number, rate: number, seconds: number): Promise<Metrics> {
  const specs = roomClients('cursors', clients, 5)
  const connected = await pool.connectSpread(target, specs, { concurrency: 100, timeoutMs: 60_000 })
  if (connected.synced < specs.length) throw connectFailure(`cursor storm (${target.dialect})`, connected.synced, specs.length)
  await pool.all({ type: 'reset' })
  const cpuBefore = cpuSeconds(target.pid)
  const loadCpuBefore = pool.cpuSeconds()
  const started = performance.now()
  const sent = (await pool.all<Extract<Reply, { type: 'written' }>>({ type: 'cursors', ratePerSecond: rate, durationMs: seconds * 1000 })).reduce((sum, r) => sum + r.sent, 0)
  // Stragglers: a cursor still queued at the server arrives within this.
  await new Promise((resolve) => setTimeout(resolve, 1_000))
  const stats = await pool.stats()
  const elapsedSeconds = (performance.now() - started) / 1000
  const cpu = cpuSeconds(target.pid) - cpuBefore
  const sorted = stats.cursorLatenciesMs.sort((a, b) => a - b)
  return {
    clients,
    cursorsPerSecondPerClient: rate,
    cursorsSent: sent,
    serverCpuPct: round((100 * cpu) / elapsedSeconds),
    loadCpuPct: round((100 * (pool.cpuSeconds() - loadCpuBefore)) / elapsedSeconds),
    awarenessP50Ms: percentile(sorted, 50) === null ? null : round(percentile(sorted, 50) as number, 2),
    awarenessP99Ms: percentile(sorted, 99) === null ? null : round(percentile(sorted, 99) as number, 2),
    awarenessMaxMs: sorted.length === 0 ? null : round(sorted[sorted.length - 1] as number, 2),
    cursorSamples: sorted.length,
    framesPerClientPerSecond: round(stats.awarenessFrames / clients / elapsedSeconds),
    peakRssMb: round(peakRssMb(target.pid)),
    clientsClosed: stats.closed,
  }
}

/**
 * Issue 19's cursor storm: 500 clients in one room moving a cursor at 1 Hz, then 100 at 10 Hz,
 * through y-websocket framing and, where the target speaks it, the Hocuspocus framing (`hp_`).
 */
const cursorStormScenario: Scenario = {
  id: 11,
  name: 'cursor-storm',
  title: 'Cursor storm: 500 clients at 1 Hz (crowd_) and 100 at 10 Hz (fast_) in one room; Hocuspocus framing as hp_',
  applies: () => true,
  run: async (name, config) => {
    const seconds = config.liveSeconds
    const dialects: Array<'native' | 'hocuspocus'> = name === 'weft' ? ['native', 'hocuspocus'] : ['native']
    const metrics: Metrics = {}
    for (const dialect of dialects) {
      for (const [prefix, clients, rate] of [['crowd_', scaled(config, 500), 1], ['fast_', scaled(config, 100), 10]] as const) {
        const result = await withTarget(name, config, null, (started) => withPool(3, (pool) => {
          const target: RunningTarget = dialect === 'hocuspocus' ? { ...started, dialect: 'hocuspocus' } : started
          return cursorStorm(target, pool, clients, rate, seconds)
        }, true))
        Object.assign(metrics, prefixed(`${dialect === 'hocuspocus' ? 'hp_' : ''}${prefix}`, result))
      }
    }
    return metrics
  },
}

/** weft's own heap figure from /metrics (prom-client's default metrics), MB; null for the peers. */
/**
 * Issue 19's memory over time: 100 rooms each with a writer and a reader take `memoryUpdates`
 * updates in ten segments while other clients connect, sync and leave (`memoryCycles` in all).
 * After each segment, once the server is quiet for a second, RSS and the live heap (after full
 * collections, bench/memory-probe.ts; every target, they are all Node) are read; the first segment
 * is the warm-up the end is compared with.
 */
const memoryOverTime: Scenario = {
  id: 12,
  name: 'memory-over-time',
  title: 'Memory over time: updates over 100 rooms and connect/disconnect cycles; RSS and heap after each tenth, end / after warm-up',
  applies: () => true,
  run: (name, config) => withTarget(name, config, null, (target) => withPool(3, async (pool) => {
    const rooms = Array.from({ length: scaled(config, 100) }, (_, r) => `mem-${r}`)
    const specs = rooms.flatMap((room) => roomClients(room, 2, 0))
    const connected = await pool.connect(target, specs, { concurrency: 100, timeoutMs: 60_000 })
    if (connected.synced < specs.length) throw connectFailure('memory-over-time', connected.synced, specs.length)
    const segments = 10
    const ratePerWriter = 200
    const segmentSeconds = Math.max(1, config.memoryUpdates / segments / rooms.length / ratePerWriter)
    // The writers are in the first load process (see LoadPool.shareOf); the others churn.
    const [writerProcess, ...churners] = pool.workers as [LoadPool['workers'][number], ...LoadPool['workers']]
    const cyclesPerWorker = Math.ceil(config.memoryCycles / segments / churners.length)
    const rss: number[] = []
    const heap: number[] = []
    let cycles = 0
    let sent = 0
    for (let segment = 0; segment < segments; segment++) {
      const [written, churned] = await Promise.all([
        writerProcess.request<Extract<Reply, { type: 'written' }>>({ type: 'write', ratePerSecond: ratePerWriter, durationMs: segmentSeconds * 1000, paddingBytes: 0 }),
        Promise.all(churners.map((worker) => worker.request<Extract<Reply, { type: 'churned' }>>({ type: 'churn', port: target.port, dialect: target.dialect, rooms, cycles: cyclesPerWorker, concurrency: 20 }))),
      ])
      sent += written.sent
      cycles += churned.reduce((sum, r) => sum + r.cycles, 0)
      await new Promise((resolve) => setTimeout(resolve, 1_000))
      rss.push(rssMb(target.pid))
      heap.push((await readMemoryProbe(target.pid, name)).heapUsed / 1024 / 1024)
    }
    const warm = rss[0] as number
    const end = rss[rss.length - 1] as number
    const warmHeap = heap[0] as number
    const endHeap = heap[heap.length - 1] as number
    return {
      rooms: rooms.length,
      updates: sent,
      connectCycles: cycles,
      rssAfterWarmupMb: round(warm),
      rssEndMb: round(end),
      rssEndOverWarmup: round(end / warm, 2),
      liveHeapAfterWarmupMb: round(warmHeap),
      liveHeapEndMb: round(endHeap),
      liveHeapEndOverWarmup: round(endHeap / warmHeap, 2),
      rssCurveMb: rss.map((v) => round(v)).join(' '),
      liveHeapCurveMb: heap.map((v) => round(v)).join(' '),
    }
  }, false), { nodeFlags: [...(startOptions(name, config, null).nodeFlags ?? []), ...MEMORY_PROBE_FLAGS] }),
}

/**
 * Issue 19, both protocols: for weft the scenario runs twice, the second time with every client
 * speaking the Hocuspocus framing to weft's Hocuspocus path; those figures carry the prefix `hp_`.
 */
export function withHocuspocusPath (scenario: Scenario): Scenario {
  return {
    ...scenario,
    title: `${scenario.title} (weft also through its Hocuspocus path: hp_)`,
    run: async (name, config) => {
      const native = await scenario.run(name, config)
      if (name !== 'weft') return native
      return { ...native, ...prefixed('hp_', await scenario.run(name, { ...config, weftDialect: 'hocuspocus' })) }
    },
  }
}

export const SCENARIOS: readonly Scenario[] = [bigRoom, manyRooms, withHocuspocusPath(saturation), idle, coldLoad, withHocuspocusPath(joins), withHocuspocusPath(slowReader), hocuspocusFanout, httpGetScenario, cluster, cursorStormScenario, memoryOverTime, ...BIG_DOCUMENT_SCENARIOS, clusterCrowd, roomsScenario]
