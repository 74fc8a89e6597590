import type { Logger } from 'pino'

/** How far a node's clock may be from the cluster's before it stops coordinating writes. */
export const defaultClockOffsetMaxMs = 10_000

/**
 * Logs when this node's clock moves beyond the limit from the cluster's (the median of the live
 * nodes' clocks, measured through gossip) and when it is back within it: beyond it, the node
 * coordinates no writes (Coordinator.checkClock), and the log says why.
 */
export class ClockSkewWatch {
  private timer: NodeJS.Timeout | undefined
  private beyond = false

  constructor(
    private readonly deps: { skewMs: () => number; logger: Logger },
    private readonly config: { limitMs: number; intervalMs: number },
  ) {}

  start(): void {
    this.timer = setInterval(() => this.check(), this.config.intervalMs)
    this.timer.unref()
  }

  check(): void {
    const skewMs = this.deps.skewMs()
    const beyond = Math.abs(skewMs) > this.config.limitMs
    if (beyond === this.beyond) return
    this.beyond = beyond
    if (beyond) {
      this.deps.logger.error(
        { skewMs: Math.round(skewMs), limitMs: this.config.limitMs },
        `this node's clock is ${(Math.abs(skewMs) / 1000).toFixed(1)} s ${skewMs > 0 ? 'ahead of' : 'behind'} the cluster's: it coordinates no writes until the clock is fixed (check NTP)`,
      )
    } else this.deps.logger.warn({ skewMs: Math.round(skewMs) }, "this node's clock agrees with the cluster's again: it coordinates writes")
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
