import type { Logger } from 'pino'
import { writeLists } from '../core/handoff.js'
import { moveRecordsPerSecondDefault } from '../core/move-pace.js'
import { TokenBucket } from '../core/token-bucket.js'
import type { StorageEngine } from '../storage/engine.js'
import type { Membership } from './membership.js'

export interface StraySweeperConfig {
  /** How often to look (0: never). */
  intervalMs: number
  /**
   * Records deleted a second at most (kumo start --move-rate, as copies). A wave's switch left
   * each old replica tens of thousands of records to delete at once: on the 2-core machine the
   * clients fell to a fifth of their throughput for seconds after each wave (p99 70-90 ms).
   */
  recordsPerSecond: number
}

export const defaultStraySweeperConfig: StraySweeperConfig = { intervalMs: 5000, recordsPerSecond: moveRecordsPerSecondDefault }

/** Why a paced deletion ended early: the sweeper stopped. */
class SweeperStopped extends Error {}

/**
 * Deletes this node's copies of partitions it takes no writes of any more: the replicas a
 * membership change moved away from it, and partial copies of a move that was reverted or
 * cancelled (core/handoff, stage 5). Only once this node's map is confirmed with the cluster and
 * every live node holds exactly that map, so no node still reads or writes the copy; until then
 * the copy is kept. A partition found empty is not looked at again while it stays foreign.
 */
export class StraySweeper {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<number> | undefined
  /** Foreign partitions known empty here, under map `cleanUnder` (looked at again once the map changes). */
  private readonly clean = new Set<number>()
  private cleanUnder: unknown
  /** Partitions deleted since start. */
  partitionsDropped = 0
  /** Partitions holding data this node takes no writes of, as of the last sweep (-1: not swept yet). */
  strayPartitions = -1
  /** Records deleted since start. */
  recordsDropped = 0
  private stopped = false
  private readonly pace: TokenBucket
  /** The wait of a paced deletion under way, ended early by stop(). */
  private waiting: { timer: NodeJS.Timeout; resolve: () => void } | undefined

  constructor(
    private readonly deps: { selfId: string; storage: StorageEngine; membership: Membership; logger: Logger },
    private readonly config: StraySweeperConfig,
  ) {
    if (!(Number.isFinite(config.recordsPerSecond) && config.recordsPerSecond >= 1)) throw new RangeError(`stray deletions need a rate of at least 1 record a second, got ${config.recordsPerSecond}`)
    // A second's worth may go at once.
    this.pace = new TokenBucket(config.recordsPerSecond, config.recordsPerSecond)
  }

  start(): void {
    if (this.config.intervalMs <= 0) return
    this.timer = setInterval(() => void this.sweep().catch((err) => this.deps.logger.warn({ err }, 'deleting partitions this node no longer holds failed')), this.config.intervalMs)
    this.timer.unref()
  }

  /** Stops looking; a deletion under way ends at its next chunk. */
  stop(): void {
    this.stopped = true
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    if (this.waiting !== undefined) {
      clearTimeout(this.waiting.timer)
      this.waiting.resolve()
      this.waiting = undefined
    }
  }

  /** After each chunk a deletion wrote: waits as long as the rate says, or stops the deletion. */
  private readonly paceDrop = async (records: number): Promise<void> => {
    this.recordsDropped += records
    if (this.stopped) throw new SweeperStopped('the sweeper stopped')
    const waitMs = this.pace.take(records, Date.now())
    if (waitMs > 0) {
      await new Promise<void>((resolve) => {
        this.waiting = { timer: setTimeout(resolve, waitMs), resolve }
      })
      this.waiting = undefined
    }
    if (this.stopped) throw new SweeperStopped('the sweeper stopped')
  }

  /**
   * Resolves once no sweep is running. A partition this node takes over again (a retried join)
   * is copied only after it: a deletion still under way must not remove what the copy brings.
   */
  idle(): Promise<unknown> {
    return (this.running ?? Promise.resolve()).catch(() => undefined)
  }

  /** One look over the partitions this node takes no writes of; resolves with how many it deleted. A sweep already running is joined. */
  sweep(): Promise<number> {
    this.running ??= this.sweepOnce().finally(() => {
      this.running = undefined
    })
    return this.running
  }

  private async sweepOnce(): Promise<number> {
    const { membership, storage, selfId } = this.deps
    const map = membership.map
    if (map === undefined || !membership.confirmed) return 0
    if (this.cleanUnder !== map) {
      this.clean.clear()
      this.cleanUnder = map
    }
    const lists = writeLists(map)
    let dropped = 0
    let stray = 0
    for (let p = 0; p < map.partitionCount; p++) {
      if (lists[p]!.includes(selfId)) {
        this.clean.delete(p)
        continue
      }
      if (this.clean.has(p)) continue
      // The map may have moved on while this sweep ran: check again before each deletion.
      if (membership.map !== map) return dropped
      const [first] = await storage.scanPartition(p, { limit: 1 })
      if (first === undefined) {
        this.clean.add(p)
        continue
      }
      // Deleted only once no node can still read or write the copy (asked again before each
      // deletion: a node may have moved on meanwhile); counted either way.
      if (membership.map !== map || !membership.everyNodeOnEpoch(true)) {
        stray++
        continue
      }
      try {
        await storage.dropPartition(p, { pace: this.paceDrop })
      } catch (err) {
        if (err instanceof SweeperStopped) return dropped
        throw err
      }
      dropped++
      this.clean.add(p)
    }
    this.strayPartitions = stray
    if (dropped > 0) {
      this.partitionsDropped += dropped
      this.deps.logger.info({ partitions: dropped, epoch: map.epoch }, 'deleted the copies of partitions this node no longer holds')
    }
    return dropped
  }
}
