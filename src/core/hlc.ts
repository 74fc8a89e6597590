import assert from 'node:assert/strict'

/** A hybrid logical clock reading: 48 bits of milliseconds and a 16-bit counter. */
export interface HlcTimestamp {
  readonly ms: number
  readonly counter: number
}

const msMax = 2 ** 48 - 1
const counterMax = 0xffff

export function compareHlc(a: HlcTimestamp, b: HlcTimestamp): number {
  return a.ms !== b.ms ? (a.ms < b.ms ? -1 : 1) : a.counter - b.counter
}

/**
 * Hybrid logical clock (Kulkarni et al.). Pure: the physical time is passed in, so tests drive
 * it. Readings never go backwards, even when the wall clock does, and a node that has seen a
 * remote timestamp stamps later writes above it: last-writer-wins then follows causality across
 * nodes whose clocks disagree by less than `driftMsMax`.
 */
export class HybridClock {
  private ms = 0
  private counter = 0

  /** Remote readings further than this ahead of our wall clock are not adopted (validate.ts's versionAheadMsMax). */
  constructor(private readonly driftMsMax = 60_000) {}

  now(physicalMs: number): HlcTimestamp {
    assert.ok(physicalMs >= 0 && physicalMs <= msMax, 'physical time out of range')
    if (physicalMs > this.ms) {
      this.ms = physicalMs
      this.counter = 0
    } else if (this.counter < counterMax) {
      this.counter++
    } else {
      // 65,536 readings in one millisecond: borrow the next millisecond rather than repeat.
      this.ms++
      this.counter = 0
    }
    return { ms: this.ms, counter: this.counter }
  }

  /** Folds in a timestamp seen from another node. Returns false if it was too far ahead. */
  observe(remote: HlcTimestamp, physicalMs: number): boolean {
    return this.observeReading(remote.ms, remote.counter, physicalMs)
  }

  /** observe() of a reading given as its parts (no object per observed record). */
  observeReading(ms: number, counter: number, physicalMs: number): boolean {
    if (ms > physicalMs + this.driftMsMax) return false
    if (ms > this.ms || (ms === this.ms && counter > this.counter)) {
      this.ms = ms
      this.counter = counter
    }
    return true
  }
}
