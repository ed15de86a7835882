/** The results document: JSON as measured, and the same as Markdown tables with weft/peer ratios. */
import type { Metrics } from './scenarios.js'
import type { TargetName } from './targets.js'

export interface Machine {
  cpuModel: string
  cores: number
  node: string
  os: string
  date: string
}

export interface ScenarioResult {
  id: number
  name: string
  title: string
  /** Per target: metrics, or `{ error }`, or `{ skipped }`; with several rounds, each metric's median. */
  targets: Partial<Record<TargetName, Metrics>>
  /** BENCH_ROUNDS > 1: every round's metrics per target, in the order run. */
  rounds?: Partial<Record<TargetName, Metrics[]>>
}

export interface Results {
  machine: Machine
  command: string
  config: Record<string, unknown>
  scenarios: ScenarioResult[]
}

/** Ratios weft/peer the issue asks for: [scenario name, metric, what a ratio above 1 means]. */
const RATIOS: readonly [string, string, string][] = [
  ['saturation', 'sustainedDeliveriesPerSecond', 'throughput (higher is better for weft)'],
  ['big-room', 'p99Ms', 'p99 latency (lower is better for weft)'],
  ['many-rooms', 'p99Ms', 'p99 latency (lower is better for weft)'],
  ['slow-reader', 'p99Ms', 'healthy clients p99 latency (lower is better for weft)'],
  ['idle', 'at10000_rssPerConnKb', 'RSS per connection at 10,000 (lower is better for weft)'],
  ['cold-load', 'coldLoadMs', 'cold load time (lower is better for weft)'],
  ['cold-load', 'diskBytes', 'bytes on disk (lower is better for weft)'],
  ['joins', 'allSyncedMs', 'time until 200 joiners synced (lower is better for weft)'],
  ['joins', 'peakRssMb', 'peak RSS while joining (lower is better for weft)'],
  ['hocuspocus-fanout', 'bigRoom_deliveredPct', 'big room: delivered % (higher is better for weft)'],
  ['hocuspocus-fanout', 'bigRoom_p50Ms', 'big room: p50 latency (lower is better for weft)'],
  ['hocuspocus-fanout', 'bigRoom_p99Ms', 'big room: p99 latency (lower is better for weft)'],
  ['hocuspocus-fanout', 'bigRoom_maxMs', 'big room: max latency (lower is better for weft)'],
  ['hocuspocus-fanout', 'bigRoom_cpuSeconds', 'big room: server CPU seconds (lower is better for weft)'],
  ['hocuspocus-fanout', 'bigRoom_peakRssMb', 'big room: peak RSS (lower is better for weft)'],
  ['hocuspocus-fanout', 'manyRooms_deliveredPct', 'many rooms: delivered % (higher is better for weft)'],
  ['hocuspocus-fanout', 'manyRooms_p50Ms', 'many rooms: p50 latency (lower is better for weft)'],
  ['hocuspocus-fanout', 'manyRooms_p99Ms', 'many rooms: p99 latency (lower is better for weft)'],
  ['hocuspocus-fanout', 'manyRooms_maxMs', 'many rooms: max latency (lower is better for weft)'],
  ['hocuspocus-fanout', 'manyRooms_cpuSeconds', 'many rooms: server CPU seconds (lower is better for weft)'],
  ['hocuspocus-fanout', 'manyRooms_peakRssMb', 'many rooms: peak RSS (lower is better for weft)'],
  ['join-storm', 'storm_allSyncedMs', '150 joiners of a 20 MB document: time until all synced (lower is better for weft)'],
  ['join-storm', 'storm_busy_p99Ms', 'busy room p99 latency during the storm (lower is better for weft)'],
  ['join-storm', 'storm_loopDelayMaxMs', 'event-loop delay max during the storm (lower is better for weft)'],
  ['join-storm', 'rssStormMaxMb', 'RSS max during the storm (lower is better for weft)'],
  ['join-storm', 'edited_batchSyncMaxMs', 'joins while the document is typed into: slowest batch until synced (lower is better for weft)'],
  ['join-storm', 'edited_cpuSeconds', 'joins while the document is typed into: server CPU seconds (lower is better for weft)'],
  ['join-storm', 'edited_busy_p99Ms', 'busy room p99 latency while the big document is typed into and joined (lower is better for weft)'],
  ['rooms', 'rssPerRoomKb', 'RSS per room plus connection (lower is better for weft)'],
  ['rooms', 'heapPerRoomKb', 'heap per room plus connection (lower is better for weft)'],
  ['cluster', 'p50Ms', 'cross-instance p50 latency (lower is better for weft)'],
  ['cluster', 'p99Ms', 'cross-instance p99 latency (lower is better for weft)'],
  ['cluster', 'redisCallsPerEdit', 'Redis commands per edit, INFO commandstats incl. inside scripts (lower is better for weft)'],
  ['cluster', 'redisClientCallsPerEdit', 'Redis commands per edit sent by the servers, MONITOR (lower is better for weft)'],
  ['cluster-crowd', 'crowd_localP99Ms', '500 clients on 3 instances: local (the writer instance) p99 latency (lower is better for weft)'],
  ['cluster-crowd', 'crowd_crossP99Ms', '500 clients on 3 instances: cross-instance p99 latency (lower is better for weft)'],
  ['cluster-crowd', 'crowd_crossP50Ms', '500 clients on 3 instances: cross-instance p50 latency (lower is better for weft)'],
  ['cluster-crowd', 'crowd_relayCommandsPerEdit', '500 clients on 3 instances: Redis commands relaying each edit (lower is better for weft)'],
  ['cluster-crowd', 'crowd_redisClientCallsPerEdit', '500 clients on 3 instances: every Redis command the servers sent, per edit, MONITOR (lower is better for weft)'],
  ['cluster-crowd', 'sat_sustainedUpdatesPerSecond', 'saturation through 3 instances: updates/s (higher is better for weft)'],
]

/** The median of some numbers (the mean of the middle two for an even count). */
function median (values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] as number : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

function numbers (runs: readonly Metrics[], metric: string): number[] {
  return runs.map((run) => run[metric]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v))
}

function round3 (value: number): number {
  return Math.round(value * 1000) / 1000
}

/**
 * One target's rounds as one column: each numeric metric's median over the rounds that did not
 * fail, other values from the first of them; `rounds` and `failedRounds` say how many there were.
 */
export function summariseRounds (runs: readonly Metrics[]): Metrics {
  const ok = runs.filter((run) => run.error === undefined)
  if (ok.length === 0) return runs[runs.length - 1] ?? {}
  const summary: Metrics = {}
  for (const run of ok) {
    for (const [metric, value] of Object.entries(run)) {
      if (metric in summary) continue
      const values = numbers(ok, metric)
      summary[metric] = typeof value === 'number' || value === null ? (values.length === 0 ? null : round3(median(values))) : value
    }
  }
  summary.rounds = ok.length
  if (ok.length < runs.length) summary.failedRounds = runs.length - ok.length
  return summary
}

/** `min–max` of a metric over the rounds, or '' when there is one value or none. */
function spread (runs: readonly Metrics[] | undefined, metric: string): string {
  const values = numbers((runs ?? []).filter((run) => run.error === undefined), metric)
  if (values.length < 2) return ''
  return `${cell(round3(Math.min(...values)))}–${cell(round3(Math.max(...values)))}`
}

/**
 * weft/peer per round, pairing each round's runs (the rounds alternate the targets' order, so a
 * pair ran side by side): `min–max`, or '' without rounds.
 */
function ratioSpread (scenario: ScenarioResult, peer: TargetName, metric: string): string {
  const weftRuns = scenario.rounds?.weft ?? []
  const peerRuns = scenario.rounds?.[peer] ?? []
  const ratios: number[] = []
  for (let i = 0; i < Math.min(weftRuns.length, peerRuns.length); i++) {
    const w = weftRuns[i]?.[metric]
    const p = peerRuns[i]?.[metric]
    if (typeof w === 'number' && typeof p === 'number' && p !== 0) ratios.push(w / p)
  }
  if (ratios.length < 2) return ''
  return `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}`
}

function cell (value: Metrics[string] | undefined): string {
  if (value === undefined || value === null) return '–'
  if (typeof value === 'number') return Number.isInteger(value) ? value.toLocaleString('en-US') : String(value)
  return value.replace(/\|/g, '\\|')
}

export function toMarkdown (results: Results): string {
  const m = results.machine
  const lines: string[] = [
    `# weft benchmark — ${m.date}`,
    '',
    `Machine: ${m.cpuModel}, ${m.cores} cores, Node ${m.node}, ${m.os}. Server pinned to core 0, load processes to core 1.`,
    `Command: \`${results.command}\``,
    `Config: \`${JSON.stringify(results.config)}\``,
    '',
  ]
  const ratioRows: string[] = []
  for (const scenario of results.scenarios) {
    const targets = Object.keys(scenario.targets) as TargetName[]
    lines.push(`## ${scenario.id}. ${scenario.title}`, '')
    const metricNames: string[] = []
    for (const t of targets) for (const k of Object.keys(scenario.targets[t] ?? {})) if (!metricNames.includes(k)) metricNames.push(k)
    lines.push(`| metric | ${targets.join(' | ')} |`, `|---|${targets.map(() => '---').join('|')}|`)
    // With rounds, a cell is the median and, where the rounds differ, their range.
    const shown = (t: TargetName, k: string): string => {
      const range = spread(scenario.rounds?.[t], k)
      return cell(scenario.targets[t]?.[k]) + (range === '' ? '' : ` (${range})`)
    }
    for (const k of metricNames) lines.push(`| ${k} | ${targets.map((t) => shown(t, k)).join(' | ')} |`)
    lines.push('')
    for (const [name, metric, meaning] of RATIOS) {
      if (name !== scenario.name) continue
      const weft = scenario.targets.weft?.[metric]
      for (const peer of targets) {
        if (peer === 'weft') continue
        const other = scenario.targets[peer]?.[metric]
        if (other === undefined) continue
        const ratio = typeof weft === 'number' && typeof other === 'number' && other !== 0 ? (weft / other).toFixed(2) : '–'
        ratioRows.push(`| ${scenario.name} | ${meaning} | ${peer} | ${cell(weft)} | ${cell(other)} | ${ratio} | ${ratioSpread(scenario, peer, metric) || '–'} |`)
      }
    }
  }
  if (ratioRows.length > 0) {
    lines.push(
      '## Ratios weft / peer',
      '',
      'With several rounds (BENCH_ROUNDS), values are medians and the last column is the range of the per-round ratios.',
      '',
      '| scenario | metric | peer | weft | peer value | weft/peer | per-round range |',
      '|---|---|---|---|---|---|---|',
      ...ratioRows,
      '',
    )
  }
  return lines.join('\n')
}
