import { checkVersionAhead } from '../core/validate.js'
import type { HintEntry, KeyHeader, KeyRange, RecordWrite, ScanPage, ScanRange, StorageEngine, StoredRecord } from '../storage/engine.js'

/**
 * The node's storage as every component sees it: no record whose version is further than
 * versionAheadMsMax ahead of the cluster's clock is stored, by whatever path it comes (a
 * client, a peer's replica write, a hint, a repair, read repair). One gate in front of the
 * engine, so no path can forget the check; a request carrying such a record fails whole with
 * INVALID_ARGUMENT, naming the writer's clock.
 */
export class VersionBoundStorage implements StorageEngine {
  constructor(
    private readonly inner: StorageEngine,
    /** The cluster's time as this node measures it (its own clock corrected by the median offset). */
    private readonly clusterNowMs: () => number,
  ) {}

  applyRecords(writes: readonly RecordWrite[]): Promise<boolean[]> {
    try {
      const now = this.clusterNowMs()
      for (let i = 0; i < writes.length; i++) checkVersionAhead(writes[i]!.record, i, now, 'the writer')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.inner.applyRecords(writes)
  }

  putHints(hints: readonly { target: string; partition: number; key: Buffer; record: Buffer }[], nowMs: number, perTargetMax?: number): Promise<void> {
    try {
      const now = this.clusterNowMs()
      for (let i = 0; i < hints.length; i++) checkVersionAhead(hints[i]!.record, i, now, 'the writer')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.inner.putHints(hints, nowMs, perTargetMax)
  }

  open(): Promise<void> {
    return this.inner.open()
  }

  close(): Promise<void> {
    return this.inner.close()
  }

  getRecords(partition: number, keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    return this.inner.getRecords(partition, keys)
  }

  getRecordsAt(partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    return this.inner.getRecordsAt(partitions, keys)
  }

  getHeadersAt(partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    return this.inner.getHeadersAt(partitions, keys)
  }

  purgeRecords(entries: readonly RecordWrite[]): Promise<boolean[]> {
    return this.inner.purgeRecords(entries)
  }

  scanPartition(partition: number, range: ScanRange): Promise<StoredRecord[]> {
    return this.inner.scanPartition(partition, range)
  }

  scanPartitionHeaders(partition: number, range: KeyRange): Promise<KeyHeader[]> {
    return this.inner.scanPartitionHeaders(partition, range)
  }

  scanAcross(partitions: readonly number[], range: ScanRange & { examineMax?: number }): Promise<ScanPage> {
    return this.inner.scanAcross(partitions, range)
  }

  compact(): Promise<void> {
    return this.inner.compact()
  }

  partitionSize(partition: number): Promise<{ records: number; bytes: number }> {
    return this.inner.partitionSize(partition)
  }

  dropPartition(partition: number): Promise<void> {
    return this.inner.dropPartition(partition)
  }

  readHints(target: string, limit: number, options?: { after?: Buffer; bytesMax?: number }): Promise<HintEntry[]> {
    return this.inner.readHints(target, limit, options)
  }

  deleteHints(ids: readonly Buffer[]): Promise<void> {
    return this.inner.deleteHints(ids)
  }

  hintCounts(): Map<string, number> {
    return this.inner.hintCounts()
  }

  highWaterVersion(): Buffer {
    return this.inner.highWaterVersion()
  }

  recover(): Promise<void> {
    return this.inner.recover()
  }

  getMeta(name: string): Promise<Buffer | undefined> {
    return this.inner.getMeta(name)
  }

  putMeta(name: string, value: Buffer): Promise<void> {
    return this.inner.putMeta(name, value)
  }
}
