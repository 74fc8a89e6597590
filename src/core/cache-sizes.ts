import assert from 'node:assert/strict'

const mebibyte = 1024 * 1024

/** Memory a node gives its caches: LevelDB's block cache and Kumo's row cache, in bytes. */
export interface CacheSizes {
  blockCacheBytes: number
  rowCacheBytes: number
}

/**
 * The share of the machine's memory a node's caches take by default: one hundred-and-twenty-
 * eighth. It was one sixty-fourth; on 2 GB of records a node (24 GiB), read right after a load
 * and a compaction, a node then peaked at 573-664 MiB of anonymous memory, and at 519-560 with
 * one ninety-sixth (bench/RESULTS.md, 2026-12-01, fifth). Once the partition entries (storage
 * layout 2) filled the block cache with their decompressed blocks, one ninety-sixth peaked at
 * 565-661 MiB in `--profile large`; on its store read, scanned and written by hand, three nodes
 * peaked at 398, 591 and 593 MiB with one ninety-sixth and at 492, 526 and 501 with this share,
 * and the profile's runs at 528-619 (2026-12-02, sixth).
 */
export const cacheMemoryShare = 1 / 128
/** The share of memory the index blocks and filters of the table files kept open may take (defaultOpenTables). */
export const openTablesMemoryShare = 1 / 64
/** At least this much (a small machine or container still caches the hot blocks)... */
export const cacheBytesMin = 64 * mebibyte
/** ...and at most this much by default (more is a choice to make with --block-cache / --row-cache). */
export const cacheBytesMax = 8 * 1024 * mebibyte

/**
 * Default cache sizes from the memory of the machine (or container) a node runs on. Pure: the
 * memory comes in. One hundred-and-twenty-eighth of it, within 64 MiB and 8 GiB, three quarters to LevelDB's
 * block cache (it holds what every read and compaction touches, keys and values in compressed
 * blocks), one quarter to the row cache (whole records of the hottest keys, no block to parse).
 * A share this small leaves room for several nodes on one machine (a local cluster) and for the
 * page cache, which holds the table files LevelDB reads through: 192 MiB on 24 GiB, 64 MiB (the
 * floor) on 8 GiB. Either size can be set instead.
 */
export function defaultCacheSizes(memoryBytes: number): CacheSizes {
  assert.ok(Number.isFinite(memoryBytes) && memoryBytes > 0, 'memory must be a positive number of bytes')
  const total = Math.min(cacheBytesMax, Math.max(cacheBytesMin, Math.floor((memoryBytes * cacheMemoryShare) / mebibyte) * mebibyte))
  const rowCacheBytes = Math.floor(total / 4 / mebibyte) * mebibyte
  return { blockCacheBytes: total - rowCacheBytes, rowCacheBytes }
}

/**
 * The size LevelDB cuts its table files at (max_file_size), by default: 8 MiB rather than
 * LevelDB's 2 MiB. LevelDB maps at most 1,000 table files into the process at a time and reads
 * any other with pread, which copies each block it reads into the block cache. A file opened
 * while the mappings are all taken is read that way for as long as its table stays open, and a
 * load or a compaction opens its new files while the old ones still hold the mappings: after
 * loading 2 GB a node in 2 MiB files (1,030-1,450 files), 17-45% of a node's files were read
 * with pread, and uniform reads ran at half the rate of 8 MiB files (280-355 files, every one
 * mapped). At 8 MiB, 1,000 files hold about 6 GB a node (files average a little under the
 * size); the price is compactions in larger pieces (bench/RESULTS.md, 2026-12-02, second).
 */
export const defaultTableFileBytes = 8 * mebibyte

/**
 * The table files LevelDB maps into the process at most (env_posix's mmap limit, one for the
 * whole process, not a store: a node opens one store); it reads the others with pread.
 */
export const mappedTablesMax = 1000

/**
 * Table file sizes a node takes. LevelDB clips max_file_size to 1 MiB-1 GiB, but 1.20 computes
 * 10x and 25x of it in an int (version_set.cc): from 82 MiB one limit overflows, from 205 MiB
 * another wraps and a compaction can cut a file at every key. 64 MiB is RocksDB's default.
 */
export const tableFileBytesMin = mebibyte
export const tableFileBytesMax = 64 * mebibyte

/**
 * Memory LevelDB holds for each table file it keeps open, about: the file's index block and its
 * Bloom filters (10 bits a key), which together come to 1-1.5% of the file: counted as a
 * sixty-fourth, 128 KiB for an 8 MiB file; more for records of a few bytes.
 */
export function openTableBytes(tableFileBytes: number): number {
  return tableFileBytes / 64
}
/** LevelDB's own default for the table files it keeps open (max_open_files)... */
export const defaultOpenTablesMin = 1000
/** ...and the most it takes: LevelDB clips max_open_files to 50,000 (SanitizeOptions). */
export const openTablesLimit = 50_000

/**
 * Table files a node's LevelDB keeps open by default (its table cache, max_open_files), from the
 * machine's memory (openTablesMemoryShare): as many as one sixty-fourth of it holds at
 * openTableBytes each, within 1,000 and 50,000. 3,072 of 8 MiB on 24 GiB: room for 24 GiB of
 * tables a node.
 *
 * Why it matters: a read of a table that is not open opens it, which means reading its footer,
 * index block and filters: on 2,000,000 records of 1 KB a node (1,380 table files) against
 * LevelDB's 1,000, uniform reads cost more than twice the CPU (bench/RESULTS.md, issue #18).
 */
export function defaultOpenTables(memoryBytes: number, tableFileBytes = defaultTableFileBytes): number {
  assert.ok(Number.isFinite(memoryBytes) && memoryBytes > 0, 'memory must be a positive number of bytes')
  assert.ok(Number.isFinite(tableFileBytes) && tableFileBytes > 0, 'the table file size must be a positive number of bytes')
  return Math.min(openTablesLimit, Math.max(defaultOpenTablesMin, Math.floor((memoryBytes * openTablesMemoryShare) / openTableBytes(tableFileBytes))))
}

/** The share of the machine's memory a node's table files may take and still be mapped in at start (defaultPrewarmBytes). */
export const prewarmMemoryShare = 1 / 4

/**
 * The table-file bytes up to which a node maps its store in when it opens it and after a full
 * compaction (storage/prewarm.ts), by default: a quarter of the machine's memory, 6 GiB on
 * 24 GiB. The pass reads the files through the OS page cache; a store much larger than memory
 * would not stay there, and the pass would only read it from disk for nothing.
 */
export function defaultPrewarmBytes(memoryBytes: number): number {
  assert.ok(Number.isFinite(memoryBytes) && memoryBytes > 0, 'memory must be a positive number of bytes')
  return Math.floor((memoryBytes * prewarmMemoryShare) / mebibyte) * mebibyte
}
