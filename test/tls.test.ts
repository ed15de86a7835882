import assert from 'node:assert/strict'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { converged, destroy } from './harness/clients.js'
import { runCli, startServer, tempDir, type InProcessServer } from './harness/server.js'
import { makeCertificate } from './harness/tls.js'
import { withDeadline } from './harness/wait.js'

// --tls-cert/--tls-key: weft serves https and wss itself, with a self-signed certificate made here.

describe('TLS: https and wss served directly', () => {
  let dir: { path: string; remove(): Promise<void> }
  let weft: InProcessServer
  let ca: Buffer
  let paths: { cert: string; key: string }

  before(async () => {
    dir = await tempDir('weft-tls-')
    paths = makeCertificate(dir.path)
    ca = readFileSync(paths.cert)
    weft = await startServer({ tlsCert: paths.cert, tlsKey: paths.key })
  })

  after(async () => {
    await weft?.stop()
    await dir?.remove()
  })

  it('GET /health/ready over https, trusting the certificate, answers 200', async () => {
    const status = await withDeadline(
      new Promise<number>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port: weft.port, path: '/health/ready', ca, servername: 'localhost', agent: false }, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        })
        req.on('error', reject)
        req.end()
      }),
      'https GET /health/ready',
    )
    assert.equal(status, 200)
  })

  it('two stock y-websocket providers sync over wss://', async () => {
    class TrustingWebSocket extends WebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols, { ca })
      }
    }
    const open = (doc: Y.Doc): WebsocketProvider =>
      new WebsocketProvider(`wss://127.0.0.1:${weft.port}`, 'tls-room', doc, {
        WebSocketPolyfill: TrustingWebSocket as unknown as typeof globalThis.WebSocket,
        disableBc: true,
        maxBackoffTime: 500,
      })
    const a = open(new Y.Doc())
    const b = open(new Y.Doc())
    try {
      a.doc.getText('t').insert(0, 'over tls')
      await converged([a.doc, b.doc], 'providers over wss to converge')
      assert.equal(b.doc.getText('t').toString(), 'over tls')
      assert.equal(weft.server.loadedRoom('tls-room')?.doc.getText('t').toString(), 'over tls')
    } finally {
      destroy(a, b)
    }
  })

  it('plain ws:// to the TLS port does not open', async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${weft.port}/tls-room`)
    const outcome = await withDeadline(
      new Promise<string>((resolve) => {
        socket.once('open', () => resolve('open'))
        socket.once('error', (err) => resolve(`error: ${err.message}`))
        socket.once('unexpected-response', (_req, res) => resolve(`http ${res.statusCode}`))
      }),
      'plain ws to fail',
    )
    socket.terminate()
    assert.notEqual(outcome, 'open')
  })

  it('an unreadable certificate file: weft serve exits 2 naming --tls-cert', async () => {
    const unreadable = join(dir.path, 'unreadable.pem')
    writeFileSync(unreadable, readFileSync(paths.cert))
    chmodSync(unreadable, 0o000)
    let readable: boolean
    try {
      readFileSync(unreadable)
      readable = true // root reads anything: fall back to a path that does not exist
    } catch {
      readable = false
    }
    const cert = readable ? join(dir.path, 'missing-cert.pem') : unreadable
    const { status, stderr } = await runCli(['serve', '--port', '0', '--data', 'memory', '--tls-cert', cert, '--tls-key', paths.key])
    assert.equal(status, 2, stderr)
    assert.match(stderr, /--tls-cert/)
    assert.equal(stderr.trim().split('\n').length, 1, `one line on stderr: ${stderr}`)
  })
})
