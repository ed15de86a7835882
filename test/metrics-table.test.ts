/**
 * README's metrics table against a live /metrics, both ways: every documented name is exposed
 * with the documented type, and every weft_* name the server exposes is documented. The server
 * runs with --redis so the cluster's metrics are there too.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { after, before, describe, it } from 'node:test'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { scrapeMetrics } from './harness/metrics.js'

const README = new URL('../../README.md', import.meta.url)

interface Row {
  name: string
  type: string
}

/** The rows of the table under `## Metrics`: each first cell holds one or more `names` (a trailing * is a family). */
function documentedRows(readme: string): Row[] {
  const start = readme.indexOf('\n## Metrics\n')
  assert.ok(start >= 0, 'README has a Metrics section')
  const end = readme.indexOf('\n## ', start + 1)
  const rows: Row[] = []
  for (const line of readme.slice(start, end).split('\n')) {
    if (!line.startsWith('| `weft_')) continue
    const cells = line.split('|').map((cell) => cell.trim())
    for (const match of (cells[1] as string).matchAll(/`(weft_[a-z_*]+)`/g)) rows.push({ name: match[1] as string, type: cells[2] as string })
  }
  return rows
}

/** `# TYPE name type` lines of Prometheus text, for weft_ names. */
function exposedTypes(text: string): Map<string, string> {
  const types = new Map<string, string>()
  for (const match of text.matchAll(/^# TYPE (weft_\w+) (\w+)$/gm)) types.set(match[1] as string, match[2] as string)
  return types
}

describe('the README metrics table matches /metrics', () => {
  let redis: RedisProcess
  let weft: InProcessServer
  let rows: Row[]
  let exposed: Map<string, string>

  before(async () => {
    redis = await startRedis()
    weft = await startServer({ redisUrl: redis.url })
    rows = documentedRows(await readFile(README, 'utf8'))
    exposed = exposedTypes(await scrapeMetrics(weft.http))
  })

  after(async () => {
    await weft?.stop()
    await redis?.stop()
  })

  it('documents a few dozen metrics, the issue 17 ones among them', () => {
    assert.ok(rows.length > 40, `${rows.length} rows`)
    for (const name of ['weft_delivery_seconds', 'weft_persist_seconds', 'weft_messages_total', 'weft_http_requests_total', 'weft_redis_command_seconds', 'weft_build_info', 'weft_server_state']) {
      assert.ok(rows.some((row) => row.name === name), `${name} is documented`)
    }
  })

  it('exposes every documented name, with the documented type', () => {
    for (const row of rows) {
      if (row.name.endsWith('*')) {
        const prefix = row.name.slice(0, -1)
        assert.ok([...exposed.keys()].some((name) => name.startsWith(prefix)), `something matches ${row.name}`)
        continue
      }
      assert.equal(exposed.get(row.name), row.type, `${row.name} is exposed as a ${row.type}`)
    }
  })

  it('documents every weft_* name it exposes', () => {
    const exact = new Set(rows.map((row) => row.name))
    const families = rows.filter((row) => row.name.endsWith('*')).map((row) => row.name.slice(0, -1))
    const missing = [...exposed.keys()].filter((name) => !exact.has(name) && !families.some((prefix) => name.startsWith(prefix)))
    assert.deepEqual(missing, [])
  })

  it('exposes the relay totals as counters (they were gauges) and the build as weft_build_info', async () => {
    for (const name of ['weft_relay_published_total', 'weft_relay_received_total', 'weft_relay_healed_total', 'weft_relay_commands_total', 'weft_relay_checks_total']) assert.equal(exposed.get(name), 'counter', name)
    const text = await scrapeMetrics(weft.http)
    assert.match(text, /^weft_build_info\{version="[^"]+",commit="[^"]+"\} 1$/m)
    assert.match(text, /^weft_server_state\{state="serving"\} 1$/m)
    assert.match(text, /^weft_server_state\{state="draining"\} 0$/m)
  })
})
