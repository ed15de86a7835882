/**
 * The body of a document-read worker thread (server/document-reads.ts): the same read the event
 * loop would do, so the answer is the same bytes either way.
 */
import { serveJobs } from '../crdt/worker-pool.js'
import { readDocument, type ReadTask } from './document-reads.js'

serveJobs((inputs, task) => {
  const { contentType, body } = readDocument(inputs, task as ReadTask)
  return { result: body, meta: contentType }
})
