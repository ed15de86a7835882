/**
 * The writer keeps what it knows of a room (its RoomWork: the log-size estimate behind compaction)
 * for the rooms at work and for at most `idleRoomsKept` others, least recently used forgotten
 * first. Before the bound, every room ever read or written stayed in memory: a client reading
 * room names that do not exist grew the process without limit.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as Y from 'yjs'
import { DocumentWriter, MemoryStore, WRITER_DEFAULTS } from '../persistence/index.js'
import { ConfigError, createServer } from '../server/index.js'
import { until } from './harness/wait.js'

const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} }

function textUpdate(text: string): Uint8Array {
  const doc = new Y.Doc()
  doc.getText('t').insert(0, text)
  return Y.encodeStateAsUpdate(doc)
}

function textOf(state: Uint8Array | null): string {
  const doc = new Y.Doc()
  if (state !== null) Y.applyUpdate(doc, state)
  return doc.getText('t').toString()
}

/** A memory store whose appends to `held` wait until `release()`. */
class HeldStore extends MemoryStore {
  private gate: Promise<void>
  release!: () => void

  constructor(private readonly held: string) {
    super()
    this.gate = new Promise((resolve) => (this.release = resolve))
  }

  override async append(room: string, update: Uint8Array): Promise<string> {
    if (room === this.held) await this.gate
    return super.append(room, update)
  }
}

describe('the rooms the writer keeps', () => {
  it('forgets idle rooms past idleRoomsKept, and a forgotten room loses nothing', async () => {
    const writer = new DocumentWriter(new MemoryStore(), { persistWindowMs: 0, idleRoomsKept: 50, logger: silent })
    try {
      for (let i = 0; i < 200; i++) await writer.write(`written-${i}`, textUpdate(`text ${i}`))
      assert.ok(writer.knownRooms <= 50, `${writer.knownRooms} rooms known after writing 200`)
      // Reads of rooms that hold nothing (a GET of a made-up name) are bounded alike.
      for (let i = 0; i < 500; i++) assert.equal(await writer.load(`made-up-${i}`), null)
      assert.ok(writer.knownRooms <= 50, `${writer.knownRooms} rooms known after reading 500 more`)
      for (let i = 0; i < 200; i++) assert.equal(textOf(await writer.load(`written-${i}`)), `text ${i}`)
      // A forgotten room is written, compacted and deleted as before.
      await writer.write('written-0', textUpdate('more'))
      await writer.compact('written-0')
      assert.match(textOf(await writer.load('written-0')), /text 0/)
      assert.match(textOf(await writer.load('written-0')), /more/)
      await writer.deleteRoom('written-1')
      assert.equal(await writer.load('written-1'), null)
    } finally {
      await writer.close({ deadlineMs: 5_000 })
    }
  })

  it('never forgets a room whose write is not stored yet', async () => {
    const store = new HeldStore('busy')
    const writer = new DocumentWriter(store, { persistWindowMs: 0, idleRoomsKept: 10, logger: silent })
    try {
      const write = writer.write('busy', textUpdate('held'))
      await writer.load('other-0')
      assert.equal(writer.hasPending('busy'), true)
      for (let i = 1; i < 100; i++) await writer.load(`other-${i}`)
      // Forgetting it would lose the pending state the server's unload waits on (hasPending).
      assert.equal(writer.hasPending('busy'), true, 'the room at work is still known')
      assert.ok(writer.knownRooms <= 11, `${writer.knownRooms} rooms known: 10 idle at most and the one at work`)
      store.release()
      await write
      assert.equal(writer.hasPending('busy'), false)
      assert.equal(textOf(await writer.load('busy')), 'held')
    } finally {
      store.release()
      await writer.close({ deadlineMs: 5_000 })
    }
  })

  it('reads the log of a forgotten room written again without a load, and compacts it when due', async () => {
    const store = new MemoryStore()
    let compactions = 0
    const writer = new DocumentWriter(store, { persistWindowMs: 0, idleRoomsKept: 2, compactEntries: 4, logger: silent, onCompacted: () => compactions++ })
    try {
      assert.equal(await writer.load('long'), null)
      for (let i = 0; i < 3; i++) await writer.write('long', textUpdate(`a${i}`))
      for (let i = 0; i < 5; i++) await writer.load(`other-${i}`)
      assert.equal(compactions, 0)
      // The room is loaded in the server and keeps being written; the writer starts it over.
      for (let i = 0; i < 2; i++) await writer.write('long', textUpdate(`b${i}`))
      // Five entries, past compactEntries: an estimate started over at 0 would say two, and never compact.
      await until(() => compactions === 1, 'the forgotten room compacted once its real log was long enough', 5000)
      assert.equal((await store.readLog('long')).length, 1)
      assert.equal(textOf(await writer.load('long')).length, 'a0a1a2b0b1'.length)
    } finally {
      await writer.close({ deadlineMs: 5_000 })
    }
  })

  it('has a default, and refuses a bound below 1 in the writer and in createServer', () => {
    assert.equal(WRITER_DEFAULTS.idleRoomsKept, 10_000)
    assert.throws(() => new DocumentWriter(new MemoryStore(), { persistWindowMs: 0, idleRoomsKept: 0 }), /idleRoomsKept/)
    assert.throws(() => createServer({ idleRoomsKept: 0 }), (err: unknown) => err instanceof ConfigError && /idleRoomsKept/.test(err.message))
  })
})
