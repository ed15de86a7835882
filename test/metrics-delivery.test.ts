/**
 * Issue 17's metrics under real traffic: the delivery histogram grows per protocol when a stock
 * y-websocket provider and a stock Hocuspocus provider edit one room; updates relayed between
 * two instances through a real Redis are sampled with source="cluster"; persistence, traffic,
 * Redis command and HTTP route metrics count what happened, and no room name becomes a label.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { destroy, hocuspocusClient, provider, synced } from './harness/clients.js'
import { httpBytes } from './harness/http.js'
import { sampleIn, scrapeMetrics } from './harness/metrics.js'
import { startRedis, type RedisProcess } from './harness/redis.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { eventually, until } from './harness/wait.js'

async function sample(base: string, name: string, labels = ''): Promise<number> {
  return sampleIn(await scrapeMetrics(base), name, labels) ?? 0
}

const delivered = (protocol: string, source: string): string => `{protocol="${protocol}",source="${source}"}`

describe('delivery, persistence and traffic metrics with both protocols', () => {
  let weft: InProcessServer

  before(async () => {
    weft = await startServer({ roomUnloadDelayMs: -1 })
  })

  after(async () => {
    await weft?.stop()
  })

  it('samples delivery per protocol when a y-websocket and a Hocuspocus client exchange updates', async () => {
    const room = 'delivery-mixed'
    const yws = provider(weft.url, room)
    const hp = hocuspocusClient(weft.url, room)
    try {
      await synced(yws)
      await hp.synced()
      const before = await scrapeMetrics(weft.http)
      const toHocuspocus = sampleIn(before, 'weft_delivery_seconds_count', delivered('hocuspocus', 'local')) ?? 0
      const toYWebsocket = sampleIn(before, 'weft_delivery_seconds_count', delivered('y-websocket', 'local')) ?? 0
      const batches = sampleIn(before, 'weft_write_batch_updates_count') ?? 0

      yws.doc.getText('t').insert(0, 'from y-websocket ')
      await until(() => hp.provider.document.getText('t').toString().includes('from y-websocket'), 'the Hocuspocus client to get the edit')
      hp.provider.document.getText('t').insert(0, 'from hocuspocus ')
      await until(() => yws.doc.getText('t').toString().includes('from hocuspocus'), 'the y-websocket client to get the edit')

      await eventually(async () => (await sample(weft.http, 'weft_delivery_seconds_count', delivered('hocuspocus', 'local'))) > toHocuspocus, 'a hocuspocus delivery sample')
      await eventually(async () => (await sample(weft.http, 'weft_delivery_seconds_count', delivered('y-websocket', 'local'))) > toYWebsocket, 'a y-websocket delivery sample')
      // Persistence: both edits reach LevelDB within the write window.
      await eventually(async () => (await sample(weft.http, 'weft_write_batch_updates_count')) > batches, 'a storage write batch')
      const text = await scrapeMetrics(weft.http)
      assert.ok((sampleIn(text, 'weft_persist_seconds_count') ?? 0) >= 1)
      assert.equal(sampleIn(text, 'weft_delivery_seconds_count', delivered('y-websocket', 'cluster')), 0, 'nothing came from a cluster')
      // Traffic by protocol and message type, both directions.
      for (const [direction, protocol] of [['in', 'y-websocket'], ['out', 'hocuspocus'], ['in', 'hocuspocus'], ['out', 'y-websocket']]) {
        const labels = `{direction="${direction}",protocol="${protocol}",type="update"}`
        assert.ok((sampleIn(text, 'weft_messages_total', labels) ?? 0) >= 1, `weft_messages_total${labels}`)
        assert.ok((sampleIn(text, 'weft_message_bytes_total', labels) ?? 0) > 0, `weft_message_bytes_total${labels}`)
      }
      assert.ok((sampleIn(text, 'weft_messages_total', '{direction="in",protocol="y-websocket",type="sync_step1"}') ?? 0) >= 1)
      assert.ok((sampleIn(text, 'weft_messages_total', '{direction="in",protocol="hocuspocus",type="auth"}') ?? 0) >= 1)
      assert.ok(!text.includes(room), 'no room name in any label')
    } finally {
      destroy(yws)
      hp.destroy()
    }
  })

  it('labels HTTP requests by route pattern and status, never by room', async () => {
    const room = 'http-route-room'
    const answer = await httpBytes(weft.http, 'GET', `/api/rooms/${room}/state-vector`)
    await httpBytes(weft.http, 'GET', '/no/such/path')
    await httpBytes(weft.http, 'GET', '/health/live')
    const text = await scrapeMetrics(weft.http)
    assert.ok((sampleIn(text, 'weft_http_requests_total', `{route="/api/rooms/{room}/state-vector",status="${answer.status}"}`) ?? 0) >= 1, 'the state vector route')
    assert.ok((sampleIn(text, 'weft_http_requests_total', '{route="other",status="404"}') ?? 0) >= 1, 'an unknown path is "other"')
    assert.ok((sampleIn(text, 'weft_http_requests_total', '{route="/health/live",status="200"}') ?? 0) >= 1)
    assert.ok((sampleIn(text, 'weft_http_request_duration_seconds_count', '{route="/api/rooms/{room}/state-vector"}') ?? 0) >= 1)
    assert.ok(!text.includes(room), 'the room is not a label')
    assert.ok(!text.includes('/no/such/path'), 'an unknown path is not a label')
  })
})

describe('delivery of updates from another instance (source="cluster")', () => {
  let redis: RedisProcess
  let a: InProcessServer
  let b: InProcessServer

  before(async () => {
    redis = await startRedis()
    a = await startServer({ redisUrl: redis.url, instanceId: 'metrics-a', roomUnloadDelayMs: -1 })
    b = await startServer({ redisUrl: redis.url, instanceId: 'metrics-b', roomUnloadDelayMs: -1 })
  })

  after(async () => {
    await a?.stop()
    await b?.stop()
    await redis?.stop()
  })

  it('samples a relayed update on the receiving instance with source="cluster", and times Redis commands', async () => {
    const room = 'delivery-cluster'
    const writer = provider(a.url, room)
    const reader = provider(b.url, room)
    try {
      await synced(writer)
      await synced(reader)
      const before = await sample(b.http, 'weft_delivery_seconds_count', delivered('y-websocket', 'cluster'))
      writer.doc.getText('t').insert(0, 'across instances')
      await until(() => reader.doc.getText('t').toString() === 'across instances', 'the edit to cross instances')
      await eventually(async () => (await sample(b.http, 'weft_delivery_seconds_count', delivered('y-websocket', 'cluster'))) > before, 'a cluster delivery sample on b')
      const onB = await scrapeMetrics(b.http)
      // The sum is the cross-instance delay: positive, and well under the test's own deadline.
      const sum = sampleIn(onB, 'weft_delivery_seconds_sum', delivered('y-websocket', 'cluster')) ?? -1
      assert.ok(sum >= 0 && sum < 10, `cluster delivery sum ${sum}`)
      assert.ok((sampleIn(onB, 'weft_relay_received_total') ?? 0) >= 1)
      const onA = await scrapeMetrics(a.http)
      assert.ok((sampleIn(onA, 'weft_redis_command_seconds_count', '{command="evalsha"}') ?? 0) >= 1, 'the publish script is timed')
      assert.ok((sampleIn(onA, 'weft_relay_published_total') ?? 0) >= 1)
    } finally {
      destroy(writer, reader)
    }
  })
})
