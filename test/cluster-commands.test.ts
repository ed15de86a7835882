/**
 * Issue 19 (the cluster): Redis commands per edit through whole servers. Two weft instances share
 * a real redis-server; a stock y-websocket client on one edits and a stock client on the other
 * must receive every edit. Spaced edits cost at most one EVALSHA each; a burst the client sends in
 * one go (one socket read at the server, which also broadcasts it merged) is relayed as one
 * merged update, so it costs far fewer commands than edits.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { WebsocketProvider } from 'y-websocket'
import { destroy, provider, synced } from './harness/clients.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

async function evalshaCalls(redis: RedisProcess): Promise<number> {
  const text = await redis.command('INFO', 'commandstats')
  return Number(/cmdstat_evalsha:calls=(\d+)/.exec(text)?.[1] ?? 0)
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
    await redis.command('CONFIG', 'RESETSTAT')
    for (let i = 0; i < 10; i++) {
      writer.getArray<string>('log').push([`spaced-${i}`])
      await until(() => reader.getArray('log').length === 2 + i, `spaced edit ${i} arrived`)
    }
    const calls = await evalshaCalls(redis)
    assert.ok(calls >= 1 && calls <= 10, `${calls} EVALSHA for 10 edits`)
  })

  it('a burst of 200 edits sent in one go: relayed merged, far fewer EVALSHA than edits', async () => {
    await redis.command('CONFIG', 'RESETSTAT')
    const before = reader.getArray('log').length
    // Separate transactions: the provider sends one message per edit, all in the same tick.
    for (let i = 0; i < 200; i++) writer.getArray<string>('log').push([`burst-${i}`])
    await until(() => reader.getArray('log').length === before + 200, 'the whole burst arrived')
    assert.deepEqual(reader.getArray('log').toArray(), writer.getArray('log').toArray())
    const calls = await evalshaCalls(redis)
    // One per socket read of the burst at the server; TCP may split 200 small frames into a few.
    assert.ok(calls >= 1 && calls <= 20, `${calls} EVALSHA for a burst of 200 edits`)
    console.log(`# burst of 200 edits: ${calls} EVALSHA`)
  })
})
