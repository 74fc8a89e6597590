/**
 * Compacting a LevelDB store until its data sits in one level.
 *
 * LevelDB's CompactRange pushes everything down to the deepest level that already has files,
 * and no further. After a bulk load that level is often over its size (level 3 holds 1 GB at
 * most; 2,000,000 records of 1 KB are 2 GB a copy), so background compactions go on moving
 * files one level down after CompactRange returns, and reads then look in two levels: each read
 * that checks a file in vain counts against it, and enough of those start a "seek compaction"
 * of that file. On the large benchmark, reads right after `kumo compact` shared the disk with
 * 80-125 MB/s of such compactions. Compacting again once the background work is done moves
 * the rest down into the deepest level too, and then nothing is left to compact.
 */

import { levelFilesOf, type LevelFiles } from './leveldb-stats.js'

/** What compactFully needs of a LevelDB handle (a ClassicLevel). */
export interface CompactableStore {
  compactRange(start: Buffer, end: Buffer): Promise<void>
  getProperty(property: string): string
}

export interface FullCompactionOptions {
  /** CompactRange passes at most (each rewrites the data once). */
  passesMax?: number
  /** The background is taken to be done once LevelDB's stats have not changed for this long. */
  quietMs?: number
  /** How long to wait for the background after a pass, at most. */
  waitMaxMs?: number
  /** How often the stats are read while waiting. */
  pollMs?: number
  /** Told after each pass: the levels that hold files then. */
  onPass?: (pass: number, levels: LevelFiles[]) => void
}

/**
 * Whether a store's data sits in one level, as far as compacting goes: everything outside its
 * deepest level is at most settledSlackMegabytes or 5% of the whole. Writes that go on during
 * a pass land in levels 0 to 2 (LevelDB writes a flushed memtable as deep as level 2); they are
 * small, and one more full pass for them would rewrite every file of the deepest level. A store
 * too small to show in whole MB counts as settled.
 */
export function settledInOneLevel(levels: readonly LevelFiles[]): boolean {
  const deepest = levels[levels.length - 1]
  if (deepest === undefined) return true
  const total = levels.reduce((sum, l) => sum + l.megabytes, 0)
  return total - deepest.megabytes <= Math.max(settledSlackMegabytes, total * 0.05)
}

/** MB outside the deepest level that still count as settled (about two memtables of a node). */
export const settledSlackMegabytes = 32

/**
 * Compacts [start, end) until its data sits in one level (settledInOneLevel), in at most
 * passesMax CompactRange passes, waiting after each for the background compactions it leaves.
 */
export async function compactFully(db: CompactableStore, start: Buffer, end: Buffer, options: FullCompactionOptions = {}): Promise<LevelFiles[]> {
  const passesMax = options.passesMax ?? 3
  const quietMs = options.quietMs ?? 1500
  const waitMaxMs = options.waitMaxMs ?? 10 * 60_000
  const pollMs = options.pollMs ?? 250
  let levels: LevelFiles[] = []
  for (let pass = 1; pass <= passesMax; pass++) {
    await db.compactRange(start, end)
    const read = levelFilesOf(await backgroundQuiet(db, quietMs, waitMaxMs, pollMs))
    // Stats LevelDB no longer prints as expected: one pass, as CompactRange alone would do.
    if (read === undefined) break
    levels = read
    options.onPass?.(pass, levels)
    if (settledInOneLevel(levels)) break
  }
  return levels
}

/** Waits until LevelDB's stats (files and bytes per level, compaction totals) stay the same for quietMs, or waitMaxMs passed; returns them. */
async function backgroundQuiet(db: CompactableStore, quietMs: number, waitMaxMs: number, pollMs: number): Promise<string> {
  const deadline = Date.now() + waitMaxMs
  let last = db.getProperty('leveldb.stats')
  let sameSince = Date.now()
  while (Date.now() < deadline && Date.now() - sameSince < quietMs) {
    await new Promise((resolve) => setTimeout(resolve, pollMs))
    const now = db.getProperty('leveldb.stats')
    if (now !== last) {
      last = now
      sameSince = Date.now()
    }
  }
  return last
}
