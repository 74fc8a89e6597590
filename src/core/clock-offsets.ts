export interface ClockOffsetsConfig {
  /** Samples kept per peer; its offset is their median (one slow round trip does not move it). */
  samplesMax: number
  /** A sample whose round trip took longer says too little about the offset (NTP's rule). */
  roundTripMsMax: number
  /** A peer not sampled for this long no longer counts. */
  staleMs: number
}

export const defaultClockOffsetsConfig: ClockOffsetsConfig = {
  samplesMax: 5,
  roundTripMsMax: 1000,
  staleMs: 30_000,
}

interface PeerSamples {
  offsets: number[]
  atMs: number
}

/**
 * How far each peer's clock is from this node's, measured through gossip as NTP does: a message
 * sent at local time t0 is answered with the peer's time tp and arrives back at t1; the peer's
 * offset is tp - (t0 + t1) / 2, off by at most half the round trip. Pure: times come in.
 *
 * The cluster's clock is the median of the live nodes' clocks (this one's included), so one
 * node with a wrong clock, ahead or behind, is told apart from the rest: it is the one far from
 * the median. With two nodes there is no majority; each then gives itself the benefit of the
 * doubt.
 */
export class ClockOffsets {
  private readonly config: ClockOffsetsConfig
  private readonly peers = new Map<string, PeerSamples>()

  constructor(config: Partial<ClockOffsetsConfig> = {}) {
    this.config = { ...defaultClockOffsetsConfig, ...config }
  }

  /** A gossip round trip to `peer`: sent at `sentAtMs`, answered with its clock at `peerAtMs`, back at `receivedAtMs` (all local ms but peerAtMs). */
  sample(peer: string, sentAtMs: number, peerAtMs: number, receivedAtMs: number): void {
    const roundTrip = receivedAtMs - sentAtMs
    if (!(roundTrip >= 0) || roundTrip > this.config.roundTripMsMax || !(peerAtMs > 0)) return
    let samples = this.peers.get(peer)
    if (samples === undefined) this.peers.set(peer, (samples = { offsets: [], atMs: receivedAtMs }))
    samples.offsets.push(peerAtMs - (sentAtMs + receivedAtMs) / 2)
    if (samples.offsets.length > this.config.samplesMax) samples.offsets.shift()
    samples.atMs = receivedAtMs
  }

  forget(peer: string): void {
    this.peers.delete(peer)
  }

  /** The peer's clock minus this node's, in ms (undefined: no recent sample). */
  offsetOf(peer: string, nowMs: number): number | undefined {
    const samples = this.peers.get(peer)
    if (samples === undefined || nowMs - samples.atMs > this.config.staleMs) return undefined
    return median(samples.offsets)
  }

  /**
   * The cluster's clock minus this node's: the median of this node's offset (0) and the
   * offsets of the `live` peers with recent samples. Add it to this node's clock to get the
   * cluster's; this node's skew is its negation.
   */
  clusterOffsetMs(live: readonly string[], nowMs: number): number {
    const offsets = [0]
    for (const peer of live) {
      const offset = this.offsetOf(peer, nowMs)
      if (offset !== undefined) offsets.push(offset)
    }
    return median(offsets)
  }
}

/** The median; of an even count, whichever middle value is closer to 0 (this node's own). */
function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  if (sorted.length % 2 === 1) return sorted[mid]!
  const low = sorted[mid - 1]!
  const high = sorted[mid]!
  return Math.abs(low) <= Math.abs(high) ? low : high
}
