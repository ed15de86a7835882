import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { WebSocket, WebSocketServer } from 'ws'
import * as Y from 'yjs'
import { WeftProvider, type ProviderCloseEvent, type WeftProviderOptions } from '../client/index.js'
import { Backoff } from '../client/backoff.js'
import { Emitter } from '../client/emitter.js'
import { closeAction } from '../client/close-policy.js'
import { roomUrl } from '../client/room-url.js'
import { decodeYMessage, encodeAwareness, encodeSyncStep1, encodeSyncStep2 } from '../protocol/index.js'
import { destroy, provider, synced, converged } from './harness/clients.js'
import { startServer } from './harness/server.js'
import { once, until, withDeadline } from './harness/wait.js'

const WS = WebSocket as unknown as typeof globalThis.WebSocket

function weft(url: string, room: string, doc = new Y.Doc(), options: WeftProviderOptions = {}): WeftProvider {
  return new WeftProvider(url, room, doc, {
    WebSocket: WS,
    ...options,
    backoff: { initialMs: 20, maxMs: 200, restartJitterMs: 100, ...options.backoff },
  })
}

function nextClose(p: WeftProvider, what = 'close event'): Promise<ProviderCloseEvent> {
  return withDeadline(new Promise((resolve) => {
    const fn = (event: ProviderCloseEvent): void => {
      p.off('close', fn)
      resolve(event)
    }
    p.on('close', fn)
  }), what)
}

/** A WebSocket class that counts constructions and may send later ones elsewhere. */
function countingWebSocket(redirect: (url: string, n: number) => string = (url) => url): { WebSocket: typeof globalThis.WebSocket; count: () => number } {
  let n = 0
  class Counting extends WebSocket {
    constructor(url: string) {
      super(redirect(url, n++))
    }
  }
  return { WebSocket: Counting as unknown as typeof globalThis.WebSocket, count: () => n }
}

interface ScriptedConnection {
  socket: WebSocket
  url: string
  frames: Uint8Array[]
  /** The close code this side received from the provider. */
  closed: Promise<number>
}

/**
 * A bare `ws` server (not weft) whose behaviour per connection the test scripts; it records
 * every connection, every frame and the close code the client sent.
 */
async function scriptedServer(script: (conn: ScriptedConnection, index: number) => void): Promise<{
  url: string
  connections: ScriptedConnection[]
  waitConnections(n: number): Promise<void>
  stop(): Promise<void>
}> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  const connections: ScriptedConnection[] = []
  wss.on('connection', (socket, req) => {
    const frames: Uint8Array[] = []
    socket.on('message', (data: Buffer) => frames.push(new Uint8Array(data)))
    const closed = new Promise<number>((resolve) => socket.once('close', (code: number) => resolve(code)))
    const conn = { socket, url: req.url ?? '', frames, closed }
    connections.push(conn)
    script(conn, connections.length - 1)
  })
  const { port } = wss.address() as { port: number }
  return {
    url: `ws://127.0.0.1:${port}`,
    connections,
    waitConnections: (n) => until(() => connections.length >= n, `${n} connection(s) to the scripted server`),
    stop: () => {
      for (const client of wss.clients) client.terminate()
      return new Promise((resolve) => wss.close(() => resolve()))
    },
  }
}

/** Answers like a y-websocket server with an empty document: its step 1, and step 2 to the client's. */
function emptyDocServer(conn: ScriptedConnection): void {
  conn.socket.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
  conn.socket.on('message', (data: Buffer) => {
    const message = decodeYMessage(new Uint8Array(data))
    if (message.kind === 'sync-step-1') conn.socket.send(encodeSyncStep2(Y.encodeStateAsUpdate(new Y.Doc(), message.stateVector)))
  })
}

function activeTimeouts(): number {
  return process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
}

test('backoff: full jitter below a window that doubles up to maxMs, and resets', () => {
  const top = new Backoff(100, 1000, () => 0.999)
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => top.next()), [99, 199, 399, 799, 999, 999])
  top.reset()
  assert.equal(top.next(), 99)
  assert.equal(new Backoff(100, 1000, () => 0).next(), 0)
})

test('emitter: a listener that throws does not stop the others; its error is reported', () => {
  const reported: unknown[] = []
  const events = new Emitter<{ tick: [number] }>((err) => reported.push(err))
  const seen: number[] = []
  const boom = new Error('listener bug')
  events.on('tick', () => {
    throw boom
  })
  events.on('tick', (n) => seen.push(n))
  events.emit('tick', 7)
  assert.deepEqual(seen, [7])
  assert.deepEqual(reported, [boom])
})

test('close policy follows the contract table', () => {
  for (const code of [1008, 4401, 4403, 4404]) assert.equal(closeAction(code), 'stop', String(code))
  for (const code of [1000, 1002, 1006, 1007, 1009, 1011, 1013, 4999]) assert.equal(closeAction(code), 'backoff', String(code))
  assert.equal(closeAction(1012), 'restart')
})

test('room URLs: the whole name is one percent-encoded segment; bad names throw', () => {
  assert.equal(roomUrl('ws://h:1', 'a/b'), 'ws://h:1/a%2Fb')
  assert.equal(roomUrl('ws://h:1/', 'my room', { token: 'x y&z' }), 'ws://h:1/my%20room?token=x+y%26z')
  assert.equal(roomUrl('wss://h/collab/', 'a/../b'), 'wss://h/collab/a%2F..%2Fb')
  for (const room of ['', '..', '.', 'a\nb', 'x'.repeat(513)]) {
    assert.throws(() => new WeftProvider('ws://h:1', room, new Y.Doc(), { WebSocket: WS, connect: false }), RangeError, JSON.stringify(room))
  }
  assert.throws(() => new WeftProvider('not a url', 'r', new Y.Doc(), { WebSocket: WS, connect: false }), TypeError)
  assert.throws(() => new WeftProvider('ws://h:1', 'r', new Y.Doc(), { WebSocket: WS, connect: false, backoff: { initialMs: 0 } }), RangeError)
})

test('syncs text and awareness both ways with a stock y-websocket provider; disconnect and connect again', async () => {
  const server = await startServer()
  const stock = provider(server.url, 'shared')
  const w = weft(server.url, 'shared')
  try {
    const statuses: string[] = []
    w.on('status', (s) => statuses.push(s))
    await Promise.all([synced(stock), w.whenSynced(10_000)])
    assert.equal(w.status, 'connected')
    assert.equal(w.synced, true)

    w.doc.getText('t').insert(0, 'weft ')
    stock.doc.getText('t').insert(0, 'stock ')
    await converged([w.doc, stock.doc], 'weft and stock docs')
    assert.match(w.doc.getText('t').toString(), /weft/)
    assert.match(w.doc.getText('t').toString(), /stock/)

    w.awareness.setLocalStateField('user', 'w')
    stock.awareness.setLocalStateField('user', 's')
    await until(() => (stock.awareness.getStates().get(w.awareness.clientID) as { user?: string } | undefined)?.user === 'w', 'stock to see weft awareness')
    await until(() => (w.awareness.getStates().get(stock.awareness.clientID) as { user?: string } | undefined)?.user === 's', 'weft to see stock awareness')

    // Offline: other clients' states go, the local one stays, and edits wait for the resync.
    const closed = nextClose(w)
    w.disconnect()
    const event = await closed
    assert.deepEqual(event, { code: 1000, reason: 'disconnected by the client', willReconnect: false })
    assert.equal(w.status, 'disconnected')
    assert.equal(w.synced, false)
    assert.deepEqual([...w.awareness.getStates().keys()], [w.awareness.clientID])
    await until(() => !stock.awareness.getStates().has(w.awareness.clientID), 'the server to drop weft awareness')
    w.doc.getText('t').insert(0, 'offline ')

    w.connect()
    await w.whenSynced(10_000)
    await converged([w.doc, stock.doc], 'the offline edit after reconnecting')
    assert.match(stock.doc.getText('t').toString(), /offline/)
    await until(() => w.awareness.getStates().has(stock.awareness.clientID), 'weft to get stock awareness again')
    assert.deepEqual(statuses, ['connected', 'disconnected', 'connecting', 'connected'])
  } finally {
    w.destroy()
    destroy(stock)
    await server.stop()
  }
})

test('a late provider gets existing content, in rooms named "a/b" and "my room"', async () => {
  const server = await startServer()
  try {
    for (const room of ['a/b', 'my room']) {
      // The stock provider puts the name into the URL unencoded; the server decodes both to `room`.
      const stock = provider(server.url, room)
      await synced(stock)
      stock.doc.getText('t').insert(0, `in ${room}`)
      const late = weft(server.url, room)
      try {
        await late.whenSynced(10_000)
        await until(() => late.doc.getText('t').toString() === `in ${room}`, `content of ${room}`)
      } finally {
        late.destroy()
        destroy(stock)
      }
    }
  } finally {
    await server.stop()
  }
})

test('after a drain (1012) it reconnects, here to a second server, and the resync carries offline edits', async () => {
  const a = await startServer({ drainSeconds: 1 })
  const b = await startServer()
  const redirecting = countingWebSocket((url, n) => (n === 0 ? url : url.replace(a.url, b.url)))
  const w = weft(a.url, 'moving', new Y.Doc(), { WebSocket: redirecting.WebSocket })
  const stockB = provider(b.url, 'moving')
  try {
    await Promise.all([w.whenSynced(10_000), synced(stockB)])
    w.doc.getText('t').insert(0, 'before ')
    stockB.doc.getText('t').insert(0, 'onB ')

    const closed = withDeadline(new Promise<ProviderCloseEvent>((resolve) => {
      w.on('close', (event) => {
        // Still disconnected here: this edit can only reach server B through the resync.
        if (redirecting.count() === 1) w.doc.getText('t').insert(0, 'offline ')
        resolve(event)
      })
    }), 'the drain to close the connection')
    void a.server.drain()
    const event = await closed
    assert.equal(event.code, 1012)
    assert.equal(event.willReconnect, true)
    assert.equal(w.status, 'connecting')

    await w.whenSynced(10_000)
    assert.equal(redirecting.count(), 2)
    await converged([w.doc, stockB.doc], 'weft and server B')
    const text = stockB.doc.getText('t').toString()
    for (const part of ['before', 'offline', 'onB']) assert.match(text, new RegExp(part))
  } finally {
    w.destroy()
    destroy(stockB)
    await Promise.all([a.stop(), b.stop()])
  }
})

test('4404, 4401, 4403 and 1008 stop the provider: no reconnect, whenSynced rejects', async () => {
  for (const code of [4404, 4401, 4403, 1008]) {
    const server = await scriptedServer((conn) => conn.socket.close(code, `closed with ${code}`))
    const counting = countingWebSocket()
    // A 1 ms backoff: a reconnect, if one were scheduled, would start before the probe below connects.
    const w = weft(server.url, 'stop', new Y.Doc(), { WebSocket: counting.WebSocket, backoff: { initialMs: 1, maxMs: 1, restartJitterMs: 1 } })
    try {
      const syncing = w.whenSynced()
      const event = await nextClose(w)
      assert.deepEqual(event, { code, reason: `closed with ${code}`, willReconnect: false })
      assert.equal(w.status, 'stopped')
      await assert.rejects(syncing, /stopped/)
      await assert.rejects(w.whenSynced(), /stopped/)

      const probe = new WebSocket(server.url)
      probe.on('error', () => {})
      await server.waitConnections(2)
      assert.equal(counting.count(), 1, `constructions after ${code}`)
      assert.equal(server.connections.length, 2)
      assert.equal(w.status, 'stopped')
    } finally {
      w.destroy()
      await server.stop()
    }
  }
})

test('1012, 1013, 1011, 1009, 1002 and 1006 reconnect', async () => {
  for (const code of [1012, 1013, 1011, 1009, 1002, 1006]) {
    const server = await scriptedServer((conn, i) => {
      if (i > 0) return emptyDocServer(conn)
      if (code === 1006) conn.socket.terminate()
      else conn.socket.close(code)
    })
    const w = weft(server.url, 'again')
    try {
      const event = await nextClose(w)
      assert.equal(event.code, code)
      assert.equal(event.willReconnect, true)
      await server.waitConnections(2)
      await w.whenSynced(5_000)
    } finally {
      w.destroy()
      await server.stop()
    }
  }
})

test('a malformed frame from the server: the provider closes with 1002/1007 and reconnects, nothing thrown', async () => {
  const uncaught: unknown[] = []
  const guard = (err: unknown): void => {
    uncaught.push(err)
  }
  process.on('uncaughtException', guard)
  const badAwarenessEntry = Uint8Array.from([1, 7, 1, 4, ...new TextEncoder().encode('{bad')]) // count, clientID, clock, length, text
  const cases: Array<[string, Uint8Array, number]> = [
    ['unknown message type', Uint8Array.of(9), 1002],
    ['truncated sync message', Uint8Array.of(0, 1, 5, 1), 1002],
    ['awareness state that is not JSON', encodeAwareness(badAwarenessEntry), 1007],
    ['update that is not a Yjs update', encodeSyncStep2(Uint8Array.of(1, 1, 1)), 1007],
  ]
  try {
    for (const [what, frame, expected] of cases) {
      const server = await scriptedServer((conn, i) => {
        if (i === 0) conn.socket.send(frame)
        else emptyDocServer(conn)
      })
      const w = weft(server.url, 'malformed')
      try {
        const event = await nextClose(w, what)
        assert.equal(event.code, expected, what)
        assert.equal(event.willReconnect, true)
        assert.equal(await withDeadline((server.connections[0] as ScriptedConnection).closed, 'server side close'), expected, what)
        await server.waitConnections(2)
        await w.whenSynced(5_000)
      } finally {
        w.destroy()
        await server.stop()
      }
    }
    assert.deepEqual(uncaught, [])
  } finally {
    process.off('uncaughtException', guard)
  }
})

test('where close() refuses 1002 (browsers), a malformed frame closes with 1000 and still reconnects', async () => {
  // Browsers throw InvalidAccessError for close codes other than 1000 and 3000-4999.
  class BrowserLikeWebSocket extends WebSocket {
    override close(code?: number, reason?: string): void {
      if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) throw new Error('InvalidAccessError')
      super.close(code, reason)
    }
  }
  const server = await scriptedServer((conn, i) => {
    if (i === 0) conn.socket.send(Uint8Array.of(9))
    else emptyDocServer(conn)
  })
  const w = weft(server.url, 'browser', new Y.Doc(), { WebSocket: BrowserLikeWebSocket as unknown as typeof globalThis.WebSocket })
  try {
    const event = await nextClose(w)
    assert.equal(event.code, 1002)
    assert.equal(await withDeadline((server.connections[0] as ScriptedConnection).closed, 'server side close'), 1000)
    await w.whenSynced(5_000)
  } finally {
    w.destroy()
    await server.stop()
  }
})

test('a silent connection is probed with query-awareness at half the liveness window, then replaced', async () => {
  const server = await scriptedServer((conn, i) => {
    if (i > 0) emptyDocServer(conn)
  })
  const w = weft(server.url, 'silent', new Y.Doc(), { livenessTimeoutMs: 300 })
  try {
    await assert.rejects(w.whenSynced(50), /not synced within 50 ms/)
    const event = await nextClose(w)
    assert.equal(event.code, 1006)
    assert.equal(event.willReconnect, true)
    const first = server.connections[0] as ScriptedConnection
    assert.ok(first.frames.some((f) => f.length === 1 && f[0] === 3), 'query-awareness probe sent')
    await server.waitConnections(2)
    await w.whenSynced(5_000)
  } finally {
    w.destroy()
    await server.stop()
  }
})

test('destroy() leaves no timers behind and is idempotent', async () => {
  const server = await scriptedServer(emptyDocServer)
  try {
    const before = activeTimeouts()
    const w = weft(server.url, 'timers')
    await w.whenSynced(5_000)
    assert.ok(activeTimeouts() > before, 'liveness timer and awareness interval while connected')
    w.destroy()
    w.destroy()
    assert.equal(w.status, 'disconnected')
    await assert.rejects(w.whenSynced(), /destroyed/)
    // ws arms a close timer until the server answers the close frame; wait for that, bounded.
    await until(() => activeTimeouts() <= before, 'timers to be released')
  } finally {
    await server.stop()
  }
})

test('a Node process exits on its own after destroy()', async () => {
  const server = await startServer()
  try {
    const client = new URL('../client/index.js', import.meta.url).href
    const script = `
      import { WebSocket } from 'ws'
      import * as Y from 'yjs'
      import { WeftProvider } from ${JSON.stringify(client)}
      const p = new WeftProvider(process.env.URL, 'exit', new Y.Doc(), { WebSocket })
      await p.whenSynced(5000)
      p.doc.getText('t').insert(0, 'bye')
      p.destroy()
      console.log('destroyed')
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: new URL('../..', import.meta.url),
      env: { ...process.env, URL: server.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()))
    const exit = await withDeadline(new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code))), 'the client process to exit', 8_000)
      .catch((err: unknown) => {
        child.kill('SIGKILL')
        throw err
      })
    assert.equal(exit, 0, out)
    assert.match(out, /destroyed/)
  } finally {
    await server.stop()
  }
})
