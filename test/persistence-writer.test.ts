import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import * as Y from 'yjs'
import { mergeUpdatesInChunks } from '../crdt/chunked-merge.js'
import {
  DocumentWriter,
  LevelStore,
  MemoryStore,
  RoomDeletedError,
  WriterClosedError,
  openStore,
  type LogEntry,
  type StorageHealth,
  type Store,
  type StoredRoom,
  type WriterOptions,
} from '../persistence/index.js'

const tempDirs: string[] = []
after(async () => {
  await Promise.all(tempDirs.map((dir) => rm(dir, { recursive: true, force: true })))
})

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'weft-writer-'))
  tempDirs.push(dir)
  return dir
}

/** Rejects when `promise` has not settled within `ms`: every wait in these tests has a deadline. */
/** Lets pending promise callbacks and I/O run (setImmediate is not part of the mocked clock). */
async function settled(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}

/** A promise released from outside: a store call held until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

/**
 * A real store with a fault injector in front: counts calls, fails the next N appends, holds
 * appends of chosen rooms (or every replace) until released, and reports when a call arrives.
 */
class InstrumentedStore implements Store {
  appends = 0
  replaces = 0
  failNextAppends = 0
  readonly heldRooms = new Map<string, Promise<void>>()
  holdReplace: Promise<void> | null = null
  private readonly arrivals: Array<{ call: string; resolve: () => void }> = []

  constructor(readonly inner: Store) {}

  get kind(): Store['kind'] {
    return this.inner.kind
  }

  /** Resolves at the next call of that method (or at once if one already arrived since the last wait). */
  nextCall(call: 'append' | 'replace'): Promise<void> {
    return new Promise((resolve) => this.arrivals.push({ call, resolve }))
  }

  private arrived(call: string): void {
    for (const [index, waiter] of this.arrivals.entries()) {
      if (waiter.call === call) {
        this.arrivals.splice(index, 1)
        waiter.resolve()
        return
      }
    }
  }

  readLog(room: string): Promise<LogEntry[]> {
    return this.inner.readLog(room)
  }

  async append(room: string, update: Uint8Array): Promise<string> {
    this.appends++
    this.arrived('append')
    const held = this.heldRooms.get(room)
    if (held !== undefined) await held
    if (this.failNextAppends > 0) {
      this.failNextAppends--
      throw new Error('injected: disk full')
    }
    return this.inner.append(room, update)
  }

  quarantine(room: string, key: string): Promise<void> {
    return this.inner.quarantine(room, key)
  }

  async replace(room: string, keys: readonly string[], merged: Uint8Array): Promise<void> {
    this.replaces++
    this.arrived('replace')
    if (this.holdReplace !== null) await this.holdReplace
    return this.inner.replace(room, keys, merged)
  }

  deleteRoom(room: string): Promise<void> {
    return this.inner.deleteRoom(room)
  }

  listRooms(): Promise<StoredRoom[]> {
    return this.inner.listRooms()
  }

  reclaimSpace(): Promise<void> {
    return this.inner.reclaimSpace()
  }

  close(): Promise<void> {
    return this.inner.close()
  }
}

interface LogLine {
  level: 'warn' | 'error' | 'info'
  obj: object
  msg: string
}

/** Keeps log lines, and lets a test wait for one with a given message. */
class RecordingLogger {
  readonly lines: LogLine[] = []
  private readonly waiters: Array<{ msg: string; resolve: () => void }> = []
  warn(obj: object, msg: string): void {
    this.record('warn', obj, msg)
  }
  error(obj: object, msg: string): void {
    this.record('error', obj, msg)
  }
  info(obj: object, msg: string): void {
    this.record('info', obj, msg)
  }
  next(msg: string): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ msg, resolve }))
  }
  private record(level: LogLine['level'], obj: object, msg: string): void {
    this.lines.push({ level, obj, msg })
    for (const waiter of this.waiters.splice(0)) {
      if (waiter.msg === msg) waiter.resolve()
      else this.waiters.push(waiter)
    }
  }
}

function writerOptions(overrides: Partial<WriterOptions> = {}): WriterOptions & { logger: RecordingLogger } {
  return { persistWindowMs: 20, retryBaseMs: 5, retryMaxMs: 40, logger: new RecordingLogger(), ...overrides } as WriterOptions & { logger: RecordingLogger }
}

/** A document edited through its three shared types; every update it emits is handed to `onUpdate`. */
function editedDoc(onUpdate: (update: Uint8Array) => void, clientID?: number): Y.Doc {
  const doc = new Y.Doc()
  if (clientID !== undefined) doc.clientID = clientID
  doc.on('update', (update: Uint8Array) => onUpdate(update))
  return doc
}

/** One small edit; deletes some content so delete sets are exercised too. */
function edit(doc: Y.Doc, step: number): void {
  const text = doc.getText('text')
  if (step % 7 === 6 && text.length > 3) text.delete(1, 2)
  else text.insert(Math.min(step % 5, text.length), `e${step} `)
  if (step % 3 === 0) doc.getMap('map').set(`k${step % 11}`, step)
  if (step % 4 === 0) doc.getArray<number>('list').push([step])
}

function docFrom(update: Uint8Array | null): Y.Doc {
  const doc = new Y.Doc()
  if (update !== null) Y.applyUpdate(doc, update)
  return doc
}

function assertSameDocument(actual: Uint8Array | null, reference: Y.Doc, what: string): void {
  const loaded = docFrom(actual)
  assert.deepEqual(Y.encodeStateAsUpdate(loaded), Y.encodeStateAsUpdate(reference), what)
  assert.deepEqual(loaded.getText('text').toString(), reference.getText('text').toString(), `${what}: text`)
}

describe('DocumentWriter', () => {
  it('merges the writes of one room within a window into one append', async () => {
    const store = new InstrumentedStore(new MemoryStore())
    const writer = new DocumentWriter(store, writerOptions({ persistWindowMs: 50 }))
    const writes: Array<Promise<void>> = []
    const reference = editedDoc((update) => writes.push(writer.write('room', update)))
    for (let step = 0; step < 40; step++) edit(reference, step)
    assert.equal(writer.hasPending('room'), true)
    assert.equal(store.appends, 0, 'nothing appended before the window ends')
    await within(Promise.all(writes), 2000, 'writes durable')
    assert.equal(store.appends, 1)
    assert.equal(writer.hasPending('room'), false)
    assert.equal((await store.readLog('room')).length, 1)
    assertSameDocument(await writer.load('room'), reference, 'loaded')
    await writer.close()
  })

  it('makes a write durable at the end of the window without any flush', async (t) => {
    // A controlled clock: the window is checked by its own timer, not by a measured elapsed time.
    t.mock.timers.enable({ apis: ['setTimeout'] })
    const store = new InstrumentedStore(new MemoryStore())
    const writer = new DocumentWriter(store, writerOptions({ persistWindowMs: 30 }))
    const appended = store.nextCall('append')
    const reference = editedDoc((update) => void writer.write('room', update))
    edit(reference, 0)
    await settled()
    t.mock.timers.tick(29)
    await settled()
    assert.equal(store.appends, 0, 'appended before the window ended')
    t.mock.timers.tick(1)
    await settled()
    assert.equal(store.appends, 1, 'not appended when the window ended')
    await appended
    t.mock.timers.reset()
    await writer.close()
  })

  it('stores everything on LevelDB so a reopened writer loads the same document', async () => {
    const dir = await tempDir()
    const writer = new DocumentWriter(await LevelStore.open(dir), writerOptions())
    const writes: Array<Promise<void>> = []
    const reference = editedDoc((update) => writes.push(writer.write('doc/1:ü', update)))
    for (let step = 0; step < 200; step++) {
      edit(reference, step)
      if (step % 25 === 0) await writer.flush('doc/1:ü')
    }
    await writer.close()
    await within(Promise.all(writes), 1000, 'every write resolved by close')

    const reopened = new DocumentWriter(await openStore(dir), writerOptions())
    assertSameDocument(await reopened.load('doc/1:ü'), reference, 'after reopen')
    assert.equal(await reopened.load('doc/1'), null, 'a prefix of the room name is another room')
    await reopened.close()
  })

  it('includes writes not yet durable in load, without waiting for the window', async () => {
    const store = new InstrumentedStore(new MemoryStore())
    const writer = new DocumentWriter(store, writerOptions({ persistWindowMs: 60_000 }))
    const reference = editedDoc((update) => void writer.write('room', update))
    edit(reference, 0)
    await writer.flush('room')
    edit(reference, 1)
    edit(reference, 2)
    assert.equal(writer.hasPending('room'), true)
    assertSameDocument(await within(writer.load('room'), 1000, 'load'), reference, 'load with pending writes')
    assert.equal(store.appends, 1, 'load did not force the pending append')
    await writer.close()
    assert.equal(store.appends, 2, 'close flushed the rest')
  })

  it('compacts a long log into one entry with the same content, automatically and on demand', async () => {
    const dir = await tempDir()
    const logger = new RecordingLogger()
    const store = await LevelStore.open(dir)
    const writer = new DocumentWriter(store, writerOptions({ compactEntries: 10, logger }))
    const reference = editedDoc((update) => void writer.write('room', update))
    const compacted = logger.next('compacted')
    for (let step = 0; step < 11; step++) {
      edit(reference, step)
      await writer.flush('room')
    }
    await within(compacted, 2000, 'automatic compaction')
    const afterAuto = await store.readLog('room')
    assert.ok(afterAuto.length < 11, `log has ${afterAuto.length} entries after compaction`)
    assertSameDocument(await writer.load('room'), reference, 'after automatic compaction')

    for (let step = 11; step < 16; step++) {
      edit(reference, step)
      await writer.flush('room')
    }
    const before = await writer.load('room')
    assert.ok((await store.readLog('room')).length > 1)
    await writer.compact('room')
    assert.equal((await store.readLog('room')).length, 1)
    const afterExplicit = await writer.load('room')
    assert.deepEqual(Y.encodeStateAsUpdate(docFrom(afterExplicit)), Y.encodeStateAsUpdate(docFrom(before)))
    assertSameDocument(afterExplicit, reference, 'after explicit compaction')
    await writer.close()
  })

  it('spreads compactions of rooms that filled their logs together over turns of the event loop, at most two at a time', async () => {
    const ROOMS = 40
    const store = new MemoryStore()
    let compactions = 0
    const writer = new DocumentWriter(store, writerOptions({ onCompacted: () => compactions++ }))
    const references = new Map<string, Y.Doc>()
    for (let r = 0; r < ROOMS; r++) {
      const room = `room-${r}`
      const reference = editedDoc((update) => void writer.write(room, update))
      for (let step = 0; step < 3; step++) {
        edit(reference, step)
        await writer.flush(room)
      }
      references.set(room, reference)
    }
    assert.equal(compactions, 0)
    // Every room's compaction asked for in one tick: with a memory store each one would settle in
    // microtasks, all forty before the event loop turns once.
    const all = Promise.all([...references.keys()].map((room) => writer.compact(room)))
    const perTurn: number[] = []
    let seen = 0
    while (compactions < ROOMS) {
      await within(new Promise((resolve) => setImmediate(resolve)), 2000, 'a turn of the event loop')
      perTurn.push(compactions - seen)
      seen = compactions
      if (perTurn.length > ROOMS * 10) assert.fail(`only ${compactions} of ${ROOMS} compactions after ${perTurn.length} turns`)
    }
    await within(all, 2000, 'every compaction')
    assert.ok(Math.max(...perTurn) <= 2, `compactions finished per turn of the event loop: ${perTurn.join(' ')}`)
    for (const [room, reference] of references) {
      assert.equal((await store.readLog(room)).length, 1, `${room} compacted into one entry`)
      assertSameDocument(await writer.load(room), reference, room)
    }
    await writer.close()
  })

  it('compacts from the snapshot source when it has the room, and merges the log when it has not', async () => {
    const asked: string[] = []
    let live: Y.Doc | null = null
    const store = new MemoryStore()
    const snapshots = {
      snapshot: (room: string) => {
        asked.push(room)
        return live === null ? null : Y.encodeStateAsUpdate(live)
      },
    }
    const writer = new DocumentWriter(store, writerOptions({ snapshots }))
    const reference = editedDoc((update) => void writer.write('room', update))
    for (let step = 0; step < 3; step++) {
      edit(reference, step)
      await writer.flush('room')
    }
    await writer.compact('room')
    assert.deepEqual(asked, ['room'])
    assert.equal((await store.readLog('room')).length, 1)
    assertSameDocument(await writer.load('room'), reference, 'merged from the log')

    // The room is loaded now: its live document is the compacted entry, byte for byte.
    live = reference
    for (let step = 3; step < 6; step++) {
      edit(reference, step)
      await writer.flush('room')
    }
    await writer.compact('room')
    const log = await store.readLog('room')
    assert.equal(log.length, 1)
    assert.deepEqual(Buffer.from((log[0] as LogEntry).update), Buffer.from(Y.encodeStateAsUpdate(reference)))
    assert.deepEqual(asked, ['room', 'room'])
    await writer.close()
  })

  it('keeps appends that land while a compaction is merging, behind the merged entry', async () => {
    const dir = await tempDir()
    const store = new InstrumentedStore(await LevelStore.open(dir))
    const writer = new DocumentWriter(store, writerOptions())
    const reference = editedDoc((update) => void writer.write('room', update))
    for (let step = 0; step < 20; step++) {
      edit(reference, step)
      await writer.flush('room')
    }
    const replaceHeld = gate()
    store.holdReplace = replaceHeld.promise
    const replaceArrived = store.nextCall('replace')
    const compaction = writer.compact('room')
    await within(replaceArrived, 2000, 'compaction reached replace')
    for (let step = 20; step < 30; step++) {
      edit(reference, step)
      // Durable while the compaction is held: compaction does not block appends.
      await within(writer.flush('room'), 1000, `flush ${step} during compaction`)
    }
    replaceHeld.open()
    await within(compaction, 2000, 'compaction')
    const log = await store.readLog('room')
    assert.equal(log.length, 11, 'merged entry plus the ten appended during compaction')
    assertSameDocument(await writer.load('room'), reference, 'after compaction with concurrent appends')
    await writer.close()

    const reopened = new DocumentWriter(await LevelStore.open(dir), writerOptions())
    assertSameDocument(await reopened.load('room'), reference, 'after reopen')
    await reopened.close()
  })

  it('retries failed appends with backoff, reports health, and loses nothing', async () => {
    const store = new InstrumentedStore(new MemoryStore())
    const options = writerOptions()
    const writer = new DocumentWriter(store, options)
    const healthEvents: StorageHealth[] = []
    const recovered = new Promise<void>((resolve) => {
      writer.on('health', (health) => {
        healthEvents.push(health)
        if (health.ok) resolve()
      })
    })
    store.failNextAppends = 4
    const writes: Array<Promise<void>> = []
    const reference = editedDoc((update) => writes.push(writer.write('room', update)))
    edit(reference, 0)
    const firstFailure = options.logger.next('append failed; updates stay queued and are retried')
    void writer.flush('room')
    await within(firstFailure, 1000, 'first failure')
    const health = writer.health()
    assert.equal(health.ok, false)
    if (!health.ok) assert.match(health.error, /disk full/)
    assert.equal(writer.hasPending('room'), true)
    // Written while storage fails: merged with the failed batch, not lost.
    for (let step = 1; step < 5; step++) edit(reference, step)
    await within(recovered, 2000, 'health back to ok')
    await within(Promise.all(writes), 1000, 'every write durable')
    assert.deepEqual(healthEvents.map((event) => event.ok), [false, true])
    assert.deepEqual(writer.health(), { ok: true })
    assert.ok(store.appends >= 5)
    const errorLine = options.logger.lines.find((line) => line.level === 'error')
    assert.equal((errorLine?.obj as { room?: string } | undefined)?.room, 'room')
    assertSameDocument(await writer.load('room'), reference, 'after recovery')
    await writer.close()
  })

  it('lets a room whose store calls hang delay no other room', async () => {
    const store = new InstrumentedStore(new MemoryStore())
    const writer = new DocumentWriter(store, writerOptions())
    const slowHeld = gate()
    store.heldRooms.set('slow', slowHeld.promise)
    const slow = editedDoc((update) => void writer.write('slow', update))
    const fast = editedDoc((update) => void writer.write('fast', update))
    edit(slow, 0)
    const slowAppend = store.nextCall('append')
    void writer.flush('slow')
    await within(slowAppend, 1000, 'slow append started')
    edit(fast, 0)
    await within(writer.flush('fast'), 1000, 'fast room flushed while slow room hangs')
    await within(writer.flush(), 200, 'flush of all rooms').then(
      () => assert.fail('flush of all rooms cannot finish while one hangs'),
      (err: Error) => assert.match(err.message, /timed out/),
    )
    assert.equal(writer.hasPending('slow'), true)
    assert.equal(writer.hasPending('fast'), false)
    assertSameDocument(await writer.load('fast'), fast, 'fast room')
    slowHeld.open()
    await within(writer.flush('slow'), 1000, 'slow room after release')
    assertSameDocument(await writer.load('slow'), slow, 'slow room')
    await writer.close()
  })

  it('closes at its deadline when storage hangs, naming the unsaved room', async (t) => {
    const store = new InstrumentedStore(new MemoryStore())
    const writer = new DocumentWriter(store, writerOptions())
    store.heldRooms.set('stuck', new Promise<void>(() => {}))
    const stuckWrites: Array<Promise<void>> = []
    const fineWrites: Array<Promise<void>> = []
    const stuck = editedDoc((update) => stuckWrites.push(writer.write('stuck', update)))
    const fine = editedDoc((update) => fineWrites.push(writer.write('fine', update)))
    edit(stuck, 0)
    edit(fine, 0)
    // A controlled clock: close waits for storage until its deadline, and not past it.
    t.mock.timers.enable({ apis: ['setTimeout'] })
    let closed = false
    const closing = writer.close({ deadlineMs: 300 }).finally(() => (closed = true))
    await settled()
    t.mock.timers.tick(299)
    await settled()
    assert.equal(closed, false, 'closed before its deadline while storage hung')
    t.mock.timers.tick(1)
    await settled()
    t.mock.timers.reset()
    assert.equal(closed, true, 'still closing after its deadline')
    const result = await closing
    assert.deepEqual(result, { unsaved: ['stuck'] })
    await Promise.all(fineWrites)
    await assert.rejects(stuckWrites[0] as Promise<void>, WriterClosedError)
    assert.deepEqual(await writer.close(), result, 'close is idempotent')
    await assert.rejects(writer.write('fine', new Uint8Array([0, 0])), WriterClosedError)
  })

  it('deletes a room: queued writes are refused, later writes start a new document', async () => {
    const store = new InstrumentedStore(new MemoryStore())
    const writer = new DocumentWriter(store, writerOptions({ persistWindowMs: 60_000 }))
    const before = editedDoc((update) => void writer.write('room', update))
    edit(before, 0)
    await writer.flush('room')
    const queued = writer.write('room', Y.encodeStateAsUpdate(editedDoc(() => {})))
    await writer.deleteRoom('room')
    await assert.rejects(queued, RoomDeletedError)
    assert.equal(await writer.load('room'), null)
    assert.deepEqual(await writer.listRooms(), [])
    const after = editedDoc((update) => void writer.write('room', update))
    edit(after, 1)
    await writer.flush('room')
    assertSameDocument(await writer.load('room'), after, 'new document')
    await writer.close()
  })

  it('merges many entries in chunks, letting the event loop run in between', async () => {
    const updates: Uint8Array[] = []
    const reference = editedDoc((update) => updates.push(update))
    for (let step = 0; step < 2000; step++) edit(reference, step)
    let turns = 0
    let ticking = true
    const tick = (): void => {
      turns++
      if (ticking) setImmediate(tick)
    }
    setImmediate(tick)
    const merged = await mergeUpdatesInChunks(updates)
    ticking = false
    assert.ok(turns >= 10, `event loop ran ${turns} times during the merge`)
    assertSameDocument(merged, reference, 'chunked merge')
  })

  it('stores 10,000 small updates across 20 rooms and reloads identical documents', async () => {
    const dir = await tempDir()
    const writer = new DocumentWriter(await LevelStore.open(dir), writerOptions({ persistWindowMs: 5 }))
    const rooms = Array.from({ length: 20 }, (_, index) => `bulk/${index}`)
    const docs = rooms.map((room) => editedDoc((update) => void writer.write(room, update)))
    for (let step = 0; step < 500; step++) {
      for (const doc of docs) edit(doc, step)
      // Let windows close now and then, so rooms get many appends and compactions, not one each.
      if (step % 10 === 0) await new Promise((resolve) => setImmediate(resolve))
      if (step % 50 === 0) await writer.flush(rooms[step % rooms.length])
    }
    await within(writer.close(), 10_000, 'close')
    const reopened = new DocumentWriter(await LevelStore.open(dir), writerOptions())
    const listed = await reopened.listRooms()
    assert.deepEqual(listed.map((room) => room.room).sort(), [...rooms].sort())
    for (const [index, room] of rooms.entries()) {
      assertSameDocument(await reopened.load(room), docs[index] as Y.Doc, room)
    }
    await reopened.close()
  })
})
