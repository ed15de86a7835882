import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { DocumentReads, documentReadCounters, readDocument, ReadAbandoned, ReadRefused, ReadsBusy, type ReadOutput, type ReadTask } from '../server/document-reads.js'
import { documentToJson } from '../server/document-json.js'
import { httpBytes, httpRequest, postUpdateStatus } from './harness/http.js'
import { metricValue } from './harness/metrics.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { eventually, withDeadline } from './harness/wait.js'

// HTTP reads that cost CPU in proportion to the document (its JSON, its rich text, what a state
// vector lacks) run on a worker thread when the document is big, give the same bytes as on the
// event loop, and are bounded per address and server-wide, taking turns by address.

const CRASHING_WORKER = new URL('./harness/crashing-worker.js', import.meta.url)

/**
 * A document of `items` list entries written by 1,000 clients in turn, so that no two entries
 * merge into one struct: reading it costs per struct, like a document many people typed into.
 * 150,000 entries are 2.6 MB and take about half a second to read on this machine.
 */
function fragmentedDocument(items: number): Y.Doc {
  const doc = new Y.Doc()
  const list = doc.getArray<string>('list')
  doc.transact(() => {
    for (let i = 0; i < items; i++) {
      doc.clientID = 1 + (i % 1000)
      list.insert(0, [`item ${i}`])
    }
  })
  doc.getMap('meta').set('title', 'fragmented')
  return doc
}

/** A document with a Tiptap-style XML field and a text, for every kind of read. */
function richDocument(): Uint8Array {
  const doc = new Y.Doc()
  const fragment = doc.getXmlFragment('default')
  for (let i = 0; i < 200; i++) {
    const paragraph = new Y.XmlElement('paragraph')
    paragraph.insert(0, [new Y.XmlText(`paragraph ${i}`)])
    fragment.insert(fragment.length, [paragraph])
  }
  doc.getText('body').insert(0, 'plain text', { bold: true })
  return Y.encodeStateAsUpdate(doc)
}

const TASKS: ReadonlyArray<[string, (state: Uint8Array, older: Uint8Array) => { inputs: Uint8Array[]; task: ReadTask }]> = [
  ['json with asked-for kinds and a delta', (state) => ({ inputs: [state], task: { kind: 'json', kinds: { body: 'text', absent: 'map' }, textAsDelta: true, declareKinds: true, envelope: null } })],
  ['json in an envelope', (state) => ({ inputs: [state], task: { kind: 'json', kinds: {}, textAsDelta: false, declareKinds: false, envelope: { id: 'v1', name: 'first' } } })],
  ['prosemirror', (state) => ({ inputs: [state], task: { kind: 'content', query: { format: 'prosemirror', field: 'default' } } })],
  ['text', (state) => ({ inputs: [state], task: { kind: 'content', query: { format: 'text', field: 'default' } } })],
  ['since a state vector', (state, older) => ({ inputs: [state], task: { kind: 'since', stateVector: Y.encodeStateVectorFromUpdate(older) } })],
  ['since an update', (state, older) => ({ inputs: [state, older], task: { kind: 'since-update' } })],
]

/** A read on `reads` whose settling is recorded in `order` under `name`. */
function recorded(order: string[], name: string, read: Promise<ReadOutput>): Promise<ReadOutput | Error> {
  return read.then(
    (output) => {
      order.push(name)
      return output
    },
    (err: unknown) => {
      order.push(`${name}!`)
      return err as Error
    },
  )
}

describe('document reads on a worker', () => {
  it('a worker reads the same bytes as the event loop, for every kind of read', async () => {
    const older = richDocument()
    const doc = new Y.Doc()
    Y.applyUpdate(doc, older)
    doc.getText('body').insert(0, 'newer ')
    const state = Y.encodeStateAsUpdate(doc)
    const reads = new DocumentReads({ workers: 1, thresholdBytes: 0 })
    try {
      for (const [name, make] of TASKS) {
        const { inputs, task } = make(state, older)
        const jobs = documentReadCounters.jobs
        const onWorker = await reads.read('127.0.0.1', inputs, task)
        assert.equal(documentReadCounters.jobs, jobs + 1, `${name}: read on the worker`)
        const inline = readDocument(inputs, task)
        assert.equal(onWorker.contentType, inline.contentType, name)
        assert.deepEqual(Buffer.from(onWorker.body), Buffer.from(inline.body), name)
      }
      // And the bytes are right, not only equal: the JSON is the document's, the diff makes the document.
      const json = await reads.read('127.0.0.1', [state], { kind: 'json', kinds: {}, textAsDelta: false, declareKinds: false, envelope: null })
      assert.deepEqual(JSON.parse(Buffer.from(json.body).toString()), documentToJson(doc))
      const diff = await reads.read('127.0.0.1', [state, older], { kind: 'since-update' })
      const rebuilt = new Y.Doc()
      Y.applyUpdate(rebuilt, older)
      Y.applyUpdate(rebuilt, diff.body)
      assert.equal(rebuilt.getText('body').toString(), 'newer plain text')
    } finally {
      await reads.close()
    }
  })

  it('a PUT of rich text builds the same replacement on the worker as on the event loop', async () => {
    const state = richDocument()
    const content = { type: 'doc' as const, content: [{ type: 'heading', attrs: { level: 1 }, content: [{ type: 'text', text: 'Title' }] }, { type: 'paragraph', content: [{ type: 'text', text: 'body' }] }] }
    const task: ReadTask = { kind: 'replace', field: 'default', content }
    const reads = new DocumentReads({ workers: 1, thresholdBytes: 0 })
    try {
      const jobs = documentReadCounters.jobs
      const onWorker = await reads.read('127.0.0.1', [state], task)
      assert.equal(documentReadCounters.jobs, jobs + 1)
      // New items carry the copy's random client ID, so the bytes differ: what they make is compared.
      const fieldAfter = (update: Uint8Array): unknown => {
        const doc = new Y.Doc()
        Y.applyUpdate(doc, state)
        Y.applyUpdate(doc, update)
        return JSON.parse(new TextDecoder().decode(readDocument([Y.encodeStateAsUpdate(doc)], { kind: 'content', query: { format: 'prosemirror', field: 'default' } }).body))
      }
      assert.deepEqual(fieldAfter(onWorker.body), content)
      assert.deepEqual(fieldAfter(readDocument([state], task).body), content)
    } finally {
      await reads.close()
    }
  })

  it('a read that does not fit the document is refused with its message, on the worker as on the event loop, and the worker is not counted as failing', async () => {
    const state = richDocument()
    const task: ReadTask = { kind: 'content', query: { format: 'text', field: 'body' } }
    for (const workers of [1, 0]) {
      const reads = new DocumentReads({ workers, thresholdBytes: 0 })
      const fallbacks = documentReadCounters.fallbacks
      try {
        await assert.rejects(reads.read('127.0.0.1', [state], task), (err: unknown) => err instanceof ReadRefused && /body/.test(err.message))
        assert.equal(documentReadCounters.fallbacks, fallbacks)
      } finally {
        await reads.close()
      }
    }
  })

  it('past --max-document-reads-per-ip and --max-document-reads a read is refused at once; waiting reads start in turn by address', async () => {
    const state = Y.encodeStateAsUpdate(fragmentedDocument(20_000))
    const task: ReadTask = { kind: 'since', stateVector: new Uint8Array([0]) }
    const reads = new DocumentReads({ workers: 1, thresholdBytes: 0, maxPerIp: 3, maxTotal: 4 })
    const order: string[] = []
    try {
      const a = [1, 2, 3].map((n) => recorded(order, `a${n}`, reads.read('a', [state], task)))
      const a4 = recorded(order, 'a4', reads.read('a', [state], task))
      const b1 = recorded(order, 'b1', reads.read('b', [state], task))
      const c1 = recorded(order, 'c1', reads.read('c', [state], task))
      assert.equal(reads.inProgress, 4)
      const refusedA = await a4
      assert.ok(refusedA instanceof ReadsBusy && refusedA.reason === 'document_reads_per_ip', String(refusedA))
      const refusedC = await c1
      assert.ok(refusedC instanceof ReadsBusy && refusedC.reason === 'document_reads', String(refusedC))
      const answers = await withDeadline(Promise.all([...a, b1]), 'the admitted reads', 60_000)
      for (const answer of answers) assert.deepEqual(Buffer.from((answer as ReadOutput).body), Buffer.from(readDocument([state], task).body))
      // a1 was running when b1 came; a2 had waited longer, then b1 took its turn before a3.
      assert.deepEqual(order, ['a4!', 'c1!', 'a1', 'a2', 'b1', 'a3'])
      assert.equal(reads.inProgress, 0)
    } finally {
      await reads.close()
    }
  })

  it('a read whose client has gone is dropped before it starts', async () => {
    const state = Y.encodeStateAsUpdate(fragmentedDocument(20_000))
    const task: ReadTask = { kind: 'since', stateVector: new Uint8Array([0]) }
    const reads = new DocumentReads({ workers: 1, thresholdBytes: 0 })
    try {
      const jobs = documentReadCounters.jobs
      const gone = new AbortController()
      const running = reads.read('a', [state], task)
      const waiting = reads.read('a', [state], task, { signal: gone.signal })
      gone.abort()
      await running
      await assert.rejects(waiting, ReadAbandoned)
      assert.equal(documentReadCounters.jobs, jobs + 1, 'only the first read ran')
      assert.equal(reads.inProgress, 0)
    } finally {
      await reads.close()
    }
  })

  it('a worker that dies leaves its read to the event loop: the answer is right and the fallback counted', async () => {
    const state = richDocument()
    const task: ReadTask = { kind: 'content', query: { format: 'text', field: 'default' } }
    const reads = new DocumentReads({ workers: 1, thresholdBytes: 0, workerUrl: CRASHING_WORKER })
    const fallbacks = documentReadCounters.fallbacks
    try {
      const output = await reads.read('127.0.0.1', [state], task)
      assert.deepEqual(Buffer.from(output.body), Buffer.from(readDocument([state], task).body))
      assert.equal(documentReadCounters.fallbacks, fallbacks + 1)
    } finally {
      await reads.close()
    }
  })
})

async function withServer(options: Parameters<typeof startServer>[0], body: (weft: InProcessServer) => Promise<void>): Promise<void> {
  const weft = await startServer({ data: 'memory', ...options })
  try {
    await body(weft)
  } finally {
    await weft.stop()
  }
}

/** Writes `doc` into `room` through the API. */
async function writeDocument(weft: InProcessServer, room: string, doc: Y.Doc): Promise<void> {
  assert.equal(await postUpdateStatus(weft.http, room, Y.encodeStateAsUpdate(doc)), 204)
}

describe('document reads over HTTP', () => {
  it("a big document's JSON is read on a worker: while it is read, the event loop answers /metrics, and the answer is the document's", async () => {
    await withServer({}, async (weft) => {
      const doc = fragmentedDocument(150_000)
      await writeDocument(weft, 'big', doc)
      const jobs = (await metricValue(weft.http, 'weft_document_read_worker_jobs_total')) ?? 0
      const read = httpBytes(weft.http, 'GET', '/api/rooms/big', { timeoutMs: 60_000 })
      // Were the read on the event loop, no scrape could be answered while it was in progress.
      await eventually(async () => (await metricValue(weft.http, 'weft_document_reads_in_progress')) === 1, 'a scrape while the read is in progress')
      const answer = await read
      assert.equal(answer.status, 200)
      assert.deepEqual(JSON.parse(answer.body.toString()), documentToJson(doc))
      assert.equal(await metricValue(weft.http, 'weft_document_read_worker_jobs_total'), jobs + 1)
      assert.equal(await metricValue(weft.http, 'weft_document_reads_in_progress'), 0)
    })
  })

  it('past --max-document-reads-per-ip the address gets 429 with Retry-After, counted; a diff since a state vector and a small read still go', async () => {
    await withServer({ maxDocumentReadsPerIp: 1 }, async (weft) => {
      const doc = fragmentedDocument(150_000)
      await writeDocument(weft, 'big', doc)
      const small = new Y.Doc()
      small.getText('t').insert(0, 'small')
      await writeDocument(weft, 'small', small)
      const first = httpBytes(weft.http, 'GET', '/api/rooms/big', { timeoutMs: 60_000 })
      await eventually(async () => (await metricValue(weft.http, 'weft_document_reads_in_progress')) === 1, 'the first read in progress')
      const refused = await httpRequest(weft.port, '/api/rooms/big?format=text&field=list')
      assert.equal(refused.status, 429)
      assert.equal(refused.headers['retry-after'], '1')
      assert.match(refused.body, /"error":"too_many_requests"/)
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="document_reads_per_ip"}'), 1)
      // Below the worker threshold a read runs at once and is not bounded by the reads in progress.
      const smallRead = await httpBytes(weft.http, 'GET', '/api/rooms/small')
      assert.equal(smallRead.status, 200)
      assert.deepEqual(JSON.parse(smallRead.body.toString()), { t: 'small' })
      assert.equal((await first).status, 200)
      // The diff since a state vector is a read like the others, and gives what the vector lacks.
      const before = Y.encodeStateAsUpdate(doc)
      doc.getMap('meta').set('title', 'changed')
      await writeDocument(weft, 'big', doc)
      const since = await httpBytes(weft.http, 'GET', `/api/rooms/big/updates?since=${encodeURIComponent(Buffer.from(Y.encodeStateVectorFromUpdate(before)).toString('base64'))}`, { timeoutMs: 60_000 })
      assert.equal(since.status, 200)
      const rebuilt = new Y.Doc()
      Y.applyUpdate(rebuilt, before)
      Y.applyUpdate(rebuilt, since.body)
      assert.equal(rebuilt.getMap('meta').get('title'), 'changed')
      assert.deepEqual(Y.encodeStateVector(rebuilt), Y.encodeStateVector(doc))
    })
  })

  it('a PUT of rich text into a big document is built on a worker; an edit of the field meanwhile makes it build again, so the field holds exactly what was sent', async () => {
    await withServer({}, async (weft) => {
      const doc = fragmentedDocument(150_000)
      const fragment = doc.getXmlFragment('default')
      const old = new Y.XmlElement('paragraph')
      old.insert(0, [new Y.XmlText('old')])
      fragment.insert(0, [old])
      await writeDocument(weft, 'big', doc)
      const jobs = (await metricValue(weft.http, 'weft_document_read_worker_jobs_total')) ?? 0
      const content = { type: 'doc', content: [{ type: 'paragraph', content: [{ type: 'text', text: 'sent' }] }] }
      const put = httpRequest(weft.port, '/api/rooms/big/content?field=default', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(content) })
      await eventually(async () => (await metricValue(weft.http, 'weft_document_reads_in_progress')) === 1, 'the replacement being built')
      // Another writer adds a paragraph to the field while the replacement is built from the state before it.
      const before = Y.encodeStateVector(doc)
      const concurrent = new Y.XmlElement('paragraph')
      concurrent.insert(0, [new Y.XmlText('concurrent')])
      fragment.insert(1, [concurrent])
      assert.equal(await postUpdateStatus(weft.http, 'big', Y.encodeStateAsUpdate(doc, before)), 204)
      assert.equal((await withDeadline(put, 'the PUT', 60_000)).status, 204)
      assert.equal(await metricValue(weft.http, 'weft_document_read_worker_jobs_total'), jobs + 2, 'built twice: the document changed under the first')
      const read = await httpBytes(weft.http, 'GET', '/api/rooms/big?format=prosemirror&field=default', { timeoutMs: 60_000 })
      assert.deepEqual(JSON.parse(read.body.toString()), content)
    })
  })

  it('under load from many addresses, with clients leaving mid-read: each address gets at least its bound, every answer is the document, every refusal is counted, nothing stays in progress', async () => {
    await withServer({ trustedProxies: ['127.0.0.1'], maxDocumentReadsPerIp: 2 }, async (weft) => {
      // Each read takes about a quarter of a second on the one worker: every address's later requests come while its first two are in progress.
      const doc = fragmentedDocument(60_000)
      await writeDocument(weft, 'crowd', doc)
      const expected = documentToJson(doc)
      const addresses = Array.from({ length: 8 }, (_, i) => `10.0.0.${i + 1}`)
      const answers = await Promise.all(
        addresses.flatMap((address) => Array.from({ length: 4 }, () => httpRequest(weft.port, '/api/rooms/crowd', { headers: { 'x-forwarded-for': address } }).then((answer) => ({ address, answer })))),
      )
      // Clients that leave before their answer: their reads are dropped or their answers go nowhere.
      const leavers = Array.from({ length: 6 }, (_, i) => {
        const socket = connect(weft.port, '127.0.0.1')
        socket.on('error', () => {})
        socket.write(`GET /api/rooms/crowd HTTP/1.1\r\nHost: weft\r\nX-Forwarded-For: 10.0.1.${i}\r\n\r\n`, () => socket.destroy())
        return socket
      })
      let refused = 0
      for (const address of addresses) {
        const mine = answers.filter((a) => a.address === address).map((a) => a.answer)
        assert.ok(mine.filter((answer) => answer.status === 200).length >= 2, `${address} gets its two reads`)
        for (const answer of mine) {
          if (answer.status === 200) assert.deepEqual(JSON.parse(answer.body), expected)
          else {
            assert.equal(answer.status, 429)
            assert.match(answer.body, /"error":"too_many_requests"/)
            refused++
          }
        }
      }
      assert.ok(refused > 0, 'some reads were past the bound of their address')
      assert.equal(await metricValue(weft.http, 'weft_http_refusals_total', '{reason="document_reads_per_ip"}'), refused)
      await eventually(async () => leavers.every((socket) => socket.destroyed) && (await metricValue(weft.http, 'weft_document_reads_in_progress')) === 0, 'every read done or dropped')
      const after = await httpBytes(weft.http, 'GET', '/api/rooms/crowd')
      assert.deepEqual(JSON.parse(after.body.toString()), expected, 'the server reads on afterwards')
    })
  })
})
