import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { request } from 'node:http'
import type { Socket } from 'node:net'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { silentUpgrade } from './harness/http.js'
import { describeLive, whileLive } from './harness/live-probe.js'
import { metricValue } from './harness/metrics.js'
import { spawnWeft, startServer, type WeftProcess } from './harness/server.js'
import { signToken } from './harness/tokens.js'
import { until, withDeadline } from './harness/wait.js'

// Issue 12, finding 6: what a client can hold before it is authenticated. A Hocuspocus upgrade
// needs no credential (the token comes in the first message), so the socket's bytes and time
// before then are bounded (--preauth-bytes, --auth-timeout-ms); HTTP bodies are bounded in number,
// bytes and time (--max-concurrent-bodies[-per-ip], --max-body-bytes-in-flight, --body-timeout-ms).
// The floods run against a weft process of its own, so its RSS is the server's alone.

const SECRET = 'preauth-limits-secret-with-at-least-32-bytes'
const MiB = 1024 * 1024
/** What the attackers send, 64 KiB at a time: the content does not matter, only its size. */
const SLICE = 64 * 1024
const PAYLOAD = Buffer.alloc(SLICE, 7)

/** The header of a masked binary frame that declares `length` payload bytes (mask 0: payload as is). */
function frameHeader(length: number): Buffer {
  const header = Buffer.alloc(14)
  header[0] = 0x82
  header[1] = 0x80 | 127
  header.writeBigUInt64BE(BigInt(length), 2)
  return header
}

/** The close code of the first close frame the server sent on `socket`, once it arrives. */
function closeCodeOf(socket: Socket, what: string, timeoutMs = 10_000): Promise<number> {
  let seen = Buffer.alloc(0)
  return withDeadline(
    new Promise<number>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk])
        const at = seen.indexOf(0x88)
        if (at !== -1 && seen.length >= at + 4) resolve(seen.readUInt16BE(at + 2))
      })
    }),
    what,
    timeoutMs,
  )
}

async function rssOf(proc: WeftProcess): Promise<number> {
  const rss = await metricValue(proc.http, 'weft_process_resident_memory_bytes')
  assert.ok(rss !== undefined && rss > 0, 'the server reports its RSS')
  return rss
}

describe('bytes and time held before authentication', () => {
  const procs: WeftProcess[] = []
  const sockets: Socket[] = []

  after(async () => {
    for (const socket of sockets) socket.destroy()
    for (const proc of procs) {
      proc.kill('SIGTERM')
      await proc.exited
    }
  })

  it('Hocuspocus: 24 sockets sending 2 MiB of a 15 MiB frame without a credential are closed with 1009 past --preauth-bytes; RSS stays flat, /health/live answers throughout', async (t) => {
    const proc = await spawnWeft(['--data', 'memory', '--auth-secret', SECRET, '--preauth-bytes', '65536', '--log-level', 'warn'])
    procs.push(proc)
    const before = await rssOf(proc)
    // The server stays responsive: no /health/live probe fails or hangs (how fast is for bench/).
    const { value: codes, live } = await whileLive(proc.port, async () => {
      const closes: Array<Promise<number>> = []
      for (let i = 0; i < 24; i++) {
        const socket = await silentUpgrade(proc.port, '/', `hocuspocus upgrade ${i}`)
        sockets.push(socket)
        closes.push(closeCodeOf(socket, `socket ${i} to be closed`))
        socket.write(frameHeader(15 * MiB))
        // Written without waiting for drain: the server decides how much of it it reads.
        for (let sent = 0; sent < 2 * MiB; sent += SLICE) socket.write(PAYLOAD)
      }
      return Promise.all(closes)
    })
    t.diagnostic(describeLive(live))
    assert.deepEqual(new Set(codes), new Set([1009]))
    assert.equal(await metricValue(proc.http, 'weft_preauth_closes_total', '{reason="bytes"}'), 24)
    const grown = (await rssOf(proc)) - before
    // Holding what was sent would be 48 MiB; each socket may read one socket buffer past the bound.
    assert.ok(grown < 24 * MiB, `RSS grew ${(grown / MiB).toFixed(1)} MiB`)
  })

  it('Hocuspocus: sockets that trickle a byte now and then, or send nothing, are closed with 4401 after --auth-timeout-ms', async () => {
    const proc = await spawnWeft(['--data', 'memory', '--auth-secret', SECRET, '--auth-timeout-ms', '500', '--log-level', 'warn'])
    procs.push(proc)
    const closes: Array<Promise<number>> = []
    const timers: NodeJS.Timeout[] = []
    for (let i = 0; i < 10; i++) {
      const socket = await silentUpgrade(proc.port, '/', `hocuspocus upgrade ${i}`)
      sockets.push(socket)
      closes.push(closeCodeOf(socket, `socket ${i} to be closed`, 5_000))
      if (i % 2 === 1) continue // half say nothing at all
      // Any byte counts as life for the heartbeat: a frame that never ends, one byte every 100 ms.
      socket.write(frameHeader(1 * MiB))
      timers.push(setInterval(() => socket.writable && socket.write(Buffer.from([i])), 100))
    }
    try {
      assert.deepEqual(new Set(await Promise.all(closes)), new Set([4401]))
    } finally {
      for (const timer of timers) clearInterval(timer)
    }
    assert.equal(await metricValue(proc.http, 'weft_preauth_closes_total', '{reason="timeout"}'), 10)
  })

  it('Hocuspocus: an authenticated provider is past both bounds: it syncs, outlives --auth-timeout-ms and sends an edit larger than --preauth-bytes', async () => {
    const weft = await startServer({ authSecret: SECRET, preauthBytes: 2048, authTimeoutMs: 300 })
    const token = await signToken({ rooms: ['doc-*'], access: 'write' }, { secret: SECRET, subject: 'u1' })
    const socket = new HocuspocusProviderWebsocket({ url: `${weft.url}/`, WebSocketPolyfill: WebSocket, delay: 100, minDelay: 50, maxDelay: 500 })
    const doc = new Y.Doc()
    const provider = new HocuspocusProvider({ websocketProvider: socket, name: 'doc-big', document: doc, token })
    provider.attach()
    try {
      await withDeadline(new Promise<void>((resolve) => (provider.isSynced ? resolve() : provider.on('synced', () => resolve()))), 'the provider to sync')
      const opened = Date.now()
      doc.getText('t').insert(0, 'x'.repeat(100_000))
      await until(() => weft.server.loadedRoom('doc-big')?.doc.getText('t').length === 100_000, 'the server to hold the edit')
      // The deadline passes with the socket open: it was authenticated.
      await until(() => Date.now() - opened > 600, 'the auth deadline to pass')
      doc.getText('t').insert(0, 'y')
      await until(() => weft.server.loadedRoom('doc-big')?.doc.getText('t').length === 100_001, 'the server to hold the second edit')
      assert.equal(await metricValue(weft.http, 'weft_preauth_closes_total', '{reason="timeout"}'), undefined)
      assert.equal(await metricValue(weft.http, 'weft_preauth_closes_total', '{reason="bytes"}'), undefined)
    } finally {
      provider.destroy()
      socket.destroy()
      await weft.stop()
    }
  })
})

interface EarlyAnswer {
  status: number
  body: string
  /** Resolves when the server closed the connection. */
  closed: Promise<void>
}

/**
 * A POST of `declared` bytes (or chunked when null) that sends `sent` bytes and then stalls; resolves
 * with the answer the server gives meanwhile.
 */
function stalledPost(port: number, path: string, declared: number | null, sent: number, what: string, timeoutMs = 10_000): Promise<EarlyAnswer> {
  return withDeadline(
    new Promise<EarlyAnswer>((resolve, reject) => {
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' }
      if (declared !== null) headers['content-length'] = String(declared)
      const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers, agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        const socket = req.socket
        const closed = socket === null || socket.destroyed ? Promise.resolve() : new Promise<void>((done) => socket.once('close', () => done()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, closed }))
      })
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') reject(err)
      })
      // One shared buffer, sliced: the test process's own allocations must not stall its probe.
      for (let at = 0; at < sent; at += SLICE) req.write(PAYLOAD.subarray(0, Math.min(SLICE, sent - at)))
    }),
    what,
    timeoutMs,
  )
}

describe('HTTP bodies held at once', () => {
  it('stalled uploads past --max-concurrent-bodies-per-ip get 429 at once, the admitted ones 408 after --body-timeout-ms and are cut; RSS stays flat, /health/live answers throughout', async (t) => {
    const proc = await spawnWeft(['--data', 'memory', '--max-concurrent-bodies-per-ip', '4', '--body-timeout-ms', '1000', '--log-level', 'warn'])
    try {
      const before = await rssOf(proc)
      // The server stays responsive: no /health/live probe fails or hangs (how fast is for bench/).
      const { value: answers, live } = await whileLive(proc.port, () =>
        Promise.all(Array.from({ length: 20 }, (_, i) => stalledPost(proc.port, `/api/rooms/flood-${i}/updates`, 15 * MiB, 3 * MiB, `POST ${i}`))),
      )
      t.diagnostic(describeLive(live))
      const statuses = answers.map((a) => a.status).sort()
      assert.deepEqual(statuses, [...Array(4).fill(408), ...Array(16).fill(429)])
      for (const answer of answers) {
        assert.match(answer.body, answer.status === 408 ? /"error":"request_timeout"/ : /"error":"too_many_requests"/)
        await withDeadline(answer.closed, 'the stalled upload to be cut off')
      }
      assert.equal(await metricValue(proc.http, 'weft_http_refusals_total', '{reason="bodies_per_ip"}'), 16)
      assert.equal(await metricValue(proc.http, 'weft_http_refusals_total', '{reason="body_timeout"}'), 4)
      const grown = (await rssOf(proc)) - before
      assert.ok(grown < 32 * MiB, `RSS grew ${(grown / MiB).toFixed(1)} MiB (all 20 held would be 60 MiB)`)
    } finally {
      proc.kill('SIGTERM')
      await proc.exited
    }
  })

  it('an upload refused part-way gets its answer, not a reset: 40 uploads of 8 MiB of a declared 32 MiB all read 413, and each connection is closed after', async () => {
    // A process of its own: the race is between two processes' sockets.
    const weft = await spawnWeft(['--data', 'memory', '--log-level', 'warn'])
    try {
      const upload = (i: number): Promise<{ status: string; closed: Promise<void> }> =>
        new Promise((resolve) => {
          const req = request({ host: '127.0.0.1', port: weft.port, path: `/api/rooms/big-${i}/updates`, method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream', 'content-length': String(32 * MiB) } }, (res) => {
            const socket = req.socket
            const closed = socket === null || socket.destroyed ? Promise.resolve() : new Promise<void>((done) => socket.once('close', () => done()))
            res.resume()
            res.on('end', () => resolve({ status: String(res.statusCode), closed }))
          })
          // Closed at once, the server's socket reset the connection under the client's writes.
          req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: err.code ?? 'error', closed: Promise.resolve() }))
          for (let at = 0; at < 8 * MiB; at += SLICE) req.write(PAYLOAD)
        })
      // One after another, each answered before the next starts.
      const outcomes: Array<{ status: string; closed: Promise<void> }> = []
      for (let i = 0; i < 40; i++) outcomes.push(await upload(i))
      const statuses = new Map<string, number>()
      for (const { status } of outcomes) statuses.set(status, (statuses.get(status) ?? 0) + 1)
      assert.deepEqual([...statuses], [['413', 40]])
      await withDeadline(Promise.all(outcomes.map(({ closed }) => closed)), 'the refused uploads\' connections to close')
    } finally {
      weft.kill('SIGTERM')
      await weft.exited
    }
  })

  it('--max-body-bytes-in-flight: a declared length is reserved up front; chunked bodies are counted as they arrive; 503 past it', async () => {
    const weft = await startServer({ maxBodyBytesInFlight: 5 * MiB, maxConcurrentBodiesPerIp: 100, bodyTimeoutMs: 1_500 })
    try {
      const first = stalledPost(weft.port, '/api/rooms/bytes-a/updates', 4 * MiB, 1024, 'the first upload')
      await until(() => (weft.server as unknown as { bodies: { inFlightBytes: number } }).bodies.inFlightBytes === 4 * MiB, 'the first body to reserve its length')
      const second = await stalledPost(weft.port, '/api/rooms/bytes-b/updates', 2 * MiB, 1024, 'the second upload')
      assert.equal(second.status, 503)
      assert.match(second.body, /"error":"unavailable"/)
      assert.equal((await first).status, 408)
      // Chunked: nothing declared, so the bytes count as they come.
      const chunkedA = stalledPost(weft.port, '/api/rooms/bytes-c/updates', null, 3 * MiB, 'chunked upload A')
      await until(() => (weft.server as unknown as { bodies: { inFlightBytes: number } }).bodies.inFlightBytes >= 3 * MiB, 'chunked A to arrive')
      const chunkedB = await stalledPost(weft.port, '/api/rooms/bytes-d/updates', null, 3 * MiB, 'chunked upload B')
      assert.equal(chunkedB.status, 503)
      assert.equal((await chunkedA).status, 408)
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="body_bytes"}'), 2)
      await until(() => (weft.server as unknown as { bodies: { inFlightBytes: number } }).bodies.inFlightBytes === 0, 'every body to be given back')
    } finally {
      await weft.stop()
    }
  })
})
