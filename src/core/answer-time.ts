/**
 * How long a node has recently taken to answer this caller: an exponentially weighted average
 * of its answer times, in milliseconds. Pure: the caller passes the time.
 *
 * Forgotten when no answer has come for `staleMs`: a node that was avoided for being slow gets
 * no answers to show it has recovered, so after a while it is tried again as an unknown.
 */
export class AnswerTime {
  private averageMs: number | undefined
  private lastAtMs = 0

  constructor(
    /** Weight of the newest answer, 0 < weight <= 1. */
    private readonly weight = 0.25,
    private readonly staleMs = 1000,
  ) {
    if (!(weight > 0 && weight <= 1)) throw new RangeError(`answer time weight must be in (0, 1], got ${weight}`)
    if (!(staleMs > 0)) throw new RangeError(`answer time staleMs must be positive, got ${staleMs}`)
  }

  observe(answerMs: number, nowMs: number): void {
    if (!(answerMs >= 0)) return
    this.averageMs = this.averageMs === undefined || nowMs - this.lastAtMs > this.staleMs ? answerMs : this.averageMs + this.weight * (answerMs - this.averageMs)
    this.lastAtMs = nowMs
  }

  /** The average, or undefined when there is none or the newest answer is older than staleMs. */
  value(nowMs: number): number | undefined {
    return nowMs - this.lastAtMs > this.staleMs ? undefined : this.averageMs
  }
}
