/**
 * What a person or an operator sees first (issue 14): `GET /` is a small HTML page about this
 * server and never about its documents, `GET /openapi.yaml` is the API description it links to,
 * and every refused WebSocket upgrade is one info log line with its reason and remote address,
 * never a credential.
 */
import assert from 'node:assert/strict'
import { request } from 'node:http'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { buildInfo } from '../server/build-info.js'
import { converged, destroy, provider, synced } from './harness/clients.js'
import { spawnWeft, startServer, tempDir, type InProcessServer, type WeftProcess } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until, withDeadline } from './harness/wait.js'

const SECRET = 'home-page-test-secret-0123456789abcdef'
const ROOM = 'private-room-name-7f3a'

describe('GET /', () => {
  let weft: InProcessServer
  before(async () => {
    weft = await startServer({ hocuspocusPath: '/collab' })
    // A stored and loaded room with a distinctive name and content: neither may show on the page.
    const a = provider(weft.url, ROOM)
    const b = provider(weft.url, ROOM)
    try {
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('t').insert(0, 'confidential-content-91c2')
      await converged([a.doc, b.doc])
    } finally {
      destroy(a, b)
    }
  })
  after(() => weft.stop())

  it('answers a small HTML page with the version, where to connect and the links, and nothing of the documents', async () => {
    const res = await fetch(`${weft.http}/`)
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/html; charset=utf-8/)
    assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/)
    const html = await res.text()
    assert.ok(html.length < 4096, `${html.length} bytes`)
    assert.ok(html.includes(buildInfo().version), 'version')
    assert.ok(html.includes(`ws://127.0.0.1:${weft.port}/&lt;room&gt;`), 'y-websocket address')
    assert.ok(html.includes(`ws://127.0.0.1:${weft.port}/collab`), 'Hocuspocus address')
    for (const link of ['/health/ready', '/metrics', '/openapi.yaml']) assert.ok(html.includes(`href="${link}"`), link)
    assert.ok(!html.includes(ROOM) && !html.includes('confidential'), 'no document names or contents')
  })

  it('escapes a hostile Host header', async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: weft.port, path: '/', headers: { host: '<script>x</script>' } }, (res) => {
        let text = ''
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
        res.on('end', () => resolve(text))
      })
      req.on('error', reject)
      req.end()
    })
    assert.ok(!body.includes('<script>'))
  })

  it('serves the API description it links to', async () => {
    const res = await fetch(`${weft.http}/openapi.yaml`)
    assert.equal(res.status, 200)
    const text = await res.text()
    assert.match(text, /^openapi: 3\.1/m)
    assert.equal(text, readFileSync(join(new URL('../../docs/openapi.yaml', import.meta.url).pathname), 'utf8'))
  })
})

describe('refused upgrades are logged once, at info, with reason and address', () => {
  let weft: WeftProcess
  let data: { path: string; remove(): Promise<void> }
  before(async () => {
    data = await tempDir()
    weft = await spawnWeft(['--data', data.path, '--auth-secret', SECRET, '--allow-origin', 'https://app.example.com', '--max-connections-per-ip', '1', '--log-level', 'info'])
  })
  after(async () => {
    weft.kill('SIGTERM')
    await withDeadline(weft.exited, 'weft to exit', 10_000)
    await data.remove()
  })

  /** A WebSocket upgrade by hand; resolves with the status of the refusal (or 101, and the socket is kept in `open`). */
  const open: Duplex[] = []
  function upgrade(path: string, origin: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1',
        port: weft.port,
        path,
        headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', origin },
      })
      req.on('response', (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('upgrade', (res, socket) => {
        open.push(socket)
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      req.end()
    })
  }

  const refusals = (): Array<Record<string, unknown>> => weft.logs.filter((entry) => entry.msg === 'upgrade refused')

  it('origin, missing token, bad token and a limit: one line each, no token in any line', async () => {
    const badToken = await signToken({ rooms: [ROOM], access: 'write' }, { secret: SECRET + '-wrong', subject: 'mallory' })
    const goodToken = await signToken({ rooms: [ROOM], access: 'write' }, { secret: SECRET, subject: 'alice' })
    const attempts: Array<{ path: string; origin: string; status: number; result: string }> = [
      { path: `/${ROOM}?token=${goodToken}`, origin: 'https://evil.example.com', status: 403, result: 'origin' },
      { path: `/${ROOM}`, origin: 'https://app.example.com', status: 401, result: 'unauthorized' },
      { path: `/${ROOM}?token=${badToken}`, origin: 'https://app.example.com', status: 401, result: 'unauthorized' },
    ]
    for (const [i, attempt] of attempts.entries()) {
      assert.equal(await upgrade(attempt.path, attempt.origin), attempt.status)
      await until(() => refusals().length === i + 1, `log line of refusal ${i + 1}`)
      const line = refusals()[i] as Record<string, unknown>
      assert.equal(line.level, 30, 'info')
      assert.equal(line.result, attempt.result)
      assert.equal(line.status, attempt.status)
      assert.equal(typeof line.reason, 'string')
      assert.equal(line.remoteAddress, '127.0.0.1')
    }
    // A limit: the one connection this address may hold is taken.
    try {
      assert.equal(await upgrade(`/${ROOM}?token=${goodToken}`, 'https://app.example.com'), 101)
      const status = await upgrade(`/${ROOM}?token=${goodToken}`, 'https://app.example.com')
      assert.ok(status === 503 || status === 429, `status ${status}`)
      await until(() => refusals().length === 4, 'log line of the limit refusal')
      assert.equal(refusals()[3]?.status, status)
      assert.equal(refusals()[3]?.remoteAddress, '127.0.0.1')
    } finally {
      for (const socket of open) socket.destroy()
    }
    const text = JSON.stringify(weft.logs)
    for (const secret of [goodToken, badToken, goodToken.split('.')[2] as string, badToken.split('.')[2] as string]) assert.ok(!text.includes(secret), 'a token reached the log')
    assert.equal(refusals().length, 4, 'one line per refusal')
  })
})
