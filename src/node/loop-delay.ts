import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'

/** How often the event loop is sampled: each sample is a timer that fires this often. */
const resolutionMs = 10

/**
 * How late this process's event loop runs: the 99th percentile of how much later than asked
 * a timer fired, over the interval since the last reading. A loop that runs late is one whose
 * requests wait too, for whatever reason: work of its own in long steps, or a machine whose
 * cores are taken by other processes. Membership gossips it (core/move-pace slows membership
 * copies while any node's is high).
 */
export class LoopDelayWatch {
  private readonly histogram: IntervalHistogram

  constructor() {
    this.histogram = monitorEventLoopDelay({ resolution: resolutionMs })
    this.histogram.enable()
  }

  /** The p99 delay in ms since the last reading (0 when no sample was taken), and a new interval. */
  read(): number {
    // Each sample is the whole interval between two timer firings: the resolution is not delay.
    const p99 = this.histogram.count === 0 ? 0 : Math.max(0, this.histogram.percentile(99) / 1e6 - resolutionMs)
    this.histogram.reset()
    return p99
  }

  stop(): void {
    this.histogram.disable()
  }
}
