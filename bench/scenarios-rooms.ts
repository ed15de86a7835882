/**
 * Scenario 16, rooms (issue 19): many rooms with one connection each, and what each room plus
 * its connection costs the server in memory.
 */
import type { ClientSpec } from './load-protocol.js'
import { MEMORY_PROBE_FLAGS, readMemoryProbe, type MemoryReading } from './memory-probe.js'
import { peakRssMb, rssMb } from './processes.js'
import { connectFailure, round, scaled, startOptions, withHocuspocusPath, withPool, type BenchConfig, type Metrics, type Scenario } from './scenarios.js'
import { startTarget, type RunningTarget, type TargetName } from './targets.js'

/** Clients per load process: each socket is a file, and a process may open 20,000. */
const CLIENTS_PER_LOAD_PROCESS = 2_500

/**
 * Quiet time before each reading. A burst of connections grows V8's young generation (to 30 MB
 * and more) and leaves slack in the old one; V8's memory reducer gives that back after about 8 s
 * without allocation, so a reading taken sooner counts the burst, not the rooms.
 */
const SETTLE_MS = 20_000

/** Rooms opened (and left open) before the baseline, so compiled code and singletons are not counted. */
const WARM_UP_ROOMS = 20

/** Asks the probe in `target` for a full collection and its memory figures afterwards. */
function probe (target: RunningTarget): Promise<MemoryReading> {
  return readMemoryProbe(target.pid, target.name)
}

/**
 * Every target runs with the probe (`--expose-gc --import bench/memory-probe.js`); weft's
 * per-address room quota and loaded-room cap are lifted with its other limits (bench/targets.ts).
 */
function startWithProbe (name: TargetName, config: BenchConfig): Promise<RunningTarget> {
  const options = startOptions(name, config, null)
  return startTarget(name, { ...options, nodeFlags: [...(options.nodeFlags ?? []), ...MEMORY_PROBE_FLAGS] })
}

const kbPer = (bytes: number, count: number): number => round(bytes / 1024 / count, 2)

/**
 * 10,000 rooms (quick: 5,000), one light client each (y-websocket sync, no awareness), spread over
 * load processes of 2,500 clients. Memory is read through the probe, after SETTLE_MS quiet and
 * full collections, once before the clients connect and once after the last synced: RSS and heap
 * per room plus connection (`rssPerRoomKb`, `heapPerRoomKb`). V8 does not always give the young
 * generation back within SETTLE_MS, and it is a buffer of bounded size (up to 32 MB or so), not
 * memory any room holds: `rssLessYoungPerRoomKb` leaves its resident size out of both readings.
 * `rssPerRoomEarlyKb`: RSS 3 s after the last client synced, no collection forced.
 */
const rooms: Scenario = {
  id: 16,
  name: 'rooms',
  title: 'Rooms: 10,000 rooms with one connection each; memory per room plus connection after a full GC',
  applies: () => true,
  run: async (name, config) => {
    const count = scaled(config, config.quick ? 5_000 : 10_000)
    const started = await startWithProbe(name, config)
    const target: RunningTarget = name === 'weft' && config.weftDialect !== undefined ? { ...started, dialect: config.weftDialect } : started
    try {
      return await withPool(Math.max(1, Math.ceil(count / CLIENTS_PER_LOAD_PROCESS)), async (pool) => {
        const warmUp: ClientSpec[] = Array.from({ length: WARM_UP_ROOMS }, (_, i) => ({ room: `warm-up-${i}`, role: 'light' }))
        const warmed = await pool.connect(target, warmUp, { concurrency: 0, timeoutMs: 30_000 })
        if (warmed.synced < warmUp.length) throw connectFailure('rooms warm-up', warmed.synced, warmUp.length)
        await new Promise((resolve) => setTimeout(resolve, SETTLE_MS))
        const before = await probe(target)
        const specs: ClientSpec[] = Array.from({ length: count }, (_, i) => ({ room: `room-${i}`, role: 'light' }))
        const connectStarted = performance.now()
        const connected = await pool.connect(target, specs, { concurrency: 400, timeoutMs: 180_000 })
        const connectSeconds = (performance.now() - connectStarted) / 1000
        if (connected.synced < count) throw connectFailure('rooms', connected.synced, count)
        await new Promise((resolve) => setTimeout(resolve, 3_000))
        // Soon after the burst, nothing forced: what the process holds as it runs.
        const rssEarly = rssMb(target.pid) * 1024 * 1024
        await new Promise((resolve) => setTimeout(resolve, SETTLE_MS - 3_000))
        const after = await probe(target)
        const stats = await pool.stats()
        const metrics: Metrics = {
          rooms: count,
          connected: connected.synced - stats.closed,
          connectSeconds: round(connectSeconds, 1),
          baselineRssMb: round(before.rss / 1024 / 1024),
          rssMb: round(after.rss / 1024 / 1024),
          rssPerRoomKb: kbPer(after.rss - before.rss, count),
          rssLessYoungPerRoomKb: kbPer(after.rss - after.youngResident - (before.rss - before.youngResident), count),
          youngMbBeforeAfter: `${round(before.youngResident / 1024 / 1024)} ${round(after.youngResident / 1024 / 1024)}`,
          rssPerRoomEarlyKb: kbPer(rssEarly - before.rss, count),
          heapPerRoomKb: kbPer(after.heapUsed - before.heapUsed, count),
          externalPerRoomKb: kbPer(after.external - before.external, count),
          peakRssMb: round(peakRssMb(target.pid)),
        }
        if (!after.collected) metrics.note = 'no --expose-gc: figures without a forced collection'
        return metrics
      })
    } finally {
      await started.stop(15_000, 1_000)
    }
  },
}

export const roomsScenario: Scenario = withHocuspocusPath(rooms)
