import assert from 'node:assert/strict'

export type NodeHealth = 'up' | 'suspect' | 'down'

export interface PhiAccrualConfig {
  /** phi at or above which a node is down (Cassandra's default is 8). */
  threshold: number
  /** phi at or above which a node is suspect. */
  suspectThreshold: number
  /** Heartbeat intervals remembered. */
  windowSize: number
  /** Floor on the standard deviation, so a perfectly regular sender is not judged too eagerly. */
  minStdDevMs: number
  /** A pause this long (GC, a busy event loop) is forgiven before phi starts to climb. */
  acceptablePauseMs: number
  /** The interval assumed before two heartbeats have been seen. */
  firstIntervalMs: number
}

export const defaultPhiAccrualConfig: PhiAccrualConfig = {
  threshold: 8,
  suspectThreshold: 4,
  windowSize: 100,
  minStdDevMs: 200,
  acceptablePauseMs: 1000,
  firstIntervalMs: 1000,
}

/**
 * Phi-accrual failure detector (Hayashibara et al.), the normal-distribution form Akka uses.
 * phi = -log10(P(a heartbeat arrives later than now)), given the observed inter-arrival times.
 * Pure: every method takes the current time.
 */
export class PhiAccrualDetector {
  private readonly config: PhiAccrualConfig
  private readonly intervals: number[] = []
  private sum = 0
  private sumSquares = 0
  private lastMs: number | undefined

  constructor(config: Partial<PhiAccrualConfig> = {}) {
    this.config = { ...defaultPhiAccrualConfig, ...config }
    assert.ok(this.config.suspectThreshold <= this.config.threshold)
    assert.ok(this.config.windowSize >= 1)
  }

  heartbeat(nowMs: number): void {
    if (this.lastMs === undefined) {
      // Seed the window so the first verdicts use a sane interval rather than none.
      this.record(this.config.firstIntervalMs)
    } else if (nowMs >= this.lastMs) {
      this.record(nowMs - this.lastMs)
    }
    this.lastMs = nowMs
  }

  private record(intervalMs: number): void {
    this.intervals.push(intervalMs)
    this.sum += intervalMs
    this.sumSquares += intervalMs * intervalMs
    if (this.intervals.length > this.config.windowSize) {
      const old = this.intervals.shift()!
      this.sum -= old
      this.sumSquares -= old * old
    }
  }

  /** Suspicion level; 0 before any heartbeat (nothing to judge yet). */
  phi(nowMs: number): number {
    if (this.lastMs === undefined) return 0
    const elapsed = Math.max(0, nowMs - this.lastMs)
    const count = this.intervals.length
    const mean = this.sum / count + this.config.acceptablePauseMs
    const variance = Math.max(0, this.sumSquares / count - (this.sum / count) ** 2)
    const stdDev = Math.max(Math.sqrt(variance), this.config.minStdDevMs)
    // Logistic approximation of the normal CDF's tail (error < 0.02%), as in Akka.
    const y = (elapsed - mean) / stdDev
    const e = Math.exp(-y * (1.5976 + 0.070566 * y * y))
    const tail = elapsed > mean ? e / (1 + e) : 1 - 1 / (1 + e)
    return tail <= 0 ? Infinity : -Math.log10(tail)
  }

  state(nowMs: number): NodeHealth {
    if (this.lastMs === undefined) return 'down'
    const phi = this.phi(nowMs)
    if (phi >= this.config.threshold) return 'down'
    if (phi >= this.config.suspectThreshold) return 'suspect'
    return 'up'
  }
}
