import { describe, expect, it } from 'vitest'
import { ClockOffsets } from '../../src/core/clock-offsets.js'
import { Responsiveness, responsivenessWithin, transferAllowanceMs } from '../../src/core/responsiveness.js'
import { Semaphore } from '../../src/core/semaphore.js'
import { isRetryable, retryDelayMs } from '../../src/core/retry.js'
import { KumoError } from '../../src/core/errors.js'
import { withRetry } from '../../src/client/retry.js'
import { TokenBucket } from '../../src/core/token-bucket.js'
import { seededRandom } from '../../src/core/random.js'

describe('responsiveness (replica timeouts and avoidance)', () => {
  const config = { timeoutFloorMs: 250, timeoutCapMs: 1000, avoidMs: 250, avoidMsMax: 2000 }

  it('times a node by its answers: the cap before any, then smoothed time plus four deviations within floor and cap', () => {
    const r = new Responsiveness(config)
    expect(r.timeoutMs()).toBe(1000)
    for (let i = 0; i < 50; i++) r.answered(2, i)
    expect(r.timeoutMs()).toBe(250)
    // A steady 300 ms node gets room above its answer time, never past the cap.
    const slow = new Responsiveness(config)
    for (let i = 0; i < 50; i++) slow.answered(300 + (i % 2) * 40, i)
    expect(slow.timeoutMs()).toBeGreaterThan(340)
    expect(slow.timeoutMs()).toBeLessThanOrEqual(1000)
    const slower = new Responsiveness(config)
    for (let i = 0; i < 50; i++) slower.answered(5000, i)
    expect(slower.timeoutMs()).toBe(1000)
  })

  it('avoids a node at the first unanswered request, probes it with backoff, and takes it back at the first answer', () => {
    const r = new Responsiveness(config)
    r.answered(5, 0)
    expect(r.usable()).toBe(true)
    r.timedOut(1000, 1000)
    expect(r.usable()).toBe(false)
    expect(r.avoidedSinceMs()).toBe(1000)
    // No probe before it is due, one at a time once it is.
    expect(r.takeProbe(1100)).toBe(false)
    expect(r.probeDueAtMs()).toBe(1250)
    expect(r.takeProbe(1250)).toBe(true)
    expect(r.takeProbe(1250)).toBe(false)
    expect(r.probeDueAtMs()).toBeUndefined()
    // Failed probes back off: 500, 1000, 2000, 2000 ms.
    const waits: number[] = []
    let now = 2250
    for (let i = 0; i < 4; i++) {
      r.probeFailed(now)
      waits.push(r.probeDueAtMs()! - now)
      now = r.probeDueAtMs()!
      expect(r.takeProbe(now)).toBe(true)
    }
    expect(waits).toEqual([500, 1000, 2000, 2000])
    expect(r.failedProbes).toBe(4)
    r.probeAnswered(3, now + 3)
    expect(r.usable()).toBe(true)
    expect(r.failedProbes).toBe(0)
    // Avoided again later: backoff starts over.
    r.broke(now + 100)
    expect(r.probeDueAtMs()).toBe(now + 100 + 250)
  })

  it('does not hold against a node a wait shorter than the floor (the caller was nearly out of time)', () => {
    const r = new Responsiveness(config)
    r.timedOut(40, 0)
    expect(r.usable()).toBe(true)
    r.timedOut(250, 1)
    expect(r.usable()).toBe(false)
  })

  it('does not avoid a node that answered other requests while one waited (that request was slow, not the node gone)', () => {
    const r = new Responsiveness(config)
    // Sent at 0, timed out at 1000; an answer to another request came at 600.
    r.answered(3, 600)
    r.timedOut(1000, 1000)
    expect(r.usable()).toBe(true)
    // One sent at 700 and unanswered at 1700, with nothing heard since 600: avoided.
    r.timedOut(1000, 1700)
    expect(r.usable()).toBe(false)
  })

  it('takes a node back on any answer, even a late one to a request sent before it was avoided', () => {
    const r = new Responsiveness(config)
    r.timedOut(300, 0)
    r.answered(1200, 10)
    expect(r.usable()).toBe(true)
  })

  it('never stays avoided without a probe due, over random histories', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = seededRandom(seed)
      const r = new Responsiveness(config)
      let now = 0
      for (let step = 0; step < 200; step++) {
        now += Math.floor(random() * 400)
        const event = Math.floor(random() * 5)
        if (event === 0) r.answered(random() * 50, now)
        else if (event === 1) r.timedOut(random() * 1200, now)
        else if (event === 2) r.broke(now)
        else if (event === 3 && r.takeProbe(now)) {
          if (random() < 0.5) r.probeFailed(now + 100)
          else r.probeAnswered(5, now + 5)
        }
        const timeout = r.timeoutMs()
        expect(timeout).toBeGreaterThanOrEqual(config.timeoutFloorMs)
        expect(timeout).toBeLessThanOrEqual(config.timeoutCapMs)
        // Avoided means: a probe is out, or one is due within avoidMsMax.
        if (!r.usable()) {
          const due = r.probeDueAtMs()
          if (due !== undefined) expect(due - now).toBeLessThanOrEqual(config.avoidMsMax + 100)
        }
      }
    }
  })

  it('keeps the floor at or under a configured cap below it', () => {
    expect(responsivenessWithin(100)).toEqual({ timeoutCapMs: 100, timeoutFloorMs: 100 })
    expect(responsivenessWithin(2000)).toEqual({ timeoutCapMs: 2000, timeoutFloorMs: 250 })
    expect(() => new Responsiveness({ timeoutFloorMs: 500, timeoutCapMs: 100 })).toThrow()
  })
})

describe('clock offsets (measured through gossip)', () => {
  it("estimates a peer's offset from one round trip, to within half of it", () => {
    const c = new ClockOffsets()
    // Sent at 1000 (ours), answered at 121_010 (theirs), back at 1020: they are ~120 s ahead.
    c.sample('n2', 1000, 121_010, 1020)
    expect(c.offsetOf('n2', 1020)).toBe(120_000)
    // A round trip over the limit says too little and is dropped.
    c.sample('n3', 1000, 5000, 3000)
    expect(c.offsetOf('n3', 3000)).toBeUndefined()
  })

  it('takes the median of recent samples, so one slow or odd sample does not move it', () => {
    const c = new ClockOffsets({ samplesMax: 5 })
    for (const [sent, theirs, back] of [[0, 505, 10], [100, 600, 100], [200, 9000, 220], [300, 800, 300], [400, 905, 410]] as const) c.sample('n2', sent, theirs, back)
    expect(c.offsetOf('n2', 410)).toBe(500)
    // Stale after staleMs without samples.
    expect(c.offsetOf('n2', 410 + 30_001)).toBeUndefined()
  })

  it('tells the one node with a wrong clock from the rest: it is far from the median, the others are not', () => {
    // Three nodes, n3 120 s ahead. Each measures the others.
    const t0 = 1_800_000_000_000
    const truth: Record<string, number> = { n1: 0, n2: 30, n3: 120_000 }
    const views = Object.fromEntries(
      Object.keys(truth).map((self) => {
        const c = new ClockOffsets()
        for (const peer of Object.keys(truth)) if (peer !== self) c.sample(peer, t0, t0 + 5 + truth[peer]! - truth[self]!, t0 + 10)
        return [self, c] as const
      }),
    )
    const skew = (self: string): number => -views[self]!.clusterOffsetMs(Object.keys(truth).filter((p) => p !== self), t0 + 10)
    expect(Math.abs(skew('n1'))).toBeLessThan(100)
    expect(Math.abs(skew('n2'))).toBeLessThan(100)
    expect(skew('n3')).toBeGreaterThan(119_000)
    // And one 120 s behind.
    const behind = new ClockOffsets()
    behind.sample('n1', 1000, 121_005, 1010)
    behind.sample('n2', 1000, 121_035, 1010)
    expect(-behind.clusterOffsetMs(['n1', 'n2'], 1010)).toBeLessThan(-119_000)
  })

  it('gives itself the benefit of the doubt when two nodes disagree (no majority)', () => {
    const c = new ClockOffsets()
    c.sample('n2', 1000, 61_005, 1010)
    expect(c.clusterOffsetMs(['n2'], 1010)).toBe(0)
    // With no live peer measured, the cluster's clock is this node's.
    expect(c.clusterOffsetMs([], 1010)).toBe(0)
  })
})

describe('semaphore', () => {
  it('lets at most its permits in at once, the rest in arrival order', async () => {
    const s = new Semaphore(2)
    const order: string[] = []
    const a = await s.acquire()
    const b = await s.acquire()
    const c = s.acquire().then((release) => (order.push('c'), release))
    const d = s.acquire().then((release) => (order.push('d'), release))
    expect(s.queued).toBe(2)
    a()
    a() // twice is once
    ;(await c)()
    b()
    ;(await d)()
    expect(order).toEqual(['c', 'd'])
    expect(s.queued).toBe(0)
    expect(await s.run(async () => 7)).toBe(7)
    expect(() => new Semaphore(0)).toThrow()
  })
})

describe('token bucket', () => {
  it('lets a burst through, then paces to its rate', () => {
    const b = new TokenBucket(1000, 500)
    expect(b.take(500, 0)).toBe(0)
    // In debt by 500 at 1000/s: wait half a second.
    expect(b.take(500, 0)).toBe(500)
    // Refilled at the rate, never past the burst.
    expect(b.take(100, 10_000)).toBe(0)
    expect(b.take(400, 10_000)).toBe(0)
    expect(b.take(1, 10_000)).toBe(1)
  })
})

describe('transfer allowance', () => {
  it('gives a large request the time to cross and be stored', () => {
    expect(transferAllowanceMs(0)).toBe(0)
    expect(transferAllowanceMs(4 * 1024 * 1024)).toBe(500)
  })
})

describe('retries of long jobs', () => {
  it('back off exponentially with full jitter, within a ceiling', () => {
    const policy = { firstDelayMs: 50, delayMsMax: 2000 }
    expect([1, 2, 3, 4, 5, 6, 7].map((attempt) => retryDelayMs(attempt, 0.999, policy))).toEqual([49, 99, 199, 399, 799, 1598, 1998])
    expect(retryDelayMs(3, 0, policy)).toBe(0)
  })

  it('retry what the cluster could not do now, not what was wrong', () => {
    for (const code of ['UNAVAILABLE', 'OVERLOADED', 'NOT_SERVING', 'TIMEOUT'] as const) expect(isRetryable(new KumoError(code, ''))).toBe(true)
    for (const code of ['INVALID_ARGUMENT', 'CLOSED', 'INTERNAL'] as const) expect(isRetryable(new KumoError(code, ''))).toBe(false)
  })

  it('withRetry retries retryable errors until success, and gives up on others at once', async () => {
    let calls = 0
    const flaky = async (): Promise<string> => {
      if (++calls < 3) throw new KumoError('UNAVAILABLE', 'not now')
      return 'done'
    }
    expect(await withRetry(flaky, { policy: { firstDelayMs: 1, delayMsMax: 2 } })).toBe('done')
    expect(calls).toBe(3)
    calls = 0
    await expect(withRetry(async () => { calls++; throw new KumoError('INVALID_ARGUMENT', 'bad') })).rejects.toThrow('bad')
    expect(calls).toBe(1)
    await expect(withRetry(async () => { throw new KumoError('UNAVAILABLE', 'never') }, { timeoutMs: 30, policy: { firstDelayMs: 5, delayMsMax: 5 } })).rejects.toThrow('never')
  })
})
