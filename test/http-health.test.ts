import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer, request, type IncomingHttpHeaders } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import { createServer } from '../server/index.js'
import { RawClient } from './harness/clients.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

// The HTTP side of a server: liveness, readiness through the lifecycle, metrics and errors.

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/** One HTTP request on its own socket (no keep-alive), or a WebSocket upgrade request when `upgrade`. */
function http(port: number, path: string, options: { method?: string; headers?: Record<string, string>; upgrade?: boolean } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.upgrade === true) {
    Object.assign(headers, {
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Version': '13',
      'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    })
  }
  return withDeadline(
    new Promise<Answer>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers, agent: false })
      req.on('response', (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('upgrade', (res, socket) => {
        socket.destroy()
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' })
      })
      req.on('error', reject)
      req.end()
    }),
    `${options.method ?? 'GET'} ${path}`,
  )
}

function assertJsonError(answer: Answer, status: number, code: string): void {
  assert.equal(answer.status, status, answer.body)
  assert.match(String(answer.headers['content-type']), /^application\/json/)
  const body = JSON.parse(answer.body) as Record<string, unknown>
  assert.equal(body.error, code)
  assert.equal(typeof body.message, 'string')
  assert.doesNotMatch(answer.body, /\n\s+at /, 'no stack trace')
}

/**
 * A WebSocket client that completes the upgrade and then never answers anything, not even the
 * close handshake: the server's drain has to wait for it, which keeps the server in `draining`.
 */
function unresponsiveSocket(port: number, room: string): Promise<Socket> {
  return withDeadline(
    new Promise<Socket>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1')
      let head = ''
      const onData = (chunk: Buffer): void => {
        head += chunk.toString('latin1')
        if (head.includes('\r\n\r\n')) {
          socket.off('data', onData)
          if (head.startsWith('HTTP/1.1 101')) {
            socket.on('data', () => {}) // read and ignore: never a close frame back
            resolve(socket)
          } else reject(new Error(`upgrade refused: ${head.split('\r\n')[0]}`))
        }
      }
      socket.on('data', onData)
      socket.on('error', reject)
      socket.write(
        `GET /${room} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
      )
    }),
    'unresponsive socket to upgrade',
  )
}

describe('HTTP endpoints of a serving server', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer()
  })
  after(async () => {
    await server.stop()
  })

  it('answers /health/live with 200', async () => {
    const answer = await http(server.port, '/health/live')
    assert.equal(answer.status, 200)
  })

  it('answers /health/ready with 200 while serving', async () => {
    const answer = await http(server.port, '/health/ready')
    assert.equal(answer.status, 200, answer.body)
    assert.equal(server.server.state, 'serving')
  })

  it('serves Prometheus text on /metrics, with weft_connections counting open sockets', async () => {
    const raw = await RawClient.open(`${server.url}/metrics-room`)
    try {
      const answer = await http(server.port, '/metrics')
      assert.equal(answer.status, 200)
      assert.match(String(answer.headers['content-type']), /^text\/plain; version=0\.0\.4/)
      assert.match(answer.body, /^# HELP weft_connections /m)
      assert.match(answer.body, /^# TYPE weft_connections gauge$/m)
      assert.match(answer.body, /^weft_connections 1$/m)
    } finally {
      raw.close()
      await raw.waitClosed()
    }
    // The server sees the close a moment after the client does: poll with a deadline.
    const deadline = Date.now() + 5_000
    let body = ''
    while (!/^weft_connections 0$/m.test(body)) {
      assert.ok(Date.now() < deadline, `weft_connections did not return to 0:\n${body.split('\n').filter((l) => l.startsWith('weft_connections')).join('\n')}`)
      body = (await http(server.port, '/metrics')).body
    }
  })

  it('answers an unknown path with 404 and a JSON error', async () => {
    assertJsonError(await http(server.port, '/no/such/path'), 404, 'not_found')
    assertJsonError(await http(server.port, '/health/ready/extra'), 404, 'not_found')
  })

  it('refuses a malformed WebSocket handshake with a JSON error, like every other refusal', async () => {
    // ws's own refusals are text/html; the contract wants {error, message} for every HTTP error.
    const noKey = await http(server.port, '/room', { headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13' } })
    assertJsonError(noKey, 400, 'bad_request')
    const badVersion = await http(server.port, '/room', {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '99', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') },
    })
    assertJsonError(badVersion, 400, 'bad_request')
    const post = await http(server.port, '/room', { method: 'POST', upgrade: true })
    assertJsonError(post, 405, 'method_not_allowed')
  })

  it('answers a wrong method on a health path with 405 and a JSON error', async () => {
    assertJsonError(await http(server.port, '/health/live', { method: 'POST' }), 405, 'method_not_allowed')
  })
})

describe('/metrics with --metrics-token', () => {
  let server: InProcessServer
  before(async () => {
    server = await startServer({ metricsToken: 's3cret-token' })
  })
  after(async () => {
    await server.stop()
  })

  it('refuses a request without the bearer token with 401', async () => {
    assertJsonError(await http(server.port, '/metrics'), 401, 'unauthorized')
  })

  it('refuses a wrong token with 401', async () => {
    assertJsonError(await http(server.port, '/metrics', { headers: { Authorization: 'Bearer wrong' } }), 401, 'unauthorized')
    assertJsonError(await http(server.port, '/metrics', { headers: { Authorization: 's3cret-token' } }), 401, 'unauthorized')
  })

  it('serves metrics with the token', async () => {
    const answer = await http(server.port, '/metrics', { headers: { Authorization: 'Bearer s3cret-token' } })
    assert.equal(answer.status, 200)
    assert.match(answer.body, /^weft_connections /m)
  })

  it('keeps the health endpoints open', async () => {
    assert.equal((await http(server.port, '/health/live')).status, 200)
    assert.equal((await http(server.port, '/health/ready')).status, 200)
  })
})

describe('readiness through the lifecycle', () => {
  it('is 503 while starting, before storage is open', async () => {
    const dir = await tempDir()
    const weft = createServer({ data: dir.path, logger: pino({ level: 'silent' }) })
    const app = createHttpServer((req, res) => weft.handleRequest(req, res))
    try {
      await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
      const { port } = app.address() as AddressInfo
      const starting = await http(port, '/health/ready')
      assert.equal(weft.state, 'starting')
      assert.equal(starting.status, 503)
      assert.equal((JSON.parse(starting.body) as { state?: string }).state, 'starting')
      // Liveness does not depend on readiness.
      assert.equal((await http(port, '/health/live')).status, 200)

      weft.attach(app)
      await until(() => weft.state === 'serving', 'server to serve')
      assert.equal((await http(port, '/health/ready')).status, 200)
    } finally {
      await weft.close()
      await new Promise<void>((resolve) => app.close(() => resolve()))
      await dir.remove()
    }
  })

  it('is 503 with a JSON body while draining, and upgrades get 503 with Retry-After', async () => {
    const server = await startServer({ drainSeconds: 2 })
    let stuck: Socket | null = null
    let polite: RawClient | null = null
    try {
      polite = await RawClient.open(`${server.url}/drain-room`)
      stuck = await unresponsiveSocket(server.port, 'drain-room')
      assert.equal((await http(server.port, '/health/ready')).status, 200)

      const drained = server.server.drain()
      assert.equal(server.server.state, 'draining')

      const ready = await http(server.port, '/health/ready')
      assertJsonReady(ready)
      assert.equal((await http(server.port, '/health/live')).status, 200, 'live while draining')

      const upgrade = await http(server.port, '/drain-room', { upgrade: true })
      assertJsonError(upgrade, 503, 'unavailable')
      const retryAfter = Number(upgrade.headers['retry-after'])
      assert.ok(Number.isInteger(retryAfter) && retryAfter > 0, `Retry-After: ${upgrade.headers['retry-after']}`)
      // Still draining: the checks above ran inside the window, not after it.
      assert.equal(server.server.state, 'draining')

      assert.equal(await polite.waitClosed(5_000), 1012)
      await withDeadline(drained, 'drain to finish', 10_000)
      assert.equal(server.server.state, 'stopped')
    } finally {
      stuck?.destroy()
      polite?.socket.terminate()
      await server.stop()
    }
  })
})

function assertJsonReady(answer: Answer): void {
  assert.equal(answer.status, 503, answer.body)
  assert.match(String(answer.headers['content-type']), /^application\/json/)
  const body = JSON.parse(answer.body) as Record<string, unknown>
  assert.equal(body.state, 'draining')
}
