import { describe, expect, it } from 'vitest'
import { formatCaches } from '../../src/cli/status.js'
import { cacheBytesMax, cacheBytesMin, defaultCacheSizes, defaultOpenTables, defaultOpenTablesMin, defaultPrewarmBytes, defaultTableFileBytes, openTablesLimit } from '../../src/core/cache-sizes.js'
import { settledInOneLevel } from '../../src/storage/full-compaction.js'
import { levelFilesOf, tableFilesOf } from '../../src/storage/leveldb-stats.js'

const MiB = 1024 * 1024
const GiB = 1024 * MiB

describe('default cache sizes from the machine', () => {
  it('give one hundred-and-twenty-eighth of memory, three quarters to the block cache', () => {
    expect(defaultCacheSizes(24 * GiB)).toEqual({ blockCacheBytes: 144 * MiB, rowCacheBytes: 48 * MiB })
    expect(defaultCacheSizes(64 * GiB)).toEqual({ blockCacheBytes: 384 * MiB, rowCacheBytes: 128 * MiB })
    expect(defaultCacheSizes(8 * GiB)).toEqual({ blockCacheBytes: 48 * MiB, rowCacheBytes: 16 * MiB })
    expect(defaultCacheSizes(4 * GiB)).toEqual({ blockCacheBytes: 48 * MiB, rowCacheBytes: 16 * MiB })
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
  it('are as many as one sixty-fourth of memory holds at a sixty-fourth of a file each, within 1,000 and 50,000', () => {
    expect(defaultTableFileBytes).toBe(8 * MiB)
    expect(defaultOpenTables(24 * GiB)).toBe(3072)
    expect(defaultOpenTables(8 * GiB)).toBe(1024)
    expect(defaultOpenTables(4 * GiB)).toBe(defaultOpenTablesMin)
    expect(defaultOpenTables(24 * GiB, 2 * MiB)).toBe(12_288)
    expect(defaultOpenTables(24 * GiB, 64 * MiB)).toBe(defaultOpenTablesMin)
    expect(defaultOpenTables(1 * GiB)).toBe(defaultOpenTablesMin)
    expect(defaultOpenTables(1024 * GiB)).toBe(openTablesLimit)
    for (let bytes = 1; bytes < 4096 * GiB; bytes = Math.ceil(bytes * 1.7)) {
      const n = defaultOpenTables(bytes)
      expect(Number.isSafeInteger(n) && n >= defaultOpenTablesMin && n <= openTablesLimit).toBe(true)
    }
    expect(() => defaultOpenTables(-1)).toThrow()
    expect(() => defaultOpenTables(GiB, 0)).toThrow()
  })

  it("are counted from LevelDB's stats, level by level", () => {
    const stats = '                               Compactions\nLevel  Files Size(MB) Time(sec) Read(MB) Write(MB)\n--------------------------------------------------\n  0        2        4         0        0         4\n  2      103      205         1        3         9\n  3     1275     2550        40       80       160\n'
    expect(tableFilesOf(stats)).toBe(1380)
    expect(tableFilesOf('')).toBeUndefined()
    expect(levelFilesOf(stats)).toEqual([{ level: 0, files: 2, megabytes: 4 }, { level: 2, files: 103, megabytes: 205 }, { level: 3, files: 1275, megabytes: 2550 }])
    // Levels 2 and 3 both hold data: reads look in both, and a full compaction goes on.
    expect(settledInOneLevel(levelFilesOf(stats)!)).toBe(false)
    // Writes during a pass land in levels 0 to 2: a few MB there next to the data is settled.
    expect(settledInOneLevel([{ level: 0, files: 2, megabytes: 4 }, { level: 2, files: 1, megabytes: 2 }, { level: 4, files: 1275, megabytes: 2550 }])).toBe(true)
    expect(settledInOneLevel([{ level: 3, files: 500, megabytes: 1000 }, { level: 4, files: 500, megabytes: 1000 }])).toBe(false)
    expect(settledInOneLevel([])).toBe(true)
  })

  it('show in kumo status beside the caches, marked when reads reopen files or copy their blocks', () => {
    const figures = { blockCacheBytes: 192 * MiB, rowCacheBytes: 64 * MiB, rowCacheHits: 41, rowCacheMisses: 59, storageMemoryBytes: 0, tableFiles: 1380, openTablesMax: 1000 }
    expect(formatCaches(figures)).toBe('block 192M row 64M hit 41% tables 1380/1000!')
    // All open, but more than LevelDB maps: it reads the rest with pread.
    expect(formatCaches({ ...figures, openTablesMax: 12_288 })).toBe('block 192M row 64M hit 41% tables 1380/12288!')
    expect(formatCaches({ ...figures, tableFiles: 1000, openTablesMax: 3072 })).toBe('block 192M row 64M hit 41% tables 1000/3072')
    expect(formatCaches({ ...figures, tableFiles: 1001, openTablesMax: 3072 })).toBe('block 192M row 64M hit 41% tables 1001/3072!')
    // A node from before the figure was reported.
    expect(formatCaches({ ...figures, tableFiles: 0, openTablesMax: 0 })).toBe('block 192M row 64M hit 41%')
  })
})

describe('the prewarm bound', () => {
  it('maps a store in at start when its table files take at most a quarter of memory, in whole MiB', () => {
    expect(defaultPrewarmBytes(24 * GiB)).toBe(6 * GiB)
    expect(defaultPrewarmBytes(2 * GiB + 3)).toBe(512 * MiB)
    expect(defaultPrewarmBytes(3 * MiB)).toBe(0)
    expect(() => defaultPrewarmBytes(0)).toThrow(/positive/)
  })
})
