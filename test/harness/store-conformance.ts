/**
 * What every Store + VersionStore must do for weft (README, "Writing a store"), as one suite any
 * store runs against itself: `describeStoreConformance('mine', async () => ({ store, reopen }))`.
 * LevelStore and MemoryStore run it (persistence-store.test.ts), and so does a store written in
 * store-conformance.test.ts with none of weft's storage code. Cases that need what only some stores
 * have (a reopen, LocalVersionStore for --redis) run when the fixture has it.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { InvalidRoomNameError, newVersionId, StoreClosedError, VersionLimitError, type LocalVersionStore, type LogEntry, type Store, type VersionRecord, type VersionStore } from '../../persistence/index.js'

export type ConformingStore = Store & VersionStore

export interface ConformanceFixture<S extends ConformingStore = ConformingStore> {
  store: S
  /** Closes the store and opens the same data again; null for a store that keeps nothing (memory). */
  reopen: (() => Promise<S>) | null
}

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)
const updatesOf = (log: Array<{ update: Uint8Array }>): number[][] => log.map((entry) => [...entry.update])

function version(createdAt: number, name: string, update: Uint8Array): VersionRecord {
  return { id: newVersionId(createdAt), name, createdAt, update }
}

/** Rooms chosen to collide if keys were built carelessly: prefixes, separators, unicode. */
const TRICKY_ROOMS = ['a', 'a:b', 'ab', 'a/b', 'a b', 'a:', '文档/1:2', 'ü', 'x'.repeat(512), '😀/😀']

/** What a store has beyond the contract: the cases that need it run only then (never skipped). */
export interface StoreAbilities {
  /** `reopen` gives the same data back (not a memory store): durability is checked. */
  reopens: boolean
  /** A LocalVersionStore too (what --redis needs). */
  localVersions: boolean
}

export function describeStoreConformance<S extends ConformingStore>(kind: string, open: () => Promise<ConformanceFixture<S>>, abilities: StoreAbilities): void {
  async function withStore(body: (fixture: ConformanceFixture<S>) => Promise<void>): Promise<void> {
    const fixture = await open()
    try {
      await body(fixture)
    } finally {
      await fixture.store.close()
    }
  }

  describe(`${kind} store: the Store contract`, () => {
    it('reports its kind', () => withStore(async ({ store }) => {
      assert.equal(store.kind, kind)
    }))

    it('reads a room never stored as an empty log', () => withStore(async ({ store }) => {
      assert.deepEqual(await store.readLog('nothing here'), [])
    }))

    it('reads appended entries oldest first, with the keys append returned, increasing', () => withStore(async ({ store }) => {
      const keys: string[] = []
      for (let i = 0; i < 12; i++) keys.push(await store.append('room', bytes(i, i)))
      // Concurrent appends keep call order too.
      keys.push(...await Promise.all([store.append('room', bytes(12)), store.append('room', bytes(13))]))
      const log = await store.readLog('room')
      assert.deepEqual(log.map((entry) => entry.key), keys)
      assert.deepEqual(updatesOf(log), [...Array.from({ length: 12 }, (_, i) => [i, i]), [12], [13]])
      for (let i = 1; i < keys.length; i++) assert.ok((keys[i - 1] as string) < (keys[i] as string), `key ${i} increases`)
    }))

    it('replaces entries with one merged entry that sorts before later appends', () => withStore(async ({ store }) => {
      const keys = [await store.append('r', bytes(1)), await store.append('r', bytes(2)), await store.append('r', bytes(3))]
      const kept = await store.append('r', bytes(4))
      await store.replace('r', keys, bytes(9, 9))
      await store.append('r', bytes(5))
      const log = await store.readLog('r')
      assert.deepEqual(updatesOf(log), [[9, 9], [4], [5]])
      assert.ok(!log.some((entry) => keys.slice(0, 2).includes(entry.key)), 'replaced keys are gone')
      assert.ok(log.some((entry) => entry.key === kept))
    }))

    it('replaces atomically: a concurrent reader sees the log before or after, never between', () => withStore(async ({ store }) => {
      for (let round = 0; round < 20; round++) {
        const room = `atomic-${round}`
        const keys: string[] = []
        for (let i = 0; i < 30; i++) keys.push(await store.append(room, bytes(i)))
        const before = updatesOf(await store.readLog(room))
        const reads = [store.readLog(room), store.readLog(room)]
        const replacing = store.replace(room, keys, bytes(200))
        reads.push(store.readLog(room))
        await replacing
        for (const read of await Promise.all(reads)) {
          const seen = updatesOf(read)
          assert.ok(JSON.stringify(seen) === JSON.stringify(before) || JSON.stringify(seen) === '[[200]]', `round ${round} saw ${seen.length} entries`)
        }
        assert.deepEqual(updatesOf(await store.readLog(room)), [[200]])
      }
    }))

    it('replaces with a merged document of several MB: no reader ever sees the entries gone without it', () => withStore(async ({ store }) => {
      const merged = new Uint8Array(3 * 1024 * 1024 + 7).fill(42)
      const isMerged = (update: Uint8Array): boolean => update.length === merged.length && update.every((value) => value === 42)
      for (let round = 0; round < 5; round++) {
        const room = `big-${round}`
        const keys: string[] = []
        for (let i = 0; i < 30; i++) keys.push(await store.append(room, bytes(i)))
        const reads: Array<Promise<LogEntry[]>> = [store.readLog(room)]
        const replacing = store.replace(room, keys, merged)
        let done = false
        void replacing.then(() => { done = true }, () => { done = true })
        reads.push(store.readLog(room))
        // Reads one after another all through the replace (never so many at once that they starve it).
        while (!done) {
          const read = store.readLog(room)
          reads.push(read)
          await read
        }
        await replacing
        for (const read of await Promise.all(reads)) {
          const hasMerged = read.some((entry) => isMerged(entry.update))
          const old = read.filter((entry) => !isMerged(entry.update)).map((entry) => entry.update[0])
          // Either every old entry is there, or the merged document is (maybe beside some of them, which it contains).
          assert.ok(hasMerged || old.length === 30, `round ${round}: a read saw ${old.length} old entries and no merged document`)
          if (hasMerged) assert.equal(read.findIndex((entry) => isMerged(entry.update)), read.length - 1, 'the merged document sorts after the older entries it contains')
        }
        const after = await store.readLog(room)
        assert.equal(after.length, 1)
        assert.ok(isMerged((after[0] as LogEntry).update))
        // Later appends still sort after it.
        await store.append(room, bytes(99))
        assert.deepEqual((await store.readLog(room)).slice(1).map((entry) => [...entry.update]), [[99]])
      }
    }))

    it('refuses a replace without keys or with a key it did not issue, changing nothing', () => withStore(async ({ store }) => {
      await store.append('r', bytes(1))
      await assert.rejects(store.replace('r', [], bytes(2)), RangeError)
      await assert.rejects(store.replace('r', ['log\u0000other\u00000000000000000000'], bytes(2)))
      assert.deepEqual(updatesOf(await store.readLog('r')), [[1]])
    }))

    it('keeps rooms whose names are prefixes of each other or contain separators apart', () => withStore(async ({ store }) => {
      for (const [index, room] of TRICKY_ROOMS.entries()) {
        await store.append(room, bytes(index))
        await store.append(room, bytes(index, 100))
      }
      for (const [index, room] of TRICKY_ROOMS.entries()) {
        assert.deepEqual(updatesOf(await store.readLog(room)), [[index], [index, 100]], `room ${room}`)
      }
      await store.deleteRoom('a')
      assert.deepEqual(await store.readLog('a'), [])
      for (const [index, room] of TRICKY_ROOMS.entries()) {
        if (room !== 'a') assert.deepEqual(updatesOf(await store.readLog(room)), [[index], [index, 100]], `room ${room} after deleting "a"`)
      }
    }))

    it('lists stored rooms with their entry counts and log bytes', () => withStore(async ({ store }) => {
      assert.deepEqual(await store.listRooms(), [])
      for (const [index, room] of TRICKY_ROOMS.entries()) {
        for (let i = 0; i <= index; i++) await store.append(room, new Uint8Array(i + 1))
      }
      const listed = await store.listRooms()
      const expected = TRICKY_ROOMS.map((room, index) => ({
        room,
        entries: index + 1,
        bytes: ((index + 1) * (index + 2)) / 2,
      }))
      const byName = (a: { room: string }, b: { room: string }): number => (a.room < b.room ? -1 : a.room > b.room ? 1 : 0)
      assert.deepEqual([...listed].sort(byName), expected.sort(byName))
      await store.deleteRoom('ab')
      assert.deepEqual((await store.listRooms()).map((room) => room.room).sort(), TRICKY_ROOMS.filter((room) => room !== 'ab').sort())
    }))

    it('deletes a room; appends afterwards start a new log with keys still increasing', () => withStore(async ({ store }) => {
      const old = await store.append('gone', bytes(1))
      await store.deleteRoom('gone')
      assert.deepEqual(await store.readLog('gone'), [])
      await store.deleteRoom('never stored')
      const fresh = await store.append('gone', bytes(2))
      assert.ok(fresh > old)
      assert.deepEqual(updatesOf(await store.readLog('gone')), [[2]])
    }))

    it('quarantines an entry: out of the log, counted by listRooms, gone with the room', () => withStore(async ({ store }) => {
      const keys = [await store.append('q', bytes(1)), await store.append('q', bytes(2)), await store.append('q', bytes(3))]
      await store.quarantine('q', keys[1] as string)
      await store.quarantine('q', keys[1] as string)
      await store.quarantine('never stored', keys[0] as string)
      assert.deepEqual(updatesOf(await store.readLog('q')), [[1], [3]])
      assert.deepEqual(await store.listRooms(), [{ room: 'q', entries: 2, bytes: 2, quarantined: 1 }])
      await store.deleteRoom('q')
      await store.append('q', bytes(4))
      assert.deepEqual(await store.listRooms(), [{ room: 'q', entries: 1, bytes: 1 }], 'the quarantine went with the room')
    }))

    it('refuses room names that are empty, too long or contain control characters', () => withStore(async ({ store }) => {
      for (const room of ['', 'a\u0000b', 'tab\there', 'x'.repeat(513), 'é'.repeat(257), 'c1\u0085']) {
        await assert.rejects(store.append(room, bytes(1)), InvalidRoomNameError, JSON.stringify(room.slice(0, 20)))
        await assert.rejects(store.readLog(room), InvalidRoomNameError)
      }
      assert.deepEqual(await store.listRooms(), [])
    }))

    it('does not let callers change stored bytes through the arrays they passed or got', () => withStore(async ({ store }) => {
      const update = bytes(1, 2, 3)
      await store.append('r', update)
      update[0] = 99
      const [read] = await store.readLog('r')
      assert.ok(read)
      assert.deepEqual([...read.update], [1, 2, 3])
      read.update[0] = 77
      assert.deepEqual(updatesOf(await store.readLog('r')), [[1, 2, 3]])
    }))

    it('copies Buffers too: a view into a larger Buffer (a socket read, a request body) is not kept', () => withStore(async ({ store }) => {
      // Buffer#slice is a view, not a copy: a store that "copies" with it keeps the caller's memory.
      const received = Buffer.from([0, 4, 5, 6, 0, 7, 7, 0])
      const first = await store.append('r', received.subarray(1, 4))
      await store.append('r', received.subarray(5, 7))
      received.fill(99)
      assert.deepEqual(updatesOf(await store.readLog('r')), [[4, 5, 6], [7, 7]])
      const merged = Buffer.from([1, 8, 8, 1])
      await store.replace('r', [first], merged.subarray(1, 3))
      merged.fill(99)
      assert.deepEqual(updatesOf(await store.readLog('r')), [[8, 8], [7, 7]])
    }))

    it('reclaims space without changing what it holds', () => withStore(async ({ store }) => {
      const keys = [await store.append('r', bytes(1)), await store.append('r', bytes(2))]
      await store.replace('r', keys, bytes(1, 2))
      await store.reclaimSpace()
      assert.deepEqual(updatesOf(await store.readLog('r')), [[1, 2]])
    }))

    it('rejects every call after close, and close twice is fine', async () => {
      const { store } = await open()
      await store.close()
      await store.close()
      await assert.rejects(store.append('r', bytes(1)), StoreClosedError)
      await assert.rejects(store.readLog('r'), StoreClosedError)
      await assert.rejects(store.listRooms(), StoreClosedError)
    })

    if (abilities.reopens) it('keeps entries and key order across a reopen: durable when append resolved', async () => {
      const fixture = await open()
      try {
        assert.ok(fixture.reopen !== null, 'the fixture says it reopens')
        for (let i = 0; i < 5; i++) await fixture.store.append('room', bytes(i))
        await fixture.store.append('a:b', bytes(50))
        const reopened = await fixture.reopen()
        fixture.store = reopened
        await reopened.append('room', bytes(5))
        await reopened.append('a', bytes(60))
        const log = await reopened.readLog('room')
        // A sequence restarting at 0 would have overwritten entry 0 with [5].
        assert.deepEqual(updatesOf(log), [[0], [1], [2], [3], [4], [5]])
        assert.deepEqual(updatesOf(await reopened.readLog('a:b')), [[50]])
        assert.deepEqual(updatesOf(await reopened.readLog('a')), [[60]])
      } finally {
        await fixture.store.close()
      }
    })
  })

  describe(`${kind} store: the VersionStore contract`, () => {
    it('puts, lists oldest first without the documents, and gets', () => withStore(async ({ store }) => {
      const later = version(2_000, 'second', bytes(4, 5, 6, 7))
      const earlier = version(1_000, 'first', bytes(1, 2, 3))
      await store.putVersion('doc', later)
      await store.putVersion('doc', earlier)
      const listed = await store.listVersions('doc')
      assert.deepEqual(listed, [
        { id: earlier.id, name: 'first', createdAt: 1_000, bytes: 3 },
        { id: later.id, name: 'second', createdAt: 2_000, bytes: 4 },
      ])
      for (const info of listed) assert.equal('update' in info, false)
      assert.deepEqual(await store.getVersion('doc', later.id), later)
      assert.deepEqual(await store.getVersion('doc', earlier.id), earlier)
    }))

    it('stores a copy: later changes to the caller\'s bytes do not reach it', () => withStore(async ({ store }) => {
      const record = version(1, 'v', bytes(1, 2))
      await store.putVersion('doc', record)
      record.update[0] = 99
      const got = await store.getVersion('doc', record.id)
      assert.deepEqual([...(got?.update ?? [])], [1, 2])
      if (got !== null) got.update[1] = 99
      assert.deepEqual([...((await store.getVersion('doc', record.id))?.update ?? [])], [1, 2])
    }))

    it('an empty document and an empty name are versions too', () => withStore(async ({ store }) => {
      const record = version(5, '', new Uint8Array(0))
      await store.putVersion('doc', record)
      assert.deepEqual(await store.getVersion('doc', record.id), record)
      assert.deepEqual(await store.listVersions('doc'), [{ id: record.id, name: '', createdAt: 5, bytes: 0 }])
    }))

    it('answers null for an unknown id, an id of another room and a malformed id', () => withStore(async ({ store }) => {
      const record = version(1, 'v', bytes(1))
      await store.putVersion('doc', record)
      assert.equal(await store.getVersion('doc', newVersionId(2)), null)
      assert.equal(await store.getVersion('other', record.id), null)
      for (const id of ['', '../x', 'a\u0000b', 'x'.repeat(200)]) assert.equal(await store.getVersion('doc', id), null)
      assert.deepEqual(await store.listVersions('never'), [])
    }))

    it('refuses a malformed id and an unstorable room name', () => withStore(async ({ store }) => {
      await assert.rejects(store.putVersion('doc', { id: 'a\u0000b', name: 'n', createdAt: 1, update: bytes() }), RangeError)
      await assert.rejects(store.putVersion('a\u0000b', version(1, 'n', bytes())), InvalidRoomNameError)
      await assert.rejects(store.listVersions(''), InvalidRoomNameError)
    }))

    it('rooms that are prefixes of each other never see each other\'s versions', () => withStore(async ({ store }) => {
      const rooms = TRICKY_ROOMS.slice(0, 8)
      const records = new Map(rooms.map((room, i) => [room, version(1_000 + i, room, bytes(i))]))
      for (const [room, record] of records) await store.putVersion(room, record)
      for (const [room, record] of records) {
        assert.deepEqual(await store.listVersions(room), [{ id: record.id, name: room, createdAt: record.createdAt, bytes: 1 }], room)
        for (const [other, otherRecord] of records) {
          if (other !== room) assert.equal(await store.getVersion(room, otherRecord.id), null, `${room} sees ${other}`)
        }
      }
      await store.deleteRoom('a')
      assert.deepEqual(await store.listVersions('a'), [])
      for (const room of rooms.slice(1)) assert.equal((await store.listVersions(room)).length, 1, room)
      await store.deleteVersions('ab')
      assert.deepEqual(await store.listVersions('ab'), [])
      assert.equal((await store.listVersions('a:b')).length, 1)
    }))

    it('deleteRoom removes the versions and the log together; deleteVersions keeps the log', () => withStore(async ({ store }) => {
      await store.append('doc', bytes(1))
      await store.append('doc', bytes(2))
      await store.putVersion('doc', version(1, 'v', bytes(1, 2)))
      await store.append('kept', bytes(3))
      await store.putVersion('kept', version(1, 'v', bytes(3)))
      await store.deleteVersions('kept')
      assert.equal((await store.readLog('kept')).length, 1)
      await store.deleteRoom('doc')
      assert.deepEqual(await store.readLog('doc'), [])
      assert.deepEqual(await store.listVersions('doc'), [])
      assert.deepEqual((await store.listRooms()).map((room) => room.room), ['kept'])
    }))

    it('listRooms reports stored documents only: a room with only versions is not listed', () => withStore(async ({ store }) => {
      await store.putVersion('only-versions', version(1, 'v', bytes(1, 2, 3)))
      await store.append('doc', bytes(1, 2))
      await store.putVersion('doc', version(2, 'v', bytes(9, 9, 9, 9)))
      assert.deepEqual(await store.listRooms(), [{ room: 'doc', bytes: 2, entries: 1 }])
      // The log of a room is unaffected by its versions.
      assert.deepEqual((await store.readLog('doc')).map((entry) => [...entry.update]), [[1, 2]])
    }))

    it('a put under an existing id replaces that version', () => withStore(async ({ store }) => {
      const record = version(1, 'old', bytes(1))
      await store.putVersion('doc', record)
      await store.putVersion('doc', { ...record, name: 'new', update: bytes(2, 2) })
      assert.deepEqual(await store.listVersions('doc'), [{ id: record.id, name: 'new', createdAt: 1, bytes: 2 }])
    }))

    it('limits: past maxCount or maxBytes the put is refused with VersionLimitError and nothing is stored', () => withStore(async ({ store }) => {
      const limits = { maxCount: 3, maxBytes: 10 }
      await store.putVersion('doc', version(1, 'a', bytes(1, 2, 3)), limits)
      await store.putVersion('doc', version(2, 'b', bytes(4, 5, 6)), limits)
      const tooBig = version(3, 'too big', bytes(1, 2, 3, 4, 5))
      await assert.rejects(store.putVersion('doc', tooBig, limits), (err: unknown) => err instanceof VersionLimitError && err.limit === 'bytes' && err.code === 'PERSIST_VERSION_LIMIT')
      assert.equal(await store.getVersion('doc', tooBig.id), null)
      await store.putVersion('doc', version(4, 'c', bytes(7, 8, 9, 10)), limits)
      await assert.rejects(store.putVersion('doc', version(5, 'd', bytes()), limits), (err: unknown) => err instanceof VersionLimitError && err.limit === 'count')
      assert.deepEqual((await store.listVersions('doc')).map((v) => v.name), ['a', 'b', 'c'])
      // Another room has its own budget; without limits (a re-published version) nothing is refused.
      await store.putVersion('other', version(1, 'x', bytes(1)), limits)
      await store.putVersion('doc', version(6, 'restored', bytes(1, 2, 3, 4, 5, 6, 7, 8)))
      assert.equal((await store.listVersions('doc')).length, 4)
    }))

    it('limits: replacing a version counts it once, and concurrent puts cannot pass a limit together', () => withStore(async ({ store }) => {
      const record = version(1, 'v', bytes(1, 2, 3, 4))
      await store.putVersion('doc', record, { maxCount: 1, maxBytes: 5 })
      await store.putVersion('doc', { ...record, update: bytes(1, 2, 3, 4, 5) }, { maxCount: 1, maxBytes: 5 })
      await assert.rejects(store.putVersion('doc', { ...record, update: bytes(1, 2, 3, 4, 5, 6) }, { maxCount: 1, maxBytes: 5 }), VersionLimitError)
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => store.putVersion('race', version(i, `r${i}`, bytes(i)), { maxCount: 4, maxBytes: 1000 })))
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 4)
      assert.equal((await store.listVersions('race')).length, 4)
    }))

    it('puts versions of several MB: no reader ever sees one listed without its document, nor a refused one', () => withStore(async ({ store }) => {
      const size = 3 * 1024 * 1024 + 7
      const limits = { maxCount: 10, maxBytes: 3 * size }
      const document = (fill: number, bytes = size): Uint8Array => new Uint8Array(bytes).fill(fill)
      const isWhole = (got: VersionRecord | null, fill: number, bytes: number): boolean => got !== null && got.update.length === bytes && got.update.every((value) => value === fill)
      /** The byte each version's document is filled with, by name. */
      const fills = new Map<string, number>()
      const refused = new Set<string>()
      // Reads one after another all through the put (never so many at once that they starve it).
      async function readThrough(putting: Promise<void>): Promise<void> {
        let done = false
        const settled = putting.then(() => { done = true }, () => { done = true })
        do {
          for (const info of await store.listVersions('big')) {
            assert.ok(!refused.has(info.id), `a refused version was listed: ${info.name}`)
            const got = await store.getVersion('big', info.id)
            // Listed, so its document is there: the one the description tells (or one put under the id since).
            assert.ok(got !== null, `${info.name} was listed without its document`)
            if (got.name === info.name) assert.ok(isWhole(got, fills.get(info.name) ?? -1, info.bytes), `${info.name}: the document is not the one its description tells`)
          }
          for (const id of refused) assert.equal(await store.getVersion('big', id), null, 'a refused version was read')
        } while (!done)
        await settled
      }
      for (let round = 0; round < 3; round++) {
        const record = version(10 + round, `v${round}`, document(round + 1))
        fills.set(record.name, round + 1)
        const putting = store.putVersion('big', record, limits)
        await readThrough(putting)
        await putting
        assert.ok(isWhole(await store.getVersion('big', record.id), round + 1, size))
      }
      // Past maxBytes: refused, and never seen.
      const tooBig = version(20, 'too big', document(9))
      fills.set(tooBig.name, 9)
      refused.add(tooBig.id)
      const refusing = store.putVersion('big', tooBig, limits)
      await readThrough(refusing.catch(() => undefined))
      await assert.rejects(refusing, VersionLimitError)
      // Replacing a big version under its id: the listing then tells the new one, with its document.
      const first = (await store.listVersions('big', { limit: 1 }))[0]?.id
      assert.ok(first !== undefined)
      const replacement: VersionRecord = { id: first, name: 'replaced', createdAt: 30, update: document(7, size - 100) }
      fills.set('replaced', 7)
      await readThrough(store.putVersion('big', replacement, limits))
      assert.deepEqual((await store.listVersions('big')).map((info) => [info.name, info.bytes]), [['replaced', size - 100], ['v1', size], ['v2', size]])
      assert.ok(isWhole(await store.getVersion('big', first), 7, size - 100))
    }))

    it('lists a page: after an id, at most limit, oldest first', () => withStore(async ({ store }) => {
      const records = Array.from({ length: 5 }, (_, i) => version(100 + i, `p${i}`, bytes(i)))
      for (const record of [...records].reverse()) await store.putVersion('paged', record)
      const ids = records.map((r) => r.id)
      assert.deepEqual((await store.listVersions('paged', { limit: 2 })).map((v) => v.id), ids.slice(0, 2))
      assert.deepEqual((await store.listVersions('paged', { after: ids[1], limit: 2 })).map((v) => v.id), ids.slice(2, 4))
      assert.deepEqual((await store.listVersions('paged', { after: ids[3] })).map((v) => v.id), ids.slice(4))
      assert.deepEqual(await store.listVersions('paged', { after: ids[4] }), [])
    }))

    if (abilities.localVersions) it('lists the rooms that have versions (LocalVersionStore, for --redis)', async () => {
      await withStore(async (fixture) => {
        const store = fixture.store as S & LocalVersionStore
        await store.putVersion('paged', version(1, 'v', bytes()))
        await store.putVersion('a:b', version(1, 'v', bytes()))
        await store.putVersion('ab', version(1, 'v', bytes()))
        await store.append('log-only', bytes(1))
        assert.deepEqual(await store.listVersionRooms(), ['a:b', 'ab', 'paged'])
        await store.deleteVersions('ab')
        await store.deleteRoom('a:b')
        assert.deepEqual(await store.listVersionRooms(), ['paged'])
      })
    })

    it('rejects every version call once closed', async () => {
      const { store } = await open()
      await store.close()
      await assert.rejects(store.putVersion('doc', version(1, 'v', bytes())), StoreClosedError)
      await assert.rejects(store.listVersions('doc'), StoreClosedError)
      await assert.rejects(store.getVersion('doc', newVersionId()), StoreClosedError)
      await assert.rejects(store.deleteVersions('doc'), StoreClosedError)
    })

    if (abilities.reopens) it('versions survive a reopen', async () => {
      const fixture = await open()
      try {
        assert.ok(fixture.reopen !== null, 'the fixture says it reopens')
        const records = [version(3, 'c', bytes(3)), version(1, 'a', bytes(1)), version(2, 'b', bytes(2))]
        for (const record of records) await fixture.store.putVersion('doc', record)
        await fixture.store.append('doc', bytes(7))
        const store = await fixture.reopen()
        fixture.store = store
        assert.deepEqual((await store.listVersions('doc')).map((info) => info.name), ['a', 'b', 'c'])
        for (const record of records) assert.deepEqual(await store.getVersion('doc', record.id), record)
        assert.deepEqual((await store.readLog('doc')).map((entry) => [...entry.update]), [[7]])
      } finally {
        await fixture.store.close()
      }
    })
  })
}
