import type { Logger } from 'pino'
import { pendingPartitionsOf, queuedPartitionsOf, writeLists } from '../core/handoff.js'
import type { PartitionMap } from '../core/partition-map.js'
import { differingLeaves, LeafHasher, leafOf, planExchange, leafCountDefault, type KeyVersion } from '../core/digest.js'
import { requiredAcks } from '../core/consistency.js'
import { KumoError } from '../core/errors.js'
import { TokenBucket } from '../core/token-bucket.js'
import { dutyCyclePauseMs } from '../core/duty-cycle.js'
import { loopDelayTargetMsDefault, moveBytesPerSecondDefault, MovePace, movePaceConfig, moveRecordsPerSecondDefault } from '../core/move-pace.js'
import { recordVersion } from '../core/record.js'
import type { StorageEngine } from '../storage/engine.js'
import type { PeerChannel, PeerPool } from '../wire/peer-channel.js'
import { noPeerFields } from '../wire/peer-fields.js'
import type { Membership } from './membership.js'
import { CopyCursors } from './copy-cursors.js'

export interface AntiEntropyConfig {
  /** Background repair of the partitions this node is primary for, every this often (0: off). */
  intervalMs: number
  /** Records sent or received per second at most, so repair does not starve requests. */
  recordsPerSecondMax: number
  /** Bytes (keys and records) sent or received per second at most, for the same reason: large values cost by size. */
  bytesPerSecondMax: number
  /**
   * Event-loop delay (p99 over a heartbeat interval, ms) of the cluster's latest node above
   * which copies and exchanges slow down (core/move-pace); 0: always at the most.
   */
  loopDelayTargetMs: number
  leafCount: number
  timeoutMs: number
  /**
   * The share of a periodic repair pass's own time (its repairs and its pauses, not the time it
   * waits in line behind other repairs) that it spends repairing, past its first
   * backgroundBurstMs (core/duty-cycle): a pass pauses between partitions to keep to it. A pass
   * reads every record of the partitions it compares on each of their replicas; on a store of
   * gigabytes that is a minute of a core or more, which unpaced took the clients' share in bursts.
   */
  backgroundShare: number
  backgroundBurstMs: number
}

export const defaultAntiEntropyConfig: AntiEntropyConfig = {
  intervalMs: 10 * 60 * 1000,
  recordsPerSecondMax: moveRecordsPerSecondDefault,
  bytesPerSecondMax: moveBytesPerSecondDefault,
  loopDelayTargetMs: loopDelayTargetMsDefault,
  leafCount: leafCountDefault,
  timeoutMs: 10_000,
  backgroundShare: 0.1,
  backgroundBurstMs: 2000,
}

export interface RepairResult {
  partitions: number
  pulled: number
  pushed: number
  skipped: number
  durationMs: number
}

/** Keys and headers a hashing pass lists at once (a few dozen bytes each). */
const pageSize = 1000
/** Records a copy asks for at once: each page is one write batch on this node, which the clients' writes queue behind. */
const copyPageSize = 250
const exchangeBatchMax = 500
const exchangeBytesMax = 4 * 1024 * 1024
/** A copy page's bytes at most (past its first record). */
const copyBytesMax = 1024 * 1024
/** After a dead node's removal finishes, before comparing: the last maps' gossip settles. */
const afterRemoveDelayMs = 2000
/**
 * How long writes planned on an older map may still land on a partition's old replicas once
 * every node holds the newer one: the replica write timeout (1 s by default) and transfer time,
 * with room to spare.
 */
const lateWritesMs = 3000
/** A fill that could not reach every live replica is tried again this often (a warning every fillAttemptsWarn tries). */
const fillRetryMs = 5000
/** Gained partitions compared with their replicas at once, after the copy. */
const fillCompareConcurrency = 4
const fillAttemptsWarn = 12
/** How often the pace reads the cluster's loop delays: each node reports one a heartbeat. */
const paceIntervalMs = 1000
/**
 * Records hashed for a comparison (on this node or on the replica it compares with) that count
 * as one copied record in the pace: a record compared, hashed on both sides, counts a quarter
 * (a pass costs a few µs a record; a copy, with its writes and their compaction, tens).
 */
const hashedPerPacedRecord = 8

/** A partition's leaf hashes here, and how many records they cover. */
interface PartitionHashes {
  hashes: number[]
  records: number
}

/**
 * Anti-entropy: replicas of a partition compare leaf hashes of (key, version) and exchange only
 * the records that differ, both ways, newest version winning. This is what makes replicas
 * converge when hints expired or a node lost its disk.
 */
export class AntiEntropy {
  private timer: NodeJS.Timeout | undefined
  private readonly lastRepairMs = new Map<number, number>()
  private active = 0
  private chain: Promise<unknown> = Promise.resolve()
  private mapSeen: PartitionMap | undefined
  /** Partitions this node gained and has not yet repaired from every other live replica. */
  private readonly filling = new Set<number>()
  private fillTimer: NodeJS.Timeout | undefined
  private fillAttempts = 0
  private fillGeneration = 0
  private stopped = false

  constructor(
    private readonly deps: {
      selfId: string
      storage: StorageEngine
      membership: Membership
      peers: PeerPool
      logger: Logger
      /** Awaited before a fill copies: a deletion of a partition this node held before must not run under the copy. */
      beforeFill?: () => Promise<unknown>
      /** The latest event-loop delay of the cluster's latest live node (ms), read once a second to pace copies. */
      loopDelayMs?: () => number
    },
    private readonly config: AntiEntropyConfig,
  ) {
    this.pace = new MovePace(movePaceConfig(config.recordsPerSecondMax, config.loopDelayTargetMs))
    this.recordPace = new TokenBucket(this.pace.recordsPerSecond, Math.min(config.recordsPerSecondMax, 2 * copyPageSize))
    this.copyCursors = new CopyCursors(deps.storage)
    this.bytePace = new TokenBucket(this.bytesPerSecond(), Math.min(config.bytesPerSecondMax, 2 * copyBytesMax))
    if (this.pace.adaptive && deps.loopDelayMs !== undefined) {
      const read = deps.loopDelayMs
      this.paceTimer = setInterval(() => {
        const before = this.pace.recordsPerSecond
        const delayMs = read()
        const after = this.pace.observe(delayMs)
        this.setPace(after)
        if (after !== before && this.filling.size > 0) deps.logger.debug({ recordsPerSecond: Math.round(after), loopDelayMs: Math.round(delayMs) }, 'copy pace')
      }, paceIntervalMs)
      this.paceTimer.unref()
    }
  }

  private readonly pace: MovePace
  private paceTimer: NodeJS.Timeout | undefined

  /** Records a second this node's copies and exchanges may run at now (core/move-pace). */
  get moveRate(): number {
    return this.pace.recordsPerSecond * this.copyShare
  }

  /**
   * This node's share of a change's copying: 1 over the nodes that copy in it. The move rate
   * bounds a change's copies across the cluster, not each copier's: a drain's three gainers
   * copying at the full rate each cost the clients three joins' worth at once.
   */
  private copyShare = 1

  /** The byte budget follows the record budget: the same share of its own most. */
  private bytesPerSecond(): number {
    return Math.max(1, (this.config.bytesPerSecondMax * this.moveRate) / this.config.recordsPerSecondMax)
  }

  private setPace(recordsPerSecond: number): void {
    const now = Date.now()
    this.recordPace.setRate(Math.max(1, recordsPerSecond * this.copyShare), now)
    this.bytePace.setRate(this.bytesPerSecond(), now)
  }

  private readonly bytePace: TokenBucket
  private readonly recordPace: TokenBucket

  start(): void {
    if (this.config.intervalMs <= 0) return
    this.timer = setInterval(() => {
      const map = this.deps.membership.map
      if (map === undefined || this.active > 0 || this.backgroundPassing) return
      this.backgroundPassing = true
      void this.backgroundPass(this.primaryPartitions(map))
        .catch((err) => this.deps.logger.warn({ err }, 'background repair failed'))
        .finally(() => (this.backgroundPassing = false))
    }, this.config.intervalMs)
    this.timer.unref()
  }

  private backgroundPassing = false
  private backgroundPause: { timer: NodeJS.Timeout; resolve: () => void } | undefined

  /**
   * The periodic repair: one partition at a time, each queued like any repair (an operator's
   * repair or a membership change's copies go between two of them, not after the whole pass),
   * with pauses between them that hold the pass to its share of the time (core/duty-cycle).
   */
  private async backgroundPass(partitions: number[]): Promise<void> {
    const started = Date.now()
    // The pass's own time: its partitions' repairs and its pauses, not the time it waited in
    // line behind other repairs or copies (which would otherwise count as pauses it took, and
    // let it run unpaced right after them).
    let busyMs = 0
    const total = { partitions: 0, pulled: 0, pushed: 0, skipped: 0, paused: 0 }
    for (const partition of partitions) {
      if (this.stopped) return
      const result = await this.repair([partition])
      busyMs += result.durationMs
      total.partitions += result.partitions
      total.pulled += result.pulled
      total.pushed += result.pushed
      total.skipped += result.skipped
      const pauseMs = dutyCyclePauseMs(busyMs, busyMs + total.paused, this.config.backgroundShare, this.config.backgroundBurstMs)
      if (pauseMs > 0 && !this.stopped) {
        total.paused += pauseMs
        await new Promise<void>((resolve) => {
          this.backgroundPause = { timer: setTimeout(resolve, pauseMs), resolve }
          this.backgroundPause.timer.unref()
        })
        this.backgroundPause = undefined
      }
    }
    if (total.pulled + total.pushed > 0 || busyMs > this.config.backgroundBurstMs) {
      this.deps.logger.info({ ...total, busyMs, ms: Date.now() - started }, 'background repair pass done')
    }
  }

  /**
   * Call on every map change. Partitions a membership change makes this node a pending replica
   * of (core/handoff) start empty here: they are copied at once from a current replica, then
   * compared with every live current replica, and reported *ready*: the claimant moves their
   * reads here once every pending replica of theirs is. Writes reach them meanwhile, so a copy
   * that caught up stays caught up. A node restarted during a change copies its pending
   * partitions again (readiness is not persisted; the copy is last-writer-wins, so what it
   * holds already costs only the comparison).
   */
  mapChanged(): void {
    const next = this.deps.membership.map
    if (next === undefined || next === this.mapSeen) return
    const previous = this.mapSeen
    this.mapSeen = next
    if (previous?.change !== undefined && next.change === undefined && (previous.change.kind === 'remove' || previous.change.kind === 'replace') && !previous.change.cancelled) {
      this.repairAfterRemove()
    }
    const changeEpoch = next.change?.epoch ?? 0
    if (changeEpoch !== this.readyEpoch) {
      // A new change (or none): what this node gained for the last one is not this one's, even
      // where the same partition is pending again; it is gained again below, at this map's epoch.
      this.readyPartitions.clear()
      this.filling.clear()
      this.gainedAt.clear()
      this.readyEpoch = changeEpoch
    }
    // (A node that copies nothing in the change repairs at its whole rate.)
    const copies = (id: string): boolean => pendingPartitionsOf(next, id).length + queuedPartitionsOf(next, id).length > 0
    const share = next.change === undefined || !copies(this.deps.selfId) ? 1 : 1 / next.nodes.filter(copies).length
    if (share !== this.copyShare) {
      this.copyShare = share
      this.setPace(this.pace.recordsPerSecond)
    }
    const pending = new Set(pendingPartitionsOf(next, this.deps.selfId))
    for (const p of this.filling) if (!pending.has(p)) this.filling.delete(p)
    for (const p of this.readyPartitions) if (!pending.has(p)) this.readyPartitions.delete(p)
    const gained = [...pending].filter((p) => !this.filling.has(p) && !this.readyPartitions.has(p))
    if (gained.length === 0) return
    for (const p of gained) {
      this.filling.add(p)
      this.gainedAt.set(p, next.epoch)
    }
    for (const p of this.gainedAt.keys()) if (!pending.has(p)) this.gainedAt.delete(p)
    this.fillAttempts = 0
    this.deps.logger.info({ partitions: gained.length, epoch: next.epoch }, 'copying the partitions this node is to hold')
    this.fill()
  }

  /**
   * A node removed dead took the hints it held with it: writes other replicas missed, which
   * W replicas hold. Each node compares the partitions it is primary of with their replicas
   * once the removal is done, rather than at the next periodic pass (up to intervalMs later).
   */
  private repairAfterRemove(): void {
    // Background repair turned off (intervalMs 0): the operator runs kumo repair.
    if (this.afterRemoveTimer !== undefined || this.stopped || this.config.intervalMs <= 0) return
    this.afterRemoveTimer = setTimeout(() => {
      this.afterRemoveTimer = undefined
      const map = this.deps.membership.map
      if (map === undefined || this.stopped) return
      const mine = this.primaryPartitions(map)
      this.deps.logger.info({ partitions: mine.length }, 'a node was removed dead: comparing the partitions this node is primary of with their replicas')
      void this.repair(mine).catch((err) => this.deps.logger.warn({ err }, 'repair after a removal failed'))
    }, afterRemoveDelayMs)
    this.afterRemoveTimer.unref()
  }

  private afterRemoveTimer: NodeJS.Timeout | undefined

  /** The partitions this node is first replica of: the ones its background repair covers. */
  private primaryPartitions(map: PartitionMap): number[] {
    return map.replicas.flatMap((list, p) => (list[0] === this.deps.selfId ? [p] : []))
  }

  /** The change (its staging epoch) whose pending partitions this node has caught up on, and which. */
  ready(): { epoch: number; partitions: number[] } {
    return { epoch: this.readyEpoch, partitions: [...this.readyPartitions] }
  }

  private readyEpoch = 0
  private readonly readyPartitions = new Set<number>()

  /** A pending partition compared with every live current replica since `started`: ready. */
  private markReady(partition: number, started: number): void {
    if (!this.filling.has(partition) || (this.lastRepairMs.get(partition) ?? -1) < started) return
    this.filling.delete(partition)
    this.readyPartitions.add(partition)
  }

  get fillingCount(): number {
    return this.filling.size
  }

  private fill(): void {
    if (this.fillTimer !== undefined) clearTimeout(this.fillTimer)
    this.fillTimer = undefined
    const partitions = [...this.filling]
    if (partitions.length === 0 || this.stopped) return
    const generation = ++this.fillGeneration
    const started = Date.now()
    const after = (): void => {
      // A newer fill (the map changed again) has taken over.
      if (generation !== this.fillGeneration || this.stopped) return
      for (const p of partitions) this.markReady(p, started)
      if (this.filling.size === 0) {
        this.deps.logger.info({ partitions: partitions.length, ms: Date.now() - started }, 'partitions copied and compared: ready')
        return
      }
      // Tried until the change moves on without them (a cancel, or this node reverted): a
      // partition whose replicas stay out of reach holds the change, and kumo transfers says so.
      if (++this.fillAttempts % fillAttemptsWarn === 0) {
        this.deps.logger.warn({ partitions: this.filling.size, attempts: this.fillAttempts }, 'partitions still not caught up: some of their replicas stay out of reach (kumo transfers; kumo cancel gives up the change)')
      }
      this.fillTimer = setTimeout(() => this.fill(), fillRetryMs)
      this.fillTimer.unref()
    }
    // First copy each gained partition in key order from one replica (a range read, page by
    // page: one pass over its records), then repair against every replica as usual, which
    // now finds little to exchange: what was written meanwhile, and what another replica
    // holds that the first one lacked.
    const changeEpoch = this.deps.membership.map?.change?.epoch ?? 0
    const run = this.chain.then(async () => {
      await this.deps.beforeFill?.()
      // A move starts slow and speeds up while the cluster keeps up (core/move-pace); its later
      // waves go on at the pace the earlier ones reached.
      if (this.pacedChange !== changeEpoch) {
        this.pacedChange = changeEpoch
        this.setPace(this.pace.restart())
      }
      const copyStarted = Date.now()
      const copiedBefore = this.copiedRecords
      const resumed = { done: 0, partly: 0 }
      // The earlier waves' partitions first: their maps are agreed on already.
      partitions.sort((a, b) => (this.gainedAt.get(a) ?? 0) - (this.gainedAt.get(b) ?? 0) || a - b)
      for (const partition of partitions) {
        if (generation !== this.fillGeneration || this.stopped) return
        if (!this.filling.has(partition)) continue
        await this.untilAgreed(this.gainedAt.get(partition) ?? changeEpoch, changeEpoch, () => generation === this.fillGeneration && this.filling.has(partition))
        if (generation !== this.fillGeneration || this.stopped || this.deps.membership.map?.change?.epoch !== changeEpoch) return
        if (!this.filling.has(partition)) continue
        // A copy that starts before late writes have landed may miss one its source takes after
        // the scan passed its key: its source then does not count as compared, and the final
        // comparison covers it too.
        const lateWritesIn = this.lateWritesLeftMs(partition) <= 0
        const from = await this.copyPartition(partition, changeEpoch).catch((err) => {
          this.deps.logger.warn({ err, partition }, 'copying a gained partition failed; repair takes over')
          return 'start' as const
        })
        if (!lateWritesIn) this.wholeCopies.delete(partition)
        if (from === 'done') resumed.done++
        else if (from === 'partly') resumed.partly++
      }
      if (resumed.done + resumed.partly > 0) {
        this.deps.logger.info({ epoch: changeEpoch, copiedBefore: resumed.done, resumedPartly: resumed.partly }, 'resumed the copies of this change where they stood before this node restarted')
      }
      this.deps.logger.info({ partitions: partitions.length, records: this.copiedRecords - copiedBefore, ms: Date.now() - copyStarted }, 'gained partitions copied; comparing with every replica')
    })
    this.chain = run.catch(() => undefined)
    run
      // A newer fill (a later wave) stopped this one's copies: it copies and compares them.
      .then(() => (generation === this.fillGeneration ? this.compareFilled(partitions) : undefined))
      .then(after, (err) => {
        this.deps.logger.warn({ err }, 'filling gained partitions failed')
        after()
      })
  }

  /**
   * The final comparison of gained partitions with every replica, `fillCompareConcurrency`
   * partitions at a time across the change's copiers (this node's share of them, at least one):
   * each comparison is a few round trips of small messages, so running them one by one would
   * leave the copy waiting on latency rather than on work; but each also makes every replica
   * read and hash the whole partition, and a drain's three gainers comparing four each at once
   * held the clients at a third of their throughput while they did (bench:moves --timeline).
   */
  private async compareFilled(partitions: number[]): Promise<void> {
    let next = 0
    const started = Date.now()
    const total = { partitions: 0, pulled: 0, pushed: 0, differing: 0 }
    await Promise.all(
      Array.from({ length: Math.max(1, Math.round(fillCompareConcurrency * this.copyShare)) }, async () => {
        while (next < partitions.length && !this.stopped) {
          const partition = partitions[next++]!
          if (!this.filling.has(partition)) continue
          await this.lateWritesLanded(partition)
          if (!this.filling.has(partition) || this.stopped) continue
          const started = Date.now()
          const r = await this.repairNow([partition], { copiedFrom: this.wholeCopies.get(partition) })
          total.partitions++
          total.pulled += r.pulled
          total.pushed += r.pushed
          if (r.pulled + r.pushed > 0) total.differing++
          // Compared with every live replica: ready (kumo transfers counts down as they finish).
          this.markReady(partition, started)
        }
      }),
    )
    this.deps.logger.info({ ...total, ms: Date.now() - started }, 'gained partitions compared')
  }

  /** Records copied into gained partitions by range reads (copyPartition), since start. */
  copiedRecords = 0
  copiedBytes = 0

  /**
   * Copies one partition this node gained from a live replica: SCAN pages (tombstones and
   * expiry included, at most exchangeBytesMax each), applied last-writer-wins, so a write or
   * delete that reached this node meanwhile is never overwritten by an older copy. Throttled
   * like every exchange. Where the copy stands is saved after every page (CopyCursors): a
   * source that fails mid-copy is replaced by the partition's next live replica from the same
   * key on, and a node restarted during the change resumes where it stopped. Resolves with
   * where this copy started: at the first key, partway (resumed), or already done.
   */
  private async copyPartition(partition: number, changeEpoch: number): Promise<'start' | 'partly' | 'done'> {
    const map = this.deps.membership.map
    if (map === undefined) return 'start'
    const saved = await this.copyCursors.get(changeEpoch, partition)
    if (saved === 'done') return 'done'
    const from = saved === undefined ? 'start' : 'partly'
    let gte = saved ?? Buffer.alloc(0)
    this.wholeCopies.delete(partition)
    const failed = new Set<string>()
    const nextSource = (): string | undefined =>
      map.replicas[partition]!.find((id) => {
        if (id === this.deps.selfId || failed.has(id) || !this.deps.membership.isAlive(id)) return false
        const address = this.deps.membership.address(id)
        return address !== undefined && this.deps.peers.get(id, address).usable
      })
    let source = nextSource()
    for (;;) {
      // Read at each page: the rate follows the cluster's event loops and the change's copiers.
      const page = this.copyPage()
      if (this.stopped || !this.filling.has(partition)) return from
      if (source === undefined) throw new Error(`no live replica of partition ${partition} answered the copy`)
      let res: { keys: Buffer[]; records: Buffer[] }
      try {
        res = await this.deps.peers.get(source, this.deps.membership.address(source)!).request({ ...noPeerFields, op: 'SCAN', partition, gte, limit: page.records, bytesMax: page.bytes }, this.config.timeoutMs)
      } catch (err) {
        failed.add(source)
        const next = nextSource()
        this.deps.logger.warn({ err, partition, source, next }, 'the source of a partition copy failed; going on from the next replica where it stopped')
        source = next
        continue
      }
      if (res.keys.length === 0) break
      await this.throttle(res.keys.length)
      // Stopped meanwhile (storage closing): nothing more to write.
      if (this.stopped) return from
      let bytes = 0
      const writes = res.keys.map((key, i) => {
        bytes += key.length + res.records[i]!.length
        return { partition, key, record: res.records[i]! }
      })
      await this.deps.storage.applyRecords(writes)
      this.copiedRecords += writes.length
      this.copiedBytes += bytes
      const last = res.keys.length < page.records && bytes < page.bytes
      if (!last) {
        gte = Buffer.concat([res.keys[res.keys.length - 1]!, Buffer.from([0])])
        await this.copyCursors.set(changeEpoch, partition, gte)
      }
      await this.paceBytes(bytes)
      if (last) break
    }
    await this.copyCursors.set(changeEpoch, partition, 'done')
    // Copied whole from one replica, from the first key: that replica counts as compared.
    if (saved === undefined && failed.size === 0) this.wholeCopies.set(partition, source)
    return from
  }

  /** When this node first saw every live node on the staged map of the change it copies for. */
  /** The change whose copy pace was started (restarted once per change, not per wave). */
  private pacedChange = 0
  /** Per pending partition of this node, the map epoch that made it pending (its wave). */
  private readonly gainedAt = new Map<number, number>()
  /** When this node first saw every live node on a map epoch, by epoch (the latest few). */
  private readonly agreedAt = new Map<number, number>()

  /**
   * Waits until a partition staged by map `epoch` may be copied: once every live node holds that
   * map, every write a node coordinates reaches this node too, so what the copy and the
   * comparison find is all there is to catch up on. Gives up when the change moved on
   * (cancelled, reverted, finished) or `wanted` says the partition is no longer to be copied.
   */
  private async untilAgreed(epoch: number, changeEpoch: number, wanted: () => boolean): Promise<void> {
    const going = (): boolean => !this.stopped && wanted() && this.deps.membership.map?.change?.epoch === changeEpoch
    const waitStarted = Date.now()
    let warned = false
    while (going() && !this.agreedAt.has(epoch) && !this.deps.membership.everyNodeOnEpoch(false, epoch)) {
      if (!warned && Date.now() - waitStarted > 30_000) {
        warned = true
        this.deps.logger.warn({ epoch }, 'waiting to copy: some live node has not taken the map that staged these partitions yet')
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    if (!going()) return
    if (!this.agreedAt.has(epoch)) {
      this.agreedAt.set(epoch, Date.now())
      // Kept for the latest few epochs: a change's waves are staged one after another.
      for (const old of this.agreedAt.keys()) if (this.agreedAt.size > 64 && old !== epoch) this.agreedAt.delete(old)
    }
  }

  /**
   * Waits until writes coordinated on a map older than the one that made `partition` pending
   * (not sent here) have landed on the old replicas: they are bounded by the replica timeout,
   * so lateWritesMs after every node held the newer map. The final comparison starts only then,
   * so it finds them; the copy before it need not wait (what it misses, the comparison pulls,
   * with its source compared too when the copy started earlier).
   */
  private async lateWritesLanded(partition: number): Promise<void> {
    const leftMs = this.lateWritesLeftMs(partition)
    if (leftMs > 0 && !this.stopped) await new Promise((resolve) => setTimeout(resolve, leftMs))
  }

  /** How long until lateWritesLanded(partition) would return (a whole lateWritesMs when its agreement is not known). */
  private lateWritesLeftMs(partition: number): number {
    const agreed = this.agreedAt.get(this.gainedAt.get(partition) ?? -1)
    return agreed === undefined ? lateWritesMs : agreed + lateWritesMs - Date.now()
  }

  /** Per gained partition, the replica it was copied from whole, in one pass (repairNow's fill). */
  private readonly wholeCopies = new Map<number, string>()

  private readonly copyCursors: CopyCursors

  stop(): void {
    this.stopped = true
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
    if (this.fillTimer !== undefined) clearTimeout(this.fillTimer)
    this.fillTimer = undefined
    if (this.afterRemoveTimer !== undefined) clearTimeout(this.afterRemoveTimer)
    this.afterRemoveTimer = undefined
    if (this.paceTimer !== undefined) clearInterval(this.paceTimer)
    this.paceTimer = undefined
    if (this.backgroundPause !== undefined) {
      clearTimeout(this.backgroundPause.timer)
      this.backgroundPause.resolve()
    }
  }

  state(): { inProgress: boolean; partitionsRepaired: number; partitionsHeld: number; oldestRepairMs: number; lastRepairMs: number } {
    const map = this.deps.membership.map
    const held = map === undefined ? [] : map.replicas.flatMap((list, p) => (list.includes(this.deps.selfId) ? [p] : []))
    const times = held.map((p) => this.lastRepairMs.get(p)).filter((t): t is number => t !== undefined)
    return {
      inProgress: this.active > 0 || this.backgroundPassing,
      partitionsRepaired: times.length,
      partitionsHeld: held.length,
      oldestRepairMs: times.length === held.length && times.length > 0 ? Math.min(...times) : 0,
      lastRepairMs: times.length > 0 ? Math.max(...times) : 0,
    }
  }

  lastRepairOf(partition: number): number | undefined {
    return this.lastRepairMs.get(partition)
  }

  /** Repairs the given partitions (default: every partition this node holds), one at a time. */
  repair(partitions?: number[]): Promise<RepairResult> {
    // Repairs queue behind each other: two at once would only compete for the same budget.
    const run = this.chain.then(() => this.repairNow(partitions))
    this.chain = run.catch(() => undefined)
    return run
  }

  /**
   * With `liveOnly`, a replica that is down does not make a partition's repair incomplete (a
   * node being removed is down for good; the new replica compares with the live ones).
   */
  /**
   * Compares partitions with their other replicas and exchanges what differs. With `fill` (a
   * new replica catching up on a partition it gained), only with live current replicas, and
   * only until a read quorum of them is covered: any write acknowledged by a write quorum is on
   * one of those (writes since the change was staged reach this node directly). The replica
   * the whole partition was just copied from in one pass (`copiedFrom`) counts as compared.
   */
  private async repairNow(partitions?: number[], fill?: { copiedFrom: string | undefined }): Promise<RepairResult> {
    const started = Date.now()
    const map = this.deps.membership.map
    if (map === undefined) throw new KumoError('NOT_SERVING', 'this node has not joined a cluster yet')
    const lists = writeLists(map)
    const held = lists.flatMap((list, p) => (list.includes(this.deps.selfId) ? [p] : []))
    const targets = partitions === undefined ? held : partitions.filter((p) => held.includes(p))
    if (partitions !== undefined) {
      for (const p of partitions) {
        if (!Number.isInteger(p) || p < 0 || p >= map.partitionCount) {
          throw new KumoError('INVALID_ARGUMENT', `partition ${p} does not exist (0..${map.partitionCount - 1})`)
        }
      }
    }
    const result: RepairResult = { partitions: 0, pulled: 0, pushed: 0, skipped: 0, durationMs: 0 }
    this.active++
    try {
      for (const partition of targets) {
        let complete = true
        // This node's leaf hashes, kept from one peer to the next while nothing was pulled (a
        // scan of the partition saved per further replica).
        let mine: PartitionHashes | undefined
        const current = map.replicas[partition]!
        const needed = current.includes(this.deps.selfId) ? 0 : current.length - requiredAcks('quorum', current.length) + 1
        const copiedFrom = fill?.copiedFrom !== undefined && current.includes(fill.copiedFrom) ? fill.copiedFrom : undefined
        let compared = copiedFrom === undefined ? 0 : 1
        const peers = fill === undefined ? lists[partition]! : current.filter((id) => id !== copiedFrom && this.deps.membership.isAlive(id))
        for (const peer of peers) {
          if (peer === this.deps.selfId) continue
          if (fill !== undefined && compared >= needed) break
          const address = this.deps.membership.address(peer)
          const channel = address === undefined ? undefined : this.deps.peers.get(peer, address)
          if (channel === undefined || !this.deps.membership.isAlive(peer) || !channel.reachable) {
            result.skipped++
            complete = false
            continue
          }
          try {
            const synced = await this.syncWith(channel, partition, mine, fill !== undefined)
            result.pulled += synced.pulled
            result.pushed += synced.pushed
            mine = synced.pulled === 0 ? synced.mine : undefined
            if (map.replicas[partition]!.includes(peer)) compared++
          } catch (err) {
            this.deps.logger.warn({ err, partition, peer }, 'partition repair with peer failed')
            result.skipped++
            complete = false
          }
        }
        // A new replica is caught up only once it compared with a read quorum of the current
        // replicas: any write acknowledged by a write quorum of them is on one of those.
        if ((complete || fill !== undefined) && compared >= needed) this.lastRepairMs.set(partition, Date.now())
        result.partitions++
      }
    } finally {
      this.active--
    }
    result.durationMs = Date.now() - started
    return result
  }

  /** Leaf hashes of one local partition. */
  async leafHashes(partition: number): Promise<number[]> {
    return (await this.hashPartition(partition)).hashes
  }

  private async hashPartition(partition: number): Promise<PartitionHashes> {
    const hasher = new LeafHasher(this.config.leafCount)
    let records = 0
    await this.forEachRecord(partition, (key, version) => {
      hasher.add(key, version)
      records++
    })
    return { hashes: [...hasher.hashes], records }
  }

  /** Keys and versions of one local partition that fall in the given leaves. */
  async leafEntries(partition: number, leaves: readonly number[]): Promise<KeyVersion[]> {
    const wanted = new Set(leaves)
    const out: KeyVersion[] = []
    await this.forEachRecord(partition, (key, version) => {
      if (wanted.has(leafOf(key, this.config.leafCount))) out.push({ key, version: Buffer.from(version) })
    })
    return out
  }

  /** Visits every record of a partition, a page at a time: its key and version, from the partition's headers (no value is read). */
  private async forEachRecord(partition: number, visit: (key: Buffer, version: Buffer) => void): Promise<void> {
    let gte: Buffer | undefined
    for (;;) {
      const page = await this.deps.storage.scanPartitionHeaders(partition, { gte, limit: pageSize })
      for (const { key, header } of page) visit(key, recordVersion(header))
      if (page.length < pageSize) return
      gte = Buffer.concat([page[page.length - 1]!.key, Buffer.from([0])])
    }
  }

  /**
   * Compares one partition with one peer and exchanges what differs. `pacedCompare`: the hashing
   * counts in the record pace too (a move's final comparison, which runs beside the clients for
   * every gained partition at once); a periodic or asked-for repair paces only what it exchanges,
   * so that a slow move rate does not make a whole-node comparison take minutes.
   */
  private async syncWith(channel: PeerChannel, partition: number, known: PartitionHashes | undefined, pacedCompare: boolean): Promise<{ pulled: number; pushed: number; mine: PartitionHashes }> {
    const timeout = this.config.timeoutMs
    // Both passes run at once and unpaced, so that the two sides hash the partition as of about
    // the same moment (writes landing between two passes far apart would make leaves differ);
    // the pace is paid after them, for the records both sides hashed.
    const [mine, theirs] = await Promise.all([
      known ?? this.hashPartition(partition),
      channel.request({ ...noPeerFields, op: 'DIGEST', partition }, timeout).then((r) => r.hashes),
    ])
    // Hashed here (unless known from the last peer) and on the peer (about as many).
    if (pacedCompare) await this.throttle(Math.ceil((mine.records * (known === undefined ? 2 : 1)) / hashedPerPacedRecord))
    const leaves = differingLeaves(mine.hashes, theirs)
    if (leaves.length === 0) return { pulled: 0, pushed: 0, mine }
    const [ours, peers] = await Promise.all([
      this.leafEntries(partition, leaves),
      channel.request({ ...noPeerFields, op: 'LEAVES', partition, leaves }, timeout).then((r) =>
        r.keys.map((key, i) => ({ key, version: r.records[i]! })),
      ),
    ])
    const { pull, push } = planExchange(ours, peers)
    // Pulled and pushed in batches of at most exchangeBatchMax records and about
    // exchangeBytesMax bytes: values may be up to 1 MiB, and a message is at most 16 MiB.
    for (let i = 0; i < pull.length; ) {
      const keys = pull.slice(i, i + exchangeBatchMax)
      await this.throttle(keys.length)
      const res = await channel.request({ ...noPeerFields, op: 'READ_LOCAL', partition, keys, bytesMax: exchangeBytesMax }, timeout)
      const read = keys.length - res.leftOut
      const writes = keys.slice(0, read).flatMap((key, j) => (res.records[j]?.length ? [{ partition, key, record: res.records[j]! }] : []))
      await this.deps.storage.applyRecords(writes)
      i += Math.max(1, read)
      let bytes = 0
      for (const w of writes) bytes += w.key.length + w.record.length
      await this.paceBytes(bytes)
    }
    for (let i = 0; i < push.length; ) {
      const present: { key: Buffer; record: Buffer }[] = []
      let bytes = 0
      while (i < push.length && present.length < exchangeBatchMax && (present.length === 0 || bytes < exchangeBytesMax)) {
        // As many keys as the records read so far say fit in what is left (large values: one).
        const fit = present.length === 0 ? 4 : Math.floor(((exchangeBytesMax - bytes) * present.length) / Math.max(1, bytes))
        const keys = push.slice(i, i + Math.max(1, Math.min(16, fit, exchangeBatchMax - present.length)))
        i += keys.length
        const records = await this.deps.storage.getRecords(partition, keys)
        keys.forEach((key, j) => {
          if (records[j] === undefined) return
          present.push({ key, record: records[j]! })
          bytes += key.length + records[j]!.length
        })
      }
      if (present.length === 0) continue
      await this.throttle(present.length)
      await this.paceBytes(bytes)
      await channel.request(
        { ...noPeerFields, op: 'WRITE', partition, keys: present.map((e) => e.key), records: present.map((e) => e.record) },
        timeout,
      )
    }
    return { pulled: pull.length, pushed: push.length, mine }
  }

  /**
   * How much one copy page asks for: copyPageSize records and copyBytesMax bytes, or a second's
   * worth of the budgets when that is less. A page is paced whole once it is read, so at 5
   * records a second a page of 250 waited 50 s before anything of it was written, and `kumo
   * transfers` showed nothing copied meanwhile.
   */
  private copyPage(): { records: number; bytes: number } {
    return {
      records: Math.max(1, Math.min(copyPageSize, Math.floor(this.recordPace.ratePerSecond))),
      bytes: Math.max(1, Math.min(copyBytesMax, Math.floor(this.bytePace.ratePerSecond))),
    }
  }

  /** Waits as long as the byte budget says after `bytes` were exchanged (a second's worth may go at once). */
  private async paceBytes(bytes: number): Promise<void> {
    const waitMs = this.bytePace.take(bytes, Date.now())
    if (waitMs > 0 && !this.stopped) await new Promise((resolve) => setTimeout(resolve, waitMs))
  }

  /** Waits as long as the record budget says after `records` were exchanged (a burst of two copy pages at most). */
  private async throttle(records: number): Promise<void> {
    const waitMs = this.recordPace.take(records, Date.now())
    if (waitMs > 0 && !this.stopped) await new Promise((resolve) => setTimeout(resolve, waitMs))
  }
}
