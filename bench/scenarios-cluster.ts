/**
 * Scenario 15, issue 19's cluster: three instances of the target and one redis-server, one room's
 * 500 clients spread over the three, the writer on instance A. Latency on A (local) against B and
 * C (cross-instance), Redis commands per edit and per merged burst, then saturation through the
 * cluster. Every process it starts is ended in its `finally`.
 */
import type { ClientSpec } from './load-protocol.js'
import type { LoadPool, MergedStats } from './load.js'
import { cpuSeconds, freePort, peakRssMb, SERVER_CPU, spawnCommandPinned, stopProcess, waitForPort } from './processes.js'
import {
  type ClockWindow, connectFailure, GRACE_MS, monitorRedis, percentile, prefixed, redisCommandCalls, round, SATURATION_RATES, scaled, startOptions, withPool,
  type BenchConfig, type Metrics, type Scenario,
} from './scenarios.js'
import { startTarget, type RunningTarget, type TargetName } from './targets.js'

/** Instance ids: the writer is always on the first. */
const INSTANCES = ['a', 'b', 'c'] as const
/**
 * The command INFO commandstats counts once per relayed update: weft's publish script (one
 * EVALSHA) runs one XADD, and XADD runs nowhere else (EVALSHA itself also counts each
 * instance's once-a-second check script); Hocuspocus's extension sends one PUBLISH per update.
 */
const RELAY_COMMAND: Partial<Record<TargetName, string>> = { weft: 'xadd', hocuspocus: 'publish' }
/** A step passes while every instance's receivers get at least this share, with p99 at most P99_LIMIT_MS. */
const DELIVERED_MIN_PCT = 99
const P99_LIMIT_MS = 100

interface Cluster {
  redisPort: number
  redisPid: number
  instances: RunningTarget[]
}

/** A redis-server (no persistence) on a free port and `INSTANCES.length` instances of the target on it, all on the server core. */
async function withCluster<T> (name: TargetName, config: BenchConfig, body: (cluster: Cluster) => Promise<T>): Promise<T> {
  const redisPort = await freePort()
  const redis = spawnCommandPinned(SERVER_CPU, 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'], { stdio: 'ignore' })
  const instances: RunningTarget[] = []
  try {
    await waitForPort(redisPort, redis, 10_000)
    const redisUrl = `redis://127.0.0.1:${redisPort}`
    for (const id of INSTANCES) instances.push(await startTarget(name, { ...startOptions(name, config, null), redisUrl, instanceId: id }))
    return await body({ redisPort, redisPid: redis.pid ?? -1, instances })
  } finally {
    for (const instance of instances.reverse()) await instance.stop(15_000, 1_000)
    await stopProcess(redis, 5_000)
  }
}

/**
 * One room spread evenly over the instances: the writer and `trackersPer` trackers on the first,
 * `trackersPer` trackers on each other one, light clients for the rest. Each client's group is
 * its instance.
 */
function spreadRoom (room: string, total: number, trackersPer: number): ClientSpec[][] {
  return INSTANCES.map((group, i) => {
    const count = Math.floor(total / INSTANCES.length) + (i < total % INSTANCES.length ? 1 : 0)
    const specs: ClientSpec[] = i === 0 ? [{ room, role: 'writer', group }] : []
    for (let t = 0; t < trackersPer; t++) specs.push({ room, role: 'tracker', group })
    while (specs.length < count) specs.push({ room, role: 'light', group })
    return specs
  })
}

async function connectCluster (cluster: Cluster, pool: LoadPool, shares: ClientSpec[][]): Promise<void> {
  for (const [i, specs] of shares.entries()) {
    const instance = cluster.instances[i] as RunningTarget
    const connected = await pool.connectSpread(instance, specs, { concurrency: 100, timeoutMs: 60_000 })
    if (connected.synced < specs.length) throw connectFailure(`cluster-crowd on instance ${INSTANCES[i]}`, connected.synced, specs.length)
  }
}

interface Step {
  rate: number
  stats: MergedStats
  /** Per instance: delivered %, latency samples (sorted), update frames per receiver. */
  groups: Map<string, { deliveredPct: number; sorted: number[]; framesPerClient: number }>
  local: number[]
  cross: number[]
  worstDeliveredPct: number
  /** The highest p99 of the instances (infinite when one had no sample). */
  worstP99: number
  cpuPct: number[]
  redisCpuPct: number
  loadCpuPct: number
  elapsedSeconds: number
  sentShare: number
  /** INFO commandstats deltas over the step (commands run inside scripts included). */
  commands: Map<string, number>
  /** When the step's writing started and its deliveries ended (the window its figures cover). */
  window: ClockWindow
}

/** Writes at `rate` for `seconds`, waits for stragglers, and measures every instance's receivers, CPU and Redis. */
async function clusterStep (cluster: Cluster, pool: LoadPool, rate: number, seconds: number): Promise<Step> {
  await pool.all({ type: 'reset' })
  const pids = cluster.instances.map((t) => t.pid)
  const cpuBefore = pids.map(cpuSeconds)
  const redisBefore = cpuSeconds(cluster.redisPid)
  const loadBefore = pool.cpuSeconds()
  const callsBefore = redisCommandCalls(cluster.redisPort)
  const startedAt = Date.now()
  const started = performance.now()
  await pool.all({ type: 'write', ratePerSecond: rate, durationMs: seconds * 1000, paddingBytes: 0, distinctKeys: true })
  const writtenMs = performance.now() - started
  let stats = await pool.stats()
  const behind = (s: MergedStats): boolean => [...s.groups.values()].some((g) => g.received < s.sent * g.receivers)
  const graceUntil = performance.now() + GRACE_MS
  while (behind(stats) && performance.now() < graceUntil) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    stats = await pool.stats()
  }
  const elapsedSeconds = (performance.now() - started) / 1000
  const cpuPct = pids.map((pid, i) => (100 * (cpuSeconds(pid) - (cpuBefore[i] as number))) / elapsedSeconds)
  const redisCpuPct = (100 * (cpuSeconds(cluster.redisPid) - redisBefore)) / elapsedSeconds
  const loadCpuPct = (100 * (pool.cpuSeconds() - loadBefore)) / elapsedSeconds
  const commands = new Map<string, number>()
  for (const [command, after] of redisCommandCalls(cluster.redisPort)) {
    const delta = after - (callsBefore.get(command) ?? 0)
    if (delta > 0) commands.set(command, delta)
  }
  const groups: Step['groups'] = new Map()
  const local: number[] = []
  const cross: number[] = []
  let worstDeliveredPct = 100
  let worstP99 = 0
  for (const [i, id] of INSTANCES.entries()) {
    const g = stats.groups.get(id)
    const expected = g === undefined ? 0 : stats.sent * g.receivers
    const deliveredPct = expected === 0 ? 0 : (100 * (g?.received ?? 0)) / expected
    const sorted = [...(g?.latenciesMs ?? [])].sort((x, y) => x - y)
    groups.set(id, { deliveredPct, sorted, framesPerClient: g === undefined || g.receivers === 0 ? 0 : g.frames / g.receivers })
    for (const l of sorted) (i === 0 ? local : cross).push(l)
    worstDeliveredPct = Math.min(worstDeliveredPct, deliveredPct)
    // An instance without a single sample fails the step.
    worstP99 = Math.max(worstP99, percentile(sorted, 99) ?? Number.POSITIVE_INFINITY)
  }
  local.sort((x, y) => x - y)
  cross.sort((x, y) => x - y)
  return {
    rate,
    stats,
    groups,
    local,
    cross,
    worstDeliveredPct,
    worstP99,
    cpuPct,
    redisCpuPct,
    loadCpuPct,
    elapsedSeconds,
    sentShare: seconds / Math.max(seconds, writtenMs / 1000 - 0.1),
    commands,
    window: { fromMs: startedAt, toMs: Date.now() },
  }
}

const ms = (sorted: number[], p: number): number | null => {
  const v = percentile(sorted, p)
  return v === null ? null : round(v, 2)
}

/** The figures of one step, as metrics: latencies local (A) and cross (B and C), per-instance delivery, CPU, Redis. */
function stepMetrics (name: TargetName, step: Step): Metrics {
  const relay = RELAY_COMMAND[name] ?? 'publish'
  const edits = step.stats.sent
  const relayed = step.commands.get(relay) ?? 0
  const total = [...step.commands.values()].reduce((sum, n) => sum + n, 0)
  const broadcastsA = step.groups.get('a')?.framesPerClient ?? 0
  const localP99 = percentile(step.local, 99)
  const crossP99 = percentile(step.cross, 99)
  const metrics: Metrics = {
    edits,
    localP50Ms: ms(step.local, 50),
    localP99Ms: ms(step.local, 99),
    crossP50Ms: ms(step.cross, 50),
    crossP99Ms: ms(step.cross, 99),
    crossMaxMs: step.cross.length === 0 ? null : round(step.cross[step.cross.length - 1] as number, 2),
    crossMinusLocalP99Ms: localP99 === null || crossP99 === null ? null : round(crossP99 - localP99, 2),
    crossMinusLocalP50Ms: step.local.length === 0 || step.cross.length === 0 ? null : round((percentile(step.cross, 50) as number) - (percentile(step.local, 50) as number), 2),
  }
  for (const [id, g] of step.groups) {
    metrics[`deliveredPct_${id}`] = round(g.deliveredPct, 2)
    metrics[`p99Ms_${id}`] = ms(g.sorted, 99)
  }
  Object.assign(metrics, {
    // Update frames each client of A got: the broadcasts (merged bursts) A's room made.
    broadcastsOnA: Math.round(broadcastsA * 10) / 10,
    framesPerClientOnB: round(step.groups.get('b')?.framesPerClient ?? 0, 1),
    relayCommand: relay,
    relayCommands: relayed,
    relayCommandsPerEdit: edits === 0 ? null : round(relayed / edits, 3),
    relayCommandsPerBroadcastOnA: broadcastsA === 0 ? null : round(relayed / broadcastsA, 3),
    redisCallsPerEdit: edits === 0 ? null : round(total / edits, 2),
    serverCpuPct_a: round(step.cpuPct[0] as number),
    serverCpuPct_b: round(step.cpuPct[1] as number),
    serverCpuPct_c: round(step.cpuPct[2] as number),
    redisCpuPct: round(step.redisCpuPct),
    loadCpuPct: round(step.loadCpuPct),
    clientsClosed: step.stats.closed,
  })
  return metrics
}

const passed = (step: Step): boolean => step.worstP99 <= P99_LIMIT_MS && step.worstDeliveredPct >= DELIVERED_MIN_PCT

function stepLine (step: Step): string {
  const p99s = INSTANCES.map((id) => percentile(step.groups.get(id)?.sorted ?? [], 99)).map((v) => (v === null ? '-' : round(v, 1))).join('/')
  const pcts = INSTANCES.map((id) => round(step.groups.get(id)?.deliveredPct ?? 0, 1)).join('/')
  return `${step.rate}/s: ${pcts}% p99 ${p99s} ms, cpu ${step.cpuPct.map((c) => Math.round(c)).join('/')} redis ${Math.round(step.redisCpuPct)} load ${Math.round(step.loadCpuPct)}%`
}

/** Phase 1: the crowd. 500 clients in one room over three instances; the writer on A at 20 updates/s. */
async function crowd (name: TargetName, config: BenchConfig, cluster: Cluster): Promise<Metrics> {
  return withPool(3, async (pool) => {
    const shares = spreadRoom('crowd', scaled(config, 500), 3)
    await connectCluster(cluster, pool, shares)
    // Unmeasured: every JIT settles and each instance's room has followed the cluster for a while.
    await pool.all({ type: 'write', ratePerSecond: 20, durationMs: config.warmupSeconds * 1000, paddingBytes: 0, distinctKeys: true })
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    const monitor = monitorRedis(cluster.redisPort)
    await new Promise((resolve) => setTimeout(resolve, 300))
    const step = await clusterStep(cluster, pool, 20, config.liveSeconds)
    // Only what came while the step's edits flowed: the second of quiet before it has checks of its own.
    const topLevel = [...(await monitor.stop(step.window)).entries()].sort((x, y) => y[1] - x[1])
    const topLevelTotal = topLevel.reduce((sum, [, n]) => sum + n, 0)
    // Updates relayed in the window (one publish script, or one PUBLISH, each); the rest is periodic.
    const relayed = step.commands.get(RELAY_COMMAND[name] ?? 'publish') ?? 0
    const edits = step.stats.sent
    return {
      clients: shares.reduce((sum, s) => sum + s.length, 0),
      clientsPerInstance: shares.map((s) => s.length).join('/'),
      ...stepMetrics(name, step),
      // The commands the servers sent (MONITOR, without what scripts ran), and the part that is
      // not relaying: heartbeats, checks, whatever runs on a timer, per second for the three.
      redisClientCallsPerEdit: edits === 0 ? null : round(topLevelTotal / edits, 3),
      redisClientCommands: topLevel.map(([c, n]) => `${c}:${n}`).join(' '),
      periodicCommandsPerSecond: round((topLevelTotal - relayed) / step.elapsedSeconds, 1),
      peakRssMb: cluster.instances.map((t) => round(peakRssMb(t.pid))).join('/'),
    }
  }, true)
}

/**
 * Phase 2: saturation through the cluster. A room of `saturationClients` (+1) clients spread the
 * same way (a 500-client room would saturate the load core first: every update is 500 frames to
 * read there); the offered rate goes up as in scenario 3 until an instance's receivers fall below
 * 99 % or their p99 passes 100 ms (a failing step is run once more before it counts).
 */
async function saturate (name: TargetName, config: BenchConfig, cluster: Cluster): Promise<Metrics> {
  return withPool(3, async (pool) => {
    const shares = spreadRoom('saturation', Math.max(INSTANCES.length * 3, config.saturationClients + 1), 2)
    await connectCluster(cluster, pool, shares)
    await pool.all({ type: 'write', ratePerSecond: SATURATION_RATES[0] as number, durationMs: config.warmupSeconds * 1000, paddingBytes: 0, distinctKeys: true })
    await new Promise((resolve) => setTimeout(resolve, 500))
    const lines: string[] = []
    let best: Step | null = null
    let stoppedBy = 'last step passed'
    for (const rate of SATURATION_RATES) {
      let step = await clusterStep(cluster, pool, rate, config.stepSeconds)
      if (!passed(step)) {
        lines.push(`${stepLine(step)} (retried)`)
        step = await clusterStep(cluster, pool, rate, config.stepSeconds)
      }
      lines.push(stepLine(step))
      if (!passed(step)) {
        stoppedBy = `${rate}/s: ${step.worstDeliveredPct < DELIVERED_MIN_PCT ? `${round(step.worstDeliveredPct, 1)}% delivered` : `p99 ${Number.isFinite(step.worstP99) ? round(step.worstP99, 1) : '-'} ms`}`
        break
      }
      best = step
      if (step.sentShare < 0.9) {
        stoppedBy = `${rate}/s: load generator sent only ${Math.round(100 * step.sentShare)}% of the schedule`
        break
      }
    }
    return {
      clients: shares.reduce((sum, s) => sum + s.length, 0),
      sustainedUpdatesPerSecond: best?.rate ?? 0,
      ...(best === null ? {} : prefixed('atSustained_', stepMetrics(name, best))),
      stoppedBy,
      steps: lines.join('; '),
    }
  }, true)
}

export const clusterCrowd: Scenario = {
  id: 15,
  name: 'cluster-crowd',
  title: 'Cluster crowd: 3 instances on one redis-server, one room of 500 clients spread over them, writer on A; local (A) vs cross-instance (B, C) latency, Redis commands per edit and per burst, saturation through the cluster (sat_)',
  applies: (target) => target === 'weft' || target === 'hocuspocus',
  skipReason: () => 'no Redis clustering',
  run: (name, config) => withCluster(name, config, async (cluster) => ({
    ...prefixed('crowd_', await crowd(name, config, cluster)),
    ...prefixed('sat_', await saturate(name, config, cluster)),
  })),
}
