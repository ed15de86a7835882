import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { removeStoreDirs, STORE_KINDS, storeTempDir } from './harness/stores.js'
import { describeStoreConformance } from './harness/store-conformance.js'
import { LevelStore, MemoryStore } from '../persistence/index.js'

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

describe('memory store', () => {
  // Small entries share one buffer that grows and is rebuilt by replace and quarantine; big ones
  // keep their own. Checked against a plain list, byte for byte, through every kind of change.
  it('keeps every entry byte for byte through arena growth, replaces and quarantines, small and big mixed', async () => {
    const store = new MemoryStore()
    const model: Array<{ key: string; update: Uint8Array }> = []
    const entry = (i: number): Uint8Array => {
      const size = i % 7 === 0 ? 5000 + i : 1 + ((i * 37) % 300)
      return Uint8Array.from({ length: size }, (_, j) => (i * 31 + j) % 251)
    }
    const check = async (when: string): Promise<void> => {
      const log = await store.readLog('r')
      assert.deepEqual(log.map((e) => e.key), model.map((e) => e.key), when)
      log.forEach((e, i) => assert.deepEqual(e.update, model[i]?.update, `${when}: entry ${i}`))
      const bytesStored = model.reduce((sum, e) => sum + e.update.byteLength, 0)
      assert.deepEqual(await store.listRooms(), [{ room: 'r', entries: model.length, bytes: bytesStored }], when)
    }
    for (let i = 0; i < 120; i++) {
      const update = entry(i)
      model.push({ key: await store.append('r', update), update: update.slice() })
      update.fill(0) // the caller's array is not what was stored
    }
    await check('after 120 appends')

    // Replace a run in the middle (with a big merged entry), then the oldest ones (with a small one).
    const middle = model.splice(30, 40)
    const mergedBig = Uint8Array.from({ length: 9000 }, (_, j) => j % 13)
    await store.replace('r', middle.map((e) => e.key), mergedBig)
    model.splice(30, 0, { key: middle[middle.length - 1]?.key as string, update: mergedBig.slice() })
    mergedBig.fill(1)
    await check('after replacing 40 entries in the middle')
    const oldest = model.splice(0, 10)
    await store.replace('r', oldest.map((e) => e.key), bytes(9, 9, 9))
    model.unshift({ key: oldest[oldest.length - 1]?.key as string, update: bytes(9, 9, 9) })
    await check('after replacing the oldest 10')

    const [quarantined] = model.splice(5, 1)
    await store.quarantine('r', quarantined?.key as string)
    await store.quarantine('r', 'not a key')
    const afterQuarantine = await store.listRooms()
    assert.equal(afterQuarantine[0]?.quarantined, 1)
    for (let i = 120; i < 160; i++) model.push({ key: await store.append('r', entry(i)), update: entry(i) })
    const log = await store.readLog('r')
    assert.deepEqual(log.map((e) => e.key), model.map((e) => e.key))
    log.forEach((e, i) => assert.deepEqual(e.update, model[i]?.update, `after the quarantine and 40 more appends: entry ${i}`))
  })
})
