import { describe, expect, it } from 'vitest'
import { encodeRecord, liveValue } from '../../src/core/record.js'
import { seededRandom } from '../../src/core/random.js'
import { encodeVersion } from '../../src/core/version.js'
import { mergedScan, type ScanSource } from '../../src/node/merged-scan.js'
import { mergePages, partitionShare } from '../../src/storage/merge-pages.js'
import type { ScanEntry, ScanPage } from '../../src/storage/engine.js'

const record = (value: string | undefined): Buffer => encodeRecord(encodeVersion({ ms: 1, counter: 0 }, 'n1'), value === undefined ? undefined : Buffer.from(value))

/** A page of `entries` (sorted) as a scan across partitions would answer it: from gte, at most limit, or examineMax examined. */
function pageOf(entries: readonly ScanEntry[], partitions: readonly number[], gte: Buffer | undefined, lt: Buffer | undefined, limit: number, examineMax: number): ScanPage {
  const out: ScanEntry[] = []
  let examined = 0
  for (const entry of entries) {
    if (gte !== undefined && Buffer.compare(entry.key, gte) < 0) continue
    if (lt !== undefined && Buffer.compare(entry.key, lt) >= 0) break
    examined++
    if (partitions.includes(entry.partition)) {
      out.push(entry)
      if (out.length >= limit) return { entries: out, resumeAfter: entry.key }
    }
    if (examined >= examineMax) return { entries: out, resumeAfter: entry.key }
  }
  return { entries: out }
}

describe('mergePages', () => {
  it('merges pages of disjoint groups into one key-ordered page, never past where a page that goes on reached', () => {
    const e = (key: string, partition: number): ScanEntry => ({ key: Buffer.from(key), partition, record: record(key) })
    const merged = mergePages([{ entries: [e('a', 0), e('d', 0)], resumeAfter: Buffer.from('d') }, { entries: [e('b', 1), e('c', 1), e('f', 1)] }], 10)
    expect(merged.entries.map((x) => x.key.toString())).toEqual(['a', 'b', 'c', 'd'])
    expect(merged.resumeAfter?.toString()).toBe('d')
    const limited = mergePages([{ entries: [e('a', 0), e('d', 0)] }, { entries: [e('b', 1), e('c', 1)] }], 3)
    expect([limited.entries.map((x) => x.key.toString()), limited.resumeAfter?.toString()]).toEqual([['a', 'b', 'c'], 'c'])
    expect(mergePages([{ entries: [e('a', 0)] }, { entries: [] }], 3)).toEqual({ entries: [e('a', 0)] })
  })
})

describe('partitionShare', () => {
  it('gives each of n partitions about twice its share of entries and its share of bytes, the whole page to one', () => {
    expect(partitionShare({ limit: 100, bytesMax: 4 << 20 }, 1)).toEqual({ limit: 100, bytesMax: 4 << 20 })
    expect(partitionShare({ limit: 100, bytesMax: 4 << 20 }, 256)).toEqual({ limit: 4, bytesMax: 16384, valueBytesMax: 4096 })
    expect(partitionShare({ limit: 1000, bytesMax: 4 << 20, valueBytesMax: 100 }, 4)).toEqual({ limit: 500, bytesMax: 1 << 20, valueBytesMax: 100 })
    expect(partitionShare({ limit: 1000, examineMax: 8 }, 4)).toEqual({ limit: 2, examineMax: 8, bytesMax: Infinity })
  })
})

describe('mergedScan over groups of partitions (random data, groups, pages and failures)', () => {
  it('returns every live record in the bounds, in key order, up to the limit, once', async () => {
    for (let seed = 1; seed <= 60; seed++) {
      const random = seededRandom(seed)
      const partitions = 1 + Math.floor(random() * 16)
      const entries: ScanEntry[] = Array.from({ length: Math.floor(random() * 300) }, (_, i) => {
        const key = Buffer.from(`k${String(Math.floor(random() * 100_000)).padStart(6, '0')}-${i}`)
        return { key, partition: Math.floor(random() * partitions), record: record(random() < 0.15 ? undefined : `v${i}`) }
      }).sort((a, b) => Buffer.compare(a.key, b.key))
      // Groups as a node's share of the partitions; a page of a group may fail over to
      // several other groups (merged), as a node does when a replica fails.
      const groupCount = 1 + Math.floor(random() * Math.min(4, partitions))
      const groups = Array.from({ length: groupCount }, () => [] as number[])
      for (let p = 0; p < partitions; p++) groups[p % groupCount]!.push(p)
      const examineMax = 1 + Math.floor(random() * 40)
      const source: ScanSource = {
        groups: () => groups,
        page: async (asked, gte, lt, limit) => {
          if (asked.length > 1 && random() < 0.3) {
            const half = Math.ceil(asked.length / 2)
            return mergePages([pageOf(entries, asked.slice(0, half), gte, lt, limit, examineMax), pageOf(entries, asked.slice(half), gte, lt, limit, examineMax)], limit)
          }
          return pageOf(entries, asked, gte, lt, limit, examineMax)
        },
        record: async () => undefined,
      }
      const gte = random() < 0.5 ? Buffer.from(`k${String(Math.floor(random() * 50_000)).padStart(6, '0')}`) : undefined
      const lt = random() < 0.5 ? Buffer.from(`k${String(50_000 + Math.floor(random() * 50_000)).padStart(6, '0')}`) : undefined
      const limit = random() < 0.3 ? 0 : 1 + Math.floor(random() * 120)
      const expected = entries
        .filter((e) => (gte === undefined || Buffer.compare(e.key, gte) >= 0) && (lt === undefined || Buffer.compare(e.key, lt) < 0))
        .filter((e) => liveValue(e.record, 0) !== undefined)
        .map((e) => e.key.toString())
      const seen: string[] = []
      for await (const page of mergedScan({ gte, lt }, limit, 1 + Math.floor(random() * 50), 1 << 20, source, () => 0)) seen.push(...page.map((e) => e.key.toString()))
      expect(seen, `seed ${seed}`).toEqual(limit === 0 ? expected : expected.slice(0, limit))
    }
  })
})
