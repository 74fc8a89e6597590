import { writeLists } from '../core/handoff.js'
import type { Logger } from 'pino'
import { batchBytesMax } from '../core/limits.js'
import { removedOf, type PartitionMap } from '../core/partition-map.js'
import type { Membership } from './membership.js'
import type { StorageEngine, HintEntry } from '../storage/engine.js'
import type { PeerPool } from '../wire/peer-channel.js'
import { noPeerFields } from '../wire/peer-fields.js'

export interface HintDeliveryConfig {
  intervalMs: number
  /** Hints read and sent per round trip. */
  batchMax: number
  /** Hints older than this are dropped undelivered (anti-entropy covers what they carried). */
  windowMs: number
  timeoutMs: number
}

export const defaultHintDeliveryConfig: HintDeliveryConfig = {
  intervalMs: 250,
  batchMax: 2000,
  windowMs: 3 * 60 * 60 * 1000,
  timeoutMs: 5000,
}

/**
 * Hands hints to their target once it is back: in batches, oldest first, deleting each batch
 * only after the target acknowledged it. Replaying a hint twice is harmless (its record keeps
 * the original version, and storage keeps the newest).
 */
export class HintDelivery {
  private timer: NodeJS.Timeout | undefined
  private running = false
  delivered = 0
  expired = 0
  /** Per target, the id of the last hint delivered: the next read starts after it. */
  private readonly cursors = new Map<string, Buffer>()

  constructor(
    private readonly deps: { selfId: string; storage: StorageEngine; membership: Membership; peers: PeerPool; logger: Logger },
    private readonly config: HintDeliveryConfig,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.config.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** One pass over every target with hints; resolves when it is done. */
  async tick(): Promise<void> {
    if (this.running) return
    this.running = true
    try {
      for (const [target] of this.deps.storage.hintCounts()) {
        if (target === this.deps.selfId) {
          await this.deliverLocally()
          continue
        }
        if (removedOf(this.deps.membership.map).includes(target)) {
          await this.redirect(target).catch((err) => this.deps.logger.debug({ err, target }, 'hints of a removed node: redirect paused'))
          continue
        }
        if (!this.deps.membership.isAlive(target) || !this.deps.membership.isWritable(target)) continue
        await this.deliver(target).catch((err) => this.deps.logger.debug({ err, target }, 'hint delivery paused'))
      }
    } finally {
      this.running = false
    }
  }

  private async expire(hints: HintEntry[]): Promise<HintEntry[]> {
    const oldest = Date.now() - this.config.windowMs
    const stale = hints.filter((h) => h.storedAtMs < oldest)
    if (stale.length > 0) {
      await this.deps.storage.deleteHints(stale.map((h) => h.id))
      this.expired += stale.length
    }
    return hints.filter((h) => h.storedAtMs >= oldest)
  }

  private async deliver(target: string): Promise<void> {
    const address = this.deps.membership.address(target)
    if (address === undefined) return
    const channel = this.deps.peers.get(target, address)
    for (;;) {
      if (!channel.usable || !this.deps.membership.isAlive(target) || !this.deps.membership.isWritable(target)) return
      const hints = await this.deps.storage.readHints(target, this.config.batchMax, { after: this.cursors.get(target), bytesMax: batchBytesMax })
      if (hints.length === 0) {
        // From the start next time: a hint stored under an earlier sequence (the clock stepped
        // back) would sort before the cursor.
        this.cursors.delete(target)
        return
      }
      const fresh = await this.expire(hints)
      // Hints of partitions a membership change moved away from the target go to their current
      // owners instead: the target takes no more writes of them.
      const map = this.deps.membership.map
      const lists = map === undefined ? undefined : writeLists(map)
      const moved = lists === undefined ? [] : fresh.filter((h) => !(lists[h.partition] ?? []).includes(target))
      const movedSet = new Set(moved)
      const live = moved.length === 0 ? fresh : fresh.filter((h) => !movedSet.has(h))
      // Those no owner took now stay for a later pass (the cursor resets once a pass ends);
      // the target's own hints go on regardless.
      const handedOn = moved.length === 0 ? [] : await this.toOwners(map!, moved).catch(() => [])
      if (handedOn.length > 0) {
        await this.deps.storage.deleteHints(handedOn.map((h) => h.id))
        this.delivered += handedOn.length
      }
      // One WRITE per partition, each at most batchBytesMax: hints of large values must not
      // make a message past the transport's limit.
      const requests: HintEntry[][] = []
      const byPartition = new Map<number, { hints: HintEntry[]; bytes: number }>()
      for (const hint of live) {
        const bytes = hint.key.length + hint.record.length
        let group = byPartition.get(hint.partition)
        if (group !== undefined && group.hints.length > 0 && group.bytes + bytes > batchBytesMax) {
          requests.push(group.hints)
          group = undefined
        }
        if (group === undefined) byPartition.set(hint.partition, (group = { hints: [], bytes: 0 }))
        group.hints.push(hint)
        group.bytes += bytes
      }
      for (const group of byPartition.values()) requests.push(group.hints)
      await Promise.all(
        requests.map((group) =>
          channel.request(
            { ...noPeerFields, op: 'WRITE', partition: group[0]!.partition, keys: group.map((h) => h.key), records: group.map((h) => h.record) },
            this.config.timeoutMs,
          ),
        ),
      )
      await this.deps.storage.deleteHints(live.map((h) => h.id))
      this.cursors.set(target, hints[hints.length - 1]!.id)
      this.delivered += live.length
    }
  }

  /**
   * Hints held for a node removed for good (and all hints of a node that left, handOver): they may carry writes no other replica has (a
   * write acknowledged through hints while replicas were down), so they go to the partitions'
   * current replicas (this node's own storage for its own) rather than being dropped. A batch
   * is deleted once every live replica of its partitions took it; one down is caught up by
   * anti-entropy from the others.
   */
  private async redirect(target: string): Promise<void> {
    for (;;) {
      const map = this.deps.membership.map
      if (map === undefined) return
      const read = await this.deps.storage.readHints(target, this.config.batchMax, { after: this.cursors.get(target), bytesMax: batchBytesMax })
      if (read.length === 0) {
        this.cursors.delete(target)
        return
      }
      this.cursors.set(target, read[read.length - 1]!.id)
      const hints = await this.toOwners(map, read)
      await this.deps.storage.deleteHints(hints.map((h) => h.id))
      this.delivered += hints.length
    }
  }

  /**
   * Writes hints to their partitions' current owners (every live node that takes the
   * partition's writes; this node's own storage for its own) and returns those delivered: a
   * partition with no live owner now keeps its hints for a later pass.
   */
  private async toOwners(map: PartitionMap, read: HintEntry[]): Promise<HintEntry[]> {
    const lists = writeLists(map)
    // Owners that can take writes now: alive, and not read-only.
    const owners = (partition: number): string[] =>
      (lists[partition] ?? []).filter((id) => id === this.deps.selfId || (this.deps.membership.isAlive(id) && this.deps.membership.isWritable(id)))
    const byPartition = new Map<number, HintEntry[]>()
    for (const hint of read) {
      if (owners(hint.partition).length === 0) continue
      let group = byPartition.get(hint.partition)
      if (group === undefined) byPartition.set(hint.partition, (group = []))
      group.push(hint)
    }
    // Per partition: delivered once every owner took it; one that refuses or fails keeps that
    // partition's hints for a later pass without holding up the others.
    const settled = await Promise.allSettled(
      [...byPartition].map(async ([partition, group]) => {
        await Promise.all(
          owners(partition).map((id) => {
            if (id === this.deps.selfId) return this.deps.storage.applyRecords(group.map((h) => ({ partition, key: h.key, record: h.record })))
            const address = this.deps.membership.address(id)
            if (address === undefined) throw new Error(`no address for ${id}`)
            return this.deps.peers.get(id, address).request({ ...noPeerFields, op: 'WRITE', partition, keys: group.map((h) => h.key), records: group.map((h) => h.record) }, this.config.timeoutMs)
          }),
        )
        return group
      }),
    )
    return settled.flatMap((r) => (r.status === 'fulfilled' ? r.value : []))
  }

  /**
   * Before a node that left the cluster stops: every hint it holds goes to the current owners
   * of its partition (the hint's target among them, when it still owns it), since no one
   * would deliver it after. Returns how many hints are still held when `timeoutMs` runs out
   * (an owner down all that time); anti-entropy among the owners covers those.
   */
  async handOver(timeoutMs: number): Promise<number> {
    this.stop()
    const deadline = Date.now() + timeoutMs
    const held = (): number => {
      let count = 0
      for (const [, n] of this.deps.storage.hintCounts()) count += n
      return count
    }
    for (;;) {
      const before = held()
      if (before === 0 || Date.now() >= deadline) return before
      // As for a removed target's hints: each partition's to its current owners.
      for (const [target] of this.deps.storage.hintCounts()) await this.redirect(target).catch(() => undefined)
      if (held() === before) await new Promise((r) => setTimeout(r, this.config.intervalMs))
    }
  }

  /** Hints for this node itself (held while it was not in the map, say): apply them here. */
  private async deliverLocally(): Promise<void> {
    for (;;) {
      const hints = await this.expire(await this.deps.storage.readHints(this.deps.selfId, this.config.batchMax, { bytesMax: batchBytesMax }))
      if (hints.length === 0) return
      await this.deps.storage.applyRecords(hints.map((h) => ({ partition: h.partition, key: h.key, record: h.record })))
      await this.deps.storage.deleteHints(hints.map((h) => h.id))
    }
  }
}
