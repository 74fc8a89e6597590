/**
 * The storage engine contract. Records are the encoded bytes of core/record.ts; the engine
 * compares their versions but never interprets values. Buffers returned are read-only to
 * the caller (an engine may share them, e.g. with a cache of records), and the engine copies
 * what it keeps of Buffers passed in. Every method may reject with a KumoError('INTERNAL') on a storage failure.
 *
 * A user key belongs to one partition (the partitioner's): callers always name that one, and
 * an engine may keep one record a key (ClassicLevelEngine does: records in key order).
 */
export interface StoredRecord {
  key: Buffer
  record: Buffer
}

export interface RecordWrite {
  partition: number
  key: Buffer
  record: Buffer
}

export interface HintEntry {
  /** Opaque handle for deleteHints. */
  id: Buffer
  target: string
  storedAtMs: number
  partition: number
  key: Buffer
  record: Buffer
}

export interface ScanRange {
  /** User keys in [gte, lt); either bound may be absent. */
  gte?: Uint8Array
  lt?: Uint8Array
  limit: number
  /**
   * The page ends after the entry that brings it to this many bytes (keys and records) or
   * more: so a page under bytesMax with fewer than `limit` entries is the end of the range.
   */
  bytesMax?: number
  /**
   * Records whose value is longer than this come back *omitted*: an empty Buffer (never a real
   * record), to be read by key when needed. They count only their key toward bytesMax.
   */
  valueBytesMax?: number
}

/** The keys a header listing covers: [gte, lt), at most `limit` (StorageEngine.scanPartitionHeaders). */
export type KeyRange = Pick<ScanRange, 'gte' | 'lt' | 'limit'>

/** A key and its record's header (core/record.ts recordHeader), from StorageEngine.scanPartitionHeaders. */
export interface KeyHeader {
  key: Buffer
  header: Buffer
}

/** An entry of a scan across partitions: a StoredRecord and the partition it is in. */
export interface ScanEntry extends StoredRecord {
  partition: number
}

/** A page of a scan across partitions (StorageEngine.scanAcross). */
export interface ScanPage {
  entries: ScanEntry[]
  /**
   * Where the range goes on: the next page starts after this key. Undefined when the range is
   * done. It is the last entry's key when the page ended on `limit` or `bytesMax`, and may be
   * further on when the page ended on the keys it may examine (most were in other partitions).
   */
  resumeAfter?: Buffer
}

/** Whether a page scanned with `range` is the range's last (ScanRange.bytesMax). */
export function isLastPage(page: readonly StoredRecord[], range: ScanRange): boolean {
  if (page.length >= range.limit) return false
  if (range.bytesMax === undefined) return true
  let bytes = 0
  for (const entry of page) bytes += scanEntryBytes(entry)
  return bytes < range.bytesMax
}

/** The bytes an entry counts toward ScanRange.bytesMax. */
export function scanEntryBytes(entry: StoredRecord): number {
  return entry.key.length + entry.record.length
}

export interface StorageEngine {
  open(): Promise<void>
  close(): Promise<void>

  /** The records held for `keys` in `partition`, undefined where none. */
  getRecords(partition: number, keys: readonly Buffer[]): Promise<(Buffer | undefined)[]>
  /** The same across partitions: `partitions[i]` is the partition of `keys[i]`. */
  getRecordsAt(partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]>

  /**
   * The headers (core/record.ts recordHeader: version, flags, expiry) of the records held for
   * `keys`, `partitions[i]` being the partition of `keys[i]`; undefined where none. What a
   * digest read asks of the replicas it does not read whole.
   */
  getHeadersAt(partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]>

  /**
   * Applies writes last-writer-wins: a record is stored only if its version is newer than the
   * one held (equal versions are a no-op, so replays are harmless). All writes of one call are
   * committed in one atomic LevelDB batch. Resolves, per write, whether it was stored.
   */
  applyRecords(writes: readonly RecordWrite[]): Promise<boolean[]>

  /**
   * Deletes each record only if the stored record is still exactly that one, so a write that
   * landed since it was read is never lost. Ordered with applyRecords. Resolves, per entry,
   * whether it was deleted. (Used to purge tombstones and expired records after a grace period.)
   */
  purgeRecords(entries: readonly RecordWrite[]): Promise<boolean[]>

  /** Records of one partition in user-key order within the range: at most `limit`, and see bytesMax and valueBytesMax. */
  scanPartition(partition: number, range: ScanRange): Promise<StoredRecord[]>

  /**
   * The keys of one partition in user-key order within the range, each with its record's header
   * (as getHeadersAt): at most `limit`. No value is read: what a pass needing only versions
   * (anti-entropy's hashing) reads.
   */
  scanPartitionHeaders(partition: number, range: KeyRange): Promise<KeyHeader[]>

  /**
   * Records of the given partitions in user-key order within the range, as one sequence: at
   * most `limit`, and see bytesMax and valueBytesMax. It examines at most `examineMax` records
   * (default 16,384) of any partition, and an engine may bound the bytes it examines too, so a
   * page of a few partitions among many ends with `resumeAfter` rather than running on. Its
   * cost grows with the records it examines, not with the number of partitions.
   */
  scanAcross(partitions: readonly number[], range: ScanRange & { examineMax?: number }): Promise<ScanPage>

  /**
   * Records of one partition (tombstones and expired ones included) and their bytes (user keys
   * and records): what copying it moves. A pass over the partition.
   */
  partitionSize(partition: number): Promise<{ records: number; bytes: number }>

  /** Deletes all of a partition's records, a chunk at a time (used after handoff). */
  dropPartition(partition: number): Promise<void>
  /**
   * Compacts all of storage now (LevelDB: every level into the last). After a bulk load, reads
   * otherwise share the machine with the compactions the load left, and with the ones their own
   * lookups through overlapping files start. Resolves when it is done.
   */
  compact(): Promise<void>

  /**
   * Stores writes meant for another node (hinted handoff). Rejects with OVERLOADED, storing
   * none, if a target would hold more than `perTargetMax` hints.
   */
  putHints(hints: readonly { target: string; partition: number; key: Buffer; record: Buffer }[], nowMs: number, perTargetMax?: number): Promise<void>
  /**
   * Oldest hints for `target` first, at most `limit` and, past the first, at most `bytesMax`
   * of keys and records; with `after` (a hint's id), only hints stored after that one.
   */
  readHints(target: string, limit: number, options?: { after?: Buffer; bytesMax?: number }): Promise<HintEntry[]>
  deleteHints(ids: readonly Buffer[]): Promise<void>
  /** Hints held per target node. */
  hintCounts(): Map<string, number>

  /** The newest record version ever stored (empty when none): a restarted node's clock starts above it. */
  highWaterVersion(): Buffer

  /**
   * After a write failed (a full disk): makes storage take writes again if it can, and
   * resolves once a probe write succeeded; rejects with INTERNAL while writes still fail.
   */
  recover(): Promise<void>

  getMeta(name: string): Promise<Buffer | undefined>
  putMeta(name: string, value: Buffer): Promise<void>
}
