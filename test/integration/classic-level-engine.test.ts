import { rm } from 'node:fs/promises'
import { ClassicLevelEngine } from '../../src/storage/classic-level-engine.js'
import type { StorageEngine } from '../../src/storage/engine.js'
import { storageEngineConformance } from '../conformance/storage-engine.js'
import { tempDir } from '../helpers/cluster.js'

const dirs: string[] = []
storageEngineConformance('classic-level', {
  async create(): Promise<StorageEngine> {
    const dir = await tempDir('kumo-engine-')
    dirs.push(dir)
    return new ClassicLevelEngine(dir)
  },
  async reopen(engine: StorageEngine): Promise<StorageEngine> {
    await engine.close()
    const again = new ClassicLevelEngine((engine as ClassicLevelEngine).location)
    await again.open()
    return again
  },
  async cleanup(): Promise<void> {
    await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
  },
})
