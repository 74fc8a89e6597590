import assert from 'node:assert/strict'

export type QuorumState = 'pending' | 'met' | 'failed'

/**
 * Counts replica answers for one request. Met at `required` successes; failed as soon as the
 * successes still possible can no longer reach it, so a request never waits on a lost cause.
 */
export class QuorumTracker {
  private acks = 0
  private failures = 0

  constructor(
    readonly required: number,
    readonly total: number,
  ) {
    assert.ok(required >= 1 && required <= total, `quorum ${required} of ${total} is impossible`)
  }

  ack(): QuorumState {
    this.acks++
    return this.state()
  }

  fail(): QuorumState {
    this.failures++
    return this.state()
  }

  state(): QuorumState {
    if (this.acks >= this.required) return 'met'
    if (this.total - this.failures < this.required) return 'failed'
    return 'pending'
  }

  get acknowledged(): number {
    return this.acks
  }

  get failed(): number {
    return this.failures
  }
}
