import { rm } from 'node:fs/promises'
import { ClassicLevelEngine } from '../../src/storage/classic-level-engine.js'
import type { StorageEngine } from '../../src/storage/engine.js'
import { storageEngineConformance } from '../conformance/storage-engine.js'
import { tempDir } from '../helpers/cluster.js'

const dirs: string[] = []
// The row cache changes how reads are answered: the contract is checked with it off, with the
// default size, and so small that entries are evicted all the time.
for (const [label, rowCacheBytes] of [['no row cache', 0], ['default row cache', undefined], ['2 KiB row cache', 2048]] as const) {
  storageEngineConformance(`classic-level, ${label}`, {
    async create(): Promise<StorageEngine> {
      const dir = await tempDir('kumo-engine-')
      dirs.push(dir)
      return new ClassicLevelEngine(dir, rowCacheBytes === undefined ? {} : { rowCacheBytes })
    },
    async reopen(engine: StorageEngine): Promise<StorageEngine> {
      await engine.close()
      const again = new ClassicLevelEngine((engine as ClassicLevelEngine).location, rowCacheBytes === undefined ? {} : { rowCacheBytes })
      await again.open()
      return again
    },
    async cleanup(): Promise<void> {
      await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
    },
  })
}
