/**
 * Large merges on worker threads (crdt/merge-pool.ts) through the document writer on a real
 * LevelDB: what is stored and loaded is byte for byte what the event loop alone produces, and a
 * worker that dies costs nothing but the fallback, which is counted.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { claimHeadroom, MergePool, mergeUpdatesIntoState, mergeWorkerCounters } from '../crdt/index.js'
import { DocumentWriter, LevelStore, type WriterOptions } from '../persistence/index.js'
import { rm } from 'node:fs/promises'
import { ConfigError, createServer } from '../server/index.js'
import { httpRequest } from './harness/http.js'
import { startServer } from './harness/server.js'
import { removeStoreDirs, storeTempDir } from './harness/stores.js'

after(removeStoreDirs)

const CRASHING_WORKER = new URL('./harness/crashing-worker.js', import.meta.url)
const ROOM = 'big-document'

/** A document written the way an editor writes one: many updates from two clients, text and a map, with deletions. */
function editHistory(updates: number): Uint8Array[] {
  const history: Uint8Array[] = []
  const a = new Y.Doc()
  const b = new Y.Doc()
  a.on('update', (update: Uint8Array) => history.push(update))
  b.on('update', (update: Uint8Array) => history.push(update))
  for (let i = 0; i < updates; i++) {
    const doc = i % 3 === 0 ? b : a
    const text = doc.getText('body')
    text.insert(Math.floor(text.length / 2), `line ${i} ${'x'.repeat(i % 200)}\n`)
    if (i % 7 === 0 && text.length > 20) text.delete(3, 10)
    doc.getMap('meta').set(`k${i % 50}`, { i, at: `t${i}` })
    // Keep the two in step now and then, so later edits depend on the other's.
    if (i % 25 === 0) {
      Y.applyUpdate(a, Y.encodeStateAsUpdate(b, Y.encodeStateVector(a)))
      Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
    }
  }
  return history
}

/** Writes `history` in order through a writer on a fresh LevelDB, compacts, and returns the stored log and a load. */
async function storeAndCompact(history: readonly Uint8Array[], options: Partial<WriterOptions>): Promise<{ log: Uint8Array[]; loaded: Uint8Array | null; reloaded: Uint8Array | null }> {
  const dir = await storeTempDir('weft-merge-workers-')
  const writer = new DocumentWriter(await LevelStore.open(dir), { persistWindowMs: 0, compactEntries: 1_000_000, compactBytes: 1 << 30, ...options })
  // Every write awaited: one log entry each, in order, acknowledged as stored.
  for (const update of history) await writer.write(ROOM, update)
  const loaded = await writer.load(ROOM)
  await writer.compact(ROOM)
  await writer.close()
  const store = await LevelStore.open(dir)
  const log = (await store.readLog(ROOM)).map((entry) => Uint8Array.from(entry.update))
  await store.close()
  const again = new DocumentWriter(await LevelStore.open(dir), { persistWindowMs: 0, ...options })
  const reloaded = await again.load(ROOM)
  await again.close()
  return { log, loaded, reloaded }
}

function text(state: Uint8Array | null): string {
  const doc = new Y.Doc()
  if (state !== null) Y.applyUpdate(doc, state)
  return doc.getText('body').toString()
}

describe('merges on worker threads', () => {
  const history = editHistory(1_500)

  it('the pool returns the bytes the event loop computes', async () => {
    const pool = new MergePool({ workers: 2, thresholdBytes: 0 })
    try {
      const jobs = mergeWorkerCounters.jobs
      const expected = await mergeUpdatesIntoState(history)
      // Two at once on two workers, and a third queued behind them: each gets its own answer.
      const [whole, firstHalf, secondHalf] = await Promise.all([
        pool.mergeIntoState(history),
        pool.mergeIntoState(history.slice(0, 700)),
        pool.mergeIntoState(history),
      ])
      assert.deepEqual(whole, expected)
      assert.deepEqual(secondHalf, expected)
      assert.deepEqual(firstHalf, await mergeUpdatesIntoState(history.slice(0, 700)))
      assert.equal(mergeWorkerCounters.jobs - jobs, 3)
    } finally {
      await pool.close()
    }
  })

  it('a state merged with headroom has those bytes free in front of it, in its own buffer, claimed once; on a worker and on the event loop', async () => {
    const pool = new MergePool({ workers: 1, thresholdBytes: 0 })
    try {
      const expected = await mergeUpdatesIntoState(history)
      for (const state of [await pool.mergeIntoState(history, 64), await mergeUpdatesIntoState(history, 64)]) {
        assert.deepEqual(state, expected, 'the same bytes')
        assert.equal(state.byteOffset, 64)
        const framed = claimHeadroom(state, 10)
        assert.ok(framed !== null)
        assert.equal(framed.buffer, state.buffer, 'no copy')
        assert.equal(framed.length, state.length + 10)
        framed.fill(7, 0, 10)
        assert.deepEqual(state, expected, 'a header written there leaves the state as it was')
        assert.equal(claimHeadroom(state, 10), null, 'claimed once')
      }
      assert.equal(claimHeadroom(await pool.mergeIntoState(history), 1), null, 'none asked for, none given')
      // A Buffer from Node's pool lies behind other buffers' bytes: never headroom.
      const pooled = Buffer.from(expected.subarray(0, 100))
      assert.ok(pooled.byteOffset > 0 || pooled.buffer.byteLength > pooled.length)
      assert.equal(claimHeadroom(pooled, 1), null)
    } finally {
      await pool.close()
    }
  })

  it('below the threshold a merge stays on the event loop', async () => {
    const pool = new MergePool({ workers: 1, thresholdBytes: 1 << 30 })
    try {
      const jobs = mergeWorkerCounters.jobs
      assert.deepEqual(await pool.mergeIntoState(history), await mergeUpdatesIntoState(history))
      assert.equal(mergeWorkerCounters.jobs, jobs)
    } finally {
      await pool.close()
    }
  })

  it('stores and loads the same bytes with and without workers (LevelDB)', async () => {
    const jobs = mergeWorkerCounters.jobs
    const withWorkers = await storeAndCompact(history, { mergeWorkers: 1, mergeWorkerThresholdBytes: 0 })
    assert.ok(mergeWorkerCounters.jobs - jobs >= 2, 'load and compaction ran on the worker')
    const without = await storeAndCompact(history, { mergeWorkers: 0 })
    assert.equal(withWorkers.log.length, 1, 'compacted into one entry')
    assert.deepEqual(withWorkers.log, without.log)
    assert.deepEqual(withWorkers.loaded, without.loaded)
    assert.deepEqual(withWorkers.reloaded, without.reloaded)
    const expected = new Y.Doc()
    for (const update of history) Y.applyUpdate(expected, update)
    assert.equal(text(withWorkers.reloaded), expected.getText('body').toString())
  })

  it('updates Yjs refuses are refused as on the event loop, and are not counted as a worker failing', async () => {
    const pool = new MergePool({ workers: 1, thresholdBytes: 0 })
    try {
      const fallbacks = mergeWorkerCounters.fallbacks
      const poisoned = [Uint8Array.from([1, 1, 200, 1, 0, 40, 1, 9, 9])]
      let onLoop: unknown = null
      try {
        await mergeUpdatesIntoState(poisoned)
      } catch (err) {
        onLoop = err
      }
      assert.ok(onLoop instanceof Error, 'the event loop refuses these bytes')
      await assert.rejects(pool.mergeIntoState(poisoned), (err: unknown) => err instanceof Error && err.message === (onLoop as Error).message)
      assert.equal(mergeWorkerCounters.fallbacks, fallbacks)
    } finally {
      await pool.close()
    }
  })

  it('a worker that dies falls back to the event loop: nothing lost, the fallback counted', async () => {
    const fallbacks = mergeWorkerCounters.fallbacks
    const crashed = await storeAndCompact(history, { mergeWorkers: 1, mergeWorkerThresholdBytes: 0, mergeWorkerUrl: CRASHING_WORKER })
    // The load and the compaction each lost their worker and fell back (the reload reads one entry: no merge).
    assert.ok(mergeWorkerCounters.fallbacks - fallbacks >= 2, `${mergeWorkerCounters.fallbacks - fallbacks} fallbacks`)
    const without = await storeAndCompact(history, { mergeWorkers: 0 })
    assert.deepEqual(crashed.log, without.log)
    assert.deepEqual(crashed.loaded, without.loaded)
    assert.deepEqual(crashed.reloaded, without.reloaded)
  })

  it('writes acknowledged around a dying worker are all stored, in order', async () => {
    const dir = await storeTempDir('weft-merge-workers-')
    const writer = new DocumentWriter(await LevelStore.open(dir), { persistWindowMs: 0, compactEntries: 1_000_000, compactBytes: 1 << 30, mergeWorkers: 1, mergeWorkerThresholdBytes: 0, mergeWorkerUrl: CRASHING_WORKER })
    const fallbacks = mergeWorkerCounters.fallbacks
    const half = Math.floor(history.length / 2)
    for (const update of history.slice(0, half)) await writer.write(ROOM, update)
    // A compaction whose worker dies while the second half is being written.
    const compaction = writer.compact(ROOM)
    const acks = history.slice(half).map((update) => writer.write(ROOM, update))
    await Promise.all([compaction, ...acks])
    assert.ok(mergeWorkerCounters.fallbacks > fallbacks, 'the compaction fell back')
    await writer.close()
    const store = await LevelStore.open(dir)
    const log = await store.readLog(ROOM)
    await store.close()
    const doc = new Y.Doc()
    for (const entry of log) Y.applyUpdate(doc, entry.update)
    const expected = new Y.Doc()
    for (const update of history) Y.applyUpdate(expected, update)
    assert.deepEqual(Y.encodeStateVector(doc), Y.encodeStateVector(expected))
    assert.equal(doc.getText('body').toString(), expected.getText('body').toString())
    assert.deepEqual(doc.getMap('meta').toJSON(), expected.getMap('meta').toJSON())
  })
})

describe('createServer passes its merge-worker options to storage', () => {
  /** Stores five edits over HTTP (each 204 once stored), stops, loads the room again cold; its JSON and the worker jobs it took. */
  async function storeStopLoad(options: { mergeWorkers?: number; mergeWorkerThresholdBytes?: number }): Promise<{ text: string; jobs: number }> {
    const jobsBefore = mergeWorkerCounters.jobs
    const first = await startServer({ ...options, keepData: true })
    const doc = new Y.Doc()
    const updates: Uint8Array[] = []
    doc.on('update', (update: Uint8Array) => updates.push(update))
    for (let i = 0; i < 5; i++) doc.getText('body').insert(doc.getText('body').length, `edit ${i};`)
    for (const update of updates) {
      const reply = await httpRequest(first.port, `/api/rooms/${ROOM}/updates`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: update })
      assert.equal(reply.status, 204, reply.body)
    }
    await first.stop()
    const second = await startServer({ ...options, data: first.data })
    try {
      const reply = await httpRequest(second.port, `/api/rooms/${ROOM}`)
      assert.equal(reply.status, 200, reply.body)
      return { text: reply.body, jobs: mergeWorkerCounters.jobs - jobsBefore }
    } finally {
      await second.stop()
      await rm(first.data, { recursive: true, force: true })
    }
  }

  it('past mergeWorkerThresholdBytes the stored log is merged on a worker; with mergeWorkers 0 never; the document is the same', async () => {
    const onWorker = await storeStopLoad({ mergeWorkerThresholdBytes: 1 })
    const onLoop = await storeStopLoad({ mergeWorkers: 0, mergeWorkerThresholdBytes: 1 })
    assert.match(onWorker.text, /"edit 0;edit 1;edit 2;edit 3;edit 4;"/)
    assert.equal(onLoop.text, onWorker.text)
    assert.ok(onWorker.jobs >= 1, `worker jobs: ${onWorker.jobs}`)
    assert.equal(onLoop.jobs, 0)
  })

  it('refuses a negative or fractional setting', () => {
    assert.throws(() => createServer({ mergeWorkers: -1 }), ConfigError)
    assert.throws(() => createServer({ mergeWorkerThresholdBytes: 0.5 }), ConfigError)
  })
})
