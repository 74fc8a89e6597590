/**
 * At most `permits` holders at once; the others wait in arrival order. No I/O, no time: the
 * caller decides what a permit bounds (open storage iterators, say).
 */
export class Semaphore {
  private available: number
  private readonly waiting: (() => void)[] = []

  constructor(readonly permits: number) {
    if (!(Number.isInteger(permits) && permits >= 1)) throw new RangeError(`permits must be a whole number of at least 1, got ${permits}`)
    this.available = permits
  }

  /** Resolves once a permit is held; call the returned function to give it back (once). */
  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      const grant = (): void => {
        let released = false
        resolve(() => {
          if (released) return
          released = true
          const next = this.waiting.shift()
          if (next !== undefined) next()
          else this.available++
        })
      }
      if (this.available > 0) {
        this.available--
        grant()
      } else this.waiting.push(grant)
    })
  }

  /** Runs `work` holding a permit. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    const release = await this.acquire()
    try {
      return await work()
    } finally {
      release()
    }
  }

  /** Holders waiting for a permit. */
  get queued(): number {
    return this.waiting.length
  }
}
