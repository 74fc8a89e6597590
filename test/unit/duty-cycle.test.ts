import { describe, expect, it } from 'vitest'
import { dutyCyclePauseMs } from '../../src/core/duty-cycle.js'

describe('a duty cycle (background work held to a share of the time)', () => {
  it('pauses work that ran past its burst so that it keeps to its share', () => {
    // 3 s of work in 3 s at a tenth, 1 s free: 2 s of work need 20 s in all.
    expect(dutyCyclePauseMs(3000, 3000, 0.1, 1000)).toBe(17_000)
    // Already spread out far enough: no pause.
    expect(dutyCyclePauseMs(3000, 25_000, 0.1, 1000)).toBe(0)
    // Within the burst: no pause, whatever the share.
    expect(dutyCyclePauseMs(900, 900, 0.01, 1000)).toBe(0)
    // A share of all the time never pauses.
    expect(dutyCyclePauseMs(60_000, 60_000, 1, 0)).toBe(0)
  })

  it('keeps any sequence of work steps, each followed by its pause, within the share (past the burst)', () => {
    let seed = 7
    const random = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32)
    for (let run = 0; run < 200; run++) {
      const share = 0.01 + random() * 0.99
      const burstMs = Math.floor(random() * 2000)
      let busy = 0
      let elapsed = 0
      for (let step = 0; step < 100; step++) {
        const work = Math.floor(random() * 500)
        busy += work
        elapsed += work
        const pause = dutyCyclePauseMs(busy, elapsed, share, burstMs)
        expect(pause).toBeGreaterThanOrEqual(0)
        elapsed += pause
        // After its pause, the work done beyond the burst is at most share of the time.
        expect(busy - burstMs).toBeLessThanOrEqual(share * elapsed + 1e-6)
        // And no pause is longer than needed: without its last millisecond the share is exceeded.
        if (pause > 0) expect(busy - burstMs).toBeGreaterThan(share * (elapsed - 1))
      }
    }
  })

  it('refuses a share outside (0, 1] and negative times', () => {
    expect(() => dutyCyclePauseMs(1, 1, 0, 0)).toThrow(/share/)
    expect(() => dutyCyclePauseMs(1, 1, 1.5, 0)).toThrow(/share/)
    expect(() => dutyCyclePauseMs(-1, 1, 0.5, 0)).toThrow(/0 or more/)
  })
})
