import { describe, expect, it } from 'vitest'
import { fnv64 } from '../../bench/distributions.js'
import { keyName } from '../../bench/runner.js'

/** The reference: YCSB's FNVhash64 with BigInt, octet by octet, little-endian. */
function fnv64Reference(value: number): bigint {
  let hash = 0xcbf29ce484222325n
  let v = BigInt(value)
  for (let i = 0; i < 8; i++) {
    hash ^= v & 0xffn
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn
    v >>= 8n
  }
  return hash
}

describe('benchmark key names', () => {
  it('fnv64 in 16-bit limbs equals the 64-bit reference', () => {
    const values = [0, 1, 2, 255, 256, 65_535, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]
    for (let i = 0; i < 5_000; i++) values.push(i * 7_919 + 13)
    for (const value of values) {
      const { hi, lo } = fnv64(value)
      expect((BigInt(hi) << 32n) | BigInt(lo), `fnv64(${value})`).toBe(fnv64Reference(value))
    }
  })

  it('a hashed name is user and the 16 hex digits of fnv64', () => {
    for (const value of [0, 1, 255, 65_535, 2 ** 32 + 5, 123_456_789, Number.MAX_SAFE_INTEGER]) {
      expect(keyName(value, 'hashed').toString()).toBe(`user${fnv64Reference(value).toString(16).padStart(16, '0')}`)
    }
  })

  it('hashed names are distinct and do not ascend; ordered names ascend', () => {
    const hashed = Array.from({ length: 100_000 }, (_, i) => keyName(i, 'hashed').toString())
    expect(new Set(hashed).size).toBe(hashed.length)
    const ascending = hashed.filter((k, i) => i > 0 && k > hashed[i - 1]!).length
    expect(ascending / hashed.length).toBeGreaterThan(0.4)
    expect(ascending / hashed.length).toBeLessThan(0.6)
    const ordered = Array.from({ length: 1_000 }, (_, i) => keyName(i, 'ordered').toString())
    expect([...ordered].sort()).toEqual(ordered)
    expect(keyName(42, 'ordered').toString()).toBe('user0000000042')
  })
})
