import { KumoError } from '../core/errors.js'

interface Pending<T> {
  deadlineMs: number
  resolve: (value: T) => void
  reject: (err: KumoError) => void
}

/**
 * Requests awaiting a reply, by id. One sweep timer per table instead of one timer per request:
 * a deadline fires within `sweepMs` of its time.
 */
export class PendingTable<T> {
  private readonly pending = new Map<number, Pending<T>>()
  private nextId = 1
  private timer: NodeJS.Timeout | undefined

  constructor(
    private readonly describe: string,
    private readonly sweepMs = 20,
  ) {}

  add(timeoutMs: number, resolve: (value: T) => void, reject: (err: KumoError) => void): number {
    const id = this.nextId
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1
    this.pending.set(id, { deadlineMs: Date.now() + timeoutMs, resolve, reject })
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.sweep(), this.sweepMs)
      this.timer.unref()
    }
    return id
  }

  resolve(id: number, value: T): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined) return false
    this.pending.delete(id)
    entry.resolve(value)
    return true
  }

  reject(id: number, err: KumoError): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined) return false
    this.pending.delete(id)
    entry.reject(err)
    return true
  }

  rejectAll(err: KumoError): void {
    const entries = [...this.pending.values()]
    this.pending.clear()
    for (const entry of entries) entry.reject(err)
  }

  private sweep(): void {
    const now = Date.now()
    for (const [id, entry] of this.pending) {
      if (entry.deadlineMs <= now) {
        this.pending.delete(id)
        entry.reject(new KumoError('TIMEOUT', `${this.describe}: no reply in time`))
      }
    }
    if (this.pending.size === 0 && this.timer !== undefined) {
      clearInterval(this.timer)
      this.timer = undefined
    }
  }

  get size(): number {
    return this.pending.size
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
