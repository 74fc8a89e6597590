import { describe, expect, it } from 'vitest'
import { AnswerTime } from '../../src/core/answer-time.js'
import { createPicker, LeastConnectionsPicker, LeastLoadPicker, RoundRobinPicker, slowAnswerers, slowAnswerMarginMs, slowAnswerShare, slowInFlightPenalty, stickyInFlightMax, stickyOrder, WeightedRoundRobinPicker, type ReplicaStats } from '../../src/core/balancing.js'
import { parseConsistency, requiredAcks } from '../../src/core/consistency.js'
import { errorFromWire, ErrorCodes, KumoError, toKumoError } from '../../src/core/errors.js'
import { PhiAccrualDetector } from '../../src/core/failure-detector.js'
import { compareHlc, HybridClock } from '../../src/core/hlc.js'
import { partitionOf } from '../../src/core/partitioner.js'
import { QuorumTracker } from '../../src/core/quorum.js'
import { compareRecordVersions, deadSinceMs, decodeRecord, encodeRecord, liveValue, newerRecord, newestRecords, recordHlcCounter, recordHlcMs, RecordFlags, recordVersion, staleIndexes } from '../../src/core/record.js'
import { checkBatch, checkKey, checkRecords, checkValue, versionAheadMsMax, toBuffer } from '../../src/core/validate.js'
import { compareVersions, decodeVersion, encodeVersion } from '../../src/core/version.js'

describe('partitioner', () => {
  it('is murmur3_32 with seed 0, top bits', () => {
    // Reference vectors of MurmurHash3_x86_32, seed 0.
    const cases: [string, number][] = [
      ['', 0],
      ['hello', 0x248bfa47],
      ['The quick brown fox jumps over the lazy dog', 0x2e4ff723],
    ]
    for (const [key, hash] of cases) {
      expect(partitionOf(Buffer.from(key), 256)).toBe(hash >>> 24)
      expect(partitionOf(Buffer.from(key), 1024)).toBe(hash >>> 22)
      expect(partitionOf(Buffer.from(key), 1)).toBe(0)
    }
  })

  it('spreads keys evenly over partitions', () => {
    const counts = new Array(256).fill(0)
    for (let i = 0; i < 256_000; i++) counts[partitionOf(Buffer.from(`user:${i}`), 256)]++
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(150)
  })
})

describe('hybrid logical clock', () => {
  it('never goes backwards, even when the wall clock does', () => {
    const clock = new HybridClock()
    let last = clock.now(1000)
    for (const t of [1000, 999, 500, 1001, 1001, 2000, 10]) {
      const next = clock.now(t)
      expect(compareHlc(next, last)).toBeGreaterThan(0)
      last = next
    }
  })

  it('counts within a millisecond and borrows the next one when the counter is full', () => {
    const clock = new HybridClock()
    expect(clock.now(5)).toEqual({ ms: 5, counter: 0 })
    expect(clock.now(5)).toEqual({ ms: 5, counter: 1 })
    for (let i = 0; i < 65534; i++) clock.now(5)
    expect(clock.now(5)).toEqual({ ms: 6, counter: 0 })
  })

  it('stamps after a remote timestamp it has observed, but ignores one too far ahead', () => {
    const clock = new HybridClock(1000)
    expect(clock.observe({ ms: 5000, counter: 3 }, 4500)).toBe(true)
    expect(compareHlc(clock.now(4600), { ms: 5000, counter: 3 })).toBeGreaterThan(0)
    expect(clock.observe({ ms: 99_000, counter: 0 }, 5000)).toBe(false)
    expect(clock.now(5000).ms).toBeLessThan(99_000)
  })

  it('observes a reading given as its parts as it observes one given whole', () => {
    const readings = [{ ms: 10, counter: 0 }, { ms: 10, counter: 5 }, { ms: 9, counter: 9 }, { ms: 12, counter: 1 }, { ms: 5000, counter: 0 }]
    const whole = new HybridClock(1000)
    const parts = new HybridClock(1000)
    for (const reading of readings) {
      expect(parts.observeReading(reading.ms, reading.counter, 11)).toBe(whole.observe(reading, 11))
      expect(parts.now(11)).toEqual(whole.now(11))
    }
  })
})

describe('versions and records', () => {
  it('orders versions by HLC, then by node id', () => {
    const a = encodeVersion({ ms: 10, counter: 1 }, 'n2')
    const b = encodeVersion({ ms: 10, counter: 2 }, 'n1')
    const c = encodeVersion({ ms: 11, counter: 0 }, 'n1')
    const d = encodeVersion({ ms: 11, counter: 0 }, 'n2')
    expect(compareVersions(a, b)).toBeLessThan(0)
    expect(compareVersions(b, c)).toBeLessThan(0)
    expect(compareVersions(c, d)).toBeLessThan(0)
    expect(compareVersions(d, d)).toBe(0)
    expect(decodeVersion(d)).toEqual({ ts: { ms: 11, counter: 0 }, nodeId: 'n2' })
    expect(compareVersions(encodeVersion({ ms: 2 ** 40, counter: 0 }, 'a'), encodeVersion({ ms: 2 ** 40 - 1, counter: 65535 }, 'z'))).toBeGreaterThan(0)
  })

  it('round trips records: values, tombstones, expiry', () => {
    const version = encodeVersion({ ms: 123456789, counter: 7 }, 'node-1')
    for (const [value, expiresAtMs] of [
      [Buffer.from('hello'), 0],
      [Buffer.alloc(0), 0],
      [undefined, 0],
      [Buffer.from('ttl'), 2 ** 47],
    ] as const) {
      const record = encodeRecord(version, value, expiresAtMs)
      const decoded = decodeRecord(record)
      expect(decoded.version).toEqual(version)
      expect(recordVersion(record)).toEqual(version)
      expect(decoded.tombstone).toBe(value === undefined)
      expect(decoded.expiresAtMs).toBe(expiresAtMs)
      expect(decoded.value).toEqual(value ?? Buffer.alloc(0))
    }
  })

  it('hides tombstones and expired values from readers', () => {
    const v = encodeVersion({ ms: 1, counter: 0 }, 'n')
    expect(liveValue(encodeRecord(v, Buffer.from('x')), 100)?.toString()).toBe('x')
    expect(liveValue(encodeRecord(v, undefined), 100)).toBeUndefined()
    expect(liveValue(encodeRecord(v, Buffer.from('x'), 100), 99)?.toString()).toBe('x')
    expect(liveValue(encodeRecord(v, Buffer.from('x'), 100), 100)).toBeUndefined()
    expect(liveValue(undefined, 0)).toBeUndefined()
  })

  it('picks the newer record', () => {
    const old = encodeRecord(encodeVersion({ ms: 1, counter: 0 }, 'n'), Buffer.from('old'))
    const young = encodeRecord(encodeVersion({ ms: 2, counter: 0 }, 'n'), undefined)
    expect(newerRecord(old, young)).toBe(young)
    expect(newerRecord(young, old)).toBe(young)
  })

  it('tells when a record died: tombstones at their write, values at their expiry', () => {
    const v = encodeVersion({ ms: 1000, counter: 3 }, 'n')
    expect(deadSinceMs(encodeRecord(v, undefined), 5000)).toBe(1000)
    expect(deadSinceMs(encodeRecord(v, Buffer.from('x')), 5000)).toBeUndefined()
    expect(deadSinceMs(encodeRecord(v, Buffer.from('x'), 4000), 5000)).toBe(4000)
    expect(deadSinceMs(encodeRecord(v, Buffer.from('x'), 6000), 5000)).toBeUndefined()
  })

  it('rejects corrupt records', () => {
    for (const read of [decodeRecord, (record: Buffer) => liveValue(record, 0)]) {
      expect(() => read(Buffer.from([1, 2]))).toThrow(/corrupt/)
      expect(() => read(Buffer.from([200, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))).toThrow(/corrupt/)
      expect(() => read(Buffer.from([9, 0, 0, 0, 0, 0, 1, 0, 0, 110, RecordFlags.EXPIRES, 0, 0]))).toThrow(/corrupt/)
    }
  })

  it('reads versions in place as decoding would', () => {
    const versions = [
      encodeVersion({ ms: 1, counter: 0 }, 'n'),
      encodeVersion({ ms: 1, counter: 0 }, 'n2'),
      encodeVersion({ ms: 1, counter: 1 }, 'a'),
      encodeVersion({ ms: 2 ** 40, counter: 0 }, 'n'),
      encodeVersion({ ms: 2 ** 40, counter: 65_535 }, 'n'),
    ]
    const records = versions.map((v, i) => encodeRecord(v, i % 2 === 0 ? Buffer.from('value') : undefined, i * 1000))
    for (const a of records) {
      expect(recordHlcMs(a)).toBe(decodeVersion(recordVersion(a)).ts.ms)
      expect(recordHlcCounter(a)).toBe(decodeVersion(recordVersion(a)).ts.counter)
      for (const b of records) expect(Math.sign(compareRecordVersions(a, b))).toBe(Math.sign(Buffer.compare(recordVersion(a), recordVersion(b))))
    }
  })
})

describe('quorum read results', () => {
  const r = (ms: number, node = 'n1'): Buffer => encodeRecord(encodeVersion({ ms, counter: 0 }, node), Buffer.from(`${ms}`))
  it('take the newest record per key and name the replicas that need repair', () => {
    const a = [r(5), undefined, r(7), Buffer.alloc(0)]
    const b = [r(6), r(1), r(7), undefined]
    const c = [r(4), r(1, 'n2'), r(7), Buffer.alloc(0)]
    const newest = newestRecords([a, b, c], 4)
    expect(newest).toEqual([r(6), r(1, 'n2'), r(7), undefined])
    expect(staleIndexes(a, newest)).toEqual([0, 1])
    expect(staleIndexes(b, newest)).toEqual([1])
    expect(staleIndexes(c, newest)).toEqual([0])
    // Whatever the order the answers arrive in.
    expect(newestRecords([c, b, a], 4)).toEqual(newest)
    expect(newestRecords([], 2)).toEqual([undefined, undefined])
  })
})

describe('client-stamped records (checkRecords)', () => {
  const now = 1_700_000_000_000
  const version = (ms: number, counter = 0, writer = 'c0123456789ab'): Buffer => encodeVersion({ ms, counter }, writer)
  const k = Buffer.from('k')
  const codeOf = (f: () => unknown): string | undefined => {
    try {
      f()
      return undefined
    } catch (err) {
      return (err as KumoError).code
    }
  }

  it('accepts every well-formed record and returns the newest version', () => {
    const records = [
      encodeRecord(version(now - 5), Buffer.from('v')),
      encodeRecord(version(now, 3), undefined),
      encodeRecord(version(now, 2), Buffer.from('ttl'), now + 1000),
      encodeRecord(version(now - 1), Buffer.alloc(1024 * 1024)),
      encodeRecord(version(now + versionAheadMsMax), Buffer.alloc(0)),
    ]
    const newest = checkRecords(records.map(() => k), records, now)
    expect(newest).toEqual(version(now + versionAheadMsMax))
    expect(checkRecords([k], [records[1]!], now)).toEqual(version(now, 3))
    expect(checkRecords([], [], now)).toBeUndefined()
  })

  it('refuses malformed records, oversized values, far-future versions and mismatched counts', () => {
    const good = encodeRecord(version(now), Buffer.from('v'))
    const tombstoneWithValue = Buffer.from(encodeRecord(version(now), undefined))
    const withValue = Buffer.concat([tombstoneWithValue, Buffer.from('x')])
    const badFlags = Buffer.from(good)
    badFlags[1 + good[0]!] = 0x80
    const truncatedExpiry = encodeRecord(version(now), Buffer.alloc(0), now + 5).subarray(0, 2 + good[0]! + 3)
    const bad: [Buffer[], Buffer[]][] = [
      [[k], [Buffer.alloc(0)]],
      [[k], [Buffer.from([3, 1, 2, 3, 0])]],
      [[k], [Buffer.from([200, 1, 2])]],
      [[k], [good.subarray(0, good[0]! + 1)]],
      [[k], [badFlags]],
      [[k], [withValue]],
      [[k], [truncatedExpiry]],
      [[k], [encodeRecord(version(now), Buffer.alloc(1024 * 1024 + 1))]],
      [[k], [encodeRecord(version(now + versionAheadMsMax + 1), Buffer.from('v'))]],
      [[k, k], [good]],
      [[Buffer.alloc(0)], [good]],
      [Array.from({ length: 1001 }, () => k), Array.from({ length: 1001 }, () => good)],
    ]
    for (const [keys, records] of bad) expect(codeOf(() => checkRecords(keys, records, now))).toBe('INVALID_ARGUMENT')
  })
})

describe('phi-accrual failure detector', () => {
  const steady = (detector: PhiAccrualDetector, from: number, count: number, every: number, jitter = () => 0): number => {
    let t = from
    for (let i = 0; i < count; i++) {
      t += every + jitter()
      detector.heartbeat(t)
    }
    return t
  }

  it('is down before any heartbeat and up right after one', () => {
    const d = new PhiAccrualDetector()
    expect(d.state(0)).toBe('down')
    d.heartbeat(0)
    expect(d.state(10)).toBe('up')
  })

  it('keeps a steady sender up and marks it suspect, then down, once it stops', () => {
    const d = new PhiAccrualDetector()
    const last = steady(d, 0, 50, 1000)
    expect(d.state(last + 1000)).toBe('up')
    expect(d.phi(last + 500)).toBeLessThan(1)
    let t = last
    while (d.state(t) === 'up') t += 10
    const suspectAt = t
    expect(d.state(t)).toBe('suspect')
    while (d.state(t) === 'suspect') t += 10
    expect(d.state(t)).toBe('down')
    // With 1 s heartbeats and a 1 s acceptable pause: suspect after ~2.5 s, down after ~3 s.
    expect(suspectAt - last).toBeGreaterThan(2000)
    expect(t - last).toBeLessThan(4000)
    // phi only grows while silence lasts
    expect(d.phi(t + 1000)).toBeGreaterThan(d.phi(t))
  })

  it('tolerates jitter without false suspicion', () => {
    const d = new PhiAccrualDetector()
    let seed = 7
    const jitter = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return (seed % 600) - 300
    }
    let t = 0
    for (let i = 0; i < 200; i++) {
      const gap = 1000 + jitter()
      // Just before the next heartbeat arrives, the sender must still look alive.
      expect(d.state(t + gap - 1)).not.toBe(i === 0 ? 'up-never' : 'down')
      t += gap
      d.heartbeat(t)
      expect(d.state(t + 1300)).toBe('up')
    }
  })

  it('comes back up when heartbeats resume', () => {
    const d = new PhiAccrualDetector()
    const last = steady(d, 0, 20, 500)
    expect(d.state(last + 10_000)).toBe('down')
    d.heartbeat(last + 10_000)
    expect(d.state(last + 10_100)).toBe('up')
  })

  it('judges slower senders by their own interval', () => {
    const fast = new PhiAccrualDetector({ acceptablePauseMs: 0, minStdDevMs: 50 })
    const slow = new PhiAccrualDetector({ acceptablePauseMs: 0, minStdDevMs: 50 })
    const a = steady(fast, 0, 30, 100)
    const b = steady(slow, 0, 30, 2000)
    expect(fast.phi(a + 1000)).toBeGreaterThan(slow.phi(b + 1000))
  })
})

describe('quorum bookkeeping', () => {
  it('is met at the required acks and fails once they cannot be reached', () => {
    const q = new QuorumTracker(2, 3)
    expect(q.state()).toBe('pending')
    expect(q.fail()).toBe('pending')
    expect(q.ack()).toBe('pending')
    expect(q.ack()).toBe('met')
    const f = new QuorumTracker(2, 3)
    f.fail()
    expect(f.fail()).toBe('failed')
    expect(() => new QuorumTracker(4, 3)).toThrow()
  })

  it('derives required acks from the consistency level', () => {
    expect([1, 2, 3, 4, 5].map((n) => requiredAcks('quorum', n))).toEqual([1, 2, 2, 3, 3])
    expect(requiredAcks('one', 3)).toBe(1)
    expect(requiredAcks('all', 3)).toBe(3)
    expect(parseConsistency(undefined, 'quorum')).toBe('quorum')
    expect(parseConsistency('all', 'quorum')).toBe('all')
    expect(() => parseConsistency('most', 'quorum')).toThrow(KumoError)
  })
})

describe('replica selection policies', () => {
  const stats = (over: Partial<ReplicaStats> = {}): ReplicaStats => ({
    inFlight: () => 0,
    load: () => 0,
    weight: () => 1,
    ...over,
  })
  const firstPicks = (picker: ReturnType<typeof createPicker>, candidates: string[], s: ReplicaStats, n: number): Map<string, number> => {
    const counts = new Map<string, number>()
    for (let i = 0; i < n; i++) {
      const order = picker.order(candidates, s)
      expect([...order].sort()).toEqual([...candidates].sort())
      counts.set(order[0]!, (counts.get(order[0]!) ?? 0) + 1)
    }
    return counts
  }

  it('round-robin takes replicas in turn', () => {
    const picker = new RoundRobinPicker()
    expect([0, 1, 2, 3].map(() => picker.order(['a', 'b', 'c'])[0])).toEqual(['a', 'b', 'c', 'a'])
    expect(picker.order([])).toEqual([])
  })

  it('weighted round-robin follows the weights, smoothly', () => {
    const picker = new WeightedRoundRobinPicker()
    const s = stats({ weight: (id) => ({ a: 5, b: 1, c: 1 })[id] ?? 1 })
    const sequence = Array.from({ length: 7 }, () => picker.order(['a', 'b', 'c'], s)[0]).join('')
    expect(sequence).toBe('aabacaa')
    const counts = firstPicks(new WeightedRoundRobinPicker(), ['a', 'b', 'c'], stats({ weight: (id) => ({ a: 3, b: 2, c: 1 })[id] ?? 1 }), 6000)
    expect(counts.get('a')).toBe(3000)
    expect(counts.get('b')).toBe(2000)
    expect(counts.get('c')).toBe(1000)
  })

  it('least-connections prefers the fewest in flight and shares ties', () => {
    const picker = new LeastConnectionsPicker()
    expect(picker.order(['a', 'b', 'c'], stats({ inFlight: (id) => ({ a: 5, b: 1, c: 3 })[id]! }))).toEqual(['b', 'c', 'a'])
    const counts = firstPicks(picker, ['a', 'b', 'c'], stats(), 3000)
    expect(counts.get('a')).toBe(1000)
  })

  it('keeps the order of a turn for a whole frame of requests, and leaves a node that runs too far ahead', () => {
    const picker = new LeastConnectionsPicker()
    const inFlight: Record<string, number> = { a: 0, b: 0, c: 0 }
    const s = stats({ inFlight: (id) => inFlight[id]! })
    // One turn of 64 quorum reads, each sent to the first two of the turn's order.
    const turn = ['a', 'b', 'c']
    for (let i = 0; i < 64; i++) for (const id of stickyOrder(turn, 'least-connections', picker, s).slice(0, 2)) inFlight[id]!++
    expect(inFlight).toEqual({ a: 64, b: 64, c: 0 })
    // Past stickyInFlightMax ahead of the least busy, a request is ordered on its own.
    inFlight.a = stickyInFlightMax + 1
    inFlight.b = 0
    expect(stickyOrder(turn, 'least-connections', picker, s)[0]).not.toBe('a')
    inFlight.a = stickyInFlightMax
    expect(stickyOrder(turn, 'least-connections', picker, s)).toBe(turn)
    // Other policies keep their turn's order: they do not weigh requests in flight.
    inFlight.a = 1000
    expect(stickyOrder(turn, 'round-robin', picker, s)).toBe(turn)
  })

  it('least-connections puts a node that answers far slower than the fastest after the others', () => {
    const picker = new LeastConnectionsPicker()
    const answer: Record<string, number | undefined> = { a: 0.5, b: 0.6, c: 9 }
    const s = stats({ answerMs: (id) => answer[id] })
    // Every node has none in flight: c is slow, so it is never first, and a and b share the turns.
    const counts = firstPicks(picker, ['a', 'b', 'c'], s, 3000)
    expect(counts.get('c') ?? 0).toBe(0)
    expect(counts.get('a')).toBe(1500)
    expect(picker.order(['a', 'b', 'c'], s)[2]).toBe('c')
    // Within slowAnswerMarginMs of the fastest, nodes count as equal.
    answer.c = 0.5 + slowAnswerMarginMs
    expect(firstPicks(new LeastConnectionsPicker(), ['a', 'b', 'c'], s, 3000).get('c')).toBe(1000)
    // A node with unknown answer times is not held back, and fewer in flight still comes first.
    answer.c = undefined
    expect(firstPicks(new LeastConnectionsPicker(), ['a', 'b', 'c'], s, 3000).get('c')).toBe(1000)
    // A slow node goes after the others even when it has fewer in flight: at the start of a turn
    // a fast node often still waits for a few answers while the slow one, held back, has none.
    answer.c = 9
    expect(picker.order(['a', 'b', 'c'], stats({ answerMs: (id) => answer[id], inFlight: (id) => ({ a: 33, b: 0, c: 0 })[id]! }))).toEqual(['b', 'a', 'c'])
    expect(picker.order(['a', 'b', 'c'], stats({ answerMs: (id) => answer[id], inFlight: (id) => (id === 'c' ? 0 : 2) }))[2]).toBe('c')
    // ...until the others run slowInFlightPenalty ahead of it: then they are the overloaded ones.
    const ahead = (n: number) => stats({ answerMs: (id) => answer[id], inFlight: (id) => (id === 'c' ? 0 : n) })
    expect(picker.order(['a', 'b', 'c'], ahead(slowInFlightPenalty - 1))[2]).toBe('c')
    expect(picker.order(['a', 'b', 'c'], ahead(slowInFlightPenalty + 1))[0]).toBe('c')
    // stickyOrder leaves a turn's order at the same distance, and the request goes to the slow node.
    const turn = ['a', 'b', 'c']
    expect(stickyOrder(turn, 'least-connections', picker, ahead(stickyInFlightMax))).toBe(turn)
    expect(stickyOrder(turn, 'least-connections', picker, ahead(stickyInFlightMax + 1))[0]).toBe('c')
    // Among the slow, fewer in flight first; with as many in flight, the less slow first (a
    // quorum of two that needs one of them asks the one that answers sooner).
    answer.b = 9
    expect(picker.order(['a', 'b', 'c'], stats({ answerMs: (id) => answer[id], inFlight: (id) => ({ a: 5, b: 3, c: 1 })[id]! }))).toEqual(['a', 'c', 'b'])
    answer.b = 20
    for (let i = 0; i < 3; i++) expect(new LeastConnectionsPicker().order(['b', 'c', 'a'], stats({ answerMs: (id) => answer[id] }))).toEqual(['a', 'c', 'b'])
  })

  it('a node is slow by how much later than the fastest it answers, whatever delay all answers share', () => {
    const slow = (times: Record<string, number | undefined>): string[] => slowAnswerers(Object.keys(times), (id) => times[id])
    // 4 ms later than the others: slow whether answers take 1 ms or, on a busy caller, 5 more.
    expect(slow({ a: 1, b: 1.2, c: 5 })).toEqual(['c'])
    expect(slow({ a: 6, b: 6.2, c: 10 })).toEqual(['c'])
    // Within the margin, or within a quarter of a slow fastest answer: not told apart.
    expect(slow({ a: 1, b: 1 + slowAnswerMarginMs, c: 2 })).toEqual([])
    expect(slow({ a: 20, b: 20 * (1 + slowAnswerShare), c: 24 })).toEqual([])
    expect(slow({ a: 20, b: 26, c: 21 })).toEqual(['b'])
    // Unknown answer times are not slow; with none known, nothing is.
    expect(slow({ a: 1, b: undefined, c: 9 })).toEqual(['c'])
    expect(slow({ a: undefined, b: undefined })).toEqual([])
  })

  it('answer times average recent answers by their age, and are forgotten when none come', () => {
    const time = new AnswerTime(100, 1000, 0)
    expect(time.value(0)).toBeUndefined()
    time.observe(4, 10)
    expect(time.value(10)).toBe(4)
    time.observe(2, 10)
    expect(time.value(10)).toBe(3)
    // A frame of many answers at one moment moves the average no further than that moment's
    // own times: a half-life later, the old moment still counts half as much as each new answer.
    time.observe(8, 110)
    expect(time.value(110)).toBeCloseTo((4 * 0.5 + 2 * 0.5 + 8) / 2, 9)
    for (let i = 0; i < 30; i++) time.observe(1, 120)
    expect(time.value(120)).toBeGreaterThan(1)
    expect(time.value(120)).toBeLessThan(1.5)
    expect(time.value(1120)).toBeDefined()
    expect(time.value(1121)).toBeUndefined()
    // After a silence the next answer starts a new average rather than moving the old one.
    time.observe(10, 2000)
    expect(time.value(2000)).toBe(10)
    time.observe(Number.NaN, 2001)
    expect(time.value(2001)).toBe(10)
    // An answer timed before the last one (a frame read at an older time) still counts.
    time.observe(20, 1990)
    expect(time.value(2000)).toBe(15)
    expect(() => new AnswerTime(0, 1000)).toThrow(RangeError)
    expect(() => new AnswerTime(100, 0)).toThrow(RangeError)
    expect(() => new AnswerTime(100, 1000, 1000)).toThrow(RangeError)
  })

  it('an answer time is unknown until its answers span a while: one late moment judges no node', () => {
    const time = new AnswerTime(100, 1000, 50)
    // A batch's answers, all late at one moment: unknown, so the node is neither slow nor fastest.
    for (let i = 0; i < 50; i++) time.observe(12, 100)
    expect(time.value(100)).toBeUndefined()
    time.observe(11, 149)
    expect(time.value(149)).toBeUndefined()
    time.observe(10, 150)
    expect(time.value(150)).toBeGreaterThan(10)
    // Forgotten after a silence; the span starts again with the next answer.
    time.observe(3, 1200)
    expect(time.value(1200)).toBeUndefined()
    time.observe(3, 1260)
    expect(time.value(1260)).toBeCloseTo(3, 9)
  })

  it('least-load avoids a loaded node and treats near-equal loads as equal', () => {
    const picker = new LeastLoadPicker()
    const counts = firstPicks(picker, ['a', 'b', 'c'], stats({ load: (id) => ({ a: 0.9, b: 0.1, c: 0.12 })[id]! }), 3000)
    expect(counts.get('a') ?? 0).toBe(0)
    expect(counts.get('b')).toBe(1500)
    expect(counts.get('c')).toBe(1500)
  })
})

describe('errors', () => {
  it('map each code to a gRPC status and back', () => {
    for (const code of Object.keys(ErrorCodes) as (keyof typeof ErrorCodes)[]) {
      const error = new KumoError(code, 'x')
      expect(errorFromWire(code, error.grpcStatus, 'x').code).toBe(code)
    }
    expect(errorFromWire(undefined, 14, 'down').code).toBe('UNAVAILABLE')
    expect(errorFromWire(undefined, 4, 'slow').code).toBe('TIMEOUT')
    expect(errorFromWire('NONSENSE', 3, 'bad').code).toBe('INVALID_ARGUMENT')
    expect(toKumoError(new Error('boom')).code).toBe('INTERNAL')
    expect(new KumoError('UNAVAILABLE', 'x').retryable).toBe(true)
    expect(new KumoError('INVALID_ARGUMENT', 'x').retryable).toBe(false)
  })

  it('validates keys, values and batches at the limits', () => {
    expect(() => checkKey(Buffer.alloc(0))).toThrow(/empty/)
    expect(() => checkKey(Buffer.alloc(4096))).not.toThrow()
    expect(() => checkKey(Buffer.alloc(4097))).toThrow(/4096/)
    expect(() => checkValue(Buffer.alloc(1024 * 1024))).not.toThrow()
    expect(() => checkValue(Buffer.alloc(1024 * 1024 + 1))).toThrow(/1 MiB/)
    expect(() => checkBatch(Array.from({ length: 1000 }, () => ({ key: Buffer.from('k') })))).not.toThrow()
    expect(() => checkBatch(Array.from({ length: 1001 }, () => ({ key: Buffer.from('k') })))).toThrow(/1000/)
    expect(() => checkBatch(Array.from({ length: 5 }, () => ({ key: Buffer.from('k'), value: Buffer.alloc(1024 * 1024) })))).toThrow(/4 MiB/)
    expect(toBuffer('é', 'key')).toEqual(Buffer.from([0xc3, 0xa9]))
    expect(() => toBuffer(5 as never, 'key')).toThrow(KumoError)
  })
})

import { differingLeaves, LeafHasher, planExchange } from '../../src/core/digest.js'

describe('anti-entropy digests', () => {
  const v = (ms: number): Buffer => encodeVersion({ ms, counter: 0 }, 'n1')
  it('hashes leaves independently of visit order and tells where replicas differ', () => {
    const a = new LeafHasher(64)
    const b = new LeafHasher(64)
    const entries = Array.from({ length: 500 }, (_, i) => [Buffer.from(`k${i}`), v(i)] as const)
    for (const [key, version] of entries) a.add(key, version)
    for (const [key, version] of [...entries].reverse()) b.add(key, version)
    expect(differingLeaves(a.hashes, b.hashes)).toEqual([])
    b.add(Buffer.from('extra'), v(1))
    expect(differingLeaves(a.hashes, b.hashes)).toHaveLength(1)
    const c = new LeafHasher(64)
    for (const [key, version] of entries) c.add(key, key.toString() === 'k7' ? v(9999) : version)
    expect(differingLeaves(a.hashes, c.hashes)).toHaveLength(1)
  })

  it('pulls what the peer has newer or alone, pushes what we have newer or alone', () => {
    const kv = (key: string, ms: number) => ({ key: Buffer.from(key), version: v(ms) })
    const plan = planExchange([kv('same', 1), kv('mine-newer', 5), kv('only-mine', 1), kv('theirs-newer', 1)], [kv('same', 1), kv('mine-newer', 4), kv('only-theirs', 1), kv('theirs-newer', 2)])
    expect(plan.pull.map(String).sort()).toEqual(['only-theirs', 'theirs-newer'])
    expect(plan.push.map(String).sort()).toEqual(['mine-newer', 'only-mine'])
  })
})
