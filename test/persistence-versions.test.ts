import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { Level } from 'level'
import { removeStoreDirs, storeTempDir } from './harness/stores.js'
import { LevelStore, newVersionId, openStore, type VersionRecord } from '../persistence/index.js'
import { decodeVersionValue, encodeVersionValue } from '../persistence/version-value.js'

after(removeStoreDirs)

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)

function version(createdAt: number, name: string, update: Uint8Array): VersionRecord {
  return { id: newVersionId(createdAt), name, createdAt, update }
}

// What every store must do with versions is in harness/store-conformance.ts (run by persistence-store.test.ts).

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

type LevelOperation = { type: 'put' | 'del'; key: string; value?: Uint8Array }

/** LevelStore's LevelDB, whose writes a test watches or makes fail. */
interface LevelWrites {
  put(key: string, value: Uint8Array, options?: object): Promise<void>
  batch(operations: LevelOperation[], options?: object): Promise<void>
}

function levelOf(store: LevelStore): LevelWrites {
  return (store as unknown as { db: LevelWrites }).db
}

/** Records the size of every value written, by put or inside a batch. */
function watchWrites(store: LevelStore): { put: number[]; batched: number[] } {
  const db = levelOf(store)
  const seen = { put: [] as number[], batched: [] as number[] }
  const { put, batch } = db
  db.put = (key, value, options) => {
    seen.put.push(value.byteLength)
    return put.call(db, key, value, options)
  }
  db.batch = (operations, options) => {
    for (const operation of operations) if (operation.value !== undefined) seen.batched.push(operation.value.byteLength)
    return batch.call(db, operations, options)
  }
  return seen
}

describe('LevelStore: versions over 1 MiB', () => {
  const BIG = 2 * 1024 * 1024

  it('writes the document with a put of its own, never inside a batch (a batch is built on the event loop)', async () => {
    const store = await LevelStore.open(await storeTempDir('weft-versions-put-'))
    try {
      const seen = watchWrites(store)
      const big = version(1, 'big', new Uint8Array(BIG).fill(3))
      await store.putVersion('doc', big, { maxCount: 5, maxBytes: 4 * BIG })
      assert.ok(seen.put.some((bytes) => bytes > BIG), 'the document went through put')
      assert.deepEqual(seen.batched.filter((bytes) => bytes > 1024 * 1024), [], 'no batch carried a value over 1 MiB')
      assert.deepEqual(await store.listVersions('doc'), [{ id: big.id, name: 'big', createdAt: 1, bytes: BIG }])
      assert.deepEqual(await store.getVersion('doc', big.id), big)
      // A small one is still one batch.
      seen.put.length = 0
      await store.putVersion('doc', version(2, 'small', bytes(1, 2)))
      assert.deepEqual(seen.put, [])
    } finally {
      await store.close()
    }
  })

  it('a put whose document write fails keeps nothing: not listed, not read, not counted, not back after a reopen', async () => {
    const dir = await storeTempDir('weft-versions-fail-')
    let store = await LevelStore.open(dir)
    try {
      const db = levelOf(store)
      const { put } = db
      db.put = () => Promise.reject(new Error('disk full'))
      const big = version(1, 'big', new Uint8Array(BIG).fill(3))
      await assert.rejects(store.putVersion('doc', big, { maxCount: 1, maxBytes: BIG }), /disk full/)
      db.put = put
      assert.deepEqual(await store.listVersions('doc'), [])
      assert.equal(await store.getVersion('doc', big.id), null)
      // Its bytes do not count against the limits.
      const next = version(2, 'next', new Uint8Array(BIG).fill(4))
      await store.putVersion('doc', next, { maxCount: 1, maxBytes: BIG })
      await store.close()
      store = await LevelStore.open(dir)
      assert.deepEqual((await store.listVersions('doc')).map((info) => info.name), ['next'])
      assert.equal(await store.getVersion('doc', big.id), null)
    } finally {
      await store.close()
    }
  })

  it('what a put cut short by a crash left (its pending mark and document, no description) is deleted at the next open', async () => {
    const dir = await storeTempDir('weft-versions-crash-')
    const cut = version(1, 'cut short', new Uint8Array(BIG).fill(5))
    const kept = version(2, 'kept', bytes(1))
    const store = await LevelStore.open(dir)
    await store.putVersion('doc', kept)
    await store.close()
    // The layout (level-store.ts): what the first two of a big put's three writes leave.
    const raw = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
    await raw.put(`version-pending\u0000doc\u0000${cut.id}`, new Uint8Array(0))
    await raw.put(`version\u0000doc\u0000${cut.id}`, encodeVersionValue(cut))
    await raw.close()
    const reopened = await LevelStore.open(dir)
    try {
      assert.deepEqual((await reopened.listVersions('doc')).map((info) => info.name), ['kept'])
      assert.equal(await reopened.getVersion('doc', cut.id), null)
      assert.deepEqual(await reopened.getVersion('doc', kept.id), kept)
    } finally {
      await reopened.close()
    }
    const after = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
    try {
      assert.deepEqual((await after.keys().all()).filter((key) => key.includes(cut.id)), [])
    } finally {
      await after.close()
    }
  })
})
