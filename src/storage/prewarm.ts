/**
 * Mapping a store's table files into the process before reads need them (like PostgreSQL's
 * pg_prewarm, for LevelDB's tables).
 *
 * LevelDB reads its table files through mmap (up to 1,000 mapped at a time; the others with
 * pread, for which a pass only loads the OS page cache). A process that has just opened its
 * store, or a full compaction that has just rewritten every table file, takes a page fault on
 * the first read of each page, even when the page is in the OS page cache. Random
 * reads take about one fault each until most of the data is mapped, and a fault is not cheap:
 * on the 2-core benchmark VM a node spent about 45 µs of CPU on each (the kernel maps the 16
 * pages around it, and every page-table update there is a hypercall). A node restarted on
 * 2,000,000 records of 1 KB read 7,250-9,234 reads/s in its first 10 s run against
 * 14,085-19,153/s in its second (bench/RESULTS.md, 2026-12-02).
 *
 * A sequential pass through the store takes one fault for each 64 KiB, and uses every page of
 * it. LevelDB walks every block, so every page is touched, and nothing is copied into
 * JavaScript.
 */

/** What prewarmTables needs of a LevelDB handle (a ClassicLevel). */
export interface PrewarmableStore {
  iterator(options: { keys: false; values: false; fillCache: false; signal: AbortSignal }): {
    nextv(size: number): Promise<unknown[]>
    close(): Promise<void>
  }
}

export interface PrewarmPass {
  ms: number
  /** Stopped before the end (the signal aborted it: the store closing). */
  stopped: boolean
}

/** Entries asked for in one step of the pass. */
export const prewarmStepEntries = 4096

/**
 * Walks every entry of `db` once on the thread pool, until the end or until `signal` aborts it.
 * LevelDB's block cache is not filled: the point is the process's mapping of the files, not the
 * cache.
 *
 * Neither keys nor values are asked for. A pass that made a JavaScript Buffer of every key cost
 * four times the CPU (9.6 s against 2.3 s for a node's 2 GiB, 4,000,000 entries). classic-level
 * then walks the whole range in its first step, as nothing fills the step; the loop is also
 * right for an iterator that answers `prewarmStepEntries` empty entries at a time.
 */
export async function prewarmTables(db: PrewarmableStore, signal: AbortSignal, nowMs: () => number = Date.now): Promise<PrewarmPass> {
  const started = nowMs()
  if (signal.aborted) return { ms: 0, stopped: true }
  const it = db.iterator({ keys: false, values: false, fillCache: false, signal })
  try {
    for (;;) {
      const step = await it.nextv(prewarmStepEntries)
      if (step.length === 0) return { ms: nowMs() - started, stopped: signal.aborted }
    }
  } catch (err) {
    if (signal.aborted) return { ms: nowMs() - started, stopped: true }
    throw err
  } finally {
    await it.close()
  }
}
