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
  /** Per target: metrics, or `{ error }`, or `{ skipped }`. */
  targets: Partial<Record<TargetName, Metrics>>
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
    for (const k of metricNames) lines.push(`| ${k} | ${targets.map((t) => cell(scenario.targets[t]?.[k])).join(' | ')} |`)
    lines.push('')
    for (const [name, metric, meaning] of RATIOS) {
      if (name !== scenario.name) continue
      const weft = scenario.targets.weft?.[metric]
      for (const peer of targets) {
        if (peer === 'weft') continue
        const other = scenario.targets[peer]?.[metric]
        if (other === undefined) continue
        const ratio = typeof weft === 'number' && typeof other === 'number' && other !== 0 ? (weft / other).toFixed(2) : '–'
        ratioRows.push(`| ${scenario.name} | ${meaning} | ${peer} | ${cell(weft)} | ${cell(other)} | ${ratio} |`)
      }
    }
  }
  if (ratioRows.length > 0) {
    lines.push('## Ratios weft / peer', '', '| scenario | metric | peer | weft | peer value | weft/peer |', '|---|---|---|---|---|---|', ...ratioRows, '')
  }
  return lines.join('\n')
}
