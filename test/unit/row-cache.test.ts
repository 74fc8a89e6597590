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
    // Lookups above: two found, two not.
    expect([cache.hits, cache.misses]).toEqual([2, 2])
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

  it('keeps its own copies, in slabs that never overlap, and bounds the slabs under churn', () => {
    const cache = new RowCache(1024 * 1024)
    const given = record(7, 100)
    cache.set('a', given)
    given.fill(9)
    expect(cache.get('a')).toEqual(record(7, 100))
    // Thousands of small records span many slabs; each must read back as it was set.
    for (let i = 0; i < 5000; i++) cache.set(`k${i}`, record(i % 251, 1 + (i % 200)))
    for (let i = 4000; i < 5000; i++) expect(cache.get(`k${i}`)).toEqual(record(i % 251, 1 + (i % 200)))
    // A record larger than a slab's share gets its own copy.
    const large = Buffer.alloc(200_000, 3)
    cache.set('large', large)
    large.fill(4)
    expect(cache.get('large')).toEqual(Buffer.alloc(200_000, 3))
    // Set and delete over and over (a write-heavy load invalidating what reads fill): the live
    // bytes stay near zero, yet the generations must rotate (an untouched entry ages out), or
    // the slabs behind the deleted entries would grow without bound.
    const churn = new RowCache(64 * 1024)
    churn.set('early', record(1, 100))
    for (let i = 0; i < 10_000; i++) {
      churn.set(`c${i}`, record(1, 100))
      churn.delete(`c${i}`)
    }
    expect(churn.get('early')).toBeUndefined()
    expect(churn.usedBytes).toBe(0)
    churn.set('kept', record(2, 100))
    expect(churn.get('kept')).toEqual(record(2, 100))
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
        if (got !== undefined) expect(got).toEqual(model.get(id))
      }
      expect(cache.usedBytes).toBeLessThanOrEqual(cache.bytesMax)
    }
  })

  it('admits every record read while it has room; once full, a record on its key\'s second miss, not its first', () => {
    const budget = 20 * cost('k00')
    const cache = new RowCache(budget)
    for (let i = 0; i < 20; i++) expect(cache.fill(`k${String(i).padStart(2, '0')}`, record(i))).toBe(true)
    expect(cache.get('k00')).toEqual(record(0))
    // More keys than it holds: a generation with entries is dropped, and admission begins.
    for (let i = 20; i < 40; i++) cache.fill(`k${i}`, record(i))
    expect(cache.fill('a', record(1))).toBe(false)
    expect(cache.get('a')).toBeUndefined()
    expect(cache.fill('a', record(1))).toBe(true)
    expect(cache.get('a')).toEqual(record(1))
    // After a clear, it has room again.
    cache.clear()
    expect(cache.fill('b', record(1))).toBe(true)
  })

  it('under reads spread evenly over far more keys than it holds, admits few; a key read again and again stays cached', () => {
    const cache = new RowCache(200 * cost('k0000000'))
    const random = seededRandom(7)
    let admitted = 0
    let hotHits = 0
    for (let i = 0; i < 20_000; i++) {
      const id = `k${String(Math.floor(random() * 1_000_000)).padStart(7, '0')}`
      if (cache.get(id) === undefined && cache.fill(id, record(1))) admitted++
      if (cache.get('hot') !== undefined) hotHits++
      else cache.fill('hot', record(2))
    }
    // Without admission every one of the ~20,000 misses would be copied in.
    expect(admitted).toBeLessThan(1000)
    expect(hotHits).toBeGreaterThan(19_000)
    expect(cache.usedBytes).toBeLessThanOrEqual(cache.bytesMax)
  })

  it('admits every record read again once deletes left it mostly empty', () => {
    const cache = new RowCache(100 * cost('p1/k000'))
    for (let i = 0; i < 300; i++) cache.fill(`p1/k${String(i).padStart(3, '0')}`, record(i))
    expect(cache.fill('p2/first', record(1))).toBe(false)
    // A partition dropped: its keys go, and with them the reason to turn records away.
    for (let i = 0; i < 300; i++) cache.delete(`p1/k${String(i).padStart(3, '0')}`)
    for (let i = 0; i < 50; i++) expect(cache.fill(`p2/k${String(i).padStart(3, '0')}`, record(i))).toBe(true)
  })

  it('never admits a record larger than half its budget, and says so', () => {
    const cache = new RowCache(2 * cost('a', 100) - 1)
    expect(cache.fill('a', record(1, 100))).toBe(false)
    expect(cache.fill('a', record(1, 100))).toBe(false)
  })
})
