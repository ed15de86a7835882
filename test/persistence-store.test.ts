import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { removeStoreDirs, STORE_KINDS, storeTempDir, type StoreFixture } from './harness/stores.js'
import { InvalidRoomNameError, LevelStore, type Store } from '../persistence/index.js'

after(removeStoreDirs)
const kinds = STORE_KINDS

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)
const updatesOf = (log: Array<{ update: Uint8Array }>): number[][] => log.map((entry) => [...entry.update])

/** Rooms chosen to collide if keys were built carelessly: prefixes, separators, unicode. */
const TRICKY_ROOMS = ['a', 'a:b', 'ab', 'a/b', 'a b', 'a:', '文档/1:2', 'ü', 'x'.repeat(512), '😀/😀']

for (const { kind, open } of kinds) {
  describe(`${kind} store`, () => {
    async function withStore(body: (fixture: StoreFixture) => Promise<void>): Promise<void> {
      const fixture = await open()
      try {
        await body(fixture)
      } finally {
        await fixture.store.close()
      }
    }

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

    it('refuses a replace without keys or with a key it did not issue, changing nothing', () => withStore(async ({ store }) => {
      await store.append('r', bytes(1))
      await assert.rejects(store.replace('r', [], bytes(2)), RangeError)
      await assert.rejects(store.replace('r', ['log\u0000other\u00000000000000000000'], bytes(2)), RangeError)
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

    it('rejects every call after close, and close twice is fine', async () => {
      const { store } = await open()
      await store.close()
      await store.close()
      await assert.rejects(store.append('r', bytes(1)))
      await assert.rejects(store.readLog('r'))
      await assert.rejects(store.listRooms())
    })

    if (kind === 'leveldb') {
      it('keeps entries and key order across a reopen: appends after it sort after earlier ones', () => withStore(async (fixture) => {
        for (let i = 0; i < 5; i++) await fixture.store.append('room', bytes(i))
        await fixture.store.append('a:b', bytes(50))
        const reopened = await (fixture.reopen as () => Promise<Store>)()
        await reopened.append('room', bytes(5))
        await reopened.append('a', bytes(60))
        const log = await reopened.readLog('room')
        // A sequence restarting at 0 would have overwritten entry 0 with [5].
        assert.deepEqual(updatesOf(log), [[0], [1], [2], [3], [4], [5]])
        assert.deepEqual(updatesOf(await reopened.readLog('a:b')), [[50]])
        assert.deepEqual(updatesOf(await reopened.readLog('a')), [[60]])
      }))

      it('returns plain Uint8Array views, not pooled Buffers', () => withStore(async ({ store }) => {
        await store.append('r', bytes(1, 2))
        const [entry] = await store.readLog('r')
        assert.ok(entry)
        assert.equal(Buffer.isBuffer(entry.update), false)
        assert.ok(entry.update instanceof Uint8Array)
      }))

      it('refuses to open a LevelDB another store holds, naming the directory', async () => {
        const dir = await storeTempDir('weft-store-lock-')
        const first = await LevelStore.open(dir)
        try {
          await assert.rejects(LevelStore.open(dir), (err: Error) => err.message.includes(dir))
        } finally {
          await first.close()
        }
      })
    }
  })
}
