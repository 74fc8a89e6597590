import type { Logger } from 'pino'
import { deadSinceMs } from '../core/record.js'
import { isLastPage, type RecordWrite, type StorageEngine } from '../storage/engine.js'
import type { Membership } from './membership.js'

export interface PurgerConfig {
  /** How often to sweep (0: never). */
  intervalMs: number
  /**
   * A tombstone or expired record is purged once it has been dead this long. Every replica must
   * have seen the delete by then (hints, read repair, anti-entropy every few minutes), or a
   * replica that missed it could bring the old value back.
   */
  graceMs: number
}

export const defaultPurgerConfig: PurgerConfig = {
  intervalMs: 60 * 60 * 1000,
  graceMs: 10 * 24 * 60 * 60 * 1000,
}

const pageSize = 1000
/** A page of records held at once, at most (plus one record): values may be up to 1 MiB each. */
const pageBytesMax = 4 * 1024 * 1024

/** Reclaims the space of tombstones and expired values after the grace period. */
export class Purger {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<{ scanned: number; purged: number }> | undefined
  purgedTotal = 0

  constructor(
    private readonly deps: { selfId: string; storage: StorageEngine; membership: Membership; logger: Logger },
    private readonly config: PurgerConfig,
  ) {}

  start(): void {
    if (this.config.intervalMs <= 0) return
    this.timer = setInterval(() => void this.purge().catch((err) => this.deps.logger.warn({ err }, 'purge failed')), this.config.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** One sweep over every partition this node holds (a sweep already running is joined). */
  purge(nowMs = Date.now()): Promise<{ scanned: number; purged: number }> {
    this.running ??= this.sweep(nowMs).finally(() => {
      this.running = undefined
    })
    return this.running
  }

  private async sweep(nowMs: number): Promise<{ scanned: number; purged: number }> {
    const map = this.deps.membership.map
    if (map === undefined) return { scanned: 0, purged: 0 }
    const cutoff = nowMs - this.config.graceMs
    let scanned = 0
    let purged = 0
    for (let partition = 0; partition < map.partitionCount; partition++) {
      if (!map.replicas[partition]!.includes(this.deps.selfId)) continue
      let gte: Buffer | undefined
      for (;;) {
        const range = { gte, limit: pageSize, bytesMax: pageBytesMax }
        const page = await this.deps.storage.scanPartition(partition, range)
        scanned += page.length
        const dead: RecordWrite[] = []
        for (const { key, record } of page) {
          const since = deadSinceMs(record, nowMs)
          if (since !== undefined && since <= cutoff) dead.push({ partition, key, record })
        }
        const results = await this.deps.storage.purgeRecords(dead)
        purged += results.filter(Boolean).length
        if (isLastPage(page, range)) break
        gte = Buffer.concat([page[page.length - 1]!.key, Buffer.from([0])])
      }
    }
    this.purgedTotal += purged
    return { scanned, purged }
  }
}
