import { describe, expect, it } from 'vitest'
import { MovePace, movePaceConfig } from '../../src/core/move-pace.js'
import { TokenBucket } from '../../src/core/token-bucket.js'
import { seededRandom } from '../../src/core/random.js'

describe('move pace (records a second a node copies at, from the cluster loop delays)', () => {
  const config = movePaceConfig(20_000, 20)

  it('starts at a quarter of the most, with a tenth as the least', () => {
    expect(config.recordsPerSecondMin).toBe(2000)
    const pace = new MovePace(config)
    expect(pace.recordsPerSecond).toBe(5000)
    expect(pace.adaptive).toBe(true)
  })

  it('halves over the target, grows by a quarter under half of it, holds between', () => {
    const pace = new MovePace(config)
    expect(pace.observe(21)).toBe(2500)
    expect(pace.observe(10)).toBe(3125)
    expect(pace.observe(15)).toBe(3125)
    expect(pace.observe(20)).toBe(3125)
    expect(pace.observe(0)).toBe(3906.25)
  })

  it('never leaves the least and the most, and starts again where a move starts', () => {
    const pace = new MovePace(config)
    for (let i = 0; i < 50; i++) pace.observe(500)
    expect(pace.recordsPerSecond).toBe(2000)
    for (let i = 0; i < 50; i++) pace.observe(0)
    expect(pace.recordsPerSecond).toBe(20_000)
    expect(pace.restart()).toBe(5000)
  })

  it('with no target stays at the most whatever it reads', () => {
    const pace = new MovePace(movePaceConfig(20_000, 0))
    expect(pace.adaptive).toBe(false)
    expect(pace.recordsPerSecond).toBe(20_000)
    expect(pace.observe(1000)).toBe(20_000)
    expect(pace.restart()).toBe(20_000)
  })

  it('ignores readings that are not numbers of ms', () => {
    const pace = new MovePace(config)
    expect(pace.observe(Number.NaN)).toBe(5000)
    expect(pace.observe(-1)).toBe(5000)
  })

  it('keeps every rate within bounds over random readings, and backs off after every late one', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const random = seededRandom(seed)
      const max = 1 + Math.floor(random() * 50_000)
      const c = movePaceConfig(max, 1 + Math.floor(random() * 50))
      const pace = new MovePace(c)
      for (let i = 0; i < 500; i++) {
        const before = pace.recordsPerSecond
        const reading = random() * c.loopDelayTargetMs * 3
        const after = pace.observe(reading)
        expect(after).toBeGreaterThanOrEqual(c.recordsPerSecondMin)
        expect(after).toBeLessThanOrEqual(c.recordsPerSecondMax)
        if (reading > c.loopDelayTargetMs) expect(after).toBeLessThanOrEqual(before)
        else expect(after).toBeGreaterThanOrEqual(before)
      }
    }
  })

  it('refuses configurations that cannot pace', () => {
    expect(() => new MovePace({ recordsPerSecondMax: 0, recordsPerSecondMin: 1, loopDelayTargetMs: 10 })).toThrow(RangeError)
    expect(() => new MovePace({ recordsPerSecondMax: 10, recordsPerSecondMin: 11, loopDelayTargetMs: 10 })).toThrow(RangeError)
    expect(() => new MovePace({ recordsPerSecondMax: 10, recordsPerSecondMin: 1, loopDelayTargetMs: -1 })).toThrow(RangeError)
    expect(movePaceConfig(1).recordsPerSecondMin).toBe(1)
  })
})

describe('token bucket with a rate that changes', () => {
  it('keeps what was earned at the old rate and earns at the new one from then on', () => {
    const b = new TokenBucket(1000, 1000)
    expect(b.take(1000, 0)).toBe(0)
    // Half a second at 1000/s: 500 earned; then 100/s.
    b.setRate(100, 500)
    expect(b.ratePerSecond).toBe(100)
    expect(b.take(500, 500)).toBe(0)
    // 100 more in debt at 100/s: a second.
    expect(b.take(100, 500)).toBe(1000)
    expect(() => b.setRate(0, 600)).toThrow(RangeError)
  })
})
