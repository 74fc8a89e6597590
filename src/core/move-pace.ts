/**
 * How fast a node copies partitions during a membership change (and exchanges records in a
 * repair): a rate in records a second, set once per heartbeat interval from how late the
 * cluster's event loops run. Clients wait on every node, so the reading is the worst live
 * node's (the p99 of how late its timers fired over the last interval).
 *
 * Additive-increase/multiplicative-decrease, as TCP paces a connection: over the target the
 * rate halves at once; well under it (below half the target) it grows by a quarter; between
 * the two it holds, so a rate that keeps the cluster just under the target stays there rather
 * than oscillating. It never goes below `recordsPerSecondMin` (a change always ends) nor above
 * `recordsPerSecondMax` (kumo start --move-rate). Several nodes copying at once (a drain) each
 * react to the same reading, so together they back off as one.
 *
 * Pure: the caller passes the readings; no time, no I/O.
 */
export interface MovePaceConfig {
  /** Records a second at most (kumo start --move-rate). */
  recordsPerSecondMax: number
  /** Records a second at least, whatever the readings: a move always makes progress. */
  recordsPerSecondMin: number
  /** Event-loop delay (p99, ms) above which copies slow down; 0: never (the rate is the maximum). */
  loopDelayTargetMs: number
}

/**
 * Records a second a node copies and exchanges at most by default (kumo start --move-rate): a
 * change's copies together run at about this, whoever does them. It was 20,000, then 5,000, now
 * 2,500 (bench/RESULTS.md, `npm run bench:moves`, 1,000,000 records on the 2-core machine where
 * the clients, the benchmark and four nodes share both cores):
 * - 20,000: the copies reached 9,000-12,000 a second and the clients kept 35-52% of their
 *   throughput through a join and 49% through a drain;
 * - 5,000: 3,600 a second, and at 8 requests in flight (a p99 of 5-8 ms on three nodes
 *   without a move) the clients kept 76% of the four nodes' steady throughput through the join
 *   and 65% through the drain (p99 14-19 ms);
 * - 2,500: 1,860 a second, and they kept 95-98% through the join and 80-98% through the drain
 *   (three runs; p99 12-18 ms): issue #17's 70% and 20 ms. Against the three nodes a join
 *   starts from it was 64-78%: a fourth node process on two shared cores costs 20-32% by itself.
 * The cost is time: 750,000 records take about 400 s instead of 205. Copying is CPU work on
 * every node it touches (read, send, write, compare, compact), so a default has to leave room
 * for the clients on a small machine; one with cores to spare raises it, and `kumo plan` and
 * `kumo transfers` say how long a change takes at the rate in force.
 */
export const moveRecordsPerSecondDefault = 2_500
/** Bytes a second a node copies and exchanges at most by default (kumo start --move-bytes). */
export const moveBytesPerSecondDefault = 32 * 1024 * 1024

/** The least rate as a share of the most: a tenth. */
export const movePaceMinShare = 1 / 10
export const loopDelayTargetMsDefault = 0

export function movePaceConfig(recordsPerSecondMax: number, loopDelayTargetMs = loopDelayTargetMsDefault): MovePaceConfig {
  return { recordsPerSecondMax, recordsPerSecondMin: Math.max(1, Math.min(recordsPerSecondMax, Math.ceil(recordsPerSecondMax * movePaceMinShare))), loopDelayTargetMs }
}

const decrease = 0.5
const increase = 1.25
/** A move starts at this share of the maximum and grows from there while the cluster keeps up. */
const startShare = 0.25

export class MovePace {
  private rate: number

  constructor(readonly config: MovePaceConfig) {
    const { recordsPerSecondMax: max, recordsPerSecondMin: min, loopDelayTargetMs: target } = config
    if (!(Number.isFinite(max) && max >= 1)) throw new RangeError(`the most records a second must be at least 1, got ${max}`)
    if (!(Number.isFinite(min) && min >= 1 && min <= max)) throw new RangeError(`the least records a second must be 1 to ${max}, got ${min}`)
    if (!(Number.isFinite(target) && target >= 0)) throw new RangeError(`the loop delay target must be 0 or more ms, got ${target}`)
    this.rate = this.startRate()
  }

  /** Records a second allowed now. */
  get recordsPerSecond(): number {
    return this.rate
  }

  /** Whether the rate follows the readings (a target is set) rather than staying at the maximum. */
  get adaptive(): boolean {
    return this.config.loopDelayTargetMs > 0
  }

  /** A new move begins: from the starting rate again, not where the last one ended. */
  restart(): number {
    this.rate = this.startRate()
    return this.rate
  }

  /** One reading (the worst live node's loop delay over the last interval, ms); returns the new rate. */
  observe(loopDelayMs: number): number {
    if (!this.adaptive) return this.rate
    const { recordsPerSecondMax: max, recordsPerSecondMin: min, loopDelayTargetMs: target } = this.config
    if (!(loopDelayMs >= 0)) return this.rate
    if (loopDelayMs > target) this.rate = Math.max(min, this.rate * decrease)
    else if (loopDelayMs <= target / 2) this.rate = Math.min(max, this.rate * increase)
    return this.rate
  }

  private startRate(): number {
    const { recordsPerSecondMax: max, recordsPerSecondMin: min } = this.config
    return this.adaptive ? Math.max(min, max * startShare) : max
  }
}
