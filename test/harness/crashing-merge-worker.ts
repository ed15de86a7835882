/**
 * A merge worker that dies: answers the buffer request like the real one (so the main thread
 * copies the updates over), then exits as the merge arrives, the way a crash (out of memory, a
 * native fault) would end it. For test/merge-workers.test.ts.
 */
import { parentPort } from 'node:worker_threads'
import type { MergeRequest } from '../../crdt/merge-pool.js'

parentPort?.on('message', (request: MergeRequest) => {
  if (request.type === 'buffer') {
    parentPort?.postMessage({ type: 'buffer', id: request.id, shared: new SharedArrayBuffer(request.bytes) })
    return
  }
  process.exit(3)
})
