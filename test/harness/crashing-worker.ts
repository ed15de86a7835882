/**
 * A pool worker (crdt/worker-pool.ts) that dies: answers the buffer request like the real one (so
 * the main thread copies the inputs over), then exits as the job arrives, the way a crash (out of
 * memory, a native fault) would end it. For test/merge-workers.test.ts and test/document-reads.test.ts.
 */
import { parentPort } from 'node:worker_threads'
import type { PoolRequest } from '../../crdt/worker-pool.js'

parentPort?.on('message', (request: PoolRequest) => {
  if (request.type === 'buffer') {
    parentPort?.postMessage({ type: 'buffer', id: request.id, shared: new SharedArrayBuffer(request.bytes) })
    return
  }
  process.exit(3)
})
