import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { WebSocket } from 'ws'
import * as Y from 'yjs'
import { encodeSyncUpdate } from '../protocol/index.js'
import { destroy, provider, synced } from './harness/clients.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until, withDeadline } from './harness/wait.js'
import { metricValue } from './harness/metrics.js'
import { silentUpgrade } from './harness/http.js'

// Issue #4, heartbeats: a peer that shows no sign of life for two intervals is terminated; one
// that answers pings, or one still sending a long frame, is not.

const INTERVAL_MS = 100
/** Text of the long transfer: ~2 MB in one frame. */
const BIG_TEXT_CHARS = 2 * 1024 * 1024
/** The long frame is written over this many heartbeat intervals, never answering a ping. */
const TRANSFER_INTERVALS = 12
const TRANSFER_CHUNKS = 48

async function terminations(server: InProcessServer): Promise<number> {
  return (await metricValue(server.http, 'weft_heartbeat_terminations_total')) ?? NaN
}

/** One masked binary frame (RFC 6455 §5.2), as a client must send it, with a 64-bit length. */
function maskedBinaryFrame(payload: Uint8Array): Buffer {
  const header = Buffer.alloc(14)
  header[0] = 0x82
  header[1] = 0x80 | 127
  header.writeBigUInt64BE(BigInt(payload.length), 2)
  const mask = randomBytes(4)
  mask.copy(header, 10)
  const body = Buffer.from(payload)
  for (let i = 0; i < body.length; i++) body[i] = (body[i] as number) ^ (mask[i & 3] as number)
  return Buffer.concat([header, body])
}

describe(`heartbeats every ${INTERVAL_MS} ms`, () => {
  let server: InProcessServer

  before(async () => {
    server = await startServer({ heartbeatIntervalMs: INTERVAL_MS })
  })
  after(() => server.stop())

  it('a client that never answers pings is pinged, then terminated, and counted', async () => {
    const before = await terminations(server)
    const mute = new WebSocket(`${server.url}/mute`, { autoPong: false })
    try {
      const closed = new Promise<number>((resolve) => mute.once('close', (code: number) => resolve(code)))
      let pings = 0
      mute.on('ping', () => pings++)
      await withDeadline(new Promise((resolve, reject) => mute.once('open', resolve).once('error', reject)), 'the mute client to open')
      // Generous: it fails a server that never gives up on the client, not a slow one.
      const code = await withDeadline(closed, 'the mute client to be terminated', 10_000)
      assert.equal(code, 1006, 'terminated without a close frame')
      // A peer gets a ping, and a tick of the heartbeat to answer it, before it is given up on:
      // a tick either pings a connection or terminates it, so the ping came at an earlier tick.
      assert.ok(pings >= 1, 'it was pinged first')
      assert.equal(await terminations(server), before + 1)
    } finally {
      mute.terminate()
    }
  })

  it('a client that answers pings stays open across at least 10 of them', async () => {
    const before = await terminations(server)
    const live = new WebSocket(`${server.url}/live`)
    try {
      let pings = 0
      let closed = false
      live.on('ping', () => pings++)
      live.on('close', () => (closed = true))
      await withDeadline(new Promise((resolve, reject) => live.once('open', resolve).once('error', reject)), 'the client to open')
      await until(() => pings >= 10 || closed, '10 pings', 20_000)
      assert.equal(closed, false, `closed after ${pings} pings`)
      assert.equal(live.readyState, WebSocket.OPEN)
      assert.equal(await terminations(server), before)
    } finally {
      live.terminate()
    }
  })

  it('a 2 MB frame written slowly over many intervals, without answering pings, is not cut off and is applied', async (t) => {
    const room = 'long-transfer'
    const watcher = provider(server.url, room)
    let upload: Socket | null = null
    try {
      await synced(watcher)
      const before = await terminations(server)
      const big = new Y.Doc()
      big.getText('text').insert(0, 'x'.repeat(BIG_TEXT_CHARS - 5) + 'done.')
      const frame = maskedBinaryFrame(encodeSyncUpdate(Y.encodeStateAsUpdate(big)))
      const socket = await silentUpgrade(server.port, `/${room}`)
      upload = socket
      let closedAt: number | null = null
      socket.once('close', () => (closedAt = performance.now()))

      // Pacing is the subject here: the frame trickles in over TRANSFER_INTERVALS intervals.
      const chunk = Math.ceil(frame.length / TRANSFER_CHUNKS)
      const gapMs = (TRANSFER_INTERVALS * INTERVAL_MS) / TRANSFER_CHUNKS
      const startedAt = performance.now()
      for (let offset = 0; offset < frame.length; offset += chunk) {
        assert.equal(closedAt, null, `the upload was cut off after ${offset} of ${frame.length} bytes`)
        socket.write(frame.subarray(offset, offset + chunk))
        await new Promise((resolve) => setTimeout(resolve, gapMs))
      }
      // The awaited gaps make the transfer last at least TRANSFER_INTERVALS intervals; printed, not asserted.
      const tookMs = performance.now() - startedAt
      t.diagnostic(`${frame.length} bytes written over ${Math.round(tookMs)} ms (${(tookMs / INTERVAL_MS).toFixed(1)} intervals)`)

      await until(() => watcher.doc.getText('text').length === BIG_TEXT_CHARS, 'the watcher to receive the big text', 10_000)
      assert.equal(watcher.doc.getText('text').toString(), big.getText('text').toString())
      assert.equal(closedAt, null, 'the uploading socket was still open when its update was applied')
      assert.equal(await terminations(server), before)
      assert.equal(watcher.wsconnected, true)
    } finally {
      upload?.destroy()
      destroy(watcher)
    }
  })
})
