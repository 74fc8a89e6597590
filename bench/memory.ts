import { readFileSync } from 'node:fs'

/** A process's resident memory now, in KiB: all of it, and its anonymous part (undefined where /proc cannot say). */
function residentKiB(pid: number | 'self'): { rss: number; anon: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1')
    const field = (name: string): number => Number(/\s(\d+) kB/.exec(status.slice(status.indexOf(`${name}:`)))?.[1] ?? NaN)
    const rss = field('VmRSS')
    const anon = field('RssAnon')
    return Number.isFinite(rss) ? { rss, anon: Number.isFinite(anon) ? anon : rss } : undefined
  } catch {
    return undefined
  }
}

export interface PeakMemory {
  /** The largest resident set of one server process (this process's own for an in-process target), in MiB. */
  rssMiB: number
  /**
   * Its anonymous part: the heap, caches and buffers the process itself holds. The rest of RSS
   * is file pages LevelDB maps to read its tables, which the kernel drops under memory pressure.
   */
  anonMiB: number
}

/**
 * Samples the resident memory of a target's server processes (or of this process, for a target
 * that runs in it) every `everyMs` while a run lasts, and keeps each one's peak: what a node
 * needs in memory under that workload.
 */
export class MemorySampler {
  private readonly peak = new Map<number | 'self', { rss: number; anon: number }>()
  private readonly timer: NodeJS.Timeout

  constructor(pids: readonly number[], everyMs = 200) {
    const targets: (number | 'self')[] = pids.length === 0 ? ['self'] : [...pids]
    const sample = (): void => {
      for (const pid of targets) {
        const now = residentKiB(pid)
        if (now === undefined) continue
        const top = this.peak.get(pid)
        this.peak.set(pid, { rss: Math.max(top?.rss ?? 0, now.rss), anon: Math.max(top?.anon ?? 0, now.anon) })
      }
    }
    sample()
    this.timer = setInterval(sample, everyMs)
    this.timer.unref()
  }

  /** Stops sampling; the peak of the process that peaked highest, or undefined when none could be read. */
  stop(): PeakMemory | undefined {
    clearInterval(this.timer)
    if (this.peak.size === 0) return undefined
    let rss = 0
    let anon = 0
    for (const p of this.peak.values()) {
      rss = Math.max(rss, p.rss)
      anon = Math.max(anon, p.anon)
    }
    return { rssMiB: rss / 1024, anonMiB: anon / 1024 }
  }
}
