import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { encodeRecord, recordHeader, recordVersion } from '../../src/core/record.js'
import { encodeVersion } from '../../src/core/version.js'
import { seededRandom } from '../../src/core/random.js'
import { isLastPage } from '../../src/storage/engine.js'
import type { StorageEngine } from '../../src/storage/engine.js'

export interface EngineFactory {
  /** A new, empty engine (not opened). */
  create(): Promise<StorageEngine>
  /** The same data, reopened (after close). */
  reopen(engine: StorageEngine): Promise<StorageEngine>
  cleanup(): Promise<void>
}

const rec = (ms: number, value: string | undefined, node = 'n1'): Buffer =>
  encodeRecord(encodeVersion({ ms, counter: 0 }, node), value === undefined ? undefined : Buffer.from(value))
const k = (s: string): Buffer => Buffer.from(s)

/** The contract every StorageEngine must meet. */
export function storageEngineConformance(name: string, factory: EngineFactory): void {
  describe(`StorageEngine conformance: ${name}`, () => {
    let engine: StorageEngine
    beforeEach(async () => {
      engine = await factory.create()
      await engine.open()
    })
    afterEach(async () => {
      await engine.close()
      await factory.cleanup()
    })

    it('returns undefined for keys it does not hold', async () => {
      expect(await engine.getRecords(0, [k('a'), k('b')])).toEqual([undefined, undefined])
    })

    it('answers the headers of the records it holds, and nothing where it holds none', async () => {
      const expiring = encodeRecord(encodeVersion({ ms: 9, counter: 2 }, 'n2'), Buffer.from('soon gone'), 5_000)
      await engine.applyRecords([
        { partition: 1, key: k('a'), record: rec(10, 'a value') },
        { partition: 1, key: k('t'), record: rec(11, undefined) },
        { partition: 2, key: k('x'), record: expiring },
      ])
      const headers = async (): Promise<(string | undefined)[]> =>
        (await engine.getHeadersAt([1, 1, 2, 1, 3], [k('a'), k('t'), k('x'), k('none'), k('a')])).map((h) => h?.toString('hex'))
      const hex = (record: Buffer): string => recordHeader(record).toString('hex')
      // A key asked of another partition than its own is not held there.
      expect(await headers()).toEqual([hex(rec(10, 'a value')), hex(rec(11, undefined)), hex(expiring), undefined, undefined])
      // Read whole first (a cache may hold it now), then written again: the new header.
      await engine.getRecords(1, [k('a')])
      await engine.applyRecords([{ partition: 1, key: k('a'), record: rec(12, 'newer') }])
      expect((await headers())[0]).toBe(hex(rec(12, 'newer')))
      await engine.purgeRecords([{ partition: 1, key: k('t'), record: rec(11, undefined) }])
      expect((await headers())[1]).toBeUndefined()
      // Many keys at once (an engine may read them otherwise than a few).
      const many = Array.from({ length: 300 }, (_, i) => ({ partition: 4, key: k(`m${i}`), record: rec(20 + i, `v${i}`) }))
      await engine.applyRecords(many)
      const got = await engine.getHeadersAt([...many.map(() => 4), 4], [...many.map((w) => w.key), k('m-none')])
      expect(got.map((h) => h?.toString('hex'))).toEqual([...many.map((w) => hex(w.record)), undefined])
    })

    it('lists the keys of one partition with their headers in key order, within [gte, lt) and up to a limit', async () => {
      const big = 'x'.repeat(100_000)
      const writes = ['d', 'a', 'c', 'b', 'e'].map((key, i) => ({ partition: 3, key: k(key), record: rec(30 + i, key === 'c' ? big : key === 'e' ? undefined : key) }))
      await engine.applyRecords([...writes, { partition: 4, key: k('a0'), record: rec(1, 'other') }])
      const listed = async (range: { gte?: Buffer; lt?: Buffer; limit: number }, partition = 3): Promise<[string, string][]> =>
        (await engine.scanPartitionHeaders(partition, range)).map((e) => [e.key.toString(), e.header.toString('hex')])
      const expected = (keys: string[]): [string, string][] => keys.map((key) => [key, recordHeader(writes.find((w) => w.key.toString() === key)!.record).toString('hex')])
      expect(await listed({ limit: 100 })).toEqual(expected(['a', 'b', 'c', 'd', 'e']))
      expect(await listed({ gte: k('b'), lt: k('d'), limit: 100 })).toEqual(expected(['b', 'c']))
      expect(await listed({ gte: k('b'), limit: 2 })).toEqual(expected(['b', 'c']))
      expect(await listed({ limit: 0 })).toEqual([])
      expect(await listed({ limit: 10 }, 5)).toEqual([])
      // Written again and purged: the listing follows.
      await engine.applyRecords([{ partition: 3, key: k('a'), record: rec(50, 'newer') }])
      await engine.purgeRecords([writes.find((w) => w.key.toString() === 'e')!])
      const now = await engine.scanPartitionHeaders(3, { limit: 100 })
      expect(now.map((e) => e.key.toString())).toEqual(['a', 'b', 'c', 'd'])
      expect(recordVersion(now[0]!.header)).toEqual(recordVersion(rec(50, 'newer')))
    })

    it('lists the keys and headers of a large partition page by page, each once', async () => {
      // More keys than one page, long enough that a page spans several steps of the iterator;
      // two of them expiring (their headers carry the expiry too).
      const name = (i: number): string => `${String(i).padStart(5, '0')}-${'k'.repeat(200)}`
      const writes = Array.from({ length: 2000 }, (_, i) => ({
        partition: 6,
        key: k(name(i)),
        record: i === 7 || i === 1500 ? encodeRecord(encodeVersion({ ms: 100 + i, counter: 0 }, 'n1'), Buffer.from('soon'), 60_000) : rec(100 + i, `v${i}`),
      }))
      for (let at = 0; at < writes.length; at += 500) await engine.applyRecords(writes.slice(at, at + 500))
      const seen: [string, string][] = []
      let gte: Buffer | undefined
      let pages = 0
      for (;;) {
        const page = await engine.scanPartitionHeaders(6, { gte, limit: 1000 })
        pages++
        seen.push(...page.map((e): [string, string] => [e.key.toString(), e.header.toString('hex')]))
        if (page.length < 1000) break
        gte = Buffer.concat([page[page.length - 1]!.key, Buffer.from([0])])
      }
      expect(pages).toBe(3)
      expect(seen).toEqual(writes.map((w): [string, string] => [w.key.toString(), recordHeader(w.record).toString('hex')]))
      // A range bounded above only.
      const below = await engine.scanPartitionHeaders(6, { lt: k(name(3)), limit: 1000 })
      expect(below.map((e) => e.key.toString())).toEqual([name(0), name(1), name(2)])
    })

    it('stores a record and returns it byte for byte', async () => {
      const r = rec(10, 'hello')
      expect(await engine.applyRecords([{ partition: 3, key: k('a'), record: r }])).toEqual([true])
      expect(await engine.getRecords(3, [k('a')])).toEqual([r])
      // Partitions are separate key spaces.
      expect(await engine.getRecords(4, [k('a')])).toEqual([undefined])
    })

    it('keeps the newest version: older and equal writes are ignored', async () => {
      const newer = rec(20, 'new')
      await engine.applyRecords([{ partition: 0, key: k('x'), record: newer }])
      expect(await engine.applyRecords([{ partition: 0, key: k('x'), record: rec(10, 'old') }])).toEqual([false])
      expect(await engine.applyRecords([{ partition: 0, key: k('x'), record: newer }])).toEqual([false])
      expect(await engine.getRecords(0, [k('x')])).toEqual([newer])
      const tie = rec(20, 'same time, higher node', 'n2')
      expect(await engine.applyRecords([{ partition: 0, key: k('x'), record: tie }])).toEqual([true])
      expect(await engine.getRecords(0, [k('x')])).toEqual([tie])
    })

    it('resolves writes to one key within one call and across concurrent calls', async () => {
      const results = await Promise.all([
        engine.applyRecords([
          { partition: 1, key: k('y'), record: rec(5, 'a') },
          { partition: 1, key: k('y'), record: rec(7, 'c') },
          { partition: 1, key: k('y'), record: rec(6, 'b') },
        ]),
        engine.applyRecords([{ partition: 1, key: k('y'), record: rec(4, 'z') }]),
      ])
      expect(results[0]).toEqual([true, true, false])
      const [held] = await engine.getRecords(1, [k('y')])
      expect(recordVersion(held!)).toEqual(recordVersion(rec(7, 'c')))
    })

    it('applies ascending writes in order, the later write to a key winning, and still refuses older ones', async () => {
      // One writer's stream: every version above the last (engines may skip the version check).
      expect(
        await engine.applyRecords([
          { partition: 2, key: k('s'), record: rec(100, 'first') },
          { partition: 2, key: k('t'), record: rec(101, 'other') },
          { partition: 2, key: k('s'), record: rec(102, 'second') },
        ]),
      ).toEqual([true, true, true])
      expect(await engine.getRecords(2, [k('s'), k('t')])).toEqual([rec(102, 'second'), rec(101, 'other')])
      expect(await engine.applyRecords([{ partition: 2, key: k('s'), record: rec(101, 'late') }])).toEqual([false])
      expect(await engine.applyRecords([{ partition: 2, key: k('u'), record: rec(50, 'late but new key') }])).toEqual([true])
      engine = await factory.reopen(engine)
      expect(await engine.applyRecords([{ partition: 2, key: k('s'), record: rec(101, 'late') }])).toEqual([false])
      expect(await engine.getRecords(2, [k('s')])).toEqual([rec(102, 'second')])
    })

    it('keeps last-writer-wins per key when writers interleave across partitions and restarts', async () => {
      const w = (partition: number, key: string, ms: number): { partition: number; key: Buffer; record: Buffer } => ({ partition, key: k(key), record: rec(ms, `${key}@${ms}`) })
      expect(await engine.applyRecords([w(5, 'a', 100), w(6, 'x', 200)])).toEqual([true, true])
      // Below the newest write overall but above partition 5's: a new key, then an update.
      expect(await engine.applyRecords([w(5, 'b', 150)])).toEqual([true])
      expect(await engine.applyRecords([w(5, 'a', 120)])).toEqual([true])
      expect(await engine.applyRecords([w(5, 'a', 110), w(5, 'b', 140)])).toEqual([false, false])
      engine = await factory.reopen(engine)
      // After a restart, an older write to one key must not lower what later writes are checked against.
      expect(await engine.applyRecords([w(5, 'c', 50)])).toEqual([true])
      expect(await engine.applyRecords([w(5, 'a', 60)])).toEqual([false])
      expect(await engine.getRecords(5, [k('a'), k('b'), k('c')])).toEqual([rec(120, 'a@120'), rec(150, 'b@150'), rec(50, 'c@50')])
      expect(await engine.getRecords(6, [k('x')])).toEqual([rec(200, 'x@200')])
    })

    it('matches a last-writer-wins model over random interleaved writers, batches and restarts', async () => {
      const random = seededRandom(20261123)
      const pick = (n: number): number => Math.floor(random() * n)
      const model = new Map<string, Buffer>()
      const clocks = [1000, 1000, 1000]
      const key = (partition: number, name: string): string => `${partition}/${name}`
      for (let round = 0; round < 100; round++) {
        // A few concurrent calls per round, each a batch from one of three writers whose clocks
        // drift apart; sometimes a replay of an old version (a late replica or hint).
        const calls = Array.from({ length: 1 + pick(3) }, () => {
          const writer = pick(3)
          return Array.from({ length: 1 + pick(6) }, () => {
            // A key is in one partition (the partitioner's): its name says which.
            const partition = pick(4)
            const name = `p${partition}k${pick(8)}`
            clocks[writer] += pick(3)
            const ms = random() < 0.3 ? 900 + pick(clocks[writer]! - 900) : clocks[writer]!
            const record = rec(ms, random() < 0.1 ? undefined : `${writer}:${ms}`, `w${writer}`)
            return { partition, key: k(name), record }
          })
        })
        // Reads race the writes (an engine that caches records must not keep one a write replaced).
        const racing = Array.from({ length: 4 }, (_, p) => engine.getRecords(p, Array.from({ length: 8 }, (_, n) => k(`p${p}k${n}`))))
        await Promise.all([...calls.map((writes) => engine.applyRecords(writes)), ...racing])
        for (const writes of calls) {
          for (const w of writes) {
            const id = key(w.partition, w.key.toString())
            const held = model.get(id)
            if (held === undefined || Buffer.compare(recordVersion(w.record), recordVersion(held)) > 0) model.set(id, w.record)
          }
        }
        for (let p = 0; p < 4; p++) {
          const names = Array.from({ length: 8 }, (_, n) => `p${p}k${n}`)
          expect(await engine.getRecords(p, names.map(k)), `round ${round}, partition ${p}`).toEqual(names.map((n) => model.get(key(p, n))))
        }
        if (round % 10 === 9) engine = await factory.reopen(engine)
      }
      for (const [id, record] of model) {
        const [partition, name] = id.split('/') as [string, string]
        expect(await engine.getRecords(Number(partition), [k(name)])).toEqual([record])
      }
    })

    it('reads the newest record after writes, in small and large reads alike', async () => {
      const names = Array.from({ length: 300 }, (_, i) => k(`key${i}`))
      await engine.applyRecords(names.map((key) => ({ partition: 1, key, record: rec(1, 'first') })))
      // Small (a few keys) and large (hundreds) reads may take different paths through an engine.
      expect(await engine.getRecords(1, names.slice(0, 3))).toEqual([rec(1, 'first'), rec(1, 'first'), rec(1, 'first')])
      expect((await engine.getRecords(1, names)).every((r) => r?.equals(rec(1, 'first')))).toBe(true)
      for (let v = 2; v < 6; v++) {
        // A read issued while the write is in flight may see either; one after it sees the write.
        const during = engine.getRecords(1, names.slice(0, 3))
        await engine.applyRecords(names.map((key) => ({ partition: 1, key, record: rec(v, `v${v}`) })))
        expect((await during).every((r) => r?.equals(rec(v, `v${v}`)) || r?.equals(rec(v - 1, v === 2 ? 'first' : `v${v - 1}`)))).toBe(true)
        expect(await engine.getRecords(1, names.slice(0, 3))).toEqual([rec(v, `v${v}`), rec(v, `v${v}`), rec(v, `v${v}`)])
        expect((await engine.getRecords(1, names)).every((r) => r?.equals(rec(v, `v${v}`)))).toBe(true)
      }
    })

    it('a large read racing writes never leaves later reads stale', async () => {
      // Large reads may run off the calling thread while writes commit; whatever an engine
      // keeps from such a read, every read after a write has resolved sees that write.
      const names = Array.from({ length: 300 }, (_, i) => k(`key${i}`))
      for (let v = 1; v <= 40; v++) {
        await engine.applyRecords(names.map((key) => ({ partition: 2, key, record: rec(2 * v, 'all') })))
        const racing = engine.getRecords(2, names)
        await engine.applyRecords([{ partition: 2, key: names[0]!, record: rec(2 * v + 1, 'one') }])
        await racing
        expect(await engine.getRecords(2, [names[0]!])).toEqual([rec(2 * v + 1, 'one')])
        expect((await engine.getRecords(2, names))[0]).toEqual(rec(2 * v + 1, 'one'))
      }
    })

    it('stores tombstones like any other version', async () => {
      await engine.applyRecords([{ partition: 0, key: k('d'), record: rec(1, 'v') }])
      const tomb = rec(2, undefined)
      expect(await engine.applyRecords([{ partition: 0, key: k('d'), record: tomb }])).toEqual([true])
      expect(await engine.getRecords(0, [k('d')])).toEqual([tomb])
      expect(await engine.applyRecords([{ partition: 0, key: k('d'), record: rec(1, 'v') }])).toEqual([false])
    })

    it('purges a record only while it is still the stored one', async () => {
      const tomb = rec(5, undefined)
      await engine.applyRecords([
        { partition: 2, key: k('gone'), record: tomb },
        { partition: 2, key: k('kept'), record: rec(5, undefined) },
      ])
      // Read first: whatever an engine keeps of a read must not outlive the purge.
      expect(await engine.getRecords(2, [k('gone'), k('kept')])).toEqual([tomb, rec(5, undefined)])
      // A newer write lands on 'kept' before the purge runs: it must survive.
      const newer = rec(6, 'back')
      await engine.applyRecords([{ partition: 2, key: k('kept'), record: newer }])
      expect(
        await engine.purgeRecords([
          { partition: 2, key: k('gone'), record: tomb },
          { partition: 2, key: k('kept'), record: rec(5, undefined) },
          { partition: 2, key: k('never'), record: tomb },
        ]),
      ).toEqual([true, false, false])
      expect(await engine.getRecords(2, [k('gone'), k('kept')])).toEqual([undefined, newer])
      // Purge and write to one key in flight together keep their order.
      const [purged, written] = await Promise.all([
        engine.purgeRecords([{ partition: 2, key: k('kept'), record: newer }]),
        engine.applyRecords([{ partition: 2, key: k('kept'), record: rec(7, 'later') }]),
      ])
      expect(purged).toEqual([true])
      expect(written).toEqual([true])
      expect((await engine.getRecords(2, [k('kept')]))[0]).toEqual(rec(7, 'later'))
    })

    it('scans one partition in key order within [gte, lt) and up to a limit', async () => {
      const keys = ['b', 'a', 'd', 'c', 'e']
      await engine.applyRecords(keys.map((key) => ({ partition: 2, key: k(key), record: rec(1, key) })))
      await engine.applyRecords([{ partition: 3, key: k('a0'), record: rec(1, 'other') }])
      const all = await engine.scanPartition(2, { limit: 100 })
      expect(all.map((e) => e.key.toString())).toEqual(['a', 'b', 'c', 'd', 'e'])
      const range = await engine.scanPartition(2, { gte: k('b'), lt: k('d'), limit: 100 })
      expect(range.map((e) => e.key.toString())).toEqual(['b', 'c'])
      expect((await engine.scanPartition(2, { gte: k('b'), limit: 2 })).map((e) => e.key.toString())).toEqual(['b', 'c'])
      expect(await engine.scanPartition(2, { limit: 0 })).toEqual([])
      expect(await engine.scanPartition(5, { limit: 10 })).toEqual([])
    })

    it('counts the records and bytes of one partition, tombstones included', async () => {
      expect(await engine.partitionSize(4)).toEqual({ records: 0, bytes: 0 })
      const records = ['a', 'bb', 'ccc'].map((key) => ({ partition: 4, key: k(key), record: rec(1, key.repeat(10)) }))
      await engine.applyRecords([...records, { partition: 5, key: k('other'), record: rec(1, 'x') }])
      await engine.applyRecords([{ partition: 4, key: k('gone'), record: rec(2, undefined) }])
      const bytes = records.reduce((sum, r) => sum + r.key.length + r.record.length, 0) + 'gone'.length + rec(2, undefined).length
      expect(await engine.partitionSize(4)).toEqual({ records: 4, bytes })
    })

    it('ends a scan page at a byte bound, and leaves large values out of it, to be read by key', async () => {
      const big = 'x'.repeat(5000)
      await engine.applyRecords(['a', 'b', 'c', 'd'].map((key) => ({ partition: 4, key: k(key), record: rec(1, key === 'b' ? big : key) })))
      // bytesMax: the page ends after the entry that reaches it; a short page under it is the end.
      const range = { limit: 100, bytesMax: 30 }
      const first = await engine.scanPartition(4, range)
      expect(first.length).toBeGreaterThanOrEqual(1)
      expect(first.length).toBeLessThan(4)
      expect(isLastPage(first, range)).toBe(false)
      const keys: string[] = []
      let gte: Buffer | undefined
      for (;;) {
        const page = await engine.scanPartition(4, { ...range, gte })
        keys.push(...page.map((e) => e.key.toString()))
        if (isLastPage(page, { ...range, gte })) break
        gte = Buffer.concat([page[page.length - 1]!.key, Buffer.from([0])])
      }
      expect(keys).toEqual(['a', 'b', 'c', 'd'])
      // valueBytesMax: b's record comes back empty (left out); the rest whole.
      const omitting = await engine.scanPartition(4, { limit: 100, valueBytesMax: 1000 })
      expect(omitting.map((e) => [e.key.toString(), e.record.length === 0])).toEqual([['a', false], ['b', true], ['c', false], ['d', false]])
      expect((await engine.getRecords(4, [k('b')]))[0]).toEqual(rec(1, big))
    })

    it('scans across partitions in key order, only the partitions asked for, within [gte, lt) and up to a limit', async () => {
      // A user key is in one partition (the partitioner's): here the partition is its first letter's.
      const place = (key: string): number => key.charCodeAt(0) - 'a'.charCodeAt(0)
      const keys = ['c2', 'a1', 'b1', 'a2', 'c1', 'd1', 'b2']
      await engine.applyRecords(keys.map((key) => ({ partition: place(key), key: k(key), record: rec(1, key) })))
      const scan = async (partitions: number[], range: { gte?: Buffer; lt?: Buffer; limit: number }): Promise<[string[], string | undefined]> => {
        const page = await engine.scanAcross(partitions, range)
        for (const e of page.entries) expect(e.partition).toBe(place(e.key.toString()))
        return [page.entries.map((e) => e.key.toString()), page.resumeAfter?.toString()]
      }
      expect(await scan([0, 1, 2, 3], { limit: 100 })).toEqual([['a1', 'a2', 'b1', 'b2', 'c1', 'c2', 'd1'], undefined])
      expect(await scan([0, 2], { limit: 100 })).toEqual([['a1', 'a2', 'c1', 'c2'], undefined])
      expect(await scan([3, 1], { gte: k('b2'), lt: k('d1'), limit: 100 })).toEqual([['b2'], undefined])
      expect(await scan([0, 1, 2, 3], { gte: k('a2'), limit: 3 })).toEqual([['a2', 'b1', 'b2'], 'b2'])
      expect(await scan([0, 1, 2, 3], { limit: 0 })).toEqual([[], undefined])
      expect(await scan([], { limit: 10 })).toEqual([[], undefined])
      expect(await scan([9], { limit: 10 })).toEqual([[], undefined])
      // A page that may examine few keys may end early, where it stopped, with what it found
      // so far; paging on from there finds the rest.
      const found: string[] = []
      let gte: Buffer | undefined
      for (let pages = 0; ; pages++) {
        expect(pages).toBeLessThan(10)
        const page = await engine.scanAcross([3, 2], { gte, limit: 10, examineMax: 2 })
        expect(page.entries.length).toBeLessThanOrEqual(2)
        found.push(...page.entries.map((e) => e.key.toString()))
        if (page.resumeAfter === undefined) break
        gte = Buffer.concat([page.resumeAfter, Buffer.from([0])])
      }
      expect(found).toEqual(['c1', 'c2', 'd1'])
    })

    it('scans across partitions page by page within a byte bound, leaving large values out', async () => {
      const big = 'x'.repeat(5000)
      await engine.applyRecords(['a', 'b', 'c', 'd'].map((key, i) => ({ partition: i, key: k(key), record: rec(1, key === 'b' ? big : key) })))
      const range = { limit: 100, bytesMax: 30 }
      const keys: string[] = []
      let gte: Buffer | undefined
      for (let pages = 0; ; pages++) {
        expect(pages).toBeLessThan(10)
        const page = await engine.scanAcross([0, 1, 2, 3], { ...range, gte })
        keys.push(...page.entries.map((e) => e.key.toString()))
        if (page.resumeAfter === undefined) break
        gte = Buffer.concat([page.resumeAfter, Buffer.from([0])])
      }
      expect(keys).toEqual(['a', 'b', 'c', 'd'])
      const omitting = await engine.scanAcross([0, 1, 2, 3], { limit: 100, valueBytesMax: 1000 })
      expect(omitting.entries.map((e) => [e.key.toString(), e.record.length === 0])).toEqual([['a', false], ['b', true], ['c', false], ['d', false]])
    })

    it('scans across partitions what every kind of write, purge and drop left, also after a reopen (random histories)', async () => {
      const random = seededRandom(20261130)
      const partitions = 6
      // The model: per key, its partition and newest record.
      const model = new Map<string, { partition: number; record: Buffer }>()
      const placeOf = (key: string): number => Number(key.slice(1)) % partitions
      let ms = 1
      for (let round = 0; round < 40; round++) {
        const action = random()
        if (action < 0.6) {
          // A batch of puts: fresh versions (no read needed) or, now and then, old ones (read and compared).
          const stale = random() < 0.3
          const writes = Array.from({ length: 1 + Math.floor(random() * 20) }, () => {
            const key = `k${Math.floor(random() * 60)}`
            const version = stale ? Math.max(1, ms - Math.floor(random() * 50)) : ++ms
            return { partition: placeOf(key), key: k(key), record: rec(version, random() < 0.2 ? undefined : `v${version}`) }
          })
          const applied = await engine.applyRecords(writes)
          writes.forEach((w, i) => {
            if (applied[i]) model.set(w.key.toString(), { partition: w.partition, record: w.record })
          })
        } else if (action < 0.8) {
          const held = [...model.entries()].filter(() => random() < 0.3)
          const purged = await engine.purgeRecords(held.map(([key, m]) => ({ partition: m.partition, key: k(key), record: m.record })))
          held.forEach(([key], i) => {
            if (purged[i]) model.delete(key)
          })
        } else if (action < 0.9) {
          const partition = Math.floor(random() * partitions)
          await engine.dropPartition(partition)
          for (const [key, m] of model) if (m.partition === partition) model.delete(key)
        } else {
          engine = await factory.reopen(engine)
        }
        const asked = Array.from({ length: partitions }, (_, p) => p).filter(() => random() < 0.7)
        const expected = [...model.entries()]
          .filter(([, m]) => asked.includes(m.partition))
          .sort(([a], [b]) => Buffer.compare(k(a), k(b)))
          .map(([key, m]) => [key, m.record.toString('hex')])
        const seen: string[][] = []
        let gte: Buffer | undefined
        for (let pages = 0; ; pages++) {
          expect(pages).toBeLessThan(200)
          const page = await engine.scanAcross(asked, { gte, limit: 1 + Math.floor(random() * 8), examineMax: 1 + Math.floor(random() * 10) })
          seen.push(...page.entries.map((e) => [e.key.toString(), e.record.toString('hex')]))
          if (page.resumeAfter === undefined) break
          gte = Buffer.concat([page.resumeAfter, Buffer.from([0])])
        }
        expect(seen).toEqual(expected)
      }
    })

    it('reads hints after a given one and within a byte bound', async () => {
      await engine.putHints(['a', 'b', 'c'].map((key) => ({ target: 'n9', partition: 1, key: k(key), record: rec(1, key) })), 2000)
      const [first, ...rest] = await engine.readHints('n9', 10)
      expect(rest.map((h) => h.key.toString())).toEqual(['b', 'c'])
      expect((await engine.readHints('n9', 10, { after: first!.id })).map((h) => h.key.toString())).toEqual(['b', 'c'])
      expect((await engine.readHints('n9', 10, { bytesMax: 1 })).map((h) => h.key.toString())).toEqual(['a'])
    })

    it('drops a whole partition', async () => {
      await engine.applyRecords([
        { partition: 6, key: k('a'), record: rec(1, 'a') },
        { partition: 6, key: k('c'), record: rec(1, 'c') },
        { partition: 7, key: k('b'), record: rec(1, 'b') },
      ])
      expect((await engine.getRecords(6, [k('a')]))[0]).toBeDefined()
      await engine.dropPartition(6)
      expect(await engine.getRecords(6, [k('a'), k('c')])).toEqual([undefined, undefined])
      expect((await engine.getRecords(7, [k('b')]))[0]).toBeDefined()
      expect(await engine.scanPartition(6, { limit: 10 })).toEqual([])
      expect(await engine.partitionSize(6)).toEqual({ records: 0, bytes: 0 })
      expect((await engine.scanAcross([6, 7], { limit: 10 })).entries.map((e) => e.key.toString())).toEqual(['b'])
    })

    it('holds hints per target, oldest first, until deleted', async () => {
      await engine.putHints(
        [
          { target: 'n2', partition: 1, key: k('a'), record: rec(1, 'a') },
          { target: 'n3', partition: 1, key: k('b'), record: rec(1, 'b') },
          { target: 'n2', partition: 2, key: k('c'), record: rec(2, 'c') },
        ],
        1000,
      )
      expect(engine.hintCounts()).toEqual(new Map([['n2', 2], ['n3', 1]]))
      const hints = await engine.readHints('n2', 10)
      expect(hints.map((h) => [h.partition, h.key.toString(), h.storedAtMs])).toEqual([
        [1, 'a', 1000],
        [2, 'c', 1000],
      ])
      await engine.deleteHints([hints[0]!.id])
      await engine.deleteHints([hints[0]!.id]) // deleting twice is harmless
      expect(engine.hintCounts().get('n2')).toBe(1)
      expect((await engine.readHints('n2', 10)).map((h) => h.key.toString())).toEqual(['c'])
      // Hints are not data.
      expect(await engine.getRecords(1, [k('a')])).toEqual([undefined])
    })

    it('still refuses older versions after a reopen', async () => {
      const newer = rec(50, 'new')
      await engine.applyRecords([{ partition: 0, key: k('r'), record: newer }])
      engine = await factory.reopen(engine)
      expect(await engine.applyRecords([{ partition: 0, key: k('r'), record: rec(40, 'old') }])).toEqual([false])
      expect(await engine.applyRecords([{ partition: 0, key: k('other'), record: rec(40, 'old but first') }])).toEqual([true])
      expect(await engine.getRecords(0, [k('r')])).toEqual([newer])
      expect(await engine.applyRecords([{ partition: 0, key: k('r'), record: rec(60, 'newest') }])).toEqual([true])
      expect(engine.highWaterVersion()).toEqual(encodeVersion({ ms: 60, counter: 0 }, 'n1'))
    })

    it('refuses hints past a per-target limit, counting writes still in flight', async () => {
      const hint = (target: string, key: string) => ({ target, partition: 1, key: k(key), record: rec(1, key) })
      const results = await Promise.allSettled([
        engine.putHints([hint('n2', 'a'), hint('n2', 'b')], 10, 3),
        engine.putHints([hint('n2', 'c'), hint('n2', 'd')], 10, 3),
        engine.putHints([hint('n3', 'e')], 10, 3),
      ])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
      expect((results[1] as PromiseRejectedResult).reason.code).toBe('OVERLOADED')
      expect(engine.hintCounts()).toEqual(new Map([['n2', 2], ['n3', 1]]))
    })

    it('keeps records, hints and metadata across a reopen', async () => {
      const r = rec(3, 'kept')
      await engine.applyRecords([{ partition: 9, key: k('p'), record: r }])
      await engine.putHints([{ target: 'n9', partition: 9, key: k('p'), record: r }], 5)
      await engine.putMeta('thing', Buffer.from('value'))
      engine = await factory.reopen(engine)
      expect(await engine.getRecords(9, [k('p')])).toEqual([r])
      expect(engine.hintCounts().get('n9')).toBe(1)
      expect((await engine.getMeta('thing'))?.toString()).toBe('value')
      expect(await engine.getMeta('nothing')).toBeUndefined()
    })
  })
}
