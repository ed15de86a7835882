import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { httpRequest, postUpdateStatus } from './harness/http.js'
import { startServer } from './harness/server.js'

// Issue 12, finding 5: near --max-document-bytes every refused update re-encoded the whole
// document to measure it (513 ms per ~100-byte update on a 55.7 MB document; 40 small frames
// stalled the process 20.5 s). The exact measurement now takes at most 1/20 of the time.

/** A small edit by a new client: about 100 bytes. */
function smallEdit(i: number): Uint8Array {
  const doc = new Y.Doc()
  doc.getMap('small').set(`key-${i}`, 'x'.repeat(60))
  return Y.encodeStateAsUpdate(doc)
}

describe('the size check does not re-encode the document for every refused update (issue 12, finding 5)', () => {
  it('80 small updates at the limit are refused without stalling /health/live', async () => {
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
      const samples: number[] = []
      let done = false
      const started = performance.now()
      const attack = (async () => {
        for (let i = 0; i < 80; i++) assert.equal(await postUpdateStatus(server.http, 'big', smallEdit(i)), 413)
      })().finally(() => (done = true))
      while (!done) {
        const sampleStarted = performance.now()
        await httpRequest(server.port, '/health/live')
        samples.push(performance.now() - sampleStarted)
      }
      await attack
      const elapsed = performance.now() - started
      samples.sort((a, b) => a - b)
      const p99 = samples[Math.floor(samples.length * 0.99)] ?? 0
      assert.ok(p99 < 100, `/health/live p99 ${p99.toFixed(1)} ms while 80 updates were refused`)
      assert.ok(elapsed < 1_500, `80 refusals took ${Math.round(elapsed)} ms`)
      // Updates that fit still count: the document is unchanged and readable.
      assert.equal((await httpRequest(server.port, '/api/rooms/big/state-vector')).status, 200)
    } finally {
      await server.stop()
    }
  })
})
