/**
 * deploy/prometheus/alerts.yml and deploy/grafana/weft.json: the rules pass `promtool check
 * rules` and their unit tests (`promtool test rules`, Debian's prometheus package, which
 * scripts/system-packages.mjs installs), the dashboard's queries parse as PromQL, and every
 * metric name either file uses is one a started weft (joined to a real Redis, so the cluster
 * metrics are there) lists on its /metrics.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { stringify } from 'yaml'
import { REPO_ROOT, readRepoFile, yamlDocuments } from './harness/repo.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { spawnWeft, tempDir, type WeftProcess } from './harness/server.js'
import { scrapeMetrics } from './harness/metrics.js'
import { withDeadline } from './harness/wait.js'

function promtool(): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/local/bin']
  const found = dirs.map((dir) => join(dir, 'promtool')).find((path) => existsSync(path))
  assert.ok(found, 'promtool is not installed: run `node scripts/system-packages.mjs` (Debian package prometheus)')
  return found
}

async function run(command: string, args: string[], cwd: string): Promise<{ status: number | null; output: string }> {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const status = await withDeadline(new Promise<number | null>((resolve) => child.once('close', resolve)), `${command} ${args.join(' ')}`, 60_000)
  return { status, output }
}

interface Rule {
  record?: string
  alert?: string
  expr: string
}
const rules = (yamlDocuments('deploy/prometheus/alerts.yml')[0] as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules)

interface Panel {
  id: number
  type: string
  title: string
  targets?: Array<{ expr: string; refId: string }>
}
interface Dashboard {
  uid: string
  panels: Panel[]
  templating: { list: Array<{ name: string; type: string; query?: string | { query: string } }> }
}
const dashboard = JSON.parse(readRepoFile('deploy/grafana/weft.json')) as Dashboard

/** Every PromQL expression of the dashboard: panel targets and template variable queries. */
function dashboardQueries(): string[] {
  const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr))
  for (const variable of dashboard.templating.list) {
    if (variable.type !== 'query' || variable.query === undefined) continue
    queries.push(typeof variable.query === 'string' ? variable.query : variable.query.query)
  }
  return queries
}

/** The metric names in a PromQL expression (recording rules are `weft:...`, with colons: not matched). */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/(?<![:\w])(weft_[a-z0-9_]+)\b/g)].map((m) => m[1] as string)
}

/** Each family a /metrics text declares (`# TYPE name kind`), with the sample names it owns. */
function exposedNames(text: string): Set<string> {
  const names = new Set<string>()
  for (const match of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [name, kind] = [match[1] as string, match[2] as string]
    names.add(name)
    if (kind === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix)
    if (kind === 'summary') for (const suffix of ['_sum', '_count']) names.add(name + suffix)
  }
  return names
}

/** A used sample name's family: histogram series (_bucket, _sum, _count) belong to their base name. */
function family(name: string, known: Set<string>): string {
  if (known.has(name)) return name
  return name.replace(/_(bucket|sum|count)$/, '')
}

let redis: RedisProcess
let weft: WeftProcess
let data: { path: string; remove(): Promise<void> }
let exposed: Set<string>

before(async () => {
  redis = await startRedis()
  data = await tempDir('weft-monitoring-')
  weft = await spawnWeft(['--data', data.path, '--redis', redis.url])
  exposed = exposedNames(await scrapeMetrics(weft.http))
})

after(async () => {
  weft.kill('SIGTERM')
  await withDeadline(weft.exited, 'weft to drain and exit', 30_000)
  await redis.dispose()
  await data.remove()
})

test('promtool accepts alerts.yml and its unit tests pass', async () => {
  const dir = join(REPO_ROOT, 'deploy', 'prometheus')
  const check = await run(promtool(), ['check', 'rules', 'alerts.yml'], dir)
  assert.equal(check.status, 0, check.output)
  const unit = await run(promtool(), ['test', 'rules', 'alerts.test.yml'], dir)
  assert.equal(unit.status, 0, unit.output)
  assert.match(unit.output, /SUCCESS/)
})

test('every alert has a unit test where it fires and one where it stays quiet', () => {
  const tests = (yamlDocuments('deploy/prometheus/alerts.test.yml')[0] as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts?: unknown[] }> }> }).tests
  const cases = tests.flatMap((t) => t.alert_rule_test ?? [])
  const alerts = rules.filter((r) => r.alert !== undefined).map((r) => r.alert as string)
  assert.ok(alerts.length >= 9, `${alerts.length} alerts`)
  for (const alert of alerts) {
    const mine = cases.filter((c) => c.alertname === alert)
    assert.ok(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${alert}: a case where it fires`)
    assert.ok(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${alert}: a case where it stays quiet (exp_alerts: [])`)
  }
})

test('the SLO table and the operational alerts are all there', () => {
  const alerts = new Set(rules.map((r) => r.alert).filter((a) => a !== undefined))
  for (const name of ['WeftConnectionErrorBudgetBurnFast', 'WeftConnectionErrorBudgetBurnSlow', 'WeftDeliveryP99High', 'WeftDisconnectsHigh', 'WeftStorageDown', 'WeftRedisDown', 'WeftRelayLagHigh', 'WeftSlowConsumerCloses', 'WeftDrainStuck']) {
    assert.ok(alerts.has(name), name)
  }
  // The README tells what each alert means and what to do.
  const readme = readRepoFile('README.md')
  for (const name of alerts) assert.ok(readme.includes(`\`${name}\``), `README explains ${name}`)
})

test('the dashboard queries parse as PromQL (promtool, as recording rules)', async () => {
  const dir = await tempDir('weft-dashboard-')
  try {
    const queries = dashboardQueries()
    assert.ok(queries.length >= 20, `${queries.length} queries`)
    // Grafana's variables, replaced by what they stand for.
    const plain = queries.map((q) => q.replaceAll('$job', '.*').replaceAll('$instance', '.*'))
    // label_values(...) is Grafana's, not PromQL: its argument is a selector.
    const exprs = plain.map((q) => q.replace(/^label_values\((.*), \w+\)$/, '$1'))
    const file = join(dir.path, 'dashboard-rules.yml')
    await writeFile(file, stringify({ groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr })) }] }))
    const check = await run(promtool(), ['check', 'rules', file], dir.path)
    assert.equal(check.status, 0, check.output)
  } finally {
    await dir.remove()
  }
})

test('the dashboard is well formed: unique panel ids, a query per panel, the variables it uses exist', () => {
  assert.equal(dashboard.uid, 'weft')
  const ids = dashboard.panels.map((p) => p.id)
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique')
  const variables = new Set(dashboard.templating.list.map((v) => v.name))
  for (const panel of dashboard.panels.filter((p) => p.type !== 'row')) {
    assert.ok((panel.targets ?? []).length > 0, `${panel.title} has a query`)
    for (const target of panel.targets ?? []) {
      for (const used of target.expr.matchAll(/\$(\w+)/g)) assert.ok(variables.has(used[1] as string), `${panel.title}: $${used[1]} is a dashboard variable`)
    }
  }
})

test('every metric alerts.yml and the dashboard use is on a live /metrics (or awaited from the metrics branch)', () => {
  assert.ok(exposed.has('weft_connections') && exposed.has('weft_redis_up'), 'the live /metrics was read, with the cluster metrics')
  const used = new Map<string, Set<string>>()
  const note = (name: string, where: string): void => {
    const key = family(name, exposed)
    used.set(key, (used.get(key) ?? new Set()).add(where))
  }
  for (const rule of rules) for (const name of metricNames(rule.expr)) note(name, `alerts.yml ${rule.record ?? rule.alert}`)
  for (const expr of dashboardQueries()) for (const name of metricNames(expr)) note(name, 'weft.json')
  assert.ok(used.size >= 20, `${used.size} metric names used`)
  const missing = [...used].filter(([name]) => !exposed.has(name))
  assert.deepEqual(missing.map(([name, where]) => `${name} (${[...where].join(', ')})`), [], 'names no weft exposes')
})
