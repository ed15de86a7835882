import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { removeStoreDirs, STORE_KINDS, storeTempDir } from './harness/stores.js'
import { describeStoreConformance } from './harness/store-conformance.js'
import { LevelStore } from '../persistence/index.js'

after(removeStoreDirs)

// Both built-in stores pass the suite any store can run against itself (README, "Writing a store").
for (const { kind, open } of STORE_KINDS) describeStoreConformance(kind, open, { reopens: kind === 'leveldb', localVersions: true })

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values)

describe('leveldb store', () => {
  it('returns plain Uint8Array views, not pooled Buffers', async () => {
    const store = await LevelStore.open(await storeTempDir('weft-store-views-'))
    try {
      await store.append('r', bytes(1, 2))
      const [entry] = await store.readLog('r')
      assert.ok(entry)
      assert.equal(Buffer.isBuffer(entry.update), false)
      assert.ok(entry.update instanceof Uint8Array)
    } finally {
      await store.close()
    }
  })

  it('refuses to open a LevelDB another store holds, naming the directory', async () => {
    const dir = await storeTempDir('weft-store-lock-')
    const first = await LevelStore.open(dir)
    try {
      await assert.rejects(LevelStore.open(dir), (err: Error) => err.message.includes(dir))
    } finally {
      await first.close()
    }
  })
})
