import { describe, expect, it } from 'vitest'
import { seededRandom } from '../../src/core/random.js'
import { RowCache, rowCacheEntryOverhead } from '../../src/storage/row-cache.js'

const record = (n: number, bytes = 10): Buffer => Buffer.alloc(bytes, n)
const cost = (id: string, bytes = 10): number => id.length + bytes + rowCacheEntryOverhead

describe('RowCache', () => {
  it('returns what was set, and nothing after a delete or clear', () => {
    const cache = new RowCache(10_000)
    cache.set('a', record(1))
    expect(cache.get('a')).toEqual(record(1))
    expect(cache.has('a')).toBe(true)
    cache.set('a', record(2))
    expect(cache.get('a')).toEqual(record(2))
    expect(cache.usedBytes).toBe(cost('a'))
    cache.delete('a')
    expect(cache.get('a')).toBeUndefined()
    expect(cache.usedBytes).toBe(0)
    cache.set('b', record(3))
    cache.clear()
    expect(cache.get('b')).toBeUndefined()
    expect(cache.size).toBe(0)
  })

  it('is off at size 0 and refuses entries larger than half its budget', () => {
    const off = new RowCache(0)
    expect(off.enabled).toBe(false)
    off.set('a', record(1))
    expect(off.get('a')).toBeUndefined()
    const small = new RowCache(2 * cost('a', 100) - 1)
    small.set('a', record(1, 100))
    expect(small.get('a')).toBeUndefined()
    expect(() => new RowCache(-1)).toThrow()
    expect(() => new RowCache(1.5)).toThrow()
  })

  it('stays within its budget, keeping the recently used entries', () => {
    const budget = 20 * cost('k00')
    const cache = new RowCache(budget)
    for (let i = 0; i < 100; i++) {
      cache.set(`k${String(i).padStart(2, '0')}`, record(i))
      // k00 is used all the time: it must survive every rotation.
      expect(cache.get('k00')).toEqual(record(0))
      expect(cache.usedBytes).toBeLessThanOrEqual(budget)
    }
    expect(cache.get('k99')).toEqual(record(99))
    expect(cache.get('k10')).toBeUndefined()
  })

  it('drops every entry under a prefix', () => {
    const cache = new RowCache(100_000)
    for (const id of ['\x00\x01a', '\x00\x01b', '\x00\x02a']) cache.set(id, record(1))
    cache.deletePrefix('\x00\x01')
    expect([cache.get('\x00\x01a'), cache.get('\x00\x01b')]).toEqual([undefined, undefined])
    expect(cache.get('\x00\x02a')).toEqual(record(1))
    expect(cache.usedBytes).toBe(cost('\x00\x02a'))
  })

  it('matches a map model: whatever it returns is the last value set, and its bytes add up', () => {
    const random = seededRandom(7)
    const cache = new RowCache(30 * cost('k0'))
    const model = new Map<string, Buffer>()
    for (let step = 0; step < 20_000; step++) {
      const id = `k${Math.floor(random() * 60)}`
      const r = random()
      if (r < 0.4) {
        const value = record(step % 256)
        cache.set(id, value)
        model.set(id, value)
      } else if (r < 0.5) {
        cache.delete(id)
        model.delete(id)
      } else {
        const got = cache.get(id)
        if (got !== undefined) expect(got).toBe(model.get(id))
      }
      expect(cache.usedBytes).toBeLessThanOrEqual(cache.bytesMax)
    }
  })
})
