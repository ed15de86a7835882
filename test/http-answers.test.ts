import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { connect, type Socket } from 'node:net'
import * as Y from 'yjs'
import { postUpdateStatus } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'

// HTTP API answers on their way out are bounded: the bytes held for clients that have not taken
// them (--max-response-bytes-in-flight[-per-ip]), the time a client may read none of its answer
// (--send-timeout-ms), and big answers take turns with big sync replies (--sync-replies-at-once).
// A reader that stops reading is a raw socket that never reads: the kernel takes a few MiB of
// its answer at most, so the 10 MiB document below stays in weft until the socket goes.

const MiB = 1024 * 1024

/** A document of about `mib` MiB of text, written through the API; returns its state as weft must answer it. */
async function writeDocument(weft: InProcessServer, room: string, mib: number): Promise<Uint8Array> {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, 'w'.repeat(mib * MiB))
  const update = Y.encodeStateAsUpdate(doc)
  assert.equal(await postUpdateStatus(weft.http, room, update), 204)
  return update
}

/** A raw HTTP/1.1 request whose answer is read only as far as the caller lets it. */
class RawRequest {
  readonly socket: Socket
  private bytes = Buffer.alloc(0)
  private readonly waiters: Array<() => void> = []
  closed = false

  constructor(port: number, method: string, path: string) {
    this.socket = connect(port, '127.0.0.1')
    this.socket.on('error', () => {})
    this.socket.on('data', (chunk: Buffer) => {
      this.bytes = Buffer.concat([this.bytes, chunk])
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.socket.on('close', () => {
      this.closed = true
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.socket.write(`${method} ${path} HTTP/1.1\r\nHost: weft\r\n\r\n`)
  }

  get received(): number {
    return this.bytes.length
  }

  /** The status and headers, once the head has arrived. */
  async head(what: string): Promise<{ status: number; headers: Map<string, string>; bodyStart: number }> {
    await this.until(() => this.bytes.includes('\r\n\r\n'), what)
    const end = this.bytes.indexOf('\r\n\r\n')
    const lines = this.bytes.subarray(0, end).toString('latin1').split('\r\n')
    const headers = new Map<string, string>()
    for (const line of lines.slice(1)) headers.set(line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim())
    return { status: Number((lines[0] as string).split(' ')[1]), headers, bodyStart: end + 4 }
  }

  /** The whole body (by Content-Length). */
  async body(what: string, timeoutMs = 20_000): Promise<Buffer> {
    const { headers, bodyStart } = await this.head(what)
    const length = Number(headers.get('content-length'))
    await this.until(() => this.bytes.length >= bodyStart + length, what, timeoutMs)
    return this.bytes.subarray(bodyStart, bodyStart + length)
  }

  /** Stops reading: what the kernel cannot take stays with the server. */
  stall(): void {
    this.socket.pause()
  }

  private until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    return withDeadline(
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (condition()) resolve()
          else if (this.closed) reject(new Error(`the connection closed before ${what}`))
          else this.waiters.push(check)
        }
        check()
      }),
      what,
      timeoutMs,
    )
  }
}

function answersInFlight(weft: InProcessServer): number {
  return (weft.server as unknown as { answers: { inFlightBytes: number } }).answers.inFlightBytes
}

/** Runs `body` against a fresh in-memory server with `options`; its raw requests (pushed to `requests`) and the server go at the end. */
async function withServer(options: Parameters<typeof startServer>[0], body: (weft: InProcessServer, requests: RawRequest[]) => Promise<void>): Promise<void> {
  const weft = await startServer({ data: 'memory', ...options })
  const requests: RawRequest[] = []
  try {
    await body(weft, requests)
  } finally {
    for (const request of requests) request.socket.destroy()
    await weft.stop()
  }
}

describe('HTTP answers on their way out', () => {
  it('a reader that stops reading holds its answer against the budget (the next read from its address gets 429) until --send-timeout-ms cuts it; then a reader gets the exact document', async () => {
    await withServer({ maxResponseBytesInFlightPerIp: 12 * MiB, sendTimeoutMs: 1_500, syncRepliesAtOnce: 0 }, async (weft, requests) => {
      const state = await writeDocument(weft, 'budget', 10)
      const stalled = new RawRequest(weft.port, 'GET', '/api/rooms/budget?format=update')
      requests.push(stalled)
      assert.equal((await stalled.head('the first answer')).status, 200)
      stalled.stall()
      assert.equal(answersInFlight(weft), state.length, 'the stalled answer is counted')

      const refused = new RawRequest(weft.port, 'GET', '/api/rooms/budget?format=update')
      requests.push(refused)
      const { status, headers } = await refused.head('the second answer')
      assert.equal(status, 429, 'a second 10 MiB answer would take this address past 12 MiB')
      assert.ok(headers.has('retry-after'))
      assert.match((await refused.body('the refusal')).toString(), /"error":"too_many_requests"/)
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="response_bytes_per_ip"}'), 1)
      // A small answer still fits beside it.
      const small = new RawRequest(weft.port, 'GET', '/api/rooms/budget/state-vector')
      requests.push(small)
      assert.equal((await small.head('the state vector')).status, 200)

      await until(() => answersInFlight(weft) === 0, 'the stalled answer to be given up and its bytes given back')
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="send_timeout"}'), 1)
      // Reading again, it finds its connection cut short of the whole answer.
      stalled.socket.resume()
      await until(() => stalled.closed, 'the stalled reader to see the cut')
      assert.ok(stalled.received < state.length, 'the stalled reader never had the whole answer')

      const reader = new RawRequest(weft.port, 'GET', '/api/rooms/budget?format=update')
      requests.push(reader)
      assert.equal((await reader.head('a reader after the cut')).status, 200)
      assert.deepEqual(new Uint8Array(await reader.body('the whole document')), state)
      await until(() => answersInFlight(weft) === 0, 'the read answer to be given back')
    })
  })

  it('readers of the whole state share one encoding while the document is unchanged, and every read after an edit has the edit', async () => {
    const weft = await startServer({ data: 'memory' })
    try {
      const doc = new Y.Doc()
      const text = doc.getText('t')
      const post = async (change: () => void): Promise<void> => {
        const before = Y.encodeStateVector(doc)
        change()
        assert.equal(await postUpdateStatus(weft.http, 'shared', Y.encodeStateAsUpdate(doc, before)), 204)
      }
      const read = async (): Promise<Uint8Array> => {
        const answer = await fetch(`${weft.http}/api/rooms/shared?format=update`)
        assert.equal(answer.status, 200)
        return new Uint8Array(await answer.arrayBuffer())
      }
      await post(() => text.insert(0, 'a'.repeat(512 * 1024)))
      const first = await read()
      assert.deepEqual(await read(), first)
      assert.deepEqual(first, Y.encodeStateAsUpdate(doc))
      // Within the cache's life: the next read must not be the state before the edit.
      await post(() => text.insert(0, 'edit '))
      const afterEdit = await read()
      assert.deepEqual(afterEdit, Y.encodeStateAsUpdate(doc))
      const reader = new Y.Doc()
      Y.applyUpdate(reader, afterEdit)
      assert.ok(reader.getText('t').toString().startsWith('edit aaa'))
      // The catch-up route and a deletion read the same way.
      await post(() => text.delete(0, 5))
      const catchUp = await fetch(`${weft.http}/api/rooms/shared/updates`)
      assert.deepEqual(new Uint8Array(await catchUp.arrayBuffer()), Y.encodeStateAsUpdate(doc))
    } finally {
      await weft.stop()
    }
  })

  it('a big answer waits for a turn of --sync-replies-at-once: with the only turn held by a stalled reader, the next answer sends nothing until that turn ends; a reader that leaves the line gives its bytes back; HEAD waits for nothing', async () => {
    await withServer({ syncRepliesAtOnce: 1, sendQueueBytes: 1 * MiB, sendTimeoutMs: 60_000 }, async (weft, requests) => {
      const state = await writeDocument(weft, 'turns', 10)
      const holder = new RawRequest(weft.port, 'GET', '/api/rooms/turns?format=update')
      requests.push(holder)
      assert.equal((await holder.head('the first answer')).status, 200)
      holder.stall()

      const leaver = new RawRequest(weft.port, 'GET', '/api/rooms/turns?format=update')
      requests.push(leaver)
      await until(() => answersInFlight(weft) === 2 * state.length, 'the second answer to be built and waiting')
      assert.equal(leaver.received, 0, 'a waiting answer has sent nothing, not even its head')
      const waiter = new RawRequest(weft.port, 'GET', '/api/rooms/turns?format=update')
      requests.push(waiter)
      await until(() => answersInFlight(weft) === 3 * state.length, 'the third answer to be built and waiting')
      assert.equal(await metricValue(weft.http, 'weft_sync_reply_waits_total'), 2)
      leaver.socket.destroy()
      await until(() => answersInFlight(weft) === 2 * state.length, 'the answer that left the line to give its bytes back')

      const head = new RawRequest(weft.port, 'HEAD', '/api/rooms/turns?format=update')
      requests.push(head)
      const headAnswer = await head.head('the HEAD answer')
      assert.equal(headAnswer.status, 200)
      assert.equal(Number(headAnswer.headers.get('content-length')), state.length)

      // The holder still reads nothing: its turn ends by time and the waiter gets the document.
      assert.deepEqual(new Uint8Array(await waiter.body('the waiting answer')), state)
      assert.ok(holder.received < state.length, 'the holder never read its answer')
      assert.equal(leaver.received, 0)
      holder.socket.resume()
      assert.deepEqual(new Uint8Array(await holder.body('the holder, once it reads')), state)
      await until(() => answersInFlight(weft) === 0, 'every answer to be given back')
      assert.equal(await metricValue(weft.http, 'weft_sync_reply_waits_total'), 2)
    })
  })
})
