import { liveValue } from '../core/record.js'
import type { ScanEntry, ScanPage } from '../storage/engine.js'
import { prefixUpperBound } from '../storage/keys.js'

export interface ScanBounds {
  gte?: Buffer
  lt?: Buffer
}

/** Where a scan reads its records from: whichever replicas the caller picks. */
export interface ScanSource {
  /**
   * Every partition, in groups that are each read as one sequence in key order: the merge's
   * cursors (a node's share of the partitions, say: a few cursors, whatever the partition count).
   */
  groups(): readonly (readonly number[])[]
  /**
   * A page of a group's records in key order from `gte` (StorageEngine.scanAcross): at most
   * `limit`, ending after `bytesMax` bytes, with values longer than `valueBytesMax` omitted.
   */
  page(partitions: readonly number[], gte: Buffer | undefined, lt: Buffer | undefined, limit: number, bytesMax: number, valueBytesMax: number): Promise<ScanPage>
  /** One key's record, for one the page left out for its size. */
  record(partition: number, key: Buffer): Promise<Buffer | undefined>
}

/**
 * What a scan holds in memory at once, at most, whatever the values' sizes: its cursors' pages
 * (this, shared by the partitions), the output page (`pageBytesMax`), and one value left out
 * of a page and read on its own.
 */
export const scanCursorBytesMax = 16 * 1024 * 1024
/** One cursor's page at most, in bytes (a page is one message from the node that read it). */
export const scanCursorPageBytesMax = 4 * 1024 * 1024

/** Bounds for a scan request: prefix narrows [gte, lt). */
export function scanBounds(prefix: Buffer, gte: Buffer, lt: Buffer): ScanBounds {
  let lo: Buffer | undefined = gte.length > 0 ? gte : undefined
  let hi: Buffer | undefined = lt.length > 0 ? lt : undefined
  if (prefix.length > 0) {
    if (lo === undefined || Buffer.compare(lo, prefix) < 0) lo = prefix
    const end = prefixUpperBound(prefix)
    if (end !== undefined && (hi === undefined || Buffer.compare(end, hi) < 0)) hi = end
  }
  return { gte: lo, lt: hi }
}

class Cursor {
  buffer: ScanEntry[] = []
  index = 0
  /** Where the next page starts after; undefined before the first page and once done. */
  resumeAfter: Buffer | undefined
  done = false
  constructor(readonly partitions: readonly number[]) {}
  get head(): ScanEntry | undefined {
    return this.buffer[this.index]
  }
}

/**
 * Every partition holds keys from the whole key range (keys are placed by hash), so a scan in
 * key order merges them. The source reads a group of partitions as one sequence (a node's key
 * index lists its keys across its partitions in order), so the merge is a k-way merge of one
 * cursor per group: a few, not one per partition. Cursors are read in parallel, a page at a
 * time, and refilled as the merge drains them. Memory is bounded in bytes: each cursor's page is
 * at most its share of scanCursorBytesMax, a value larger than a quarter of that share is left
 * out of the page and read when its entry is emitted, and an output page ends at
 * `pageBytesMax` bytes (or `pageSize` entries).
 */
export async function* mergedScan(
  bounds: ScanBounds,
  limit: number,
  pageSize: number,
  pageBytesMax: number,
  source: ScanSource,
  nowMs: () => number,
): AsyncGenerator<{ key: Buffer; value: Buffer }[]> {
  if (bounds.gte !== undefined && bounds.lt !== undefined && Buffer.compare(bounds.gte, bounds.lt) >= 0) return
  const groups = source.groups()
  // A scan of L keys needs about L/G from each of G groups: start with twice that (L with one
  // group) and double a cursor's page each time it runs dry.
  const firstPage = limit > 0 ? Math.min(1000, Math.max(4, Math.ceil(((groups.length === 1 ? 1 : 2) * limit) / groups.length))) : 64
  const cursorBytes = Math.max(16 * 1024, Math.min(scanCursorPageBytesMax, Math.floor(scanCursorBytesMax / Math.max(1, groups.length))))
  const valueBytesMax = Math.floor(cursorBytes / 4)
  const cursors = groups.map((partitions) => new Cursor(partitions))
  const pageOf = new Map<Cursor, number>()
  const refill = async (cursor: Cursor): Promise<void> => {
    // The old page goes before the new one is read: a cursor holds one page at a time.
    cursor.buffer = []
    cursor.index = 0
    // A page may come back empty and yet not be the last (its group's keys are sparse there).
    while (cursor.buffer.length === 0 && !cursor.done) {
      const from = cursor.resumeAfter === undefined ? bounds.gte : Buffer.concat([cursor.resumeAfter, Buffer.from([0])])
      const size = pageOf.get(cursor) ?? firstPage
      pageOf.set(cursor, Math.min(1000, size * 2))
      const page = await source.page(cursor.partitions, from, bounds.lt, size, cursorBytes, valueBytesMax)
      cursor.buffer = page.entries
      cursor.resumeAfter = page.resumeAfter
      if (page.resumeAfter === undefined) cursor.done = true
    }
  }
  await Promise.all(cursors.map(refill))

  // A binary min-heap of cursors by head key.
  const heap = cursors.filter((c) => c.head !== undefined)
  const less = (a: Cursor, b: Cursor): boolean => Buffer.compare(a.head!.key, b.head!.key) < 0
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1
      const r = l + 1
      let m = i
      if (l < heap.length && less(heap[l]!, heap[m]!)) m = l
      if (r < heap.length && less(heap[r]!, heap[m]!)) m = r
      if (m === i) return
      ;[heap[i], heap[m]] = [heap[m]!, heap[i]!]
      i = m
    }
  }
  for (let i = (heap.length >> 1) - 1; i >= 0; i--) down(i)

  let emitted = 0
  let page: { key: Buffer; value: Buffer }[] = []
  let pageBytes = 0
  while (heap.length > 0 && (limit === 0 || emitted < limit)) {
    const cursor = heap[0]!
    const entry = cursor.head!
    // A record left out of the page for its size is read now, on its own.
    const record = entry.record.length > 0 ? entry.record : await source.record(entry.partition, entry.key)
    const value = record === undefined ? undefined : liveValue(record, nowMs())
    if (value !== undefined) {
      page.push({ key: entry.key, value })
      pageBytes += entry.key.length + value.length
      emitted++
      if (page.length >= pageSize || pageBytes >= pageBytesMax) {
        yield page
        page = []
        pageBytes = 0
      }
    }
    cursor.index++
    // The last entry asked for: no page past it is read.
    if (limit > 0 && emitted >= limit) break
    if (cursor.head === undefined && !cursor.done) await refill(cursor)
    if (cursor.head === undefined) {
      const last = heap.pop()!
      if (heap.length > 0 && last !== cursor) heap[0] = last
    }
    if (heap.length > 0) down(0)
  }
  if (page.length > 0) yield page
}
