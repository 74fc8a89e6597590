/**
 * A token bucket: `ratePerSecond` tokens a second, at most `burst` saved up. Pure: the caller
 * passes the time and waits as told. Used to pace scans (bytes) so they share a node with the
 * requests that must stay fast.
 */
export class TokenBucket {
  private tokens: number
  private atMs: number | undefined

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
  ) {
    if (!(ratePerSecond > 0) || !(burst > 0)) throw new RangeError('a token bucket needs a positive rate and burst')
    this.tokens = burst
  }

  /**
   * Takes `amount` tokens (going into debt if there are too few) and returns how long to wait
   * before going on, in ms: 0 while the bucket had them.
   */
  take(amount: number, nowMs: number): number {
    if (this.atMs !== undefined) this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.atMs) * this.ratePerSecond) / 1000)
    this.atMs = nowMs
    this.tokens -= amount
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.ratePerSecond)
  }
}
