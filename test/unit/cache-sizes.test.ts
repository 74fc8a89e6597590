import { describe, expect, it } from 'vitest'
import { formatCaches } from '../../src/cli/status.js'
import { cacheBytesMax, cacheBytesMin, defaultCacheSizes, defaultOpenTables, openTablesMax, openTablesMin } from '../../src/core/cache-sizes.js'
import { levelFilesOf, settledInOneLevel, tableFilesOf } from '../../src/storage/full-compaction.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB

describe('default cache sizes from the machine', () => {
  it('give one sixty-fourth of memory, three quarters to the block cache', () => {
    expect(defaultCacheSizes(24 * GiB)).toEqual({ blockCacheBytes: 288 * MiB, rowCacheBytes: 96 * MiB })
    expect(defaultCacheSizes(8 * GiB)).toEqual({ blockCacheBytes: 96 * MiB, rowCacheBytes: 32 * MiB })
  })

  it('stay within the floor and the cap, in whole MiB, whatever the memory', () => {
    for (let bytes = 1; bytes < 4096 * GiB; bytes = Math.ceil(bytes * 1.7)) {
      const { blockCacheBytes, rowCacheBytes } = defaultCacheSizes(bytes)
      const total = blockCacheBytes + rowCacheBytes
      expect(total).toBeGreaterThanOrEqual(cacheBytesMin)
      expect(total).toBeLessThanOrEqual(cacheBytesMax)
      expect(blockCacheBytes % MiB).toBe(0)
      expect(rowCacheBytes % MiB).toBe(0)
      expect(blockCacheBytes).toBeGreaterThanOrEqual(rowCacheBytes * 3)
    }
  })

  it('refuse a memory size that is not one', () => {
    expect(() => defaultCacheSizes(0)).toThrow()
    expect(() => defaultCacheSizes(Number.NaN)).toThrow()
  })
})

describe('table files kept open', () => {
  it('are as many as one sixty-fourth of memory holds at 32 KiB each, within 1,000 and 100,000', () => {
    expect(defaultOpenTables(24 * GiB)).toBe(12_288)
    expect(defaultOpenTables(8 * GiB)).toBe(4096)
    expect(defaultOpenTables(1 * GiB)).toBe(openTablesMin)
    expect(defaultOpenTables(1024 * GiB)).toBe(openTablesMax)
    for (let bytes = 1; bytes < 4096 * GiB; bytes = Math.ceil(bytes * 1.7)) {
      const n = defaultOpenTables(bytes)
      expect(Number.isSafeInteger(n) && n >= openTablesMin && n <= openTablesMax).toBe(true)
    }
    expect(() => defaultOpenTables(-1)).toThrow()
  })

  it("are counted from LevelDB's stats, level by level", () => {
    const stats = '                               Compactions\nLevel  Files Size(MB) Time(sec) Read(MB) Write(MB)\n--------------------------------------------------\n  0        2        4         0        0         4\n  2      103      205         1        3         9\n  3     1275     2550        40       80       160\n'
    expect(tableFilesOf(stats)).toBe(1380)
    expect(tableFilesOf('')).toBe(0)
    expect(levelFilesOf(stats)).toEqual([{ level: 0, files: 2 }, { level: 2, files: 103 }, { level: 3, files: 1275 }])
    // Levels 2 and 3 both hold data: reads look in both, and a full compaction goes on.
    expect(settledInOneLevel(levelFilesOf(stats))).toBe(false)
    expect(settledInOneLevel([{ level: 0, files: 2 }, { level: 1, files: 1 }, { level: 4, files: 1275 }])).toBe(true)
    expect(settledInOneLevel([])).toBe(true)
  })

  it('show in kumo status beside the caches, marked when reads reopen files', () => {
    const figures = { blockCacheBytes: 288 * MiB, rowCacheBytes: 96 * MiB, rowCacheHits: 41, rowCacheMisses: 59, storageMemoryBytes: 0, tableFiles: 1380, openTablesMax: 1000 }
    expect(formatCaches(figures)).toBe('block 288M row 96M hit 41% tables 1380/1000!')
    expect(formatCaches({ ...figures, openTablesMax: 12_288 })).toBe('block 288M row 96M hit 41% tables 1380/12288')
    // A node from before the figure was reported.
    expect(formatCaches({ ...figures, tableFiles: 0, openTablesMax: 0 })).toBe('block 288M row 96M hit 41%')
  })
})
