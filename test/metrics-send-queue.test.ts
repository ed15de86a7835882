/**
 * weft_send_queue_bytes is sampled where a connection's outbound bytes change course (weft starts
 * holding data for it, it goes over budget, its socket drains), not only at heartbeats: with the
 * heartbeat far away, a reader that stops reading still shows up in the histogram.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Socket } from 'node:net'
import { destroy, provider, RawClient, synced } from './harness/clients.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { until } from './harness/wait.js'

const BUDGET = 256 * 1024
/** The writer stops here whatever happens, so a server that never samples fails instead of eating memory. */
const MAX_WRITER_BYTES = 32 * 1024 * 1024

describe('weft_send_queue_bytes between heartbeats', () => {
  let weft: InProcessServer

  before(async () => {
    // The first heartbeat tick is a minute away: every sample in this test comes from the send path.
    weft = await startServer({ sendQueueBytes: BUDGET, heartbeatIntervalMs: 600_000, inboundMessagesPerSecond: 1_000_000, inboundBytesPerSecond: 1024 * 1024 * 1024 })
  })

  after(async () => {
    await weft?.stop()
  })

  it('is sampled when weft starts holding data for a reader that stopped reading', async () => {
    const room = 'queue-sampled'
    assert.equal((await metricValue(weft.http, 'weft_send_queue_bytes_count')) ?? 0, 0)
    const { client } = await RawClient.joined(`${weft.url}/${room}`)
    ;(client.socket as unknown as { _socket: Socket })._socket.pause()
    const writer = provider(weft.url, room)
    try {
      await synced(writer)
      const text = writer.doc.getText('t')
      let written = 0
      let sampled = 0
      while (sampled === 0 && written < MAX_WRITER_BYTES) {
        for (let i = 0; i < 64; i++) text.insert(0, 'x'.repeat(1024))
        written += 64 * 1024
        // Each round waits for the server to have taken the edits (the writer's socket drained).
        await until(() => writer.ws === null || writer.ws.bufferedAmount === 0, 'the writer to send its edits')
        sampled = (await metricValue(weft.http, 'weft_send_queue_bytes_count')) ?? 0
      }
      assert.ok(sampled >= 1, `sampled after ${written} bytes`)
      // The sample is the reader's backlog: at or past the soft mark (a quarter of the budget) lies in a bucket above 16 KiB.
      const small = (await metricValue(weft.http, 'weft_send_queue_bytes_bucket', '{le="16384"}')) ?? 0
      assert.ok(small < sampled, 'a sample above 16 KiB')
    } finally {
      destroy(writer)
      client.close()
    }
  })
})
