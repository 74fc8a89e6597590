import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { ClassicLevel } from 'classic-level'
import { describe, expect, it } from 'vitest'
import { encodeRecord } from '../../src/core/record.js'
import { encodeVersion } from '../../src/core/version.js'
import { dataKey } from '../../src/storage/keys.js'
import { ClassicLevelEngine, type ClassicLevelEngineConfig } from '../../src/storage/classic-level-engine.js'
import { prewarmTables } from '../../src/storage/prewarm.js'
import type { StorageEngine } from '../../src/storage/engine.js'
import { storageEngineConformance } from '../conformance/storage-engine.js'
import { tempDir } from '../helpers/cluster.js'

const dirs: string[] = []
// The row cache changes how reads are answered: the contract is checked with it off, with the
// default size, and so small that entries are evicted all the time.
// Without the key index, scans across partitions read each partition's range instead.
for (const [label, config] of [
  ['no row cache', { rowCacheBytes: 0 }],
  ['default row cache', {}],
  ['2 KiB row cache', { rowCacheBytes: 2048 }],
  ['no key index', { keyIndex: false }],
] as const) {
  storageEngineConformance(`classic-level, ${label}`, {
    async create(): Promise<StorageEngine> {
      const dir = await tempDir('kumo-engine-')
      dirs.push(dir)
      return new ClassicLevelEngine(dir, config)
    },
    async reopen(engine: StorageEngine): Promise<StorageEngine> {
      await engine.close()
      const again = new ClassicLevelEngine((engine as ClassicLevelEngine).location, config)
      await again.open()
      return again
    },
    async cleanup(): Promise<void> {
      await Promise.all(dirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })))
    },
  })
}

describe('classic-level key index', () => {
  it('is built at open for a store written before it was kept, so scans across partitions see every record', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      // A store as an older Kumo left it: data keys and a high-water mark, no key index.
      const old = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
      await old.open()
      const record = encodeRecord(encodeVersion({ ms: 5, counter: 0 }, 'n1'), Buffer.from('v'))
      const keys = Array.from({ length: 2500 }, (_, i) => `key-${String(i).padStart(5, '0')}`)
      await old.batch(keys.map((key, i) => ({ type: 'put' as const, key: dataKey(i % 7, Buffer.from(key)), value: record })))
      await old.close()
      const told: [number, boolean][] = []
      const engine = new ClassicLevelEngine(dir, { onKeyIndexBuild: (keys, done) => told.push([keys, done]) })
      await engine.open()
      try {
        expect(told).toEqual([[0, false], [2500, true]])
        const page = await engine.scanAcross([0, 1, 2, 3, 4, 5, 6], { limit: 5000 })
        expect(page.entries.map((e) => e.key.toString())).toEqual(keys)
        expect(page.entries.map((e) => e.partition)).toEqual(keys.map((_, i) => i % 7))
        expect(page.resumeAfter).toBeUndefined()
      } finally {
        await engine.close()
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
  it('lists exactly the data keys after writes, purges and a dropped partition', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      const engine = new ClassicLevelEngine(dir)
      await engine.open()
      const rec = (ms: number): Buffer => encodeRecord(encodeVersion({ ms, counter: 0 }, 'n1'), Buffer.from('v'))
      const writes = Array.from({ length: 300 }, (_, i) => ({ partition: i % 5, key: Buffer.from(`k${i}`), record: rec(10) }))
      await engine.applyRecords(writes)
      // Old versions (read and compared, not stored), then newer ones of the same keys.
      await engine.applyRecords(writes.slice(0, 50).map((w) => ({ ...w, record: rec(5) })))
      await engine.applyRecords(writes.slice(0, 50).map((w) => ({ ...w, record: rec(20) })))
      await engine.purgeRecords(writes.slice(100, 150))
      await engine.dropPartition(3)
      await engine.close()
      const raw = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
      await raw.open()
      try {
        const data = (await raw.keys({ lt: Buffer.from([0x80]) }).all()).map((key) => `${key.readUInt16BE(0)}:${key.subarray(2).toString()}`)
        const index = await raw.iterator({ gte: Buffer.from([0xff, 0xfd]), lt: Buffer.from([0xff, 0xfe]) }).all()
        expect(index.map(([key, partition]) => `${partition.readUInt16BE(0)}:${key.subarray(2).toString()}`).sort()).toEqual(data.sort())
        expect(data.length).toBe(300 - 50 - 50)
      } finally {
        await raw.close()
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
  it('turned off, is deleted and no longer written; turned on again, is rebuilt whole', async () => {
    const dir = await tempDir('kumo-engine-')
    const rec = (ms: number): Buffer => encodeRecord(encodeVersion({ ms, counter: 0 }, 'n1'), Buffer.from('v'))
    const indexEntries = async (): Promise<string[]> => {
      const raw = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
      await raw.open()
      try {
        return (await raw.keys({ gte: Buffer.from([0xff, 0xfd]), lt: Buffer.from([0xff, 0xfe]) }).all()).map((key) => key.subarray(2).toString())
      } finally {
        await raw.close()
      }
    }
    const session = async (keyIndex: boolean, work: (engine: ClassicLevelEngine) => Promise<void>): Promise<void> => {
      const engine = new ClassicLevelEngine(dir, { keyIndex })
      await engine.open()
      try {
        await work(engine)
      } finally {
        await engine.close()
      }
    }
    try {
      await session(true, (e) => e.applyRecords(['a', 'b', 'c'].map((key, i) => ({ partition: i, key: Buffer.from(key), record: rec(1) }))).then(() => undefined))
      expect(await indexEntries()).toEqual(['a', 'b', 'c'])
      await session(false, async (e) => {
        await e.applyRecords([{ partition: 3, key: Buffer.from('d'), record: rec(1) }])
        await e.purgeRecords([{ partition: 0, key: Buffer.from('a'), record: rec(1) }])
        const page = await e.scanAcross([0, 1, 2, 3], { limit: 10 })
        expect(page.entries.map((x) => x.key.toString())).toEqual(['b', 'c', 'd'])
      })
      expect(await indexEntries()).toEqual([])
      await session(true, async (e) => {
        const page = await e.scanAcross([0, 1, 2, 3], { limit: 10 })
        expect(page.entries.map((x) => x.key.toString())).toEqual(['b', 'c', 'd'])
      })
      expect(await indexEntries()).toEqual(['b', 'c', 'd'])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

// Random values: LevelDB's Snappy compression would shrink repeated bytes to nothing.
const written = new Map<string, Buffer>()
/** An engine over a store of `count` records of 1 KB, compacted into table files. */
const storeOf = async (count: number, config: Partial<ClassicLevelEngineConfig>): Promise<ClassicLevelEngine> => {
  const dir = await tempDir('kumo-engine-')
  const engine = new ClassicLevelEngine(dir, { writeBufferBytes: 256 * 1024, ...config })
  await engine.open()
  for (let at = 0; at < count; at += 1000) {
    const keys = Array.from({ length: Math.min(1000, count - at) }, (_, i) => `key-${at + i}`)
    const records = keys.map((key) => {
      const record = encodeRecord(encodeVersion({ ms: 5, counter: 0 }, 'n1'), randomBytes(1000))
      written.set(key, record)
      return record
    })
    await engine.applyRecords(keys.map((key, i) => ({ partition: (at + i) % 16, key: Buffer.from(key), record: records[i]! })))
  }
  await engine.compact()
  return engine
}
const closeAndRemove = async (engine: ClassicLevelEngine): Promise<void> => {
  await engine.close()
  await rm(engine.location, { recursive: true, force: true })
}

describe('classic-level prewarm (mapping the table files in)', () => {
  it('walks a store within its bound and says how large its table files are; reads are unchanged; two passes asked for at once both walk it', async () => {
    const engine = await storeOf(3000, { prewarmBytesMax: 64 * 1024 * 1024 })
    try {
      const [first, second] = await Promise.all([engine.prewarm(), engine.prewarm()])
      for (const outcome of [first!, second!]) {
        expect(outcome.state).toBe('done')
        expect(outcome.tableBytes).toBeGreaterThan(3000 * 1000)
        expect(outcome.reason).toBeUndefined()
      }
      const got = await engine.getRecordsAt([0, 2977 % 16, 2], [Buffer.from('key-0'), Buffer.from('key-2977'), Buffer.from('missing')])
      expect(got[0]).toEqual(written.get('key-0'))
      expect(got[1]).toEqual(written.get('key-2977'))
      expect(got[2]).toBeUndefined()
    } finally {
      await closeAndRemove(engine)
    }
  })

  it('skips a store larger than its bound, and does nothing when turned off (the engine default)', async () => {
    const small = await storeOf(2000, { prewarmBytesMax: 1024 * 1024 })
    const off = await storeOf(10, {})
    try {
      const skipped = await small.prewarm()
      expect(skipped.state).toBe('skipped')
      expect(skipped.tableBytes).toBeGreaterThan(1024 * 1024)
      expect(skipped.reason).toMatch(/^the table files hold \d+ MiB, more than the 1 MiB mapped at most$/)
      expect(await off.prewarm()).toMatchObject({ state: 'skipped', tableBytes: 0, reason: 'turned off' })
    } finally {
      await closeAndRemove(small)
      await closeAndRemove(off)
    }
  })

  // The walk itself aborted part-way is the prewarmTables case below.
  it('a pass asked for as the store closes stops, and close waits for it', async () => {
    const engine = await storeOf(2000, { prewarmBytesMax: 64 * 1024 * 1024 })
    const pass = engine.prewarm()
    await closeAndRemove(engine)
    expect((await pass).state).toBe('stopped')
  })

  it('a pass aborted once its walk is under way stops, and its iterator is closed', async () => {
    const dir = await tempDir('kumo-engine-')
    const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
    await db.open()
    try {
      for (let at = 0; at < 200_000; at += 10_000) {
        await db.batch(Array.from({ length: 10_000 }, (_, i) => ({ type: 'put' as const, key: Buffer.from(`k${at + i}`), value: Buffer.alloc(100) })))
      }
      const whole = await prewarmTables(db, new AbortController().signal)
      expect(whole.stopped).toBe(false)
      const stop = new AbortController()
      const pass = prewarmTables(db, stop.signal)
      stop.abort()
      expect((await pass).stopped).toBe(true)
      const already = await prewarmTables(db, stop.signal)
      expect(already).toEqual({ ms: 0, stopped: true })
    } finally {
      // A close with an iterator left open would wait for it.
      await db.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('classic-level table files', () => {
  it('are cut at the size asked for (8 MiB by default, LevelDB keeps at most 1,000 of them mapped)', async () => {
    const small = await storeOf(6000, { tableFileBytes: 1024 * 1024 })
    const large = await storeOf(6000, {})
    try {
      // 6 MB of records (and the key index) in one level: several 1 MiB files, one 8 MiB file.
      expect(small.cacheStats().tableFiles).toBeGreaterThanOrEqual(5)
      expect(large.cacheStats().tableFiles).toBe(1)
    } finally {
      await closeAndRemove(small)
      await closeAndRemove(large)
    }
  })
})
