import * as hdr from 'hdr-histogram-js'
import type { KumoClient } from '../../src/index.js'

export interface WorkloadOptions {
  /** Keys are `${prefix}${n}`, unique per write. */
  prefix: string
  writers?: number
  readers?: number
  /** Bound on the whole load (writes and reads each), so it does not itself starve two cores. */
  writesPerSecond?: number
  readsPerSecond?: number
}

export interface Failure {
  /** When it failed, from the start of the load. */
  atMs: number
  op: 'put' | 'get'
  key: string
  /** How long the request took to fail. */
  ms: number
  error: string
}

export interface WorkloadReport {
  requests: number
  failed: number
  failures: Failure[]
  acknowledged: number
  /** The longest time in which no write was acknowledged, from start to stop. */
  longestGapMs: number
  /** Latency over the whole run, and during the fault window (markFault .. markHeal). */
  p99Ms: number
  faultP99Ms: number
  faultRequests: number
  /** Stretches of 250 ms or more without an acknowledged write, timed from the fault. */
  gaps: { atMs: number; ms: number }[]
  /** Failures by operation and error code, e.g. `put UNAVAILABLE`. */
  failuresByKind: Record<string, number>
  /** How long failed requests took to fail: the longest, and the 99th percentile. */
  failureMsMax: number
  failureP99Ms: number
  /** The slowest failures that took over a second to fail. */
  slowFailures: Failure[]
  /**
   * The longest time to fail of a request made 2 s or more after the fault began, by when every
   * client and node has seen which replicas it cannot reach (0: none failed).
   */
  settledFailureMsMax: number
  /** When each stale read happened, in ms after the heal (negative: during the fault). */
  staleReadsAfterHealMs: number[]
}

const histogram = (): hdr.Histogram => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 })

/** The value a workload writes for a key: reads and read-backs check it. */
export const valueOf = (key: string): string => `value-of-${key}`

/**
 * A bounded load of quorum writes of unique keys and quorum reads of acknowledged keys, that
 * records every acknowledged write, every failure (a stale or missing read is one), latency,
 * and the longest stretch in which no write was acknowledged.
 */
export class Workload {
  readonly acked: string[] = []
  /** The first failures (failedCount counts them all). */
  readonly failures: Failure[] = []
  failedCount = 0
  requests = 0
  private readonly all = histogram()
  private readonly failing = histogram()
  private readonly failuresByKind: Record<string, number> = {}
  private readonly slowFailures: Failure[] = []
  private settledFailureMsMax = 0
  private readonly fault = histogram()
  private window = histogram()
  private inFault = false
  private running = true
  private next = 0
  private startedMs = 0
  private lastAckMs = 0
  private longestGapMs = 0
  private readonly workers: Promise<void>[] = []
  private writeSlotMs = 0
  private readSlotMs = 0

  constructor(
    private readonly db: KumoClient,
    private readonly options: WorkloadOptions,
  ) {}

  start(): this {
    this.startedMs = this.lastAckMs = Date.now()
    for (let i = 0; i < (this.options.writers ?? 16); i++) this.workers.push(this.writer())
    for (let i = 0; i < (this.options.readers ?? 4); i++) this.workers.push(this.reader())
    return this
  }

  /** Starts a new latency window (windowLatency reads it). */
  markWindow(): void {
    this.window = histogram()
  }

  /** The median and 99th percentile latency since markWindow(), and the requests in it. */
  windowLatency(): { p50Ms: number; p99Ms: number; requests: number } {
    return { p50Ms: this.window.getValueAtPercentile(50) / 1000, p99Ms: this.window.getValueAtPercentile(99) / 1000, requests: this.window.totalCount }
  }

  markFault(): void {
    this.inFault = true
    this.faultAtMs = Date.now() - this.startedMs
  }

  markHeal(): void {
    this.inFault = false
    this.healAtMs = Date.now() - this.startedMs
  }

  /** Waits until `count` more writes have been acknowledged (and at least `minMs` has passed). */
  async progress(count: number, minMs = 0, timeoutMs = 60_000): Promise<void> {
    const target = this.acked.length + count
    const notBefore = Date.now() + minMs
    const deadline = Date.now() + Math.max(timeoutMs, minMs + 10_000)
    while (this.acked.length < target || Date.now() < notBefore) {
      if (Date.now() > deadline) throw new Error(`workload: ${target - this.acked.length} of ${count} writes still unacknowledged after ${timeoutMs} ms (${this.failures.length} failures${this.failures[0] ? `, first: ${this.failures[0].error}` : ''})`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  async stop(): Promise<WorkloadReport> {
    this.running = false
    await Promise.all(this.workers)
    this.gap(Date.now())
    return {
      requests: this.requests,
      failed: this.failedCount,
      failures: this.failures.slice(0, 20),
      acknowledged: this.acked.length,
      longestGapMs: this.longestGapMs,
      p99Ms: this.all.getValueAtPercentile(99) / 1000,
      faultP99Ms: this.fault.getValueAtPercentile(99) / 1000,
      faultRequests: this.fault.totalCount,
      gaps: this.gaps.map((g) => ({ ...g, atMs: g.atMs - this.faultAtMs })),
      failuresByKind: { ...this.failuresByKind },
      failureMsMax: this.failing.maxValue / 1000,
      failureP99Ms: this.failing.getValueAtPercentile(99) / 1000,
      slowFailures: this.slowFailures.map((f) => ({ ...f, atMs: f.atMs - this.faultAtMs })),
      settledFailureMsMax: this.settledFailureMsMax,
      staleReadsAfterHealMs: this.failures.filter((f) => f.error.startsWith('STALE')).map((f) => f.atMs - this.healAtMs),
    }
  }

  private gap(now: number): void {
    const gap = now - this.lastAckMs
    this.longestGapMs = Math.max(this.longestGapMs, gap)
    if (gap >= 250 && this.gaps.length < 20) this.gaps.push({ atMs: this.lastAckMs - this.startedMs, ms: gap })
  }

  /** Stretches of 250 ms or more without an acknowledged write: where they began, how long. */
  readonly gaps: { atMs: number; ms: number }[] = []
  /** When the fault began, and when it was healed, from the start. */
  faultAtMs = 0
  healAtMs = 0

  private record(startedNs: bigint, op: 'put' | 'get', key: string, error?: unknown): void {
    const us = Math.max(1, Number((process.hrtime.bigint() - startedNs) / 1000n))
    this.requests++
    this.all.recordValue(us)
    if (this.inFault) this.fault.recordValue(us)
    this.window.recordValue(us)
    if (error !== undefined) {
      const e = error as { code?: string; message?: string }
      this.failedCount++
      const startedAt = Date.now() - us / 1000 - this.startedMs
      if (this.faultAtMs > 0 && startedAt >= this.faultAtMs + 2000) this.settledFailureMsMax = Math.max(this.settledFailureMsMax, us / 1000)
      this.failing.recordValue(us)
      const kind = `${op} ${e.code ?? 'ERROR'}`
      this.failuresByKind[kind] = (this.failuresByKind[kind] ?? 0) + 1
      if (us > 1e6 && (this.slowFailures.length < 5 || us / 1000 > this.slowFailures[4]!.ms)) {
        this.slowFailures.push({ atMs: Date.now() - this.startedMs, op, key, ms: us / 1000, error: `${e.code ?? 'ERROR'}: ${e.message ?? String(error)}` })
        this.slowFailures.sort((a, b) => b.ms - a.ms)
        this.slowFailures.length = Math.min(5, this.slowFailures.length)
      }
      if (this.failures.length < 1000) this.failures.push({ atMs: Date.now() - this.startedMs, op, key, ms: us / 1000, error: `${e.code ?? 'ERROR'}: ${e.message ?? String(error)}` })
      // A closed client ends the load (the test is over, or failed).
      if (e.code === 'CLOSED') this.running = false
    }
  }

  /** Sleeps until this caller's slot under the rate bound. */
  private async pace(kind: 'write' | 'read'): Promise<void> {
    const rate = kind === 'write' ? this.options.writesPerSecond : this.options.readsPerSecond
    if (rate === undefined) return
    const now = Date.now()
    const slot = Math.max(now, kind === 'write' ? this.writeSlotMs : this.readSlotMs)
    if (kind === 'write') this.writeSlotMs = slot + 1000 / rate
    else this.readSlotMs = slot + 1000 / rate
    if (slot > now) await new Promise((r) => setTimeout(r, slot - now))
  }

  private async writer(): Promise<void> {
    while (this.running) {
      await this.pace('write')
      if (!this.running) return
      const key = `${this.options.prefix}${String(this.next++).padStart(8, '0')}`
      const t0 = process.hrtime.bigint()
      try {
        await this.db.put(key, valueOf(key))
        const now = Date.now()
        this.gap(now)
        this.lastAckMs = now
        this.acked.push(key)
        this.record(t0, 'put', key)
      } catch (err) {
        this.record(t0, 'put', key, err)
      }
    }
  }

  private async reader(): Promise<void> {
    while (this.running) {
      await this.pace('read')
      if (!this.running) return
      const key = this.acked[Math.floor(Math.random() * this.acked.length)]
      if (key === undefined) {
        await new Promise((r) => setTimeout(r, 10))
        continue
      }
      const t0 = process.hrtime.bigint()
      try {
        const value = await this.db.get(key)
        if (value?.toString() !== valueOf(key)) throw Object.assign(new Error(`read ${value === undefined ? 'nothing' : 'another value'} for an acknowledged key`), { code: 'STALE' })
        this.record(t0, 'get', key)
      } catch (err) {
        this.record(t0, 'get', key, err)
      }
    }
  }
}

/** Reads every key back at `all` and returns those that do not hold their acknowledged value. */
export async function readBack(db: KumoClient, keys: readonly string[]): Promise<string[]> {
  const lost: string[] = []
  for (let i = 0; i < keys.length; i += 1000) {
    const chunk = keys.slice(i, i + 1000)
    const values = await db.getMany(chunk, { consistency: 'all', timeoutMs: 30_000 })
    values.forEach((v, j) => {
      if (v?.toString() !== valueOf(chunk[j]!)) lost.push(chunk[j]!)
    })
  }
  return lost
}
