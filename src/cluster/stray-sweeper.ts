import type { Logger } from 'pino'
import { writeLists } from '../core/handoff.js'
import type { StorageEngine } from '../storage/engine.js'
import type { Membership } from './membership.js'

export interface StraySweeperConfig {
  /** How often to look (0: never). */
  intervalMs: number
}

export const defaultStraySweeperConfig: StraySweeperConfig = { intervalMs: 5000 }

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

  constructor(
    private readonly deps: { selfId: string; storage: StorageEngine; membership: Membership; logger: Logger },
    private readonly config: StraySweeperConfig,
  ) {}

  start(): void {
    if (this.config.intervalMs <= 0) return
    this.timer = setInterval(() => void this.sweep().catch((err) => this.deps.logger.warn({ err }, 'deleting partitions this node no longer holds failed')), this.config.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
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
      await storage.dropPartition(p)
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
