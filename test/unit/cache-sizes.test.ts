import { describe, expect, it } from 'vitest'
import { cacheBytesMax, cacheBytesMin, defaultCacheSizes } from '../../src/core/cache-sizes.js'

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
