import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LevelStore, MemoryStore, type LocalVersionStore, type Store } from '../../persistence/index.js'

export type FullStore = Store & LocalVersionStore

/** A fresh store of one kind; `reopen` (LevelDB only) closes it and opens the same data again. */
export interface StoreFixture {
  store: FullStore
  reopen: (() => Promise<FullStore>) | null
}

const tempDirs: string[] = []

/** Removes the LevelDB directories the fixtures made; call from the test file's `after`. */
export async function removeStoreDirs(): Promise<void> {
  await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
}

/** A temporary directory removed by removeStoreDirs. */
export async function storeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  tempDirs.push(dir)
  return dir
}

/** Both stores, so one table of cases runs against each. */
export const STORE_KINDS: ReadonlyArray<{ kind: string; open: () => Promise<StoreFixture> }> = [
  {
    kind: 'leveldb',
    async open() {
      const dir = await storeTempDir('weft-store-')
      // A nested path: open must create missing parents.
      const location = join(dir, 'nested', 'db')
      const fixture: StoreFixture = {
        store: await LevelStore.open(location),
        async reopen() {
          await fixture.store.close()
          fixture.store = await LevelStore.open(location)
          return fixture.store
        },
      }
      return fixture
    },
  },
  { kind: 'memory', open: async () => ({ store: new MemoryStore(), reopen: null }) },
]
