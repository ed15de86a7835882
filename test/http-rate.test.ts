import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { KeyedBuckets, type Clock } from '../server/token-bucket.js'
import { httpRequest, type HttpAnswer } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { eventually } from './harness/wait.js'

// --http-requests-per-second-per-ip: one address cannot keep the event loop busy with requests to
// the HTTP API, however cheap each one is; others, the health checks and the metrics go on.

/** A clock the test moves by hand. */
function manualClock(): Clock & { advance(ms: number): void } {
  let now = 0
  return { now: () => now, advance: (ms) => (now += ms) }
}

async function withServer(options: Parameters<typeof startServer>[0], body: (weft: InProcessServer) => Promise<void>): Promise<void> {
  const weft = await startServer({ data: 'memory', trustedProxies: ['127.0.0.1'], ...options })
  try {
    await body(weft)
  } finally {
    await weft.stop()
  }
}

/** A GET of the API from `address` (through the trusted proxy that 127.0.0.1 is here). */
function getFrom(weft: InProcessServer, address: string, path = '/api/rooms/doc'): Promise<HttpAnswer> {
  return httpRequest(weft.port, path, { headers: { 'x-forwarded-for': address } })
}

function textUpdate(text: string): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

describe('KeyedBuckets', () => {
  it('gives each key its own burst and rate, and tells when to retry', () => {
    const clock = manualClock()
    const buckets = new KeyedBuckets(2, 4, 100, clock)
    for (let i = 0; i < 4; i++) assert.ok(buckets.tryTake('a'), `token ${i + 1} of the burst`)
    assert.equal(buckets.tryTake('a'), false)
    assert.ok(buckets.tryTake('b'), 'another key has its own burst')
    assert.equal(buckets.retryAfterSeconds('a'), 1)
    clock.advance(500)
    assert.ok(buckets.tryTake('a'), 'one token back after half a second at 2 a second')
    assert.equal(buckets.tryTake('a'), false)
  })

  it('stays within its bound of keys: full buckets go first, then the oldest, down to nine tenths', () => {
    const clock = manualClock()
    const buckets = new KeyedBuckets(1, 1, 10, clock)
    for (let i = 0; i < 10; i++) assert.ok(buckets.tryTake(`k${i}`))
    clock.advance(1000)
    // Every bucket is full again: the sweep forgets all of them, and a forgotten key loses nothing.
    assert.ok(buckets.tryTake('new'))
    assert.equal(buckets.size, 1)
    for (let i = 0; i < 9; i++) assert.ok(buckets.tryTake(`m${i}`))
    assert.equal(buckets.size, 10)
    // None is full now: the oldest go, so many keys at once cost one sweep per tenth of the bound.
    assert.ok(buckets.tryTake('one more'))
    assert.equal(buckets.size, 10)
    assert.ok(buckets.tryTake('new'), 'the oldest key was forgotten and starts with a full burst')
    assert.equal(buckets.tryTake('m8'), false, 'a recent key keeps its empty bucket')
  })
})

describe('--http-requests-per-second-per-ip', () => {
  it('past its burst an address gets 429 with Retry-After, counted; other addresses, health checks and metrics go on; the address gets in again', async () => {
    await withServer({ httpRequestsPerSecondPerIp: 5 }, async (weft) => {
      assert.equal((await httpRequest(weft.port, '/api/rooms/doc/updates', { method: 'POST', headers: { 'x-forwarded-for': '10.0.0.9', 'content-type': 'application/octet-stream' }, body: textUpdate('kept') })).status, 204)
      // The burst is twice the rate: ten requests go, whatever the clock does meanwhile.
      for (let i = 0; i < 10; i++) assert.equal((await getFrom(weft, '10.0.0.1')).status, 200, `request ${i + 1} of the burst`)
      let refusals = 0
      /** Asks until the address is refused (a token comes back every 200 ms): the 429. */
      const untilRefused = async (): Promise<HttpAnswer> => {
        for (let sent = 0; sent < 50; sent++) {
          const answer = await getFrom(weft, '10.0.0.1')
          if (answer.status === 429) {
            refusals++
            return answer
          }
          assert.equal(answer.status, 200)
        }
        throw new Error('no 429 in 50 requests at 5 a second')
      }
      const refused = await untilRefused()
      assert.equal(refused.headers['retry-after'], '1')
      assert.match(refused.body, /"error":"too_many_requests"/)
      assert.match(refused.body, /--http-requests-per-second-per-ip/)
      // Another address, the health checks and the metrics are not held back.
      const other = await getFrom(weft, '10.0.0.2')
      assert.equal(other.status, 200)
      assert.deepEqual(JSON.parse(other.body), { t: 'kept' })
      for (let i = 0; i < 20; i++) {
        assert.equal((await getFrom(weft, '10.0.0.1', '/health/live')).status, 200)
        assert.equal((await getFrom(weft, '10.0.0.1', '/metrics')).status, 200)
      }
      // An update refused by the rate is not applied, and its connection is closed (its body unread).
      await untilRefused()
      const write = await httpRequest(weft.port, '/api/rooms/doc/updates', { method: 'POST', headers: { 'x-forwarded-for': '10.0.0.1', 'content-type': 'application/octet-stream' }, body: textUpdate('refused ') })
      assert.equal(write.status, 429)
      refusals++
      assert.equal(write.headers.connection, 'close')
      assert.deepEqual(JSON.parse((await getFrom(weft, '10.0.0.3')).body), { t: 'kept' })
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="rate_per_ip"}'), refusals)
      // The bucket refills: the address gets in again.
      await eventually(async () => (await getFrom(weft, '10.0.0.1')).status === 200, 'a request of the limited address answered again')
    })
  })

  it('the addresses of one IPv6 /64 share a rate; the next /64 has its own', async () => {
    await withServer({ httpRequestsPerSecondPerIp: 1 }, async (weft) => {
      assert.equal((await httpRequest(weft.port, '/api/rooms/doc/updates', { method: 'POST', headers: { 'x-forwarded-for': '10.0.2.9', 'content-type': 'application/octet-stream' }, body: textUpdate('v6') })).status, 204)
      // A burst of two for the /64, whichever of its addresses asks.
      assert.equal((await getFrom(weft, '2001:db8::1')).status, 200)
      assert.equal((await getFrom(weft, '2001:db8::2')).status, 200)
      assert.equal((await getFrom(weft, '2001:db8::ffff:3')).status, 429)
      assert.equal((await getFrom(weft, '2001:db8:0:1::1')).status, 200)
    })
  })

  it('under a flood of concurrent requests from one address, it gets no more than its burst and rate; another address gets every answer', async () => {
    const rate = 50
    await withServer({ httpRequestsPerSecondPerIp: rate }, async (weft) => {
      assert.equal((await httpRequest(weft.port, '/api/rooms/doc/updates', { method: 'POST', headers: { 'x-forwarded-for': '10.0.1.9', 'content-type': 'application/octet-stream' }, body: textUpdate('flooded') })).status, 204)
      const counts = { ok: 0, refused: 0, other: 0 }
      const started = performance.now()
      let stop = false
      const flood = Array.from({ length: 16 }, async () => {
        while (!stop) {
          const answer = await getFrom(weft, '10.0.1.1')
          if (answer.status === 200) counts.ok++
          else if (answer.status === 429) counts.refused++
          else counts.other++
          if (counts.refused >= 2000) stop = true
        }
      })
      let answered = 0
      try {
        for (let i = 0; i < 20; i++) {
          const answer = await getFrom(weft, '10.0.1.2')
          assert.equal(answer.status, 200)
          assert.deepEqual(JSON.parse(answer.body), { t: 'flooded' })
          answered++
        }
      } finally {
        stop = true
        await Promise.all(flood)
      }
      const seconds = (performance.now() - started) / 1000
      console.log(`# flood: ${counts.ok} answered, ${counts.refused} refused in ${seconds.toFixed(1)} s; the other address: ${answered} of 20`)
      assert.equal(counts.other, 0)
      assert.ok(counts.refused > 0, 'the flood was refused')
      // The burst, then the rate over the time the flood ran (and one token of rounding).
      assert.ok(counts.ok <= 2 * rate + rate * seconds + 1, `${counts.ok} answered in ${seconds} s at ${rate} a second`)
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="rate_per_ip"}'), counts.refused)
    })
  })
})
