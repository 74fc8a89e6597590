/**
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. Pure: the caller
 * passes the time and waits as told. Used to pace scans (bytes) so they share a node with the
 * requests that must stay fast.
 */
export class TokenBucket {
  private tokens: number
  private atMs: number | undefined

  constructor(
    private rate: number,
    readonly burst: number,
  ) {
    if (!(rate > 0) || !(burst > 0)) throw new RangeError('a token bucket needs a positive rate and burst')
    this.tokens = burst
  }

  get ratePerSecond(): number {
    return this.rate
  }

  /** A new rate from `nowMs` on: tokens saved up until then were earned at the old one. */
  setRate(ratePerSecond: number, nowMs: number): void {
    if (!(ratePerSecond > 0)) throw new RangeError('a token bucket needs a positive rate')
    this.refill(nowMs)
    this.rate = ratePerSecond
  }

  private refill(nowMs: number): void {
    if (this.atMs !== undefined) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.atMs) * this.rate) / 1000)
    this.atMs = nowMs
  }

  /**
   * Takes `amount` tokens (going into debt if there are too few) and returns how long to wait
   * before going on, in ms: 0 while the bucket had them.
   */
  take(amount: number, nowMs: number): number {
    this.refill(nowMs)
    this.tokens -= amount
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate)
  }
}
