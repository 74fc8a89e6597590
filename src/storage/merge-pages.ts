import { isLastPage, type ScanEntry, type ScanPage, type ScanRange } from './engine.js'

/**
 * Several pages of the same range, each from its own group of partitions, as one page of all
 * of them: their entries in key order, as far as every page that goes on reaches (a key past
 * that may have a smaller one after it in another group), and then at most `limit` entries or
 * until `bytesMax` bytes. Pure.
 */
export function mergePages(pages: readonly ScanPage[], limit: number, bytesMax = Infinity): ScanPage {
  let reach: Buffer | undefined
  for (const page of pages) {
    if (page.resumeAfter !== undefined && (reach === undefined || Buffer.compare(page.resumeAfter, reach) < 0)) reach = page.resumeAfter
  }
  const all = pages.flatMap((page) => page.entries).sort((a, b) => Buffer.compare(a.key, b.key))
  const entries: ScanEntry[] = []
  let bytes = 0
  for (const entry of all) {
    if (reach !== undefined && Buffer.compare(entry.key, reach) > 0) break
    entries.push(entry)
    bytes += entry.key.length + entry.record.length
    if (entries.length >= limit || bytes >= bytesMax) return { entries, resumeAfter: entry.key }
  }
  return reach === undefined ? { entries } : { entries, resumeAfter: reach }
}

/**
 * What each of `n` partitions' pages asks for when a page across them is read a partition at a
 * time and merged: about twice its share of the entries (the merge stops where the first page
 * that goes on ends, so less is never wrong), its share of the bytes (16 KiB at least), values
 * over a quarter of that left out, and its share of the keys to examine. The n pages then stay
 * within about the page's bound together. One partition asks for the whole page. Pure.
 */
export function partitionShare<R extends { limit: number; bytesMax?: number; valueBytesMax?: number; examineMax?: number }>(range: R, n: number): R {
  if (n <= 1) return range
  const limit = Math.min(range.limit, Math.max(1, Math.floor((range.examineMax ?? Infinity) / n)), Math.max(4, Math.ceil((2 * range.limit) / n)))
  const bytesMax = Math.max(16 * 1024, Math.floor((range.bytesMax ?? Infinity) / n))
  const valueBytesMax = Math.min(range.valueBytesMax ?? Infinity, Math.floor(bytesMax / 4))
  return { ...range, limit, bytesMax, ...(Number.isFinite(valueBytesMax) ? { valueBytesMax } : {}) }
}

/** One partition's page of records (StorageEngine.scanPartition, or a SCAN answer) as a page across partitions. */
export function partitionPage(partition: number, records: readonly { key: Buffer; record: Buffer }[], range: ScanRange): ScanPage {
  const entries = records.map((e) => ({ key: e.key, record: e.record, partition }))
  return isLastPage(records, range) ? { entries } : { entries, resumeAfter: records[records.length - 1]!.key }
}
