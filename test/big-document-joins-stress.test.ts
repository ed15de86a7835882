/**
 * Joiners, HTTP readers and writers of a big document at random moments (issue 19): a big
 * document's whole state is merged off the event loop and shared with the changes made since
 * (Room.syncReplyOffLoop, Room.sharedStateOffLoop), so whatever the interleaving every joiner must
 * end with the server's document byte for byte, every read must be a whole document, and storage
 * must hold it all. Seeded: a failure prints the seed that replays it.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as Y from 'yjs'
import type { DocumentWriter } from '../persistence/index.js'
import { decodeYMessage, encodeSyncStep1, encodeSyncUpdate } from '../protocol/index.js'
import { canonicalState, RawClient } from './harness/clients.js'
import { mulberry32 } from './harness/fuzz.js'
import { httpBytes } from './harness/http.js'
import { startServer, type InProcessServer } from './harness/server.js'
import { docFromFrames, holdLoads, writeTextDocument } from './harness/sync-replies.js'
import { eventually, until } from './harness/wait.js'

const ROOM = 'stressed'
const SEED = Number(process.env.WEFT_STRESS_SEED ?? Date.now() % 1_000_000)
/** How long the writers type, joiners join and readers read. */
const ACTIVE_MS = 2_500

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

describe(`a big document joined, read and written at random moments (seed ${SEED})`, () => {
  let server: InProcessServer
  const clients: RawClient[] = []
  before(async () => {
    // 512 KiB documents are big here: their whole state goes to the merge worker.
    server = await startServer({ mergeWorkerThresholdBytes: 64 * 1024 })
  })
  after(async () => {
    for (const client of clients) client.socket.terminate()
    await server.stop()
  })

  it('every joiner ends with the server’s document, every read is whole, and storage holds it all', async () => {
    const random = mulberry32(SEED)
    // Two stored entries: a joiner's state is merged, not read back as it is.
    const seed = new Y.Doc()
    for (const part of [await writeTextDocument(server, ROOM, 0.25), await writeTextDocument(server, ROOM, 0.25)]) Y.applyUpdate(seed, Y.encodeStateAsUpdate(part))
    const { loads, open, restore } = holdLoads(server)
    open()
    try {
      // Writers start from the document and type into their own copies; the server merges them.
      const writers: Array<{ client: RawClient; doc: Y.Doc }> = []
      for (let i = 0; i < 3; i++) {
        const { client, step2 } = await RawClient.joined(`${server.url}/${ROOM}`)
        clients.push(client)
        const doc = new Y.Doc()
        Y.applyUpdate(doc, step2)
        writers.push({ client, doc })
      }
      const joiners: RawClient[] = []
      const reads: Uint8Array[] = []
      let bigInserts = 0
      const stopAt = performance.now() + ACTIVE_MS
      const typing = writers.map(async ({ client, doc }) => {
        const text = doc.getText('t')
        while (performance.now() < stopAt) {
          const before = Y.encodeStateVector(doc)
          const roll = random()
          // Now and then a change past the kept changes' 256 KiB: the next joiner merges afresh.
          if (roll < 0.01 && bigInserts < 3) {
            bigInserts++
            text.insert(Math.floor(random() * text.length), 'B'.repeat(100 * 1024))
          } else if (roll < 0.35 && text.length > 10) {
            text.delete(Math.floor(random() * (text.length - 5)), 1 + Math.floor(random() * 4))
          } else {
            text.insert(Math.floor(random() * text.length), `w${Math.floor(random() * 1000)} `)
          }
          client.send(encodeSyncUpdate(Y.encodeStateAsUpdate(doc, before)))
          await sleep(5 + random() * 40)
        }
      })
      const joining = (async () => {
        while (performance.now() < stopAt) {
          const joiner = await RawClient.open(`${server.url}/${ROOM}`)
          clients.push(joiner)
          joiners.push(joiner)
          joiner.send(encodeSyncStep1(Y.encodeStateVector(new Y.Doc())))
          await sleep(30 + random() * 150)
        }
      })()
      const reading = (async () => {
        while (performance.now() < stopAt) {
          const answer = await httpBytes(server.http, 'GET', `/api/rooms/${ROOM}?format=update`)
          assert.equal(answer.status, 200)
          reads.push(answer.body)
          await sleep(50 + random() * 300)
        }
      })()
      await Promise.all([...typing, joining, reading])

      // What the server must hold: the seed and every writer's edits.
      const expected = new Y.Doc()
      Y.applyUpdate(expected, Y.encodeStateAsUpdate(seed))
      for (const { doc } of writers) Y.applyUpdate(expected, Y.encodeStateAsUpdate(doc))
      const vector = Buffer.from(Y.encodeStateVector(expected))
      const room = server.server.loadedRoom(ROOM)
      assert.ok(room !== undefined)
      await until(() => vector.equals(Y.encodeStateVector(room.doc)), 'the server to apply every edit')
      assert.deepEqual(canonicalState(room.doc), canonicalState(expected), 'the server’s document')

      console.log(`# seed ${SEED}: ${writers.length} writers, ${joiners.length} joiners, ${reads.length} reads, ${loads.length} merges, ${bigInserts} big inserts`)
      assert.ok(joiners.length >= 5, 'joiners came')
      for (const [i, joiner] of joiners.entries()) {
        await joiner.frame((frame) => decodeYMessage(frame).kind === 'sync-step-2', `joiner ${i}'s state`)
        // The state, the changes since it was merged, and the broadcasts after the ask: all of it in the end.
        await eventually(async () => vector.equals(Y.encodeStateVector(docFromFrames(joiner.frames).doc)), `joiner ${i} to have every edit`, 10_000, 50)
        assert.deepEqual(canonicalState(docFromFrames(joiner.frames).doc), canonicalState(expected), `joiner ${i}`)
      }
      for (const [i, body] of reads.entries()) {
        const doc = new Y.Doc()
        Y.applyUpdate(doc, body)
        assert.equal(doc.store.pendingStructs, null, `read ${i} is a whole document`)
        assert.ok(doc.getText('t').length >= seed.getText('t').length / 2, `read ${i} has the document`)
      }
      const writer = (server.server as unknown as { writer: DocumentWriter }).writer
      await writer.flush(ROOM)
      const stored = await writer.load(ROOM)
      assert.ok(stored !== null)
      const storedDoc = new Y.Doc()
      Y.applyUpdate(storedDoc, stored)
      assert.deepEqual(canonicalState(storedDoc), canonicalState(expected), 'storage')
    } finally {
      restore()
    }
  })
})
