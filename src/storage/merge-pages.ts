import type { ScanEntry, ScanPage } from './engine.js'

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
