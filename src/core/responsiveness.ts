import assert from 'node:assert/strict'

export interface ResponsivenessConfig {
  /** A replica timeout is never shorter than this: a pause (GC, a compaction) is not a failure. */
  timeoutFloorMs: number
  /** ...nor longer than this (the configured replica timeout). */
  timeoutCapMs: number
  /** How long a node that failed to answer is avoided before the first probe. */
  avoidMs: number
  /** Each failed probe doubles the wait before the next one, up to this. */
  avoidMsMax: number
}

export const defaultResponsivenessConfig: ResponsivenessConfig = {
  timeoutFloorMs: 250,
  timeoutCapMs: 1000,
  avoidMs: 250,
  avoidMsMax: 2000,
}

/**
 * Extra time a request of `bytes` may take on top of a node's timeout: to cross the network and
 * be decoded and stored, at a conservative 8 MiB/s. Answer times measure small requests (most
 * are), so a 4 MiB batch would otherwise time out on a node that is merely busy with it.
 */
export function transferAllowanceMs(bytes: number): number {
  return bytes / transferBytesPerMs
}
const transferBytesPerMs = (8 * 1024 * 1024) / 1000

/** The default config with timeouts capped at `timeoutCapMs` (a configured replica timeout). */
export function responsivenessWithin(timeoutCapMs: number): Partial<ResponsivenessConfig> {
  return { timeoutCapMs, timeoutFloorMs: Math.min(defaultResponsivenessConfig.timeoutFloorMs, timeoutCapMs) }
}

/**
 * Whether one remote node answers, as one caller sees it. Pure: times come in as arguments.
 *
 * - Its answer times give the caller's timeout for it, as TCP does for retransmissions
 *   (Jacobson/Karels): the smoothed answer time plus four times its mean deviation, within a
 *   floor and a cap. A slow but steady node gets a longer timeout; a fast one a short one.
 * - A request it does not answer in time, or a broken connection, makes it *avoided* at once:
 *   callers send it nothing more, without waiting for the failure detector (which needs
 *   seconds of missed heartbeats), until a probe gets an answer. Probes back off from
 *   `avoidMs` to `avoidMsMax`. Any answer, even a late one, shows the node is reachable again.
 */
export class Responsiveness {
  private readonly config: ResponsivenessConfig
  private smoothedMs: number | undefined
  private deviationMs = 0
  private avoided = false
  private avoidedAtMs = 0
  private nextProbeAtMs = 0
  private backoffMs: number
  private probing = false
  private failedProbes_ = 0
  private lastAnswerAtMs = -Infinity
  private avoidedCount_ = 0

  constructor(config: Partial<ResponsivenessConfig> = {}) {
    this.config = { ...defaultResponsivenessConfig, ...config }
    assert.ok(this.config.timeoutFloorMs > 0 && this.config.timeoutFloorMs <= this.config.timeoutCapMs, 'timeout floor must be positive and at most the cap')
    assert.ok(this.config.avoidMs > 0 && this.config.avoidMs <= this.config.avoidMsMax, 'avoidMs must be positive and at most avoidMsMax')
    this.backoffMs = this.config.avoidMs
  }

  /** A reply came `answerMs` after its request was sent. */
  answered(answerMs: number, nowMs: number): void {
    this.lastAnswerAtMs = Math.max(this.lastAnswerAtMs, nowMs)
    if (answerMs >= 0) {
      if (this.smoothedMs === undefined) {
        this.smoothedMs = answerMs
        this.deviationMs = answerMs / 2
      } else {
        this.deviationMs += (Math.abs(answerMs - this.smoothedMs) - this.deviationMs) / 4
        this.smoothedMs += (answerMs - this.smoothedMs) / 8
      }
    }
    this.recovered(nowMs)
  }

  /**
   * A request got no reply within `waitedMs`. Not held against the node when the wait was
   * shorter than the floor (the caller's own deadline was nearly spent), or when the node
   * answered other requests while this one waited: then this request was slow (a node
   * coordinating it waits on its own replicas), not the node unreachable.
   */
  timedOut(waitedMs: number, nowMs: number): void {
    if (waitedMs < this.config.timeoutFloorMs || this.lastAnswerAtMs > nowMs - waitedMs) return
    this.avoid(nowMs)
  }

  /** The connection to the node broke (its requests all failed at once). */
  broke(nowMs: number): void {
    this.avoid(nowMs)
  }

  private avoid(nowMs: number): void {
    if (this.avoided) return
    this.avoided = true
    this.avoidedCount_++
    this.avoidedAtMs = nowMs
    this.probing = false
    this.backoffMs = this.config.avoidMs
    this.nextProbeAtMs = nowMs + this.backoffMs
  }

  private recovered(_nowMs: number): void {
    this.avoided = false
    this.probing = false
    this.failedProbes_ = 0
    this.backoffMs = this.config.avoidMs
  }

  /** How many times the node has been avoided. */
  get avoidedCount(): number {
    return this.avoidedCount_
  }

  /** When the node last answered anything (-Infinity: never). */
  get lastAnswerAt(): number {
    return this.lastAnswerAtMs
  }

  /** False while the node is avoided. */
  usable(): boolean {
    return !this.avoided
  }

  /** Since when the node has been avoided (undefined when it is not). */
  avoidedSinceMs(): number | undefined {
    return this.avoided ? this.avoidedAtMs : undefined
  }

  /** When the next probe is due (undefined when none is: not avoided, or one is out). */
  probeDueAtMs(): number | undefined {
    return this.avoided && !this.probing ? this.nextProbeAtMs : undefined
  }

  /** Whether a probe should be sent now; if so, it is counted as out until its outcome. */
  takeProbe(nowMs: number): boolean {
    if (!this.avoided || this.probing || nowMs < this.nextProbeAtMs) return false
    this.probing = true
    return true
  }

  /** A probe got its answer: the node is back. */
  probeAnswered(answerMs: number, nowMs: number): void {
    this.answered(answerMs, nowMs)
  }

  /** A probe got none: wait twice as long before the next. */
  probeFailed(nowMs: number): void {
    if (!this.avoided) return
    this.probing = false
    this.failedProbes_++
    this.backoffMs = Math.min(this.config.avoidMsMax, this.backoffMs * 2)
    this.nextProbeAtMs = nowMs + this.backoffMs
  }

  /** Probes that failed since the node was last heard from. */
  get failedProbes(): number {
    return this.failedProbes_
  }

  /** How long a probe waits: the cap, since a node coming back may answer slowly at first. */
  probeTimeoutMs(): number {
    return this.config.timeoutCapMs
  }

  /** How long to wait for this node's reply before counting it as failed. */
  timeoutMs(): number {
    if (this.smoothedMs === undefined) return this.config.timeoutCapMs
    const estimate = this.smoothedMs + 4 * this.deviationMs
    return Math.min(this.config.timeoutCapMs, Math.max(this.config.timeoutFloorMs, Math.ceil(estimate)))
  }
}
