import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { removeStoreDirs, STORE_KINDS, storeTempDir, type FullStore, type StoreFixture } from './harness/stores.js'
import { newVersionId, openStore, VersionLimitError, type VersionRecord } from '../persistence/index.js'
import { decodeVersionValue, encodeVersionValue } from '../persistence/version-value.js'

type VersionedStore = FullStore

after(removeStoreDirs)
const kinds = STORE_KINDS

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)

function version(createdAt: number, name: string, update: Uint8Array): VersionRecord {
  return { id: newVersionId(createdAt), name, createdAt, update }
}

/** Rooms that collide if keys were built carelessly: each is a prefix of the next, or shares one. */
const PREFIX_ROOMS = ['a', 'ab', 'a:b', 'a b', 'a:', '文档/1:2', 'x'.repeat(512)]

describe('newVersionId', () => {
  it('is fixed-width, lowercase base-36/hex, and sorts by time', () => {
    const ids = [newVersionId(0), newVersionId(1), newVersionId(1_700_000_000_000), newVersionId(36 ** 9 - 1)]
    for (const id of ids) assert.match(id, /^[0-9a-z]{23}$/)
    assert.deepEqual([...ids].sort(), ids)
  })

  it('is unique and keeps call order within one millisecond', () => {
    const now = Date.now()
    const ids = Array.from({ length: 5000 }, () => newVersionId(now))
    assert.equal(new Set(ids).size, ids.length)
    assert.deepEqual([...ids].sort(), ids)
  })

  it('refuses timestamps that would not sort', () => {
    assert.throws(() => newVersionId(-1), RangeError)
    assert.throws(() => newVersionId(1.5), RangeError)
  })
})

describe('stored version value', () => {
  it('round-trips and keeps the documented layout', () => {
    const record: VersionRecord = { id: 'v1', name: 'draft "1" ✓', createdAt: 1234, update: bytes(9, 8, 7) }
    const value = encodeVersionValue(record)
    const header = Buffer.from(JSON.stringify({ name: record.name, createdAt: 1234 }), 'utf8')
    assert.equal(value[0], 1)
    assert.equal(Buffer.from(value).readUInt32BE(1), header.byteLength)
    assert.deepEqual(Buffer.from(value.subarray(5, 5 + header.byteLength)), header)
    assert.deepEqual([...value.subarray(5 + header.byteLength)], [9, 8, 7])
    assert.deepEqual(decodeVersionValue('v1', value), record)
  })

  it('refuses an unknown format and a truncated header', () => {
    const value = encodeVersionValue({ id: 'v', name: 'n', createdAt: 1, update: bytes(1) })
    assert.throws(() => decodeVersionValue('v', Uint8Array.from([2, ...value.subarray(1)])), /unknown format/)
    assert.throws(() => decodeVersionValue('v', value.subarray(0, 8)), /truncated/)
  })
})

for (const { kind, open } of kinds) {
  describe(`${kind} store versions`, () => {
    async function withStore(body: (fixture: StoreFixture) => Promise<void>): Promise<void> {
      const fixture = await open()
      try {
        await body(fixture)
      } finally {
        await fixture.store.close()
      }
    }

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
      await assert.rejects(store.putVersion('a\u0000b', version(1, 'n', bytes())), { code: 'PERSIST_INVALID_ROOM_NAME' })
      await assert.rejects(store.listVersions(''), { code: 'PERSIST_INVALID_ROOM_NAME' })
    }))

    it('rooms that are prefixes of each other never see each other\'s versions', () => withStore(async ({ store }) => {
      const records = new Map(PREFIX_ROOMS.map((room, i) => [room, version(1_000 + i, room, bytes(i))]))
      for (const [room, record] of records) await store.putVersion(room, record)
      for (const [room, record] of records) {
        assert.deepEqual(await store.listVersions(room), [{ id: record.id, name: room, createdAt: record.createdAt, bytes: 1 }], room)
        for (const [other, otherRecord] of records) {
          if (other !== room) assert.equal(await store.getVersion(room, otherRecord.id), null, `${room} sees ${other}`)
        }
      }
      await store.deleteRoom('a')
      assert.deepEqual(await store.listVersions('a'), [])
      for (const room of PREFIX_ROOMS.slice(1)) assert.equal((await store.listVersions(room)).length, 1, room)
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

    it('lists a page: after an id, at most limit, oldest first; and the rooms that have versions', () => withStore(async ({ store }) => {
      const records = Array.from({ length: 5 }, (_, i) => version(100 + i, `p${i}`, bytes(i)))
      for (const record of [...records].reverse()) await store.putVersion('paged', record)
      const ids = records.map((r) => r.id)
      assert.deepEqual((await store.listVersions('paged', { limit: 2 })).map((v) => v.id), ids.slice(0, 2))
      assert.deepEqual((await store.listVersions('paged', { after: ids[1], limit: 2 })).map((v) => v.id), ids.slice(2, 4))
      assert.deepEqual((await store.listVersions('paged', { after: ids[3] })).map((v) => v.id), ids.slice(4))
      assert.deepEqual(await store.listVersions('paged', { after: ids[4] }), [])
      await store.putVersion('a:b', version(1, 'v', bytes()))
      await store.putVersion('ab', version(1, 'v', bytes()))
      await store.append('log-only', bytes(1))
      assert.deepEqual(await store.listVersionRooms(), ['a:b', 'ab', 'paged'])
      await store.deleteVersions('ab')
      await store.deleteRoom('a:b')
      assert.deepEqual(await store.listVersionRooms(), ['paged'])
    }))

    it('rejects every version call once closed', async () => {
      const { store } = await open()
      await store.close()
      await assert.rejects(store.putVersion('doc', version(1, 'v', bytes())), { code: 'PERSIST_STORE_CLOSED' })
      await assert.rejects(store.listVersions('doc'), { code: 'PERSIST_STORE_CLOSED' })
      await assert.rejects(store.getVersion('doc', newVersionId()), { code: 'PERSIST_STORE_CLOSED' })
      await assert.rejects(store.deleteVersions('doc'), { code: 'PERSIST_STORE_CLOSED' })
    })

    if (kind === 'leveldb') {
      it('versions survive a reopen', () => withStore(async (fixture) => {
        const records = [version(3, 'c', bytes(3)), version(1, 'a', bytes(1)), version(2, 'b', bytes(2))]
        for (const record of records) await fixture.store.putVersion('doc', record)
        await fixture.store.append('doc', bytes(7))
        const store = await (fixture.reopen as () => Promise<VersionedStore>)()
        assert.deepEqual((await store.listVersions('doc')).map((info) => info.name), ['a', 'b', 'c'])
        for (const record of records) assert.deepEqual(await store.getVersion('doc', record.id), record)
        assert.deepEqual((await store.readLog('doc')).map((entry) => [...entry.update]), [[7]])
      }))
    }
  })
}

describe('openStore', () => {
  it('returns a store with versions for both kinds of --data', async () => {
    const dir = await storeTempDir('weft-versions-open-')
    for (const data of ['memory', dir]) {
      const store = await openStore(data)
      try {
        const record = version(1, 'v', bytes(1))
        await store.putVersion('doc', record)
        assert.deepEqual(await store.getVersion('doc', record.id), record)
      } finally {
        await store.close()
      }
    }
  })
})
