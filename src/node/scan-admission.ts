import { KumoError } from '../core/errors.js'

/**
 * How many scans a node runs at once. A scan holds its cursors' pages in memory and can keep a
 * core busy, so at most `runningMax` run; the next ones wait in line (at most `waitingMax` of
 * them, each at most `waitMs`) and start as running ones end, in arrival order. Past either
 * bound a scan is refused with OVERLOADED, which the caller may retry later or on another node.
 * A freed slot passes straight to the first in line, so no new arrival can slip past it.
 */
export class ScanAdmission {
  private running = 0
  private readonly waiting: { admit: () => void }[] = []
  /** Scans refused since start (for metrics). */
  refused = 0

  constructor(
    private readonly nodeId: string,
    readonly runningMax: number,
    readonly waitingMax: number,
    readonly waitMs: number,
  ) {}

  /** Resolves with the function to call when the scan ends (once), or rejects with OVERLOADED. */
  async admit(): Promise<() => void> {
    if (this.running < this.runningMax) {
      this.running++
      return this.releaser()
    }
    if (this.waiting.length >= this.waitingMax) throw this.refusal()
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        admit: () => {
          clearTimeout(timer)
          resolve()
        },
      }
      const timer = setTimeout(() => {
        const at = this.waiting.indexOf(waiter)
        if (at >= 0) this.waiting.splice(at, 1)
        reject(this.refusal())
      }, this.waitMs)
      this.waiting.push(waiter)
    })
    // The slot was handed over by the scan that ended: `running` already counts it.
    return this.releaser()
  }

  get runningNow(): number {
    return this.running
  }

  get waitingNow(): number {
    return this.waiting.length
  }

  private releaser(): () => void {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.waiting.shift()
      if (next !== undefined) next.admit()
      else this.running--
    }
  }

  private refusal(): KumoError {
    this.refused++
    return new KumoError('OVERLOADED', `node ${this.nodeId} has ${this.running} scans running and ${this.waiting.length} waiting (limits ${this.runningMax} and ${this.waitingMax}); try again later or another node`)
  }
}
