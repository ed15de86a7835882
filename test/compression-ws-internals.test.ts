import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { WebSocket, WebSocketServer } from 'ws'
import { deflateNegotiation, takesSharedDeflate } from '../server/negotiated-deflate.js'
import { webSocketFrame } from '../server/wire-format.js'
import { once, until } from './harness/wait.js'
import { WireClient } from './harness/wire-client.js'

// What weft's compression relies on in `ws` (server/negotiated-deflate.ts). If an upgrade of ws
// changes any of it, this fails: the negotiated parameters are read from ws's `_extensions`, and
// a send with `compress: false` on a socket that negotiated permessage-deflate is written at once,
// so frames weft writes to the TCP stream itself stay in order with ws's.

describe('the ws behaviour weft compression relies on', () => {
  let http: Server
  let wss: WebSocketServer
  let url: string
  const accepted: { ws: WebSocket; raw: Socket }[] = []
  before(async () => {
    wss = new WebSocketServer({ noServer: true, perMessageDeflate: deflateNegotiation(1024) })
    http = createServer()
    http.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => accepted.push({ ws, raw: socket as Socket })))
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
    url = `ws://127.0.0.1:${(http.address() as AddressInfo).port}/`
  })
  after(async () => {
    for (const { ws } of accepted) ws.terminate()
    wss.close()
    await new Promise<void>((resolve) => http.close(() => resolve()))
  })

  async function accept(offer: string): Promise<{ ws: WebSocket; raw: Socket; client: WireClient }> {
    const count = accepted.length
    const client = await WireClient.open(url, offer)
    await until(() => accepted.length > count, 'the server side of the socket')
    return { ...(accepted[count] as { ws: WebSocket; raw: Socket }), client }
  }

  it('exposes the negotiated parameters where takesSharedDeflate reads them', async () => {
    const offered = await accept('permessage-deflate; client_max_window_bits')
    assert.equal(offered.ws.extensions, 'permessage-deflate')
    assert.equal(takesSharedDeflate(offered.ws), true)
    assert.match(offered.client.extensions, /server_no_context_takeover/)
    const none = await accept('')
    assert.equal(takesSharedDeflate(none.ws), false)
    // A client that asks for a smaller server window cannot take frames deflated with 15 bits.
    const narrow = await accept('permessage-deflate; server_max_window_bits=10')
    assert.match(narrow.client.extensions, /server_max_window_bits=10/)
    assert.equal(takesSharedDeflate(narrow.ws), false)
    for (const { client } of [offered, none, narrow]) client.close()
  })

  it('writes a compress: false send at once, so raw writes after it arrive after it', async () => {
    const { ws, raw, client } = await accept('permessage-deflate')
    const big = Buffer.alloc(64 * 1024, 7)
    // ws compresses payloads above its threshold unless told not to; told not to, it must not queue.
    ws.send(big, { binary: true, compress: false })
    raw.write(webSocketFrame(Buffer.from([1, 2, 3])))
    await until(() => client.frames.length >= 2, 'both frames')
    assert.equal(client.frames[0]?.payload.length, big.length)
    assert.equal(client.frames[0]?.rsv1, false)
    assert.deepEqual([...(client.frames[1]?.payload ?? [])], [1, 2, 3])
    client.close()
    await once(ws, 'close')
  })
})
