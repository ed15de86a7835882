/**
 * Issue 19's big-document scenarios: 13 `join-storm` (150 joiners on a 20 MB document at once,
 * then a steady 10 joins/s, beside a busy room) and 14 `no-stalls` (a busy room while a 20 MB
 * document elsewhere is loaded cold from storage, written to, compacted and stored). Every
 * server runs with bench/loop-probe.ts, so event-loop delay is measured the same way for all.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import * as Y from 'yjs'
import type { ClientSpec, StatsResult } from './load-protocol.js'
import { mergeStats, type LoadWorker } from './load.js'
import { loopProbeFile, type LoopDelay } from './loop-probe.js'
import { MEMORY_PROBE_FLAGS, readMemoryProbe } from './memory-probe.js'
import { askProbe, cpuSeconds, peakRssMb, rssMb, RssSampler } from './processes.js'
import {
  connectFailure, httpGet, percentile, round, scaled, serverDied, startOptions, withPool,
  type BenchConfig, type ConnectResult, type Metrics, type Scenario,
} from './scenarios.js'
import { startTarget, STATEFUL, type RunningTarget, type StartOptions, type TargetName } from './targets.js'

const PROBE = fileURLToPath(new URL('./loop-probe.js', import.meta.url))
const BIG_DOCUMENT_MB = 20
const CHUNK_BYTES = 64 * 1024
/** Updates per second of the busy room's writer (like scenario 1). */
const BUSY_RATE = 20
/** Scenario 13's typist in the big document, updates a second, while the joins go on. */
const EDIT_RATE = 10
/**
 * Scenario 13's joiners gather messages up to this long and count longer ones (the sync reply)
 * without keeping them: gathering 150 replies of 20 MB took the two load processes' core longer
 * than any server took to send them (bench/light-socket.ts).
 */
const JOINER_WHOLE_BYTES = 1 << 20
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function bigDocumentBytes (config: BenchConfig): number {
  return Math.round(Number(process.env.BENCH_BIGDOC_MB ?? BIG_DOCUMENT_MB) * 1024 * 1024 * Math.min(1, config.scale))
}

/**
 * Starts the target with the loop probe. `env`: more environment for the server (only weft reads
 * WEFT_* variables), set around the start.
 */
async function startProbed (name: TargetName, config: BenchConfig, dataDir: string | null, env: Record<string, string> = {}, extraFlags: readonly string[] = [], extra: Partial<StartOptions> = {}): Promise<RunningTarget> {
  const options = { ...startOptions(name, config, dataDir), ...extra }
  const saved = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]))
  Object.assign(process.env, env)
  try {
    return await startTarget(name, { ...options, nodeFlags: [...(options.nodeFlags ?? []), '--import', PROBE, ...extraFlags] })
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key]
      else process.env[key] = value
    }
  }
}


/** The server's event-loop delay since the last call (the probe resets on each). */
function loopDelay (target: RunningTarget): Promise<LoopDelay | null> {
  return askProbe<LoopDelay>(target.pid, loopProbeFile(target.pid), 5_000)
}

function loopMetrics (delay: LoopDelay | null): Metrics {
  return {
    loopDelayP50Ms: delay === null ? null : round(delay.p50Ms, 1),
    loopDelayP99Ms: delay === null ? null : round(delay.p99Ms, 1),
    loopDelayMaxMs: delay === null ? null : round(delay.maxMs, 1),
  }
}

/** weft's own view: the event-loop gauges and compactions from /metrics (null for the peers). */
async function weftGauges (target: RunningTarget): Promise<Record<string, number> | null> {
  if (target.name !== 'weft') return null
  const { status, body } = await httpGet(target.port, '/metrics')
  if (status !== 200) return null
  const values: Record<string, number> = {}
  for (const match of body.toString('utf8').matchAll(/^(weft_(?:nodejs_eventloop_lag_(?:p99|max)_seconds|compactions_total|merge_worker_\w+))(?:\{[^}]*\})? (\S+)$/gm)) {
    values[match[1] as string] = (values[match[1] as string] ?? 0) + Number(match[2])
  }
  return values
}

/**
 * The big document as a state update: the same text in the same chunks as the load's
 * `bulk-text`, written by one client into a fresh document.
 */
function bigDocumentState (totalBytes: number): Uint8Array {
  const source = new Y.Doc()
  const body = source.getText('body')
  const alphabet = 'abcdefghijklmnopqrstuvwxyz '
  for (let written = 0; written < totalBytes; written += CHUNK_BYTES) {
    let chunk = ''
    for (let i = 0; i < CHUNK_BYTES; i++) chunk += alphabet[(i * 7 + written) % alphabet.length]
    body.insert(body.length, chunk)
  }
  const state = Y.encodeStateAsUpdate(source)
  source.destroy()
  return state
}

let documentHeap: { bytes: number; mb: number } | null = null

/**
 * Heap a Y.Doc holding the big document takes, MB: `bigDocumentState` applied to a fresh
 * document, measured between two full collections in the coordinator (the same Yjs as the servers).
 */
function documentHeapMb (totalBytes: number): number {
  if (documentHeap?.bytes === totalBytes) return documentHeap.mb
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const state = bigDocumentState(totalBytes)
  gc()
  const before = process.memoryUsage().heapUsed
  const doc = new Y.Doc()
  Y.applyUpdate(doc, state)
  // Yjs keeps strings as they were decoded; reading them flattens nothing more.
  gc()
  const mb = (process.memoryUsage().heapUsed - before) / 1024 / 1024
  doc.destroy()
  documentHeap = { bytes: totalBytes, mb }
  return mb
}

/** Writes into the busy room in one-second slices until `stop` is called. */
function busyWriting (worker: LoadWorker): { stop: () => Promise<void> } {
  let stopped = false
  const loop = (async () => {
    while (!stopped) await worker.request({ type: 'write', ratePerSecond: BUSY_RATE, durationMs: 1_000, paddingBytes: 0 })
  })()
  return {
    stop: async () => {
      stopped = true
      await loop
    },
  }
}

/** The busy room's deliveries and latency since the last reset, after a grace for stragglers. */
async function busyStats (worker: LoadWorker, prefix: string): Promise<Metrics> {
  let stats = mergeStats([await worker.request<StatsResult>({ type: 'stats' })])
  const until = performance.now() + 3_000
  while (stats.delivered < stats.expected && performance.now() < until) {
    await sleep(100)
    stats = mergeStats([await worker.request<StatsResult>({ type: 'stats' })])
  }
  const sorted = stats.latenciesMs.sort((a, b) => a - b)
  const p = (q: number): number | null => (percentile(sorted, q) === null ? null : round(percentile(sorted, q) as number, 2))
  return {
    [`${prefix}deliveredPct`]: stats.expected === 0 ? null : round((100 * stats.delivered) / stats.expected, 2),
    [`${prefix}p50Ms`]: p(50),
    [`${prefix}p99Ms`]: p(99),
    [`${prefix}maxMs`]: sorted.length === 0 ? null : round(sorted[sorted.length - 1] as number, 2),
    [`${prefix}samples`]: sorted.length,
  }
}

/** The busy room: one writer and four trackers, all in the timer process (worker 0). */
async function connectBusyRoom (target: RunningTarget, worker: LoadWorker): Promise<void> {
  const specs: ClientSpec[] = [{ room: 'busy', role: 'writer' }, ...Array.from({ length: 4 }, () => ({ room: 'busy', role: 'tracker' as const }))]
  const connected = await worker.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: specs, concurrency: 0, timeoutMs: 20_000 })
  if (connected.synced < specs.length) throw connectFailure('busy room', connected.synced, specs.length)
  // Unmeasured: JIT and buffers settle.
  await worker.request({ type: 'write', ratePerSecond: BUSY_RATE, durationMs: 1_000, paddingBytes: 0 })
}

/** A writer in `worker` puts `bytes` of text into `room`; resolves once a fresh client syncs all of it. */
async function seedDocument (target: RunningTarget, worker: LoadWorker, room: string, bytes: number): Promise<number> {
  const seeded = await worker.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'writer' }], concurrency: 0, timeoutMs: 20_000 })
  if (seeded.synced !== 1) throw connectFailure(`${room} writer`, seeded.synced, 1)
  await worker.request({ type: 'bulk-text', totalBytes: bytes, chunkBytes: CHUNK_BYTES })
  let documentBytes = 0
  const until = performance.now() + 120_000
  while (documentBytes < bytes && performance.now() < until) {
    const probe = await worker.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'tracker' }], concurrency: 0, timeoutMs: 60_000 })
    documentBytes = probe.stateBytes
  }
  if (documentBytes < bytes) throw new Error(`${room}: the server held ${documentBytes} of ${bytes} bytes after 120 s`)
  return documentBytes
}

/**
 * 13: 150 clients join a room holding a 20 MB document at once, then 10 joins a second for 60 s
 * (quick: 10 s), then 10 joins a second for 30 s (quick: 10 s) while a client types into the big
 * document (10 updates/s, so every joiner comes after a change); throughout, a busy room (20
 * updates/s, 4 trackers) is timed. The relay is the floor:
 * it holds the same document's state as one framed buffer and writes it to every joiner
 * (relay-server.ts `--sync-reply`), so it does the least any server can for the same bytes, on the
 * same core, to the same load processes.
 */
const joinStorm: Scenario = {
  id: 13,
  name: 'join-storm',
  title: 'Join storm: 150 clients join a 20 MB document at once, then 10 joins/s; a busy room timed meanwhile',
  applies: () => true,
  run: async (name, config) => {
    const room = 'big-document'
    const bytes = bigDocumentBytes(config)
    const floor = name === 'ws-relay'
    const stateDir = floor ? mkdtempSync(join(tmpdir(), 'weft-bench-state-')) : null
    let floorBytes = 0
    if (stateDir !== null) {
      const state = bigDocumentState(bytes)
      floorBytes = state.length
      writeFileSync(join(stateDir, 'state'), state)
    }
    // The memory probe too: it answers the same signal as the loop probe, with full collections first.
    const started = await startProbed(name, config, null, {}, MEMORY_PROBE_FLAGS, stateDir === null ? {} : { syncReply: { room, file: join(stateDir, 'state') } })
    // The relay's joiners speak y-websocket: it answers their step 1 itself.
    const target: RunningTarget = floor ? { ...started, dialect: 'ywebsocket' } : started
    try {
      return await withPool(4, async (pool) => {
        const [timer, joinerA, joinerB, typist] = pool.workers as [LoadWorker, LoadWorker, LoadWorker, LoadWorker]
        await sleep(500)
        const rssIdle = rssMb(target.pid)
        await connectBusyRoom(target, timer)
        const documentBytes = floor ? floorBytes : await seedDocument(target, joinerA, room, bytes)
        const docHeap = documentHeapMb(bytes)
        const rssBefore = rssMb(target.pid)
        // What building the document left behind is garbage, not what the storm needs: collected
        // first (a signal to both probes; the loop probe's window is reset below anyway).
        const collected = await readMemoryProbe(target.pid, 'join-storm before the storm')
        const rssCollected = collected.rss / 1024 / 1024
        const sampler = new RssSampler(target.pid, 25)
        const cpuBefore = cpuSeconds(target.pid)
        await timer.request({ type: 'reset' })
        await loopDelay(target)
        const gaugesBefore = await weftGauges(target)
        // The storm: all at once, half from each joiner process.
        const busy = busyWriting(timer)
        const stormClients = scaled(config, 150)
        const half = Math.ceil(stormClients / 2)
        const light = (n: number): ClientSpec[] => Array.from({ length: n }, () => ({ room, role: 'light' }))
        const [a, b] = await Promise.all([
          joinerA.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: light(half), wholeBytes: JOINER_WHOLE_BYTES, concurrency: 0, timeoutMs: 120_000 }),
          joinerB.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: light(stormClients - half), wholeBytes: JOINER_WHOLE_BYTES, concurrency: 0, timeoutMs: 120_000 }),
        ])
        await busy.stop()
        const stormRssMax = sampler.max
        const storm: Metrics = {
          storm_joiners: stormClients,
          storm_synced: a.synced + b.synced,
          storm_closedAfterSync: (await Promise.all([joinerA, joinerB].map((w) => w.request<StatsResult>({ type: 'stats' })))).reduce((sum, r) => sum + r.closed, 0),
          storm_allSyncedMs: round(Math.max(a.allSyncedMs, b.allSyncedMs), 1),
          ...prefixedLoop('storm_', await loopDelay(target)),
          ...(await busyStats(timer, 'storm_busy_')),
        }
        // Steady: 10 joins a second, five from each joiner process per second; a process still
        // busy with its last batch sends the missed joins with its next one.
        const joinSteadily = async (seconds: number): Promise<{ wanted: number; synced: number; batchMs: number[] }> => {
          const joins = { wanted: 0, synced: 0, batchMs: [] as number[] }
          const joiner = async (worker: LoadWorker, perSecond: number): Promise<void> => {
            const started = performance.now()
            let sent = 0
            while (performance.now() - started < seconds * 1000) {
              const due = Math.min(perSecond * seconds, Math.floor(((performance.now() - started) / 1000 + 1) * perSecond))
              const count = due - sent
              if (count <= 0) {
                await sleep(20)
                continue
              }
              sent = due
              joins.wanted += count
              const joined = await worker.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: light(count), wholeBytes: JOINER_WHOLE_BYTES, concurrency: 0, timeoutMs: 60_000 })
              joins.synced += joined.synced
              joins.batchMs.push(joined.allSyncedMs)
            }
          }
          await Promise.all([joiner(joinerA, 5), joiner(joinerB, 5)])
          return joins
        }
        await timer.request({ type: 'reset' })
        const steadySeconds = config.quick ? 10 : 60
        const steadyBusy = busyWriting(timer)
        const steady = await joinSteadily(steadySeconds)
        await steadyBusy.stop()
        const steadyMetrics: Metrics = {
          steady_seconds: steadySeconds,
          steady_joins: steady.wanted,
          steady_synced: steady.synced,
          ...batchMetrics('steady_', steady.batchMs),
          ...prefixedLoop('steady_', await loopDelay(target)),
          ...(await busyStats(timer, 'steady_busy_')),
        }
        // Edited: the same joins while a client types into the big document, so each joiner
        // comes after a change: a reply built from the document as it is gets built per joiner.
        const typing = await typist.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'writer' }], concurrency: 0, timeoutMs: 60_000 })
        if (typing.synced !== 1) throw connectFailure(`${room} typist`, typing.synced, 1)
        await timer.request({ type: 'reset' })
        await loopDelay(target)
        const editSeconds = config.quick ? 10 : 30
        const gaugesEditBefore = await weftGauges(target)
        const cpuEditBefore = cpuSeconds(target.pid)
        const editBusy = busyWriting(timer)
        const typed = typist.request<{ type: 'written'; sent: number }>({ type: 'write', ratePerSecond: EDIT_RATE, durationMs: editSeconds * 1000, paddingBytes: 0 })
        const edited = await joinSteadily(editSeconds)
        const edits = await typed
        await editBusy.stop()
        const gaugesEditAfter = await weftGauges(target)
        const editedMetrics: Metrics = {
          edited_seconds: editSeconds,
          edited_edits: edits.sent,
          edited_joins: edited.wanted,
          edited_synced: edited.synced,
          ...batchMetrics('edited_', edited.batchMs),
          edited_cpuSeconds: round(cpuSeconds(target.pid) - cpuEditBefore, 2),
          ...prefixedLoop('edited_', await loopDelay(target)),
          ...(await busyStats(timer, 'edited_busy_')),
          ...(gaugesEditBefore !== null && gaugesEditAfter !== null ? { edited_weftMergeWorkerJobs: (gaugesEditAfter.weft_merge_worker_jobs_total ?? 0) - (gaugesEditBefore.weft_merge_worker_jobs_total ?? 0) } : {}),
        }
        sampler.stop()
        const gaugesAfter = await weftGauges(target)
        const peak = peakRssMb(target.pid)
        return {
          documentBytes,
          docHeapMb: round(docHeap),
          ...storm,
          ...steadyMetrics,
          ...editedMetrics,
          cpuSeconds: round(cpuSeconds(target.pid) - cpuBefore, 2),
          rssIdleMb: round(rssIdle),
          rssBeforeMb: round(rssBefore),
          rssCollectedMb: round(rssCollected),
          heapCollectedMb: round(collected.heapUsed / 1024 / 1024),
          externalCollectedMb: round(collected.external / 1024 / 1024),
          rssStormMaxMb: round(stormRssMax),
          rssMaxMb: round(sampler.max),
          peakRssMb: round(peak),
          peakRssOverDocHeap: round(peak / docHeap, 2),
          peakRssAboveIdleOverDocHeap: round((peak - rssIdle) / docHeap, 2),
          stormRssAboveIdleOverDocHeap: round((stormRssMax - rssIdle) / docHeap, 2),
          // What the storm itself cost: its RSS max above the RSS left after the full collections just before it.
          stormRssAddedOverDocHeap: round((stormRssMax - rssCollected) / docHeap, 2),
          ...(gaugesBefore !== null && gaugesAfter !== null ? { weftMergeWorkerJobs: (gaugesAfter.weft_merge_worker_jobs_total ?? 0) - (gaugesBefore.weft_merge_worker_jobs_total ?? 0) } : {}),
          ...serverDied(target),
        }
      }, true)
    } finally {
      await target.stop(15_000, 1_000)
      if (stateDir !== null) rmSync(stateDir, { recursive: true, force: true })
    }
  },
}

/** The joins' batches: how long the median and the slowest batch took until all its joiners synced. */
function batchMetrics (prefix: string, batchMs: readonly number[]): Metrics {
  const sorted = [...batchMs].sort((x, y) => x - y)
  const p50 = percentile(sorted, 50)
  return {
    [`${prefix}batchSyncP50Ms`]: p50 === null ? null : round(p50, 1),
    [`${prefix}batchSyncMaxMs`]: sorted.length === 0 ? null : round(sorted[sorted.length - 1] as number, 1),
  }
}

function prefixedLoop (prefix: string, delay: LoopDelay | null): Metrics {
  return Object.fromEntries(Object.entries(loopMetrics(delay)).map(([k, v]) => [`${prefix}${k}`, v]))
}

/**
 * 14: a busy room while, in another room, a 20 MB document is loaded cold from storage, 5 MB
 * more and 96 small edits (8 a second) are written into it (weft: its log passes the compaction policy; the
 * peers store the document again: Hocuspocus after its debounce), and its writer leaves
 * (the room is stored and unloaded). Event-loop delay over that window, and the busy room's
 * latency.
 */
const noStalls: Scenario = {
  id: 14,
  name: 'no-stalls',
  title: 'No stalls: event-loop delay and a busy room while a 20 MB document is loaded cold, written, compacted and stored',
  applies: (target) => STATEFUL[target],
  run: async (name, config) => {
    const dataDir = mkdtempSync(join(tmpdir(), `weft-bench-stalls-${name}-`))
    const room = 'big-document'
    const bytes = bigDocumentBytes(config)
    try {
      // Phase 1: the document is written and stored; the server stops gracefully.
      const first = await startProbed(name, config, dataDir)
      try {
        await withPool(1, async (pool) => {
          await seedDocument(first, pool.workers[0] as LoadWorker, room, bytes)
          // Hocuspocus stores at most 10 s after a change (its debounce); the others sooner.
          await sleep(config.quick ? 3_000 : 11_000)
        })
      } finally {
        await first.stop(60_000)
      }
      // Phase 2: restart; the busy room runs while the big document comes back.
      const target = await startProbed(name, config, dataDir)
      try {
        return await withPool(2, async (pool) => {
          const [timer, other] = pool.workers as [LoadWorker, LoadWorker]
          await connectBusyRoom(target, timer)
          await timer.request({ type: 'reset' })
          await loopDelay(target)
          const gaugesBefore = await weftGauges(target)
          const cpuBefore = cpuSeconds(target.pid)
          const busy = busyWriting(timer)
          await sleep(1_000)
          const loadStarted = performance.now()
          const writer = await other.request<ConnectResult>({ type: 'connect', port: target.port, dialect: target.dialect, clients: [{ room, role: 'writer' }], concurrency: 0, timeoutMs: 120_000 })
          const coldSyncMs = performance.now() - loadStarted
          if (writer.synced !== 1) throw connectFailure('no-stalls cold load', writer.synced, 1)
          // A quarter more, in the same chunks, then small edits 8 a second for 12 s, each in a
          // persist window of its own: past weft's compaction policy (more than 64 log entries,
          // 1/16 of the document appended).
          await other.request({ type: 'bulk-text', totalBytes: Math.round(bytes / 4), chunkBytes: CHUNK_BYTES })
          await other.request({ type: 'write', ratePerSecond: 8, durationMs: 12_000, paddingBytes: 0 })
          // Stores follow: Hocuspocus's debounce (2 s, at most 10 s), weft's compaction.
          await sleep(config.quick ? 4_000 : 11_000)
          // The writer leaves: the room is stored and unloaded (weft after 5 s).
          await other.request({ type: 'close' })
          await sleep(7_000)
          await busy.stop()
          const windowSeconds = (performance.now() - loadStarted) / 1000 + 1
          const delay = await loopDelay(target)
          const gaugesAfter = await weftGauges(target)
          const delta = (key: string): number | null => gaugesBefore === null || gaugesAfter === null ? null : (gaugesAfter[key] ?? 0) - (gaugesBefore[key] ?? 0)
          return {
            documentBytes: bytes,
            coldSyncMs: round(coldSyncMs, 1),
            windowSeconds: round(windowSeconds, 1),
            ...loopMetrics(delay),
            ...(await busyStats(timer, 'busy_')),
            cpuSeconds: round(cpuSeconds(target.pid) - cpuBefore, 2),
            peakRssMb: round(peakRssMb(target.pid)),
            ...(target.name === 'weft'
              ? {
                  weftCompactions: delta('weft_compactions_total'),
                  weftMergeWorkerJobs: delta('weft_merge_worker_jobs_total'),
                  weftMergeWorkerFallbacks: delta('weft_merge_worker_fallbacks_total'),
                  // prom-client's gauges cover the time since the scrape before (its own histogram).
                  weftGaugeLoopP99Ms: gaugesAfter?.weft_nodejs_eventloop_lag_p99_seconds === undefined ? null : round(gaugesAfter.weft_nodejs_eventloop_lag_p99_seconds * 1000, 1),
                  weftGaugeLoopMaxMs: gaugesAfter?.weft_nodejs_eventloop_lag_max_seconds === undefined ? null : round(gaugesAfter.weft_nodejs_eventloop_lag_max_seconds * 1000, 1),
                }
              : {}),
            ...serverDied(target),
          }
        }, true)
      } finally {
        await target.stop(60_000)
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  },
}

export const BIG_DOCUMENT_SCENARIOS: readonly Scenario[] = [joinStorm, noStalls]
