/**
 * How many batches of a bulk load may be in flight: additive increase, multiplicative decrease,
 * TCP's congestion window counted in batches. A batch retried after a retryable error (a replica
 * that did not answer in time while its LevelDB stalled writes behind a compaction, a node that
 * said OVERLOADED) means the cluster is not keeping up with what is in flight: the window halves,
 * so the load stops adding to the queue it is stuck behind rather than retry into it at full
 * pressure until one batch runs out of time. Every window's worth of batches acknowledged after
 * that grows it by one, back to the most the caller allowed.
 *
 * One decrease per congestion event: the batches already in flight when the window halved were
 * sent into the same stall, so their retries do not halve it again; a batch sent after the
 * decrease that is retried does. No I/O, no time: the load tells it what happened.
 */
export class LoadWindow {
  private allowed: number
  private acknowledgedSinceGrowth = 0
  /** Attempts sent so far; an attempt's sequence number is its place in that count (from 0). */
  private attempts = 0
  /** Sequence numbers up to this one were in flight at the last decrease (-1: none yet). */
  private lastSentBeforeDecrease = -1

  constructor(readonly max: number) {
    if (!(Number.isInteger(max) && max >= 1)) throw new RangeError(`a load window's maximum must be a whole number of at least 1, got ${max}`)
    this.allowed = max
  }

  /** Batches that may be in flight now: from 1 to max. */
  get limit(): number {
    return this.allowed
  }

  /** An attempt of a batch (its first send or a retry) goes out; returns its sequence number. */
  sent(): number {
    return this.attempts++
  }

  /** The attempt with this sequence number failed with a retryable error and will be retried. */
  retried(sequence: number): void {
    if (!(Number.isInteger(sequence) && sequence >= 0 && sequence < this.attempts)) throw new RangeError(`no attempt ${sequence} was sent`)
    if (sequence <= this.lastSentBeforeDecrease) return
    this.allowed = Math.max(1, Math.floor(this.allowed / 2))
    this.acknowledgedSinceGrowth = 0
    this.lastSentBeforeDecrease = this.attempts - 1
  }

  /** A batch was acknowledged. */
  acknowledged(): void {
    if (this.allowed === this.max) return
    this.acknowledgedSinceGrowth++
    if (this.acknowledgedSinceGrowth >= this.allowed) {
      this.allowed++
      this.acknowledgedSinceGrowth = 0
    }
  }
}
