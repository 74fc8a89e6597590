import { describe, expect, it } from 'vitest'
import { bulkLoad } from '../../src/client/bulk-load.js'
import { KumoError } from '../../src/core/errors.js'
import { LoadWindow } from '../../src/core/load-window.js'
import { seededRandom } from '../../src/core/random.js'

// A scenario: events in order and the limit after each. 's': an attempt is sent (its sequence
// number is the count of 's' before it); 'r3': attempt 3 is retried; 'a': a batch acknowledged.
interface Scenario {
  name: string
  max: number
  events: string[]
  limits: number[]
}

const scenarios: Scenario[] = [
  { name: 'starts at its maximum and stays there while batches are acknowledged', max: 4, events: ['s', 's', 'a', 'a', 's', 'a'], limits: [4, 4, 4, 4, 4, 4] },
  { name: 'a retry halves it', max: 16, events: ['s', 's', 'r0'], limits: [16, 16, 8] },
  {
    name: 'retries of attempts already in flight at the decrease do not halve it again',
    max: 16,
    events: ['s', 's', 's', 'r1', 'r0', 'r2'],
    limits: [16, 16, 16, 8, 8, 8],
  },
  {
    name: 'a retry of an attempt sent after the decrease halves it again',
    max: 16,
    events: ['s', 's', 'r0', 's', 'r1', 'r2', 's', 'r3'],
    limits: [16, 16, 8, 8, 8, 4, 4, 2],
  },
  { name: 'never below one', max: 2, events: ['s', 'r0', 's', 'r1', 's', 'r2', 's', 'r3'], limits: [2, 1, 1, 1, 1, 1, 1, 1] },
  { name: 'a maximum of one stays one', max: 1, events: ['s', 'r0', 'a', 's', 'r1'], limits: [1, 1, 1, 1, 1] },
  {
    name: 'grows by one per window of acknowledgements, back to its maximum and no further',
    max: 5,
    events: ['s', 'r0', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'],
    // 5 -> 2; two acknowledgements -> 3; three -> 4; four -> 5; then it stays.
    limits: [5, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5],
  },
  {
    name: 'a decrease forgets the acknowledgements counted towards growth',
    max: 8,
    events: ['s', 'r0', 'a', 'a', 'a', 's', 'r1', 'a', 'a', 'a'],
    limits: [8, 4, 4, 4, 4, 4, 2, 2, 3, 3],
  },
]

const run = (window: LoadWindow, event: string): void => {
  if (event === 's') window.sent()
  else if (event === 'a') window.acknowledged()
  else window.retried(Number(event.slice(1)))
}

describe('LoadWindow (additive increase, multiplicative decrease of the batches a load has in flight)', () => {
  for (const scenario of scenarios) {
    it(scenario.name, () => {
      const window = new LoadWindow(scenario.max)
      const limits = scenario.events.map((event) => {
        run(window, event)
        return window.limit
      })
      expect(limits).toEqual(scenario.limits)
    })
  }

  it('refuses a maximum that is not a whole number of at least 1, and a retry of an attempt never sent', () => {
    for (const max of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) expect(() => new LoadWindow(max)).toThrow(RangeError)
    const window = new LoadWindow(4)
    expect(() => window.retried(0)).toThrow(RangeError)
    window.sent()
    expect(() => window.retried(1)).toThrow(RangeError)
    expect(() => window.retried(-1)).toThrow(RangeError)
    expect(() => window.retried(0.5)).toThrow(RangeError)
  })

  it('keeps 1 <= limit <= max, never grows on a retry nor shrinks on an acknowledgement, in 2,000 random histories', () => {
    const broken: string[] = []
    for (let seed = 1; seed <= 2000; seed++) {
      const random = seededRandom(seed)
      const max = 1 + Math.floor(random() * 64)
      const window = new LoadWindow(max)
      let sent = 0
      for (let step = 0; step < 200; step++) {
        const before = window.limit
        const choice = random()
        let ok: boolean
        if (choice < 0.45 || sent === 0) {
          window.sent()
          sent++
          ok = window.limit === before
        } else if (choice < 0.9) {
          window.acknowledged()
          ok = window.limit === before || window.limit === before + 1
        } else {
          window.retried(Math.floor(random() * sent))
          ok = window.limit === before || window.limit === Math.max(1, Math.floor(before / 2))
        }
        if (!ok || window.limit < 1 || window.limit > max) broken.push(`seed ${seed}, step ${step}: ${before} -> ${window.limit} (max ${max})`)
      }
    }
    expect(broken).toEqual([])
  })
})

describe('bulkLoad keeps its batches in flight within the window', () => {
  it('sends no new batch while as many as the window allows are unacknowledged, shrinks it on retries and grows it back', { timeout: 30_000 }, async () => {
    // The batch sender stands in for a cluster that stalls: for its first 300 ms every batch
    // fails with TIMEOUT after 20 ms, then batches take 2 ms each. A batch is named by its
    // first key; it is outstanding from its first send until it is acknowledged.
    const started = performance.now()
    const outstanding = new Set<string>()
    const acknowledged = new Set<string>()
    let limitSeen = 8
    let firstSendsAtReducedWindow = 0
    const overWindow: string[] = []
    const send = async (ops: { key: string | Uint8Array }[]): Promise<void> => {
      const batch = String(ops[0]!.key)
      if (!outstanding.has(batch) && !acknowledged.has(batch)) {
        outstanding.add(batch)
        // A decrease is not reported until the next acknowledgement, but the window only
        // shrinks unseen, so the last limit reported bounds it.
        if (outstanding.size > limitSeen) overWindow.push(`${batch}: ${outstanding.size} outstanding, window ${limitSeen}`)
        if (limitSeen < 8) firstSendsAtReducedWindow++
      }
      const stalled = performance.now() - started < 300
      await new Promise((resolve) => setTimeout(resolve, stalled ? 20 : 2))
      if (stalled) throw new KumoError('TIMEOUT', 'a replica did not answer in time')
      outstanding.delete(batch)
      acknowledged.add(batch)
    }
    const records = Array.from({ length: 3000 }, (_, i) => ({ key: `k${i}`, value: 'v' }))
    const limits: number[] = []
    const done = await bulkLoad(send, records, {
      batchSize: 10,
      concurrency: 8,
      onProgress: (p) => {
        limitSeen = p.inFlightLimit
        limits.push(p.inFlightLimit)
      },
    })
    expect(done.records).toBe(3000)
    expect(acknowledged.size).toBe(300)
    expect(overWindow).toEqual([])
    expect(done.retried).toBeGreaterThan(0)
    // The first acknowledgements came at a reduced window and new batches were sent at it; the
    // last ones at the full window.
    expect(limits[0]).toBeLessThan(8)
    expect(firstSendsAtReducedWindow).toBeGreaterThan(0)
    expect(limits[limits.length - 1]).toBe(8)
    expect(done.inFlightLimit).toBe(8)
  })

  it('stops retrying its other batches once one fails for good (the load fails in seconds, not after their 20 s of retries), and tells onRetry where the load stands', { timeout: 30_000 }, async () => {
    // Batch k0 meets TIMEOUT every time (retried); batch k10 is refused after 100 ms.
    const sends = new Map<string, number>()
    const send = async (ops: { key: string | Uint8Array }[]): Promise<void> => {
      const batch = String(ops[0]!.key)
      sends.set(batch, (sends.get(batch) ?? 0) + 1)
      await new Promise((resolve) => setTimeout(resolve, 10))
      if (batch === 'k0') throw new KumoError('TIMEOUT', 'a replica did not answer in time')
      if (batch === 'k10') {
        await new Promise((resolve) => setTimeout(resolve, 100))
        throw new KumoError('INVALID_ARGUMENT', 'refused')
      }
    }
    const records = Array.from({ length: 20 }, (_, i) => ({ key: `k${i}`, value: 'v' }))
    const retries: { retried: number; inFlightLimit: number }[] = []
    const started = performance.now()
    await expect(bulkLoad(send, records, { batchSize: 10, concurrency: 2, retryTimeoutMs: 20_000, onRetry: (_error, p) => retries.push({ retried: p.retried, inFlightLimit: p.inFlightLimit }) })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/records 10 to 19/),
    })
    // Within the retry backoff's longest wait (2 s) of the refusal, not after 20 s of retries.
    expect(performance.now() - started).toBeLessThan(5_000)
    expect(sends.get('k0')).toBeGreaterThan(1)
    expect(retries.length).toBeGreaterThan(0)
    expect(retries[0]).toEqual({ retried: 1, inFlightLimit: 1 })
  })
})
