/**
 * How long a node has recently taken to answer this caller, in milliseconds: an average of
 * its answer times weighted by their age, a weight of e^(-age / halfLifeMs · ln 2). Pure: the
 * caller passes the time.
 *
 * Weighted by time, not by count: the answers of one frame (a turn's requests to a node share
 * one, and come back together) are one moment of the node, and with a weight per answer the
 * last frame's few dozen answers made the average that one moment. A node that is slow only
 * part of the time (a burst of work, a collection) then looked fast or slow by the luck of its
 * last frame; over the last few hundred milliseconds it looks as slow as it is.
 *
 * Unknown until its answers span `spanMinMs`: the answers of one moment (a batch's, say) may
 * all be late for a reason of that moment alone, and a node judged slow on them would be
 * avoided, and so get no answers to correct it, for as long as staleMs. Forgotten when no
 * answer has come for `staleMs`: a node that was avoided for being slow gets no answers to show
 * it has recovered, so after a while it is tried again as an unknown.
 */
export class AnswerTime {
  /** Sum of weighted answer times and sum of weights, both as of lastAtMs. */
  private weightedMs = 0
  private weights = 0
  private lastAtMs = 0
  /** When the first answer of this average came. */
  private firstAtMs = 0

  constructor(
    /** The age at which an answer counts half as much as one just in. */
    private readonly halfLifeMs = 100,
    private readonly staleMs = 1000,
    private readonly spanMinMs = 50,
  ) {
    if (!(halfLifeMs > 0)) throw new RangeError(`answer time halfLifeMs must be positive, got ${halfLifeMs}`)
    if (!(staleMs > 0)) throw new RangeError(`answer time staleMs must be positive, got ${staleMs}`)
    if (!(spanMinMs >= 0 && spanMinMs < staleMs)) throw new RangeError(`answer time spanMinMs must be in [0, staleMs), got ${spanMinMs}`)
  }

  observe(answerMs: number, nowMs: number): void {
    if (!(answerMs >= 0)) return
    if (this.weights === 0 || nowMs - this.lastAtMs > this.staleMs) {
      this.weightedMs = 0
      this.weights = 0
      this.firstAtMs = nowMs
      this.lastAtMs = nowMs
    } else if (nowMs > this.lastAtMs) {
      const decay = Math.pow(0.5, (nowMs - this.lastAtMs) / this.halfLifeMs)
      this.weightedMs *= decay
      this.weights *= decay
    }
    this.weightedMs += answerMs
    this.weights += 1
    this.lastAtMs = Math.max(this.lastAtMs, nowMs)
    this.firstAtMs = Math.min(this.firstAtMs, nowMs)
  }

  /**
   * The average, or undefined when there is none, its answers span less than spanMinMs, or the
   * newest answer is older than staleMs.
   */
  value(nowMs: number): number | undefined {
    if (this.weights === 0 || nowMs - this.lastAtMs > this.staleMs || this.lastAtMs - this.firstAtMs < this.spanMinMs) return undefined
    return this.weightedMs / this.weights
  }
}
