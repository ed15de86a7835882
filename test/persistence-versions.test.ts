import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { removeStoreDirs, storeTempDir } from './harness/stores.js'
import { newVersionId, openStore, type VersionRecord } from '../persistence/index.js'
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
