/**
 * Issue 19 (the cluster): Redis commands per edit through whole servers. Two weft instances share
 * a real redis-server; a stock y-websocket client on one edits and a stock client on the other
 * must receive every edit. Spaced edits cost at most one EVALSHA each; a burst the client sends in
 * one go (one socket read at the server, which also broadcasts it merged) is relayed as one
 * merged update, so it costs far fewer commands than edits.
 *
 * Redis counts every EVALSHA, the relays' periodic checks too: on a slow machine a check falls in
 * a test's window. The tests count those through `weft_relay_checks_total` and the publishes
 * through `weft_relay_published_total`, so a script per edit is told from a check.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { destroy, provider, synced } from './harness/clients.js'
import { scrapeMetrics, sampleIn } from './harness/metrics.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

async function evalshaCalls(redis: RedisProcess): Promise<number> {
  const text = await redis.command('INFO', 'commandstats')
  return Number(/cmdstat_evalsha:calls=(\d+)/.exec(text)?.[1] ?? 0)
}

interface RelayTotals {
  published: number
  checks: number
}

/** Both instances' relay totals, summed, from /metrics. */
async function relayTotals(servers: InProcessServer[]): Promise<RelayTotals> {
  const totals = { published: 0, checks: 0 }
  for (const server of servers) {
    const text = await scrapeMetrics(server.http)
    totals.published += sampleIn(text, 'weft_relay_published_total') ?? Number.NaN
    totals.checks += sampleIn(text, 'weft_relay_checks_total') ?? Number.NaN
  }
  return totals
}

/**
 * The EVALSHA Redis counted since RESETSTAT, against the publishes and checks the instances counted
 * between `before` (read before RESETSTAT) and now (after Redis was asked). Every publish of the
 * window reached Redis before the reader got its edit, so none is missing; a check sent just before
 * `before` was read can still reach Redis after RESETSTAT, hence one more at most.
 */
async function scriptsInWindow(redis: RedisProcess, servers: InProcessServer[], before: RelayTotals): Promise<{ calls: number; published: number; checks: number }> {
  const calls = await evalshaCalls(redis)
  const after = await relayTotals(servers)
  const published = after.published - before.published
  const checks = after.checks - before.checks
  assert.ok(calls >= published && calls <= published + checks + 1, `${calls} EVALSHA for ${published} publishes and ${checks} periodic checks`)
  return { calls, published, checks }
}

describe('Redis commands per edit through two weft instances', () => {
  let redis: RedisProcess
  let a: InProcessServer
  let b: InProcessServer
  const providers: WebsocketProvider[] = []
  let writer: Y.Doc
  let reader: Y.Doc

  before(async () => {
    redis = await startRedis()
    a = await startServer({ redisUrl: redis.url })
    b = await startServer({ redisUrl: redis.url })
    writer = new Y.Doc()
    reader = new Y.Doc()
    const pa = provider(a.url, 'commands', writer)
    const pb = provider(b.url, 'commands', reader)
    providers.push(pa, pb)
    await Promise.all([synced(pa), synced(pb)])
    writer.getArray<string>('log').push(['first'])
    await until(() => reader.getArray('log').length === 1, 'the first edit crossed the cluster')
  })

  after(async () => {
    destroy(...providers)
    await a?.stop()
    await b?.stop()
    await redis?.dispose()
  })

  it('spaced edits: at most one EVALSHA each', async () => {
    const before = await relayTotals([a, b])
    await redis.command('CONFIG', 'RESETSTAT')
    for (let i = 0; i < 10; i++) {
      writer.getArray<string>('log').push([`spaced-${i}`])
      await until(() => reader.getArray('log').length === 2 + i, `spaced edit ${i} arrived`)
    }
    const { published } = await scriptsInWindow(redis, [a, b], before)
    assert.ok(published >= 1 && published <= 10, `${published} publishes (one EVALSHA each) for 10 edits`)
  })

  it('a burst of 200 edits sent in one go: relayed merged, far fewer EVALSHA than edits', async () => {
    const totals = await relayTotals([a, b])
    await redis.command('CONFIG', 'RESETSTAT')
    const before = reader.getArray('log').length
    // Separate transactions: the provider sends one message per edit, all in the same tick.
    for (let i = 0; i < 200; i++) writer.getArray<string>('log').push([`burst-${i}`])
    await until(() => reader.getArray('log').length === before + 200, 'the whole burst arrived')
    assert.deepEqual(reader.getArray('log').toArray(), writer.getArray('log').toArray())
    const { calls, published } = await scriptsInWindow(redis, [a, b], totals)
    // One per socket read of the burst at the server; TCP may split 200 small frames into a few.
    assert.ok(published >= 1 && published <= 20, `${published} publishes (one EVALSHA each) for a burst of 200 edits`)
    console.log(`# burst of 200 edits: ${published} publishes, ${calls} EVALSHA`)
  })
})
