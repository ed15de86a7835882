import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { describe, it } from 'node:test'
import { WebSocket } from 'ws'
import { limitKey } from '../server/admission.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { eventually, withDeadline } from './harness/wait.js'
import { metricValue } from './harness/metrics.js'

// Issue #4, admission: the limits are enforced before the upgrade, with the documented HTTP status
// and Retry-After, and a slot is given back when its connection goes away.

type Attempt =
  | { admitted: true; socket: WebSocket }
  | { admitted: false; status: number; retryAfter: string | undefined; error: string | undefined }

/** One upgrade attempt: the open socket, or the HTTP answer that refused it. */
function attempt(url: string, headers: Record<string, string> = {}): Promise<Attempt> {
  return withDeadline(
    new Promise<Attempt>((resolve, reject) => {
      const socket = new WebSocket(url, { headers })
      socket.once('open', () => resolve({ admitted: true, socket }))
      socket.once('unexpected-response', (_req, res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => {
          let error: string | undefined
          try {
            error = (JSON.parse(body) as { error?: string }).error
          } catch {
            error = undefined
          }
          resolve({ admitted: false, status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], error })
          socket.terminate()
        })
      })
      socket.once('error', reject)
    }),
    `upgrade to ${url}`,
  )
}

async function admitted(url: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  const result = await attempt(url, headers)
  assert.ok(result.admitted, `refused with HTTP ${result.admitted ? '' : result.status}`)
  return result.socket
}

function assertRefused(result: Attempt, status: number, error: string): void {
  assert.ok(!result.admitted, `expected HTTP ${status}, but the upgrade was accepted`)
  assert.equal(result.status, status)
  assert.equal(result.error, error)
  assert.ok(result.retryAfter !== undefined && Number(result.retryAfter) > 0, `Retry-After: ${result.retryAfter}`)
}

/** Connections the server counts as open (the gauge is set when /metrics is read). */
async function openConnections(server: InProcessServer): Promise<number> {
  return (await metricValue(server.http, 'weft_connections')) ?? NaN
}

async function closeAll(sockets: WebSocket[]): Promise<void> {
  await Promise.all(
    sockets.map((s) =>
      s.readyState === WebSocket.CLOSED ? undefined : withDeadline(new Promise((resolve) => s.once('close', resolve).terminate()), 'socket to close'),
    ),
  )
}

async function withServer(options: Parameters<typeof startServer>[0], body: (server: InProcessServer, sockets: WebSocket[]) => Promise<void>): Promise<void> {
  const server = await startServer(options)
  const sockets: WebSocket[] = []
  try {
    await body(server, sockets)
  } finally {
    await closeAll(sockets)
    await server.stop()
  }
}

/** A client behind a proxy: the proxy (this test, on 127.0.0.1) says who the client is. */
const forwardedFor = (address: string): Record<string, string> => ({ 'X-Forwarded-For': address })

describe('admission limits before the upgrade', () => {
  it('per address: past --max-connections-per-ip the upgrade gets 429 with Retry-After; a closed connection gives its slot back', async () => {
    await withServer({ maxConnectionsPerIp: 3 }, async (server, sockets) => {
      for (let i = 0; i < 3; i++) sockets.push(await admitted(`${server.url}/per-ip-${i}`))
      assertRefused(await attempt(`${server.url}/per-ip-other`), 429, 'too_many_requests')

      const first = sockets[0] as WebSocket
      await withDeadline(new Promise((resolve) => first.once('close', resolve).close()), 'the first socket to close')
      await eventually(async () => (await openConnections(server)) === 2, 'the server to see the close', 5_000, 10)
      sockets.push(await admitted(`${server.url}/per-ip-again`))
      assertRefused(await attempt(`${server.url}/per-ip-other`), 429, 'too_many_requests')
    })
  })

  it('global: past --max-connections the upgrade gets 503 with Retry-After, whatever the address or room', async () => {
    await withServer({ maxConnections: 3 }, async (server, sockets) => {
      for (let i = 0; i < 3; i++) sockets.push(await admitted(`${server.url}/global-${i}`))
      assertRefused(await attempt(`${server.url}/global-other`), 503, 'unavailable')
      assertRefused(await attempt(`${server.url}/global-0`), 503, 'unavailable')

      ;(sockets[1] as WebSocket).terminate()
      await eventually(async () => (await openConnections(server)) === 2, 'the server to see the close', 5_000, 10)
      sockets.push(await admitted(`${server.url}/global-other`))
      assertRefused(await attempt(`${server.url}/global-more`), 503, 'unavailable')
    })
  })

  it('per room: a burst of upgrades to one room admits exactly --max-room-connections, the rest get 503; other rooms are open', async () => {
    await withServer({ maxRoomConnections: 2 }, async (server, sockets) => {
      const results = await Promise.all(Array.from({ length: 8 }, () => attempt(`${server.url}/crowded`)))
      for (const r of results) if (r.admitted) sockets.push(r.socket)
      const refused = results.filter((r) => !r.admitted)
      assert.equal(sockets.length, 2, 'admitted to the crowded room')
      for (const r of refused) assertRefused(r, 503, 'unavailable')
      sockets.push(await admitted(`${server.url}/quiet`))

      ;(sockets[0] as WebSocket).terminate()
      await eventually(async () => (await openConnections(server)) === 2, 'the server to see the close', 5_000, 10)
      sockets.push(await admitted(`${server.url}/crowded`))
      assertRefused(await attempt(`${server.url}/crowded`), 503, 'unavailable')
    })
  })

  it('upgrade rate: 20 upgrades at once with --upgrades-per-second 5 (burst 10): the burst is admitted, the rest get 503 with Retry-After', async () => {
    await withServer({ upgradesPerSecond: 5 }, async (server, sockets) => {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt(`${server.url}/rate-${i % 4}`)))
      for (const r of results) if (r.admitted) sockets.push(r.socket)
      const refused = results.filter((r) => !r.admitted)
      // The bucket starts full (10) and refills 5/s while the 20 handshakes are served.
      assert.ok(sockets.length >= 10 && sockets.length <= 12, `${sockets.length} of 20 admitted`)
      assert.equal(refused.length, 20 - sockets.length)
      for (const r of refused) assertRefused(r, 503, 'unavailable')
      for (const s of sockets) assert.equal(s.readyState, WebSocket.OPEN)
    })
  })

  it('upgrade rate per address: one address past --upgrades-per-second-per-ip gets 429; another address is not held back', async () => {
    await withServer({ upgradesPerSecondPerIp: 3, trustedProxies: ['127.0.0.1'] }, async (server, sockets) => {
      const burst = await Promise.all(Array.from({ length: 12 }, (_, i) => attempt(`${server.url}/ip-rate-${i % 3}`, forwardedFor('203.0.113.7'))))
      for (const r of burst) if (r.admitted) sockets.push(r.socket)
      const refused = burst.filter((r) => !r.admitted)
      // The address's bucket starts full (6) and refills 3/s while the handshakes are served.
      assert.ok(sockets.length >= 6 && sockets.length <= 8, `${sockets.length} of 12 admitted`)
      for (const r of refused) assertRefused(r, 429, 'too_many_requests')
      // A different client address has its own bucket.
      sockets.push(await admitted(`${server.url}/ip-rate-0`, forwardedFor('198.51.100.9')))
    })
  })

  it('trusted proxy: X-Forwarded-For decides the address, read from the right', async () => {
    await withServer({ maxConnectionsPerIp: 2, trustedProxies: ['127.0.0.1'] }, async (server, sockets) => {
      for (let i = 0; i < 2; i++) sockets.push(await admitted(`${server.url}/proxied`, forwardedFor('203.0.113.1')))
      assertRefused(await attempt(`${server.url}/proxied`, forwardedFor('203.0.113.1')), 429, 'too_many_requests')
      // What a client puts on the left of the header proves nothing: the rightmost untrusted hop counts.
      assertRefused(await attempt(`${server.url}/proxied`, forwardedFor('198.51.100.9, 203.0.113.1')), 429, 'too_many_requests')
      for (let i = 0; i < 2; i++) sockets.push(await admitted(`${server.url}/proxied`, forwardedFor('203.0.113.2')))
      assertRefused(await attempt(`${server.url}/proxied`, forwardedFor('203.0.113.2')), 429, 'too_many_requests')
      // The proxy's own connections (no header) have their own count.
      sockets.push(await admitted(`${server.url}/proxied`))
    })
  })

  it('IPv6: the addresses of one /64 count as one client (--ipv6-prefix-length), the hooks still see each address; 128 counts each alone', async () => {
    const seen: string[] = []
    await withServer({ maxConnectionsPerIp: 2, trustedProxies: ['127.0.0.1'], authenticate: ({ remoteAddress }) => {
      seen.push(remoteAddress)
      return { subject: 'anyone', access: 'write' }
    } }, async (server, sockets) => {
      sockets.push(await admitted(`${server.url}/v6`, forwardedFor('2001:db8:0:1::a')))
      sockets.push(await admitted(`${server.url}/v6`, forwardedFor('2001:db8:0:1:ffff:ffff:ffff:ffff')))
      // Another address of the same /64: the same client, past its two connections.
      assertRefused(await attempt(`${server.url}/v6`, forwardedFor('2001:db8:0:1::c')), 429, 'too_many_requests')
      // The next /64 is another client.
      sockets.push(await admitted(`${server.url}/v6`, forwardedFor('2001:db8:0:2::a')))
      assert.deepEqual(seen, ['2001:db8:0:1::a', '2001:db8:0:1:ffff:ffff:ffff:ffff', '2001:db8:0:2::a'], 'each hook call names the client\'s own address')
    })
    await withServer({ maxConnectionsPerIp: 2, trustedProxies: ['127.0.0.1'], ipv6PrefixLength: 128 }, async (server, sockets) => {
      for (const address of ['2001:db8:0:1::a', '2001:db8:0:1::b', '2001:db8:0:1::c']) sockets.push(await admitted(`${server.url}/v6`, forwardedFor(address)))
    })
  })

  it('no trusted proxy: X-Forwarded-For is ignored and the peer address counts', async () => {
    await withServer({ maxConnectionsPerIp: 2 }, async (server, sockets) => {
      sockets.push(await admitted(`${server.url}/direct`, forwardedFor('203.0.113.1')))
      sockets.push(await admitted(`${server.url}/direct`, forwardedFor('203.0.113.2')))
      assertRefused(await attempt(`${server.url}/direct`, forwardedFor('203.0.113.3')), 429, 'too_many_requests')
    })
  })

  it('a handshake that fails after admission (ws answers 400) gives its slot back', async () => {
    await withServer({ maxConnectionsPerIp: 1 }, async (server, sockets) => {
      // An upgrade ws refuses itself: the room and the limits are fine, the WebSocket version is not.
      const answer = await withDeadline(
        new Promise<string>((resolve, reject) => {
          const socket = connect(server.port, '127.0.0.1')
          let text = ''
          socket.setEncoding('utf8')
          socket.on('data', (chunk: string) => (text += chunk))
          socket.on('close', () => resolve(text))
          socket.on('error', reject)
          socket.write(
            'GET /bad-handshake HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
              'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n',
          )
        }),
        'the refused handshake',
      )
      assert.match(answer, /^HTTP\/1\.1 400 /)
      sockets.push(await admitted(`${server.url}/after-bad-handshake`))
      assertRefused(await attempt(`${server.url}/after-bad-handshake`), 429, 'too_many_requests')
    })
  })
})

describe('limitKey', () => {
  it('groups an IPv6 address by its prefix, in every spelling; an IPv4 address, mapped or not, counts alone', () => {
    const cases: Array<[string, number, string]> = [
      ['2001:db8:1:2:3:4:5:6', 64, '2001:db8:1:2::/64'],
      ['2001:0db8:0001:0002::1', 64, '2001:db8:1:2::/64'],
      ['2001:db8:1:3::1', 64, '2001:db8:1:3::/64'],
      ['2001:db8:1:2345::', 60, '2001:db8:1:2340::/60'],
      ['2001:db8:1:2::1', 48, '2001:db8:1::/48'],
      ['2001:db8:1:2::1', 128, '2001:db8:1:2::1'],
      ['fe80::1%eth0', 64, 'fe80:0:0:0::/64'],
      ['64:ff9b::1.2.3.4', 96, '64:ff9b:0:0:0:0::/96'],
      ['::1', 64, '0:0:0:0::/64'],
      ['::ffff:203.0.113.9', 64, '203.0.113.9'],
      ['203.0.113.9', 64, '203.0.113.9'],
      ['unknown', 64, 'unknown'],
    ]
    for (const [address, bits, key] of cases) assert.equal(limitKey(address, bits), key, `${address} /${bits}`)
  })
})
