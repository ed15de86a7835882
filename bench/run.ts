/**
 * `npm run bench [-- SCENARIO...]`: runs weft and its peers under the same load in one run and
 * writes bench/results/bench-DATE.{json,md}. The only module here that reads process.argv and
 * process.env. Scenarios by number or name; none = all.
 *
 * Environment (defaults in parentheses; BENCH_QUICK=1 shortens everything):
 *   BENCH_TARGETS            comma list of weft,y-websocket-server,hocuspocus,ws-relay (all)
 *   BENCH_LIVE_SECONDS       measured writing time of scenarios 1, 2, 7, 11, 15 (25; quick 4)
 *   BENCH_WARMUP_SECONDS     unmeasured writing before it (2; quick 1)
 *   BENCH_STEP_SECONDS       one saturation step (4; quick 1)
 *   BENCH_SATURATION_CLIENTS clients in the saturation room (20)
 *   BENCH_HISTORY_UPDATES    cold-load history (50000; quick 10000)
 *   BENCH_JOIN_DOCUMENT_MB   document the joiners sync (5)
 *   BENCH_JOIN_CLIENTS       joiners (200)
 *   BENCH_IDLE_COUNTS        idle connection counts (10000,19900; quick 10000)
 *   BENCH_SLOW_HEALTHY       healthy readers in the slow-reader room (100)
 *   BENCH_SLOW_PADDING       bytes of padding per update in the slow-reader scenario (32768)
 *   BENCH_SLOW_SECONDS       writing time of the slow-reader scenario (30; quick 8)
 *   BENCH_WEFT_CPU_PROF      a directory: run weft with --cpu-prof writing there
 *   BENCH_CPU_PROF           a directory: run every target with --cpu-prof writing there
 *   BENCH_WEFT_NODE_FLAGS    more node flags for weft, space-separated (e.g. --heap-prof, --import FILE)
 *   BENCH_WEFT_DEFAULT_LIMITS 1 = keep weft's inbound/upgrade rate limits (lifted by default, the peers have none)
 *   BENCH_HTTP_CLIENTS       concurrent keep-alive clients of the http-get scenario (10)
 *   BENCH_HTTP_SECONDS       duration of one http-get measurement (10; quick 3)
 *   BENCH_HTTP_DOCUMENT_MB   size of the document http-get reads (1)
 *   BENCH_HTTP_COLD_SAMPLES  cold GETs per format, each on an unloaded room (5; quick 3)
 *   BENCH_CLUSTER_ROOMS      rooms of the cluster scenario (20)
 *   BENCH_MEMORY_UPDATES     updates of the memory-over-time scenario (1000000; quick 100000)
 *   BENCH_MEMORY_CYCLES      its connect/disconnect cycles (50000; quick 5000)
 *   BENCH_SCALE              multiplies client and room counts (1); e.g. 0.02 for a smoke run
 *   BENCH_RELAY_WORK_US      the relay spins this many µs per forwarded message (0): the floor
 *                            with a price per update (relay-server.ts --work-us)
 *   BENCH_ROUNDS             runs of each scenario per target (1); the targets' order alternates
 *                            between rounds, and the report gives each metric's median and spread
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { cpus, release } from 'node:os'
import { join } from 'node:path'
import { killAll, LOAD_CPU } from './processes.js'
import { summariseRounds, toMarkdown, type Results, type ScenarioResult } from './report.js'
import { SCENARIOS, type BenchConfig, type Metrics, type Scenario } from './scenarios.js'
import { ROOT, TARGETS, type TargetName } from './targets.js'

function numberFromEnv (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number, not "${raw}"`)
  return value
}

/** Like numberFromEnv, 0 allowed. */
function nonNegativeFromEnv (name: string, fallback: number): number {
  return process.env[name] === '0' ? 0 : numberFromEnv(name, fallback)
}

function readConfig (): BenchConfig {
  const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true'
  const profileDir = process.env.BENCH_WEFT_CPU_PROF
  return {
    quick,
    liveSeconds: numberFromEnv('BENCH_LIVE_SECONDS', quick ? 4 : 25),
    warmupSeconds: numberFromEnv('BENCH_WARMUP_SECONDS', quick ? 1 : 2),
    stepSeconds: numberFromEnv('BENCH_STEP_SECONDS', quick ? 1 : 4),
    saturationClients: numberFromEnv('BENCH_SATURATION_CLIENTS', 20),
    historyUpdates: numberFromEnv('BENCH_HISTORY_UPDATES', quick ? 10_000 : 50_000),
    joinDocumentBytes: Math.round(numberFromEnv('BENCH_JOIN_DOCUMENT_MB', 5) * 1024 * 1024),
    joinClients: numberFromEnv('BENCH_JOIN_CLIENTS', 200),
    idleCounts: (process.env.BENCH_IDLE_COUNTS ?? (quick ? '10000' : '10000,19900')).split(',').map(Number).filter((n) => n > 0),
    slowHealthyClients: numberFromEnv('BENCH_SLOW_HEALTHY', 100),
    slowPaddingBytes: numberFromEnv('BENCH_SLOW_PADDING', 32_768),
    slowSeconds: numberFromEnv('BENCH_SLOW_SECONDS', quick ? 8 : 30),
    scale: numberFromEnv('BENCH_SCALE', 1),
    httpClients: numberFromEnv('BENCH_HTTP_CLIENTS', 10),
    httpSeconds: numberFromEnv('BENCH_HTTP_SECONDS', quick ? 3 : 10),
    httpDocumentBytes: Math.round(numberFromEnv('BENCH_HTTP_DOCUMENT_MB', 1) * 1024 * 1024),
    httpColdSamples: numberFromEnv('BENCH_HTTP_COLD_SAMPLES', quick ? 3 : 5),
    memoryUpdates: numberFromEnv('BENCH_MEMORY_UPDATES', quick ? 100_000 : 1_000_000),
    memoryCycles: numberFromEnv('BENCH_MEMORY_CYCLES', quick ? 5_000 : 50_000),
    clusterRooms: numberFromEnv('BENCH_CLUSTER_ROOMS', 20),
    rounds: Math.floor(numberFromEnv('BENCH_ROUNDS', 1)),
    relayWorkUs: nonNegativeFromEnv('BENCH_RELAY_WORK_US', 0),
    keepWeftLimits: process.env.BENCH_WEFT_DEFAULT_LIMITS === '1',
    weftNodeFlags: [
      ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []),
      ...(process.env.BENCH_WEFT_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== ''),
    ],
  }
}

function selectScenarios (args: string[]): Scenario[] {
  if (args.length === 0) return [...SCENARIOS].sort((a, b) => a.id - b.id)
  return args.map((arg) => {
    const found = SCENARIOS.find((s) => String(s.id) === arg || s.name === arg)
    if (found === undefined) throw new Error(`unknown scenario "${arg}"; known: ${SCENARIOS.map((s) => `${s.id} ${s.name}`).join(', ')}`)
    return found
  })
}

function selectTargets (): TargetName[] {
  const raw = process.env.BENCH_TARGETS
  if (raw === undefined || raw === '') return [...TARGETS]
  return raw.split(',').map((name) => {
    if (!TARGETS.includes(name as TargetName)) throw new Error(`unknown target "${name}"; known: ${TARGETS.join(', ')}`)
    return name as TargetName
  })
}

async function main (): Promise<void> {
  // The coordinator polls /proc and relays IPC: keep it off the server's core too.
  execFileSync('taskset', ['-p', '-c', LOAD_CPU, String(process.pid)], { stdio: 'ignore' })
  if (!existsSync(join(ROOT, 'dist/server/cli.js'))) throw new Error('dist/server/cli.js is missing: run npm run build first')
  const config = readConfig()
  const scenarios = selectScenarios(process.argv.slice(2))
  const targets = selectTargets()
  const date = new Date().toISOString()
  const results: Results = {
    machine: { cpuModel: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version, os: `Linux ${release()}`, date },
    command: `${config.quick ? 'BENCH_QUICK=1 ' : ''}npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    config: { ...config, targets },
    scenarios: [],
  }
  const dir = join(ROOT, 'bench/results')
  mkdirSync(dir, { recursive: true })
  const stamp = date.replace(/[:.]/g, '-')
  const save = (): void => {
    writeFileSync(join(dir, `bench-${stamp}.json`), JSON.stringify(results, null, 2) + '\n')
    writeFileSync(join(dir, `bench-${stamp}.md`), toMarkdown(results))
  }
  for (const scenario of scenarios) {
    const entry: ScenarioResult = { id: scenario.id, name: scenario.name, title: scenario.title, targets: {} }
    if (config.rounds > 1) entry.rounds = {}
    results.scenarios.push(entry)
    for (let round = 0; round < config.rounds; round++) {
      // Alternating order: a drift of the machine over the run (heat, a neighbour) weighs on every target alike.
      const order = round % 2 === 0 ? targets : [...targets].reverse()
      for (const target of order) {
        if (!scenario.applies(target)) {
          entry.targets[target] = { skipped: scenario.skipReason?.(target) ?? 'no document (relay)' }
          continue
        }
        const started = Date.now()
        const label = `${scenario.id} ${scenario.name} / ${target}${config.rounds > 1 ? ` (round ${round + 1} of ${config.rounds})` : ''}`
        process.stderr.write(`[bench] ${label} ...\n`)
        let metrics: Metrics
        try {
          metrics = await scenario.run(target, config)
        } catch (err) {
          metrics = { error: (err as Error).message.split('\n')[0] ?? String(err) }
          killAll()
        }
        process.stderr.write(`[bench] ${label} done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(metrics)}\n`)
        if (entry.rounds === undefined) {
          entry.targets[target] = metrics
        } else {
          const runs = entry.rounds[target] ?? []
          runs.push(metrics)
          entry.rounds[target] = runs
          entry.targets[target] = summariseRounds(runs)
        }
        save()
      }
    }
  }
  save()
  process.stdout.write(toMarkdown(results) + '\n')
  process.stdout.write(`\nwritten: bench/results/bench-${stamp}.json and .md\n`)
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killAll()
    process.exit(130)
  })
}
process.on('exit', killAll)

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).message ?? String(err)}\n`)
    killAll()
    process.exit(1)
  },
)
