import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { pino } from 'pino'
import { createServer } from '../server/index.js'
import { RawClient } from './harness/clients.js'
import { startServer, tempDir, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { httpRequest as http, silentUpgrade, type HttpAnswer as Answer } from './harness/http.js'

// The HTTP side of a server: liveness, readiness through the lifecycle, metrics and errors.

function assertJsonError(answer: Answer, status: number, code: string): void {
  assert.equal(answer.status, status, answer.body)
  assert.match(String(answer.headers['content-type']), /^application\/json/)
  const body = JSON.parse(answer.body) as Record<string, unknown>
  assert.equal(body.error, code)
  assert.equal(typeof body.message, 'string')
  assert.doesNotMatch(answer.body, /\n\s+at /, 'no stack trace')
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
      stuck = await silentUpgrade(server.port, '/drain-room', 'unresponsive socket to upgrade')
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
