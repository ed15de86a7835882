import assert from 'node:assert/strict'
import { createServer as createHttpServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, it } from 'node:test'
import { pino } from 'pino'
import { WebSocket } from 'ws'
import type { WebsocketProvider } from 'y-websocket'
import { createServer, type WeftServer } from '../server/index.js'
import { canonicalState, converged, destroy, provider, RawClient, synced } from './harness/clients.js'
import { startServer, tempDir } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

// weft embedded in an HTTP server the application owns: `attach` takes the upgrades,
// `handleRequest` serves weft's paths from the app's handler, and `close()` leaves the app's server alone.

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return withDeadline(
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      req.on('error', reject)
      req.end()
    }),
    `GET ${path}`,
  )
}

/** The application: its own routes, and weft's HTTP endpoints mounted from its handler. */
function appServer(weft: WeftServer): Server {
  return createHttpServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://app').pathname
    if (path.startsWith('/health/') || path === '/metrics') {
      weft.handleRequest(req, res)
      return
    }
    if (path === '/app') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end('served by the app')
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('app: not found')
  })
}

describe('embedding weft in an existing HTTP server', () => {
  it('syncs providers through attach(), leaves the app its routes, and close() leaves the server to the app', async () => {
    const dir = await tempDir()
    const weft = createServer({ data: dir.path, logger: pino({ level: 'silent' }) })
    const app = appServer(weft)
    const providers: WebsocketProvider[] = []
    let appClosed = false
    try {
      weft.attach(app)
      await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
      const { port } = app.address() as AddressInfo
      assert.equal(weft.address()?.port, port, 'weft reports the app server’s address')
      const url = `ws://127.0.0.1:${port}`
      await until(() => weft.state === 'serving', 'weft to serve')
      assert.equal((await get(port, '/health/ready')).status, 200)

      const a = provider(url, 'embedded')
      const b = provider(url, 'embedded')
      providers.push(a, b)
      await Promise.all([synced(a), synced(b)])
      a.doc.getText('text').insert(0, 'through the app server')
      b.doc.getMap('map').set('from', 'b')
      const loaded = weft.loadedRoom('embedded')
      assert.ok(loaded !== undefined)
      const state = await converged([a.doc, b.doc, loaded.doc], 'embedded room to converge')

      const appAnswer = await get(port, '/app')
      assert.deepEqual(appAnswer, { status: 200, body: 'served by the app' })
      assert.equal((await get(port, '/elsewhere')).body, 'app: not found', 'unknown paths stay the app’s')
      const metrics = await get(port, '/metrics')
      assert.match(metrics.body, /^weft_connections 2$/m)

      const closes = providers.map((p) => new Promise<number>((resolve) => p.ws?.addEventListener('close', (event) => resolve((event as unknown as { code: number }).code))))
      await weft.close()
      assert.equal(weft.state, 'stopped')
      assert.deepEqual(await withDeadline(Promise.all(closes), 'providers to be closed'), [1012, 1012])
      destroy(...providers)

      // The app's server is still listening and still serves the app.
      assert.equal(app.listening, true)
      assert.deepEqual(await get(port, '/app'), { status: 200, body: 'served by the app' })
      assert.equal((await get(port, '/health/ready')).status, 503, 'readiness reports the stopped weft')
      // A WebSocket upgrade is refused, not left hanging, once weft has stopped.
      const late = new RawClient(new WebSocket(`${url}/embedded`))
      await assert.rejects(withDeadline(late.opened, 'late upgrade'), /HTTP 503/)
      late.socket.terminate()

      // The app shuts its own server down when it wants to.
      await new Promise<void>((resolve, reject) => app.close((err) => (err === undefined ? resolve() : reject(err))))
      appClosed = true

      // close() flushed the room: a fresh server on the same LevelDB has it.
      const fresh = await startServer({ data: dir.path })
      const reader = provider(fresh.url, 'embedded')
      try {
        await synced(reader)
        assert.deepEqual(canonicalState(reader.doc), state)
      } finally {
        destroy(reader)
        await fresh.stop()
      }
    } finally {
      destroy(...providers)
      await weft.close()
      if (!appClosed) {
        app.closeAllConnections()
        await new Promise<void>((resolve) => app.close(() => resolve()))
      }
      await dir.remove()
    }
  })

  it('lets the app close its server after weft, and weft’s close() is idempotent', async () => {
    const dir = await tempDir()
    const weft = createServer({ data: dir.path, logger: pino({ level: 'silent' }) })
    const app = appServer(weft)
    try {
      weft.attach(app)
      await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve))
      await until(() => weft.state === 'serving', 'weft to serve')
      const first = weft.close()
      const second = weft.close()
      assert.deepEqual(await first, await second)
      assert.equal(app.listening, true, 'weft.close() did not close the app’s server')
    } finally {
      await weft.close()
      await new Promise<void>((resolve) => app.close(() => resolve()))
      await dir.remove()
    }
  })
})
