import { liveValue } from '../core/record.js'
import { isLastPage, type StoredRecord } from '../storage/engine.js'
import { prefixUpperBound } from '../storage/keys.js'

export interface ScanBounds {
  gte?: Buffer
  lt?: Buffer
}

/** Where a scan reads a partition from: whichever replica the caller picks. */
export interface ScanSource {
  /**
   * A page of one partition's records in key order: at most `limit`, ending after `bytesMax`
   * bytes (StorageEngine.scanPartition), with values longer than `valueBytesMax` omitted.
   */
  page(partition: number, gte: Buffer | undefined, lt: Buffer | undefined, limit: number, bytesMax: number, valueBytesMax: number): Promise<StoredRecord[]>
  /** One key's record, for one the page left out for its size. */
  record(partition: number, key: Buffer): Promise<Buffer | undefined>
}

/**
 * What a scan holds in memory at once, at most, whatever the values' sizes: its cursors' pages
 * (this, shared by the partitions), the output page (`pageBytesMax`), and one value left out
 * of a page and read on its own.
 */
export const scanCursorBytesMax = 16 * 1024 * 1024

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
  buffer: StoredRecord[] = []
  index = 0
  done = false
  constructor(readonly partition: number) {}
  get head(): StoredRecord | undefined {
    return this.buffer[this.index]
  }
}

/**
 * Every partition holds keys from the whole key range (keys are placed by hash), so a scan in
 * key order is a k-way merge of one cursor per partition. Cursors are read in parallel, a page
 * at a time, and refilled as the merge drains them. Memory is bounded in bytes: each cursor's
 * page is at most its share of scanCursorBytesMax, a value larger than a quarter of that share
 * is left out of the page and read when its entry is emitted, and an output page ends at
 * `pageBytesMax` bytes (or `pageSize` entries).
 */
export async function* mergedScan(
  partitionCount: number,
  bounds: ScanBounds,
  limit: number,
  pageSize: number,
  pageBytesMax: number,
  source: ScanSource,
  nowMs: () => number,
): AsyncGenerator<{ key: Buffer; value: Buffer }[]> {
  if (bounds.gte !== undefined && bounds.lt !== undefined && Buffer.compare(bounds.gte, bounds.lt) >= 0) return
  // Keys spread evenly over partitions, so a scan of L keys needs about L/P from each: start
  // with twice that and double a cursor's page each time it runs dry.
  const firstPage = limit > 0 ? Math.min(256, Math.max(4, Math.ceil((2 * limit) / partitionCount))) : 64
  const cursorBytes = Math.max(16 * 1024, Math.floor(scanCursorBytesMax / partitionCount))
  const valueBytesMax = Math.floor(cursorBytes / 4)
  const cursors = Array.from({ length: partitionCount }, (_, p) => new Cursor(p))
  const pageOf = new Map<Cursor, number>()
  const refill = async (cursor: Cursor): Promise<void> => {
    const last = cursor.buffer[cursor.buffer.length - 1]
    const from = last === undefined ? bounds.gte : Buffer.concat([last.key, Buffer.from([0])])
    const size = pageOf.get(cursor) ?? firstPage
    pageOf.set(cursor, Math.min(1000, size * 2))
    // The old page goes before the new one is read: a cursor holds one page at a time.
    cursor.buffer = []
    const page = await source.page(cursor.partition, from, bounds.lt, size, cursorBytes, valueBytesMax)
    cursor.buffer = page
    cursor.index = 0
    if (isLastPage(page, { limit: size, bytesMax: cursorBytes })) cursor.done = true
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
    const record = entry.record.length > 0 ? entry.record : await source.record(cursor.partition, entry.key)
    const value = liveValue(record, nowMs())
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
    if (cursor.head === undefined && !cursor.done) await refill(cursor)
    if (cursor.head === undefined) {
      const last = heap.pop()!
      if (heap.length > 0 && last !== cursor) heap[0] = last
    }
    if (heap.length > 0) down(0)
  }
  if (page.length > 0) yield page
}
