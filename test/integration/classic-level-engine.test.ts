import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import { ClassicLevel } from 'classic-level'
import { describe, expect, it } from 'vitest'
import { encodeRecord, recordHeader } from '../../src/core/record.js'
import { encodeVersion } from '../../src/core/version.js'
import { decodeHintKey, layoutGuardKey, metaKey, partitionEntryKey } from '../../src/storage/keys.js'
import { ClassicLevelEngine, type ClassicLevelEngineConfig } from '../../src/storage/classic-level-engine.js'
import { prewarmTables } from '../../src/storage/prewarm.js'
import type { StorageEngine } from '../../src/storage/engine.js'
import { storageEngineConformance } from '../conformance/storage-engine.js'
import { tempDir } from '../helpers/cluster.js'

const dirs: string[] = []
// The row cache changes how reads are answered: the contract is checked with it off, with the
// default size, and so small that entries are evicted all the time.
for (const [label, config] of [
  ['no row cache', { rowCacheBytes: 0 }],
  ['default row cache', {}],
  ['2 KiB row cache', { rowCacheBytes: 2048 }],
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

type Raw = ClassicLevel<Buffer, Buffer>
const rawStore = async <T>(dir: string, work: (raw: Raw) => Promise<T>): Promise<T> => {
  const raw = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' })
  await raw.open()
  try {
    return await work(raw)
  } finally {
    await raw.close()
  }
}
const layout1Index = { gte: Buffer.from([0xff, 0xfd]), lt: Buffer.from([0xff, 0xfe]) }
const layout2Records = { gte: Buffer.from([0xff, 0xfc]), lt: Buffer.from([0xff, 0xfd]) }
const indexEntry = (key: string): Buffer => Buffer.concat([layout1Index.gte, Buffer.from(key)])
const recordEntry = (key: string): Buffer => Buffer.concat([layout2Records.gte, Buffer.from(key)])
const partitionBytes = (partition: number): Buffer => Buffer.from([partition >> 8, partition & 0xff])

/** Every record and partition entry of a closed store, checked against each other (keys.ts, layout 2). */
async function layout2Contents(dir: string): Promise<{ records: string[]; entries: string[] }> {
  return rawStore(dir, async (raw) => {
    expect((await raw.get(metaKey('layout')))?.toString()).toBe('2')
    // What keeps a Kumo of layout 1 off the store: its index mark, and a hint key it cannot read.
    expect((await raw.get(metaKey('key-index')))?.toString()).toBe('1')
    expect(await raw.get(layoutGuardKey)).toBeDefined()
    expect(() => decodeHintKey(layoutGuardKey)).toThrow(RangeError)
    expect(await raw.keys(layout1Index).all()).toEqual([])
    const records = new Map<string, Buffer>()
    for (const [key, value] of await raw.iterator(layout2Records).all()) records.set(`${value.readUInt16BE(0)}:${key.subarray(2).toString()}`, value.subarray(2))
    const entries: string[] = []
    for (const [key, value] of await raw.iterator({ lt: Buffer.from([0x80]) }).all()) {
      const name = `${key.readUInt16BE(0)}:${key.subarray(2).toString()}`
      const record = records.get(name)
      expect(record, `the record of partition entry ${name}`).toBeDefined()
      expect(value.readUInt32BE(0)).toBe(record!.length)
      expect(value.subarray(4).equals(recordHeader(record!))).toBe(true)
      entries.push(name)
    }
    return { records: [...records.keys()].sort(), entries: entries.sort() }
  })
}

describe('classic-level storage layout', () => {
  const rec = (ms: number, value = 'v'): Buffer => encodeRecord(encodeVersion({ ms, counter: 0 }, 'n1'), Buffer.from(value))

  it('converts a store of layout 1 at open: every record read, scanned and sized as before', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      // A store as an older Kumo left it: records at their partition entries' keys, a key index
      // that misses some keys and lists one without a record, and a high-water mark.
      const keys = Array.from({ length: 2500 }, (_, i) => `key-${String(i).padStart(5, '0')}`)
      await rawStore(dir, async (raw) => {
        await raw.batch(keys.map((key, i) => ({ type: 'put' as const, key: partitionEntryKey(i % 7, Buffer.from(key)), value: rec(5, `value of ${key}`) })))
        await raw.batch(keys.slice(0, 2000).map((key, i) => ({ type: 'put' as const, key: indexEntry(key), value: partitionBytes(i % 7) })))
        await raw.put(indexEntry('gone'), partitionBytes(3))
        await raw.put(metaKey('key-index'), Buffer.from('1'))
        await raw.put(metaKey('high-water-version'), encodeVersion({ ms: 5, counter: 0 }, 'n1'))
      })
      const told: [number, boolean][] = []
      const engine = new ClassicLevelEngine(dir, { onConvert: (records, done) => told.push([records, done]) })
      await engine.open()
      try {
        expect(told).toEqual([[0, false], [2500, true], [-1, true]])
        const page = await engine.scanAcross([0, 1, 2, 3, 4, 5, 6], { limit: 5000 })
        expect(page.entries.map((e) => e.key.toString())).toEqual(keys)
        expect(page.entries.map((e) => e.partition)).toEqual(keys.map((_, i) => i % 7))
        expect(page.entries.every((e, i) => e.record.equals(rec(5, `value of ${keys[i]}`)))).toBe(true)
        expect(page.resumeAfter).toBeUndefined()
        expect((await engine.getRecords(3, [Buffer.from(keys[3]!), Buffer.from('gone')])).map((r) => r?.equals(rec(5, `value of ${keys[3]}`)))).toEqual([true, undefined])
        expect((await engine.scanPartition(2, { limit: 1000 })).map((e) => e.key.toString())).toEqual(keys.filter((_, i) => i % 7 === 2))
        const size = await engine.partitionSize(2)
        expect(size.records).toBe(keys.filter((_, i) => i % 7 === 2).length)
        expect(size.bytes).toBe(keys.filter((_, i) => i % 7 === 2).reduce((sum, key) => sum + key.length + rec(5, `value of ${key}`).length, 0))
        // Older than the mark (5): read and refused.
        expect(await engine.applyRecords([{ partition: 0, key: Buffer.from(keys[0]!), record: rec(4) }])).toEqual([false])
        expect(engine.highWaterVersion().equals(encodeVersion({ ms: 5, counter: 0 }, 'n1'))).toBe(true)
      } finally {
        await engine.close()
      }
      const contents = await layout2Contents(dir)
      expect(contents.entries).toEqual(keys.map((key, i) => `${i % 7}:${key}`).sort())
      expect(contents.records).toEqual(contents.entries)
      expect(await rawStore(dir, (raw) => raw.get(metaKey('layout-converted-through')))).toBeUndefined()
      // Opened again, nothing is converted twice.
      const told2: [number, boolean][] = []
      const again = new ClassicLevelEngine(dir, { onConvert: (records, done) => told2.push([records, done]) })
      await again.open()
      await again.close()
      expect(told2).toEqual([])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('goes on with a conversion stopped midway from the last chunk it wrote', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      // The first three records converted (their chunk's note written with them), the rest not.
      const keys = ['a', 'b', 'c', 'd', 'e', 'f']
      await rawStore(dir, async (raw) => {
        const batch = raw.batch()
        keys.forEach((key, i) => {
          const record = rec(7, `value ${key}`)
          const entry = partitionEntryKey(1, Buffer.from(key))
          if (i < 3) {
            batch.put(recordEntry(key), Buffer.concat([partitionBytes(1), record]))
            const value = Buffer.alloc(4 + recordHeader(record).length)
            value.writeUInt32BE(record.length, 0)
            recordHeader(record).copy(value, 4)
            batch.put(entry, value)
          } else batch.put(entry, record)
        })
        batch.put(metaKey('layout-converted-through'), partitionEntryKey(1, Buffer.from('c')))
        await batch.write()
      })
      const told: [number, boolean][] = []
      const engine = new ClassicLevelEngine(dir, { onConvert: (records, done) => told.push([records, done]) })
      await engine.open()
      try {
        expect(told).toEqual([[0, false], [3, true], [-1, true]])
        const page = await engine.scanAcross([0, 1], { limit: 10 })
        expect(page.entries.map((e) => `${e.key.toString()}=${e.record.equals(rec(7, `value ${e.key.toString()}`))}`)).toEqual(keys.map((key) => `${key}=true`))
      } finally {
        await engine.close()
      }
      expect((await layout2Contents(dir)).entries).toEqual(keys.map((key) => `1:${key}`))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('keeps a partition entry for exactly each record after writes, purges and a dropped partition', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      const engine = new ClassicLevelEngine(dir)
      await engine.open()
      const writes = Array.from({ length: 300 }, (_, i) => ({ partition: i % 5, key: Buffer.from(`k${i}`), record: rec(10) }))
      await engine.applyRecords(writes)
      // Old versions (read and compared, not stored), then newer and longer ones of the same keys.
      await engine.applyRecords(writes.slice(0, 50).map((w) => ({ ...w, record: rec(5) })))
      await engine.applyRecords(writes.slice(0, 50).map((w) => ({ ...w, record: rec(20, 'a longer value') })))
      await engine.purgeRecords(writes.slice(100, 150))
      await engine.dropPartition(3)
      await engine.close()
      const contents = await layout2Contents(dir)
      expect(contents.entries).toEqual(contents.records)
      expect(contents.entries.length).toBe(300 - 50 - 50)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('clears layout 1\'s index from a store without records, and marks a new store', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      // Entries left by a stopped clear of an index whose records are all gone.
      await rawStore(dir, (raw) => raw.batch([{ type: 'put', key: indexEntry('ghost'), value: partitionBytes(2) }]))
      const engine = new ClassicLevelEngine(dir)
      await engine.open()
      try {
        expect((await engine.scanAcross([0, 1, 2, 3], { limit: 10 })).entries).toEqual([])
        expect(await engine.getRecords(2, [Buffer.from('ghost')])).toEqual([undefined])
        expect(engine.hintCounts()).toEqual(new Map())
      } finally {
        await engine.close()
      }
      expect(await layout2Contents(dir)).toEqual({ records: [], entries: [] })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('refuses a store in a layout it cannot read, and leaves it as it was', async () => {
    const dir = await tempDir('kumo-engine-')
    try {
      await rawStore(dir, (raw) => raw.put(metaKey('layout'), Buffer.from('3')))
      const engine = new ClassicLevelEngine(dir)
      await expect(engine.open()).rejects.toThrow(/storage layout 3, which this version of Kumo cannot read/)
      expect((await rawStore(dir, (raw) => raw.get(metaKey('layout'))))?.toString()).toBe('3')
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
