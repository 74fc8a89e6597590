import assert from 'node:assert/strict'
import { ClassicLevel } from 'classic-level'
import { KumoError } from '../core/errors.js'
import { defaultOpenTablesMin, defaultTableFileBytes } from '../core/cache-sizes.js'
import { recordHeader, recordHeaderBytes, recordVersion } from '../core/record.js'
import { compactFully } from './full-compaction.js'
import { prewarmTables } from './prewarm.js'
import { levelFilesOf, tableFilesOf } from './leveldb-stats.js'
import { partitionPage } from './merge-pages.js'
import {
  scanEntryBytes,
  type HintEntry,
  type KeyHeader,
  type KeyRange,
  type RecordWrite,
  type ScanEntry,
  type ScanPage,
  type ScanRange,
  type StorageEngine,
  type StoredRecord,
} from './engine.js'
import {
  decodeHintKey,
  hintKey,
  hintRange,
  hintTargetPrefix,
  metaKey,
  layout1IndexRange,
  layoutGuardKey,
  partitionEntriesEnd,
  partitionEntryKey,
  partitionEntryValue,
  partitionOfValue,
  partitionRange,
  partitionOfStoredKey,
  prefixUpperBound,
  recordBytesOfEntry,
  recordHeaderOfEntry,
  recordKey,
  recordOfValue,
  recordRange,
  recordValue,
  userKeyOf,
  storedKeyBounds,
  partitionCountMax,
} from './keys.js'
import { RowCache } from './row-cache.js'
import { Semaphore } from '../core/semaphore.js'

export interface ClassicLevelEngineConfig {
  /** fsync every write batch (slower, survives power loss rather than only process crashes). */
  sync: boolean
  /** Writes gathered into one LevelDB batch at most. */
  batchOpsMax: number
  /** LevelDB's block cache, in bytes (its own default is 8 MiB). */
  cacheBytes: number
  /** LevelDB's memtable, in bytes (its own default is 4 MiB): larger means fewer small files to compact. */
  writeBufferBytes: number
  /** Kumo's cache of recently read records, in bytes (0: none); see RowCache. */
  rowCacheBytes: number
  /**
   * Table files LevelDB keeps open at most (max_open_files; its own default is 1,000). A read
   * from a table that is not open reopens it; see defaultOpenTables in core/cache-sizes.ts.
   */
  openTablesMax: number
  /**
   * The size LevelDB cuts the table files it writes at (max_file_size; its own default is 2 MiB);
   * see defaultTableFileBytes in core/cache-sizes.ts.
   */
  tableFileBytes: number
  /** Told of every failed write (a full disk, an I/O error): the node goes read-only on it. */
  onWriteFailure?: (err: KumoError) => void
  /**
   * Iterators open at once at most (scans, hint reads); the others wait. Each holds the block it
   * is on in memory, a whole value of up to 1 MiB: a scan reads every partition, and twenty scans
   * of large values with an iterator per partition each held gigabytes.
   */
  iteratorsMax: number
  /**
   * Told while a store in layout 1 (keys.ts) is converted at open: records converted so far,
   * and when they all are (done); then, once the store is compacted after it, (-1, true).
   */
  onConvert?: (records: number, done: boolean) => void
  /**
   * prewarm() maps the table files in only when they hold at most this many bytes (0: never).
   * A larger store would not stay in the OS page cache, and the pass would read it from disk.
   */
  prewarmBytesMax: number
}

/** What prewarm() did: walked the whole store, stopped (the store closing), skipped (and why), or failed. */
export interface PrewarmOutcome {
  state: 'done' | 'stopped' | 'skipped' | 'failed'
  /** The table files' bytes when it started (LevelDB's stats: whole MB a level). */
  tableBytes: number
  ms: number
  /** Why it was skipped or failed. */
  reason?: string
}

/** The row cache's default size. */
export const defaultRowCacheBytes = 32 * 1024 * 1024

/**
 * LevelDB settings Kumo opens its storage with. The benchmark opens its embedded baseline with
 * the same ones, so the comparison is of the same storage.
 */
export const levelOptions = { cacheSize: 64 * 1024 * 1024, writeBufferSize: 16 * 1024 * 1024, maxFileSize: defaultTableFileBytes } as const

interface PendingWrite {
  writes: readonly RecordWrite[]
  /** Compare-and-delete instead of last-writer-wins put. */
  purge?: boolean
  resolve: (applied: boolean[]) => void
  reject: (err: unknown) => void
}

type Db = ClassicLevel<Buffer, Buffer>

const highWaterKey = metaKey('high-water-version')
/** The store's layout (keys.ts): '2'; absent in a store of layout 1, or a new one. */
const layoutKey = metaKey('layout')
const layout = Buffer.from('2')
/** Layout 1 only: present once its key index listed every record. */
const layout1IndexKey = metaKey('key-index')
/** While a layout-1 store is converted: the last partition entry converted (see convert()). */
const convertedKey = metaKey('layout-converted-through')
/** Records converted, or partition entries dropped, per batch at most. */
const chunkKeys = 1000
/** Bytes of records converted per batch, about (the iterator's step). */
const convertStepBytes = 1024 * 1024
/** A conversion tells its progress every this many records (onConvert). */
const convertReportRecords = 100_000
/** Records a scanAcross page examines at most, by default. */
const examineMaxDefault = 16_384
/** Bytes of records a scanAcross page examines at most (those it returns and those it passes over). */
const examineBytesMax = 16 * 1024 * 1024
/** An omitted record in a scan page (ScanRange.valueBytesMax). */
const omitted = Buffer.alloc(0)
/** Records read from LevelDB in one step of a partition scan, at most, and about how many bytes. */
const scanStepRecordsMax = 1000
const scanStepBytes = 1024 * 1024
/** What an iterator over partition entries (a few dozen bytes each) reads per step, at most. */
const partitionEntriesStepBytes = 256 * 1024
const probeKey = metaKey('write-probe')
/** Above every real version: with it, every write is checked against storage. */
const maxVersion = Buffer.alloc(8 + 65, 0xff)
/** Reads of at most this many keys run synchronously (see read()); larger ones go to the thread pool. */
const syncReadKeysMax = 64
/** Keys per getMany call of a larger read (see flushReads). */
const readChunkKeys = 128

/** recordKey's first two bytes as latin1: a record's row-cache id is this and its key as latin1. */
const recordIdPrefix = recordKey(Buffer.alloc(0)).toString('latin1')

/** Puts a record and its partition entry (keys.ts) into a batch. */
function putRecord(batch: ReturnType<Db['batch']>, stored: Buffer, w: RecordWrite): void {
  batch.put(stored, recordValue(w.partition, w.record))
  batch.put(partitionEntryKey(w.partition, w.key), partitionEntryValue(w.record, recordHeaderBytes(w.record)))
}

/**
 * The classic-level engine. Small reads run synchronously, large ones as parallel getMany
 * calls. Writes that arrive in the same event-loop turn share one getMany (for the version
 * check, when needed) and one batch.
 * Write groups are applied one after another, so the version check and the write are atomic
 * with respect to other writes of this process.
 */
export class ClassicLevelEngine implements StorageEngine {
  private readonly db: Db
  private readonly config: ClassicLevelEngineConfig
  private writeQueue: PendingWrite[] = []
  private writing = false
  private hintSeq = 0
  private lastHintMs = 0
  private readonly hintsByTarget = new Map<string, number>()
  /** The newest record version ever stored here (see applyGroups). */
  private highWater: Buffer = Buffer.alloc(0)
  /**
   * Per partition, the newest version written to it since open; a partition not in the map is
   * bounded by `openHighWater`, the high-water mark found at open. Either bounds every version
   * stored in the partition, and is far lower than the global mark when many writers interleave.
   */
  private readonly partitionHigh = new Map<number, Buffer>()
  private openHighWater: Buffer = Buffer.alloc(0)
  private readonly cache: RowCache
  private readonly iterators: Semaphore
  /**
   * Commits that changed records, counted once each has been applied and its keys forgotten
   * by the row cache: a thread-pool read fills the cache only if this did not move while it ran.
   */
  private dataCommits = 0
  /** close() has begun. */
  private closing = false
  /** recover() is reopening LevelDB: no prewarm pass starts meanwhile. */
  private reopening = false
  /** Aborts the prewarm pass that runs (close(), recover()). */
  private prewarmStop: AbortController | undefined
  /** The prewarm pass running or queued last (see prewarm()). */
  private prewarming: Promise<PrewarmOutcome> | undefined

  constructor(
    readonly location: string,
    config: Partial<ClassicLevelEngineConfig> = {},
  ) {
    this.config = {
      sync: false,
      batchOpsMax: 4096,
      cacheBytes: levelOptions.cacheSize,
      writeBufferBytes: levelOptions.writeBufferSize,
      rowCacheBytes: defaultRowCacheBytes,
      openTablesMax: defaultOpenTablesMin,
      tableFileBytes: levelOptions.maxFileSize,
      iteratorsMax: 16,
      prewarmBytesMax: 0,
      ...config,
    }
    this.iterators = new Semaphore(this.config.iteratorsMax)
    this.cache = new RowCache(this.config.rowCacheBytes)
    this.db = new ClassicLevel<Buffer, Buffer>(location, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      cacheSize: this.config.cacheBytes,
      writeBufferSize: this.config.writeBufferBytes,
      maxOpenFiles: this.config.openTablesMax,
      maxFileSize: this.config.tableFileBytes,
    })
  }

  async open(): Promise<void> {
    try {
      await this.db.open()
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause
      if (cause?.code === 'LEVEL_LOCKED') {
        throw new KumoError(
          'DATA_DIR_LOCKED',
          `data directory ${this.location} is in use by another process (is a node already running on it?)`,
          { cause: err },
        )
      }
      throw new KumoError('INTERNAL', `cannot open data directory ${this.location}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    try {
      await this.opened()
    } catch (err) {
      await this.db.close().catch(() => undefined)
      throw err instanceof KumoError ? err : new KumoError('INTERNAL', `cannot open data directory ${this.location}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** What open() does once LevelDB is open: the layout checked (and converted), the marks and hints read. */
  private async opened(): Promise<void> {
    const stored = await this.db.get(layoutKey)
    if (stored !== undefined && !stored.equals(layout)) {
      throw new KumoError('INTERNAL', `data directory ${this.location} is in storage layout ${stored.toString()}, which this version of Kumo cannot read (it reads layout ${layout.toString()})`)
    }
    const hasData = await this.hasData()
    if (stored === undefined) {
      // Layout 1 (or a new store): whatever records it holds are converted before any other
      // write. The guard and layout 1's key-index mark keep a Kumo of layout 1 off the store
      // (keys.ts): with the mark it does not rebuild its index, and the guard stops it at open.
      await this.convert(hasData)
      await this.db.batch().put(layoutKey, layout).put(layout1IndexKey, Buffer.from('1')).put(layoutGuardKey, Buffer.alloc(0)).del(convertedKey).write({ sync: true })
      // Every record was written a second time: the old copies take as much room again, and
      // lookups pass over them, until compacted; once, now, rather than slowly over months.
      if (hasData) {
        await this.compact()
        this.config.onConvert?.(-1, true)
      }
    }
    this.highWater = (await this.db.get(highWaterKey)) ?? (hasData ? maxVersion : Buffer.alloc(0))
    this.openHighWater = this.highWater
    for await (const key of this.db.keys({ ...hintRange })) {
      if (key.equals(layoutGuardKey)) continue
      const { target } = decodeHintKey(key)
      this.hintsByTarget.set(target, (this.hintsByTarget.get(target) ?? 0) + 1)
    }
  }

  /** Whether any partition entry exists (in layout 1, a record). */
  private async hasData(): Promise<boolean> {
    const first = await this.db.keys({ lt: partitionEntriesEnd, limit: 1 }).all()
    return first.length > 0
  }

  /**
   * Converts a store of layout 1 to layout 2 (keys.ts), a chunk of records at a time in one
   * atomic batch each: its record moves to its key-ordered place (over layout 1's index
   * entry) and its partition entry takes the record's size and header. Each batch also notes
   * the last entry it converted, so a conversion stopped midway (the process killed) goes on
   * from there at the next open, never converting an entry twice. Layout 1's key index, which
   * may list keys without records (or miss some, if a store ran without it), is cleared first,
   * also in a store without records.
   */
  private async convert(hasData: boolean): Promise<void> {
    let from = await this.db.get(convertedKey)
    if (from === undefined) {
      await this.db.clear(layout1IndexRange)
      from = Buffer.alloc(0)
      await this.db.put(convertedKey, from, { sync: true })
    }
    if (!hasData) return
    // Records up to 1 MiB each: a step (one batch) holds about convertStepBytes of them.
    const it = this.db.iterator({ ...(from.length === 0 ? {} : { gt: from }), lt: partitionEntriesEnd, highWaterMarkBytes: convertStepBytes })
    let converted = 0
    let reportAt = convertReportRecords
    this.config.onConvert?.(0, false)
    try {
      for (;;) {
        const entries = await it.nextv(chunkKeys)
        if (entries.length === 0) break
        const batch = this.db.batch()
        for (const [key, record] of entries) {
          batch.put(recordKey(userKeyOf(key)), recordValue(partitionOfStoredKey(key), record))
          batch.put(key, partitionEntryValue(record, recordHeaderBytes(record)))
        }
        batch.put(convertedKey, entries[entries.length - 1]![0])
        await batch.write()
        converted += entries.length
        if (converted >= reportAt) {
          this.config.onConvert?.(converted, false)
          reportAt += convertReportRecords
        }
      }
    } finally {
      await it.close()
    }
    this.config.onConvert?.(converted, true)
  }

  /**
   * The caches' configured sizes, the memory LevelDB holds now (block cache in use and
   * memtables), and its table files against those it keeps open at most.
   */
  cacheStats(): { blockCacheBytes: number; rowCacheBytes: number; storageMemoryBytes: number; tableFiles: number; openTablesMax: number } {
    let storageMemoryBytes = 0
    let tableFiles = 0
    try {
      storageMemoryBytes = Number(this.db.getProperty('leveldb.approximate-memory-usage')) || 0
      tableFiles = tableFilesOf(this.db.getProperty('leveldb.stats')) ?? 0
    } catch {
      // Closed, or not open yet.
    }
    return { blockCacheBytes: this.config.cacheBytes, rowCacheBytes: this.config.rowCacheBytes, storageMemoryBytes, tableFiles, openTablesMax: this.config.openTablesMax }
  }

  /** The row cache's counters and size, for metrics. */
  rowCacheStats(): { hits: number; misses: number; bytes: number; entries: number } {
    return { hits: this.cache.hits, misses: this.cache.misses, bytes: this.cache.usedBytes, entries: this.cache.size }
  }

  /**
   * Maps the table files into this process (prewarm.ts), in the background of whatever else
   * runs, unless they hold more than prewarmBytesMax. A call while a pass runs starts another
   * after it (a full compaction's new files need their own). Never rejects.
   */
  prewarm(): Promise<PrewarmOutcome> {
    const pass = (this.prewarming ?? Promise.resolve()).then(() => this.prewarmNow())
    this.prewarming = pass
    void pass.then(() => {
      if (this.prewarming === pass) this.prewarming = undefined
    })
    return pass
  }

  private async prewarmNow(): Promise<PrewarmOutcome> {
    const started = Date.now()
    const outcome = (state: PrewarmOutcome['state'], tableBytes: number, reason?: string): PrewarmOutcome => ({
      state,
      tableBytes,
      ms: Date.now() - started,
      ...(reason === undefined ? {} : { reason }),
    })
    if (this.stopping) return outcome('stopped', 0)
    const max = this.config.prewarmBytesMax
    if (max <= 0) return outcome('skipped', 0, 'turned off')
    let tableBytes = 0
    try {
      tableBytes = this.tableBytes()
      if (tableBytes > max) {
        const mb = (bytes: number): string => `${Math.round(bytes / 2 ** 20).toLocaleString('en-US')} MiB`
        return outcome('skipped', tableBytes, `the table files hold ${mb(tableBytes)}, more than the ${mb(max)} mapped at most`)
      }
      const stop = new AbortController()
      this.prewarmStop = stop
      try {
        // Checked again once a permit is held: close() or recover() may have begun meanwhile,
        // before there was a pass to abort.
        const pass = await this.iterators.run(() => (this.stopping ? Promise.resolve({ ms: 0, stopped: true }) : prewarmTables(this.db, stop.signal)))
        return outcome(pass.stopped ? 'stopped' : 'done', tableBytes)
      } finally {
        if (this.prewarmStop === stop) this.prewarmStop = undefined
      }
    } catch (err) {
      // The store closed under the pass (its iterator closed with it), or a read failed: reads
      // fault the pages in themselves, as without a pass.
      return this.stopping ? outcome('stopped', tableBytes) : outcome('failed', tableBytes, (err as Error).message)
    }
  }

  /** The bytes of the store's table files, from LevelDB's stats (whole MB a level). */
  private tableBytes(): number {
    const levels = levelFilesOf(this.db.getProperty('leveldb.stats')) ?? []
    return levels.reduce((sum, level) => sum + level.megabytes, 0) * 2 ** 20
  }

  /** close() or recover() has begun: a prewarm pass stops, and none starts. */
  private get stopping(): boolean {
    return this.closing || this.reopening
  }

  /** Whether a prewarm pass runs or waits to (for the metrics). */
  get prewarmRunning(): boolean {
    return this.prewarming !== undefined
  }

  async close(): Promise<void> {
    this.closing = true
    this.prewarmStop?.abort()
    await this.prewarming
    while (this.writing || this.writeQueue.length > 0) await new Promise((r) => setImmediate(r))
    this.cache.clear()
    await this.db.close()
  }

  getRecords(partition: number, keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    return this.read(keys.map(recordKey), (_, value) => (partitionOfValue(value) === partition ? recordOfValue(value) : undefined))
  }

  getRecordsAt(partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    assert.equal(partitions.length, keys.length, 'one partition per key')
    return this.read(keys.map(recordKey), (i, value) => (partitionOfValue(value) === partitions[i] ? recordOfValue(value) : undefined))
  }

  getHeadersAt(partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> {
    assert.equal(partitions.length, keys.length, 'one partition per key')
    // From the row cache when a key's record is there (a hot key), else from its partition
    // entry: a few dozen bytes in the blocks of partition entries, which the block cache holds
    // far better than the blocks of whole records. Neither read fills the row cache.
    // The row cache's id of a record is its stored key as latin1: the record prefix's two
    // bytes, then the key, built without a Buffer for the stored key on this every-read path.
    const cache = this.cache.size > 0 ? this.cache : undefined
    const headers: (Buffer | undefined)[] = new Array(keys.length)
    const missing: number[] = []
    for (let i = 0; i < keys.length; i++) {
      const value = cache?.peek(recordIdPrefix + keys[i]!.toString('latin1'))
      if (value === undefined || partitionOfValue(value) !== partitions[i]) missing.push(i)
      else headers[i] = recordHeader(recordOfValue(value))
    }
    const entryOf = (i: number): Buffer => partitionEntryKey(partitions[i]!, keys[i]!)
    const headerOf = (entry: Buffer | undefined | null): Buffer | undefined => (entry === undefined || entry === null ? undefined : recordHeaderOfEntry(entry))
    try {
      if (missing.length <= syncReadKeysMax) {
        for (const i of missing) headers[i] = headerOf(this.db.getSync(entryOf(i)))
        return Promise.resolve(headers)
      }
    } catch (err) {
      return Promise.reject(new KumoError('INTERNAL', `storage read failed: ${(err as Error).message}`, { cause: err }))
    }
    return this.db.getMany(missing.map(entryOf)).then(
      (found) => {
        missing.forEach((i, j) => (headers[i] = headerOf(found[j])))
        return headers
      },
      (err) => {
        throw new KumoError('INTERNAL', `storage read failed: ${(err as Error).message}`, { cause: err })
      },
    )
  }

  /**
   * The stored values of `stored` (record keys), each made a record by `recordOf` (its
   * partition checked: a key is in one partition, the one asked for, or none).
   */
  private read(stored: Buffer[], recordOf: (i: number, value: Buffer) => Buffer | undefined): Promise<(Buffer | undefined)[]> {
    const cache = this.cache.enabled ? this.cache : undefined
    if (stored.length <= syncReadKeysMax) {
      // A few keys are read on this thread: from LevelDB's cache or the OS page cache that is
      // microseconds, less than the hand-off to libuv's thread pool and back would cost.
      try {
        const values: (Buffer | undefined)[] = new Array(stored.length)
        for (let i = 0; i < stored.length; i++) {
          const value = cache === undefined ? this.db.getSync(stored[i]!) : this.getCached(cache, stored[i]!)
          values[i] = value === undefined ? undefined : recordOf(i, value)
        }
        return Promise.resolve(values)
      } catch (err) {
        return Promise.reject(new KumoError('INTERNAL', `storage read failed: ${(err as Error).message}`, { cause: err }))
      }
    }
    // One getMany runs on one thread-pool thread, key after key: a large read is cut into
    // chunks that run side by side. Each caller's read answers on its own, so one large read
    // does not hold up another. A chunk fills the row cache only if no commit finished while
    // it ran: a write may commit after the thread read a key, and its forget() may already
    // have run when this thread sees the old record.
    const values: (Buffer | undefined)[] = new Array(stored.length)
    const missing: number[] = []
    const ids: string[] = []
    for (let i = 0; i < stored.length; i++) {
      const id = cache === undefined ? '' : stored[i]!.toString('latin1')
      const value = cache?.get(id)
      if (value === undefined) {
        missing.push(i)
        ids.push(id)
      } else values[i] = recordOf(i, value)
    }
    const commitsBefore = this.dataCommits
    const chunks: Promise<void>[] = []
    for (let at = 0; at < missing.length; at += readChunkKeys) {
      const part = missing.slice(at, at + readChunkKeys)
      chunks.push(
        this.db.getMany(part.map((i) => stored[i]!)).then((found) => {
          const fill = cache !== undefined && this.dataCommits === commitsBefore
          for (let j = 0; j < part.length; j++) {
            const value = found[j] ?? undefined
            values[part[j]!] = value === undefined ? undefined : recordOf(part[j]!, value)
            if (fill && value !== undefined) cache.fill(ids[at + j]!, value)
          }
        }),
      )
    }
    return Promise.all(chunks).then(
      () => values,
      (err) => {
        throw new KumoError('INTERNAL', `storage read failed: ${(err as Error).message}`, { cause: err })
      },
    )
  }

  /** A synchronous read of a stored value through the row cache. */
  private getCached(cache: RowCache, stored: Buffer): Buffer | undefined {
    const id = stored.toString('latin1')
    let value = cache.get(id)
    if (value === undefined) {
      // Read now, on this thread: nothing can commit between the read and the fill, and every
      // commit after it drops the entry (see forget()).
      value = this.db.getSync(stored)
      if (value !== undefined) cache.fill(id, value)
    }
    return value
  }

  /**
   * After a commit: the row cache forgets the keys written or deleted. Filling them again is
   * left to the next synchronous read, so an entry is only ever what LevelDB returned, and a
   * write costs the cache one delete per key (no copy of a record that may be a view into a
   * whole received message).
   */
  private forget(stored: readonly Buffer[]): void {
    this.dataCommits++
    if (this.cache.size === 0) return
    for (const key of stored) this.cache.delete(key.toString('latin1'))
  }

  applyRecords(writes: readonly RecordWrite[]): Promise<boolean[]> {
    if (writes.length === 0) return Promise.resolve([])
    return new Promise((resolve, reject) => {
      this.writeQueue.push({ writes, resolve, reject })
      if (!this.writing) {
        this.writing = true
        setImmediate(() => void this.flushWrites())
      }
    })
  }

  purgeRecords(entries: readonly RecordWrite[]): Promise<boolean[]> {
    if (entries.length === 0) return Promise.resolve([])
    return new Promise((resolve, reject) => {
      this.writeQueue.push({ writes: entries, purge: true, resolve, reject })
      if (!this.writing) {
        this.writing = true
        setImmediate(() => void this.flushWrites())
      }
    })
  }

  private async flushWrites(): Promise<void> {
    while (this.writeQueue.length > 0) {
      // Take whole groups up to the op limit: a group is atomic, so it is never split.
      let ops = 0
      let take = 0
      while (take < this.writeQueue.length && (take === 0 || ops + this.writeQueue[take]!.writes.length <= this.config.batchOpsMax)) {
        ops += this.writeQueue[take]!.writes.length
        take++
      }
      const groups = this.writeQueue.splice(0, take)
      try {
        const results = await this.applyGroups(groups)
        groups.forEach((group, i) => group.resolve(results[i]!))
      } catch (err) {
        const error = err instanceof KumoError ? err : new KumoError('INTERNAL', `storage write failed: ${(err as Error).message}`, { cause: err })
        for (const group of groups) group.reject(error)
      }
    }
    this.writing = false
  }

  /** A version above which nothing is stored in `partition`. */
  private highOf(partition: number): Buffer {
    return this.partitionHigh.get(partition) ?? this.openHighWater
  }

  /** Raises the in-memory bounds after a batch with these (partition, version) writes committed. */
  private raise(written: Map<number, Buffer>): void {
    for (const [partition, version] of written) {
      // Never below the mark found at open: records stored before it may be that new. A copy:
      // the version may be a view into a whole received message.
      if (Buffer.compare(version, this.highOf(partition)) > 0) this.partitionHigh.set(partition, Buffer.from(version))
    }
  }

  /**
   * Last-writer-wins needs the stored version of each key, but not always a read: the
   * partition's high-water mark (highOf) bounds every version stored in it, so a write whose
   * version is above it is newer than anything stored there, whatever the key. Fresh writes
   * usually are; replays, repairs and late replicas are read. The global mark is persisted in
   * the same atomic batches as the data, so the bounds hold across a restart.
   */
  private async applyGroups(groups: PendingWrite[]): Promise<boolean[][]> {
    const fast = this.ascendingPerPartition(groups)
    if (fast !== undefined) return this.putAll(groups, fast)
    const keys: Buffer[] = []
    const partitions: number[] = []
    const lookups: number[] = []
    // What is read of each key looked up: a purge compares whole records, so it reads the
    // record; a write compares versions only, so it reads the partition entry's header (a few
    // dozen bytes, in blocks the block cache keeps, where the record may be up to 1 MiB).
    const lookupKeys: Buffer[] = []
    for (const group of groups) {
      const purge = group.purge === true
      for (const w of group.writes) {
        const stored = recordKey(w.key)
        if (purge || Buffer.compare(recordVersion(w.record), this.highOf(w.partition)) <= 0) {
          lookups.push(keys.length)
          lookupKeys.push(purge ? stored : partitionEntryKey(w.partition, w.key))
        }
        keys.push(stored)
        partitions.push(w.partition)
      }
    }
    const held: (Buffer | undefined)[] = new Array(keys.length)
    if (lookups.length > 0) {
      const found = await this.db.getMany(lookupKeys)
      lookups.forEach((at, j) => {
        const value = found[j] ?? undefined
        if (value === undefined) return
        // A purge looked up the record's own stored key, a write its partition entry. An entry
        // is its partition's by its key; a record in another partition than the purge names is
        // not its to delete (a key is in one partition: engine.ts).
        if (lookupKeys[j] !== keys[at]) held[at] = recordHeaderOfEntry(value)
        else if (partitionOfValue(value) === partitions[at]) held[at] = recordOfValue(value)
      })
    }
    let high = this.highWater
    const written = new Map<number, Buffer>()
    // The newest record per stored key, including writes earlier in this same batch (null:
    // deleted earlier in this batch).
    const newest = new Map<string, Buffer | null>()
    const batch = this.db.batch()
    const results: boolean[][] = []
    // Stored keys this batch changes, for the row cache.
    const changed: Buffer[] = []
    let i = 0
    for (const group of groups) {
      const applied: boolean[] = []
      for (const w of group.writes) {
        const stored = keys[i]!
        const id = stored.toString('latin1')
        const known = newest.get(id)
        const current = known === null ? undefined : (known ?? held[i])
        i++
        if (group.purge === true) {
          const same = current !== undefined && current.equals(w.record)
          if (same) {
            batch.del(stored)
            batch.del(partitionEntryKey(w.partition, w.key))
            newest.set(id, null)
            changed.push(stored)
          }
          applied.push(same)
          continue
        }
        if (current !== undefined && Buffer.compare(recordVersion(w.record), recordVersion(current)) <= 0) {
          applied.push(false)
          continue
        }
        newest.set(id, w.record)
        putRecord(batch, stored, w)
        changed.push(stored)
        applied.push(true)
        const version = recordVersion(w.record)
        if (Buffer.compare(version, high) > 0) high = version
        const before = written.get(w.partition)
        if (before === undefined || Buffer.compare(version, before) > 0) written.set(w.partition, version)
      }
      results.push(applied)
    }
    if (batch.length > 0) {
      if (high !== this.highWater) batch.put(highWaterKey, Buffer.from(high))
      await this.written(batch.write({ sync: this.config.sync }))
      this.highWater = Buffer.from(high)
      this.raise(written)
      this.forget(changed)
    } else await batch.close()
    return results
  }

  /**
   * The newest version per partition written, if every write is a put whose version is above
   * its partition's high-water mark and above the batch's earlier writes to that partition (a
   * writer's stream of writes, the common case); otherwise undefined. Such writes need no
   * version check at all: each is newer than anything stored, and a later write to the same
   * key in the batch is also the newer one, so LevelDB's in-order application of the batch is
   * last-writer-wins by itself.
   */
  private ascendingPerPartition(groups: PendingWrite[]): Map<number, Buffer> | undefined {
    // The newest record per partition; versions are compared in place (record[1..1 + record[0])
    // is the version), and cut out once per partition at the end, not once per write.
    const newest = new Map<number, Buffer>()
    for (const group of groups) {
      if (group.purge === true) return undefined
      for (const w of group.writes) {
        const record = w.record
        const end = 1 + record[0]!
        const last = newest.get(w.partition)
        if (last !== undefined) {
          if (record.compare(last, 1, 1 + last[0]!, 1, end) <= 0) return undefined
        } else {
          const bound = this.highOf(w.partition)
          if (record.compare(bound, 0, bound.length, 1, end) <= 0) return undefined
        }
        newest.set(w.partition, record)
      }
    }
    if (newest.size === 0) return undefined
    for (const [partition, record] of newest) newest.set(partition, recordVersion(record))
    return newest
  }

  private async putAll(groups: PendingWrite[], written: Map<number, Buffer>): Promise<boolean[][]> {
    const batch = this.db.batch()
    const results: boolean[][] = []
    const stored: Buffer[] = []
    for (const group of groups) {
      for (const w of group.writes) {
        const key = recordKey(w.key)
        stored.push(key)
        putRecord(batch, key, w)
      }
      results.push(new Array<boolean>(group.writes.length).fill(true))
    }
    let high = this.highWater
    for (const version of written.values()) if (Buffer.compare(version, high) > 0) high = version
    if (high !== this.highWater) batch.put(highWaterKey, Buffer.from(high))
    await this.written(batch.write({ sync: this.config.sync }))
    if (high !== this.highWater) this.highWater = Buffer.from(high)
    this.raise(written)
    this.forget(stored)
    return results
  }

  async scanPartition(partition: number, range: ScanRange): Promise<StoredRecord[]> {
    assert.ok(range.limit >= 0)
    if (range.limit === 0) return []
    return this.iterators.run(() => this.scanPartitionNow(partition, range))
  }

  private async scanPartitionNow(partition: number, range: ScanRange): Promise<StoredRecord[]> {
    const bounds = partitionRange(partition, range.gte, range.lt)
    const bytesMax = range.bytesMax ?? Infinity
    const valueBytesMax = range.valueBytesMax ?? Infinity
    const out: StoredRecord[] = []
    let bytes = 0
    // The partition's entries are listed a step at a time and the records they name read with
    // one getMany (on the thread pool); an entry's size says whether its value is omitted, so
    // an omitted value is never read. Each step's records are held at once (values may be up
    // to 1 MiB each): 16 first while a byte budget is the bound, then as many as about
    // scanStepBytes of the sizes listed so far. No `limit` on the iterator: a record purged or
    // dropped since its entry was listed is left out, and the page goes on to the next entry
    // rather than end short (a short page is the range's last: isLastPage).
    let step = bytesMax === Infinity ? scanStepRecordsMax : 16
    const it = this.db.iterator({ ...bounds, highWaterMarkBytes: partitionEntriesStepBytes })
    try {
      while (out.length < range.limit && bytes < bytesMax) {
        const entries = await it.nextv(Math.min(step, range.limit - out.length))
        if (entries.length === 0) break
        const reading: number[] = []
        let stepBytes = 0
        for (let i = 0; i < entries.length; i++) {
          const [key, entry] = entries[i]!
          const size = recordBytesOfEntry(entry)
          stepBytes += key.length + size
          if (size - recordHeaderBytes(recordHeaderOfEntry(entry)) <= valueBytesMax) reading.push(i)
        }
        const values = reading.length === 0 ? [] : await this.db.getMany(reading.map((i) => recordKey(userKeyOf(entries[i]![0]))))
        let next = 0
        for (let i = 0; i < entries.length && out.length < range.limit && bytes < bytesMax; i++) {
          let record: Buffer = omitted
          if (reading[next] === i) {
            const value = values[next++]
            if (value === undefined || value === null || partitionOfValue(value) !== partition) continue
            record = recordOfValue(value)
            // Written again since it was listed, and now too large to be in the page.
            if (record.length - recordHeaderBytes(record) > valueBytesMax) record = omitted
          }
          const entry = { key: Buffer.from(userKeyOf(entries[i]![0])), record }
          out.push(entry)
          bytes += scanEntryBytes(entry)
        }
        if (bytesMax !== Infinity) step = Math.max(16, Math.min(scanStepRecordsMax, Math.floor((scanStepBytes * entries.length) / Math.max(1, stepBytes))))
      }
    } finally {
      await it.close()
    }
    return out
  }

  async scanPartitionHeaders(partition: number, range: KeyRange): Promise<KeyHeader[]> {
    assert.ok(range.limit >= 0)
    if (range.limit === 0) return []
    return this.iterators.run(async () => {
      // The partition's entries alone: each holds its record's header, written in the same
      // batch as the record, so no record is read.
      const out: KeyHeader[] = []
      const it = this.db.iterator({ ...partitionRange(partition, range.gte, range.lt), highWaterMarkBytes: partitionEntriesStepBytes })
      try {
        while (out.length < range.limit) {
          const entries = await it.nextv(Math.min(scanStepRecordsMax, range.limit - out.length))
          if (entries.length === 0) break
          for (const [key, entry] of entries) out.push({ key: Buffer.from(userKeyOf(key)), header: recordHeaderOfEntry(entry) })
        }
      } finally {
        await it.close()
      }
      return out
    })
  }

  async scanAcross(partitions: readonly number[], range: ScanRange & { examineMax?: number }): Promise<ScanPage> {
    assert.ok(range.limit >= 0)
    if (range.limit === 0 || partitions.length === 0) return { entries: [] }
    let top = 0
    for (const p of partitions) {
      assert.ok(Number.isInteger(p) && p >= 0 && p < partitionCountMax, 'partition out of range')
      if (p > top) top = p
    }
    // One partition: its own entries are listed, not every record's key. More: the records
    // are read in key order, those of other partitions passed over.
    if (partitions.length === 1) return partitionPage(partitions[0]!, await this.scanPartition(partitions[0]!, range), range)
    const wanted = new Uint8Array(top + 1)
    for (const p of partitions) wanted[p] = 1
    return this.iterators.run(() => this.scanAcrossNow(wanted, range))
  }

  private async scanAcrossNow(wanted: Uint8Array, range: ScanRange & { examineMax?: number }): Promise<ScanPage> {
    const bytesMax = range.bytesMax ?? Infinity
    const valueBytesMax = range.valueBytesMax ?? Infinity
    const examineMax = Math.max(1, range.examineMax ?? examineMaxDefault)
    // Records are read in key order a step at a time (nextv runs on the thread pool: the event
    // loop goes on meanwhile), each step's held at once: 16 first, then as many as about
    // scanStepBytes of the sizes read so far. They are read past the row cache: a scan would
    // push out the hot keys it holds.
    let step = 16
    const out: ScanEntry[] = []
    let bytes = 0
    let examined = 0
    // Records of partitions not asked for, and values left out of the page, are read too: the
    // bytes read are bounded as well as the records, so a page for a few of a node's
    // partitions among large values ends (with resumeAfter) rather than read on.
    let examinedBytes = 0
    const it = this.db.iterator({ ...recordRange(range.gte, range.lt), highWaterMarkBytes: scanStepBytes })
    try {
      for (;;) {
        const listed = await it.nextv(Math.min(step, examineMax - examined, Math.max(16, range.limit - out.length)))
        if (listed.length === 0) return { entries: out }
        examined += listed.length
        let stepBytes = 0
        for (const [stored, value] of listed) {
          stepBytes += value.length
          examinedBytes += stored.length + value.length
          const partition = partitionOfValue(value)
          if (partition >= wanted.length || wanted[partition] !== 1) continue
          const record = recordOfValue(value)
          const entry = { key: userKeyOf(stored), partition, record: record.length - recordHeaderBytes(record) > valueBytesMax ? omitted : record }
          out.push(entry)
          bytes += scanEntryBytes(entry)
          if (out.length >= range.limit || bytes >= bytesMax) return { entries: out, resumeAfter: entry.key }
        }
        step = Math.max(16, Math.min(scanStepRecordsMax, Math.floor((scanStepBytes * listed.length) / Math.max(1, stepBytes))))
        if (examined >= examineMax || examinedBytes >= examineBytesMax) return { entries: out, resumeAfter: Buffer.from(userKeyOf(listed[listed.length - 1]![0])) }
      }
    } catch (err) {
      throw new KumoError('INTERNAL', `storage scan failed: ${(err as Error).message}`, { cause: err })
    } finally {
      await it.close()
    }
  }

  async partitionSize(partition: number): Promise<{ records: number; bytes: number }> {
    return this.iterators.run(async () => {
      const bounds = partitionRange(partition)
      // Stored keys carry the partition prefix; a user key is that much shorter. Each entry
      // holds its record's size: no record is read.
      const prefixBytes = bounds.gte.length
      let records = 0
      let bytes = 0
      const it = this.db.iterator({ ...bounds, highWaterMarkBytes: partitionEntriesStepBytes })
      try {
        for (;;) {
          const entries = await it.nextv(chunkKeys)
          if (entries.length === 0) break
          records += entries.length
          for (const [key, entry] of entries) bytes += key.length - prefixBytes + recordBytesOfEntry(entry)
        }
      } finally {
        await it.close()
      }
      return { records, bytes }
    })
  }

  async compact(): Promise<void> {
    await compactFully(this.db, storedKeyBounds.start, storedKeyBounds.end)
  }

  async dropPartition(partition: number): Promise<void> {
    const range = partitionRange(partition)
    // Each chunk's partition entries and their records go in one batch: an entry never names
    // a record that is gone, nor is a record left without its entry, even if the process dies
    // midway.
    const it = this.db.keys({ ...range, highWaterMarkBytes: partitionEntriesStepBytes })
    try {
      for (;;) {
        const entries = await it.nextv(chunkKeys)
        if (entries.length === 0) break
        const batch = this.db.batch()
        const keys = entries.map((entry) => recordKey(userKeyOf(entry)))
        // Each record's partition is checked before it goes with its entry: a record of
        // another partition under the same key is never deleted (a key is in one partition:
        // engine.ts; the check costs a read of the chunk's records, once per drop).
        const values = await this.db.getMany(keys)
        for (let i = 0; i < entries.length; i++) {
          batch.del(entries[i]!)
          const value = values[i]
          if (value !== undefined && value !== null && partitionOfValue(value) === partition) batch.del(keys[i]!)
        }
        await this.written(batch.write({ sync: this.config.sync }))
        // The row cache forgets what the chunk deleted, as after any commit: the keys it listed
        // (a key written after the listing stays, in LevelDB and the cache alike). Per key
        // dropped, not a walk of the whole cache per partition, which on a node dropping a wave
        // of partitions held its event loop for the length of a cache walk each.
        this.forget(keys)
      }
    } finally {
      await it.close()
    }
  }

  async putHints(
    hints: readonly { target: string; partition: number; key: Buffer; record: Buffer }[],
    nowMs: number,
    perTargetMax = Infinity,
  ): Promise<void> {
    if (hints.length === 0) return
    // Counted before the write (and given back if it fails), so concurrent callers cannot
    // together pass the limit.
    const adding = new Map<string, number>()
    for (const hint of hints) adding.set(hint.target, (adding.get(hint.target) ?? 0) + 1)
    for (const [target, count] of adding) {
      if ((this.hintsByTarget.get(target) ?? 0) + count > perTargetMax) {
        throw new KumoError('OVERLOADED', `hints for node ${target} are at the limit (${perTargetMax})`)
      }
    }
    const change = (sign: number): void => {
      for (const [target, count] of adding) {
        const next = (this.hintsByTarget.get(target) ?? 0) + sign * count
        if (next <= 0) this.hintsByTarget.delete(target)
        else this.hintsByTarget.set(target, next)
      }
    }
    change(1)
    const batch = this.db.batch()
    for (const hint of hints) {
      // seq = storedAt ms · 2^16 + counter: unique, ordered, and it tells a hint's age. A full
      // counter borrows the next millisecond rather than reuse a sequence number.
      if (nowMs > this.lastHintMs) {
        this.lastHintMs = nowMs
        this.hintSeq = 0
      } else if (this.hintSeq > 0xffff) {
        this.lastHintMs++
        this.hintSeq = 0
      }
      const seq = BigInt(this.lastHintMs) * 65536n + BigInt(this.hintSeq++)
      batch.put(hintKey(hint.target, seq, hint.partition, hint.key), hint.record)
    }
    try {
      await this.written(batch.write({ sync: this.config.sync }))
    } catch (err) {
      change(-1)
      throw err
    }
  }

  readHints(target: string, limit: number, options: { after?: Buffer; bytesMax?: number } = {}): Promise<HintEntry[]> {
    return this.iterators.run(() => this.readHintsNow(target, limit, options))
  }

  private async readHintsNow(target: string, limit: number, options: { after?: Buffer; bytesMax?: number }): Promise<HintEntry[]> {
    const prefix = hintTargetPrefix(target)
    const out: HintEntry[] = []
    const bytesMax = options.bytesMax ?? Infinity
    let bytes = 0
    // Starting after the last hint delivered skips the deleted ones before it, which LevelDB
    // would otherwise step over one by one until a compaction drops them.
    const range = options.after !== undefined && options.after.compare(prefix) > 0 ? { gt: options.after } : { gte: prefix }
    const it = this.db.iterator({ ...range, lt: prefixUpperBound(prefix)!, limit })
    try {
      while (out.length < limit && bytes < bytesMax) {
        const entries = await it.nextv(Math.min(limit - out.length, 256))
        if (entries.length === 0) break
        for (const [id, record] of entries) {
          const decoded = decodeHintKey(id)
          out.push({
            id,
            target: decoded.target,
            storedAtMs: Number(decoded.seq >> 16n),
            partition: decoded.partition,
            key: Buffer.from(decoded.key),
            record,
          })
          bytes += decoded.key.length + record.length
          if (bytes >= bytesMax) break
        }
      }
    } finally {
      await it.close()
    }
    return out
  }

  async deleteHints(ids: readonly Buffer[]): Promise<void> {
    if (ids.length === 0) return
    const held = await this.db.getMany(ids as Buffer[])
    const batch = this.db.batch()
    for (const id of ids) batch.del(id)
    await this.written(batch.write({ sync: this.config.sync }))
    ids.forEach((id, i) => {
      if (held[i] === undefined) return
      const { target } = decodeHintKey(id)
      const left = (this.hintsByTarget.get(target) ?? 1) - 1
      if (left <= 0) this.hintsByTarget.delete(target)
      else this.hintsByTarget.set(target, left)
    })
  }

  highWaterVersion(): Buffer {
    return this.highWater === maxVersion ? Buffer.alloc(0) : Buffer.from(this.highWater)
  }

  hintCounts(): Map<string, number> {
    return new Map(this.hintsByTarget)
  }

  async getMeta(name: string): Promise<Buffer | undefined> {
    return (await this.db.get(metaKey(name))) ?? undefined
  }

  async putMeta(name: string, value: Buffer): Promise<void> {
    await this.written(this.db.put(metaKey(name), value, { sync: true }))
  }

  /** A storage write: its failure is reported (onWriteFailure) and becomes an INTERNAL error. */
  private async written<T>(write: Promise<T>): Promise<T> {
    try {
      return await write
    } catch (err) {
      const error = err instanceof KumoError ? err : new KumoError('INTERNAL', `storage write failed: ${(err as Error).message}`, { cause: err })
      this.config.onWriteFailure?.(error)
      throw error
    }
  }

  /**
   * Makes storage take writes again after a failure, if it can: a write and a read of a
   * reserved key, and if the write fails, LevelDB reopened first. LevelDB keeps refusing every
   * write after an I/O error (a full disk) until it is reopened, even once the disk has room
   * again; reads go on working. Rejects with INTERNAL while writes still fail.
   */
  async recover(): Promise<void> {
    const probe = async (): Promise<void> => {
      const stamp = Buffer.from(String(Date.now()))
      await this.db.put(probeKey, stamp, { sync: true })
      const back = await this.db.get(probeKey)
      if (back === undefined || !back.equals(stamp)) throw new Error('read back something else than it wrote')
    }
    try {
      await probe()
      return
    } catch {
      // Reopen and try again.
    }
    // A prewarm pass would hold the close up for its whole walk (one native step): stopped,
    // and walked again once the store is open, since a reopen maps every table file anew.
    this.reopening = true
    const walking = this.prewarmStop !== undefined
    this.prewarmStop?.abort()
    try {
      await this.prewarming
      while (this.writing) await new Promise((r) => setImmediate(r))
      await this.db.close()
      await this.db.open()
      this.dataCommits++
      this.cache.clear()
      await probe()
    } catch (err) {
      throw new KumoError('INTERNAL', `storage still fails writes: ${(err as Error).message}`, { cause: err })
    } finally {
      this.reopening = false
      if (walking && !this.closing) void this.prewarm()
    }
  }
}
