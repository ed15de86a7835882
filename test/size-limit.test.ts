import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { httpRequest, postUpdateStatus } from './harness/http.js'
import { describeLive, whileLive, type LiveReport } from './harness/live-probe.js'
import { startServer } from './harness/server.js'

// Issue 12, finding 5: near --max-document-bytes every refused update re-encoded the whole
// document to measure it (513 ms per ~100-byte update on a 55.7 MB document; 40 small frames
// stalled the process 20.5 s). The exact measurement now takes at most 1/20 of the time.

/** Small updates refused in a row at the limit. */
const REFUSALS = 80

/** A small edit by a new client: about 100 bytes. */
function smallEdit(i: number): Uint8Array {
  const doc = new Y.Doc()
  doc.getMap('small').set(`key-${i}`, 'x'.repeat(60))
  return Y.encodeStateAsUpdate(doc)
}

describe('the size check does not re-encode the document for every refused update (issue 12, finding 5)', () => {
  it('80 small updates at the limit are refused without stalling /health/live', async (t) => {
    // 200,000 items inserted at the front: none merge, so encoding the document is slow.
    const big = new Y.Doc()
    const array = big.getArray<number>('a')
    big.transact(() => {
      for (let i = 0; i < 200_000; i++) array.insert(0, [i])
    })
    const whole = Y.encodeStateAsUpdate(big)
    const server = await startServer({ maxDocumentBytes: whole.length + 50 })
    try {
      assert.equal(await postUpdateStatus(server.http, 'big', whole), 204)
      // The first refusal may measure the document once.
      assert.equal(await postUpdateStatus(server.http, 'big', smallEdit(-1)), 413)
      // The fix, counted rather than timed: an exact measurement (an encode of the whole document)
      // backs off, so most refusals are decided on the estimate. Before it, every one measured.
      const room = server.server.loadedRoom('big')
      assert.ok(room !== undefined)
      const measure = room.snapshot.bind(room)
      let measurements = 0
      room.snapshot = () => {
        measurements++
        return measure()
      }
      // And the process keeps answering /health/live: no probe fails or hangs, one sent after the
      // refusals is answered (how fast is for bench/).
      let live: LiveReport
      try {
        ;({ live } = await whileLive(server.port, async () => {
          for (let i = 0; i < REFUSALS; i++) assert.equal(await postUpdateStatus(server.http, 'big', smallEdit(i)), 413)
        }))
      } finally {
        room.snapshot = measure
      }
      t.diagnostic(`${measurements} exact measurements for ${REFUSALS} refusals; ${describeLive(live)}`)
      assert.ok(measurements <= REFUSALS / 4, `${measurements} of ${REFUSALS} refusals encoded the whole document to measure it`)
      // Updates that fit still count: the document is unchanged and readable.
      assert.equal((await httpRequest(server.port, '/api/rooms/big/state-vector')).status, 200)
    } finally {
      await server.stop()
    }
  })
})
