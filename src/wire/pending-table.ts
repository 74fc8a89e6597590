import { AnswerTime } from '../core/answer-time.js'
import { KumoError } from '../core/errors.js'

interface Pending<T> {
  sentAtMs: number
  timeoutMs: number
  bytes: number
  deadlineMs: number
  resolve: (value: T) => void
  reject: (err: KumoError) => void
}

/** Told of every reply and every timeout (Responsiveness listens). */
export interface ReplyObserver {
  answered(answerMs: number, nowMs: number): void
  timedOut(waitedMs: number, nowMs: number): void
  /** Every sweep while requests are pending (the liveness check). */
  swept?(nowMs: number): void
}

/**
 * Requests awaiting a reply, by id. One sweep timer per table instead of one timer per request:
 * a deadline fires within `sweepMs` of its time. It also times the replies (AnswerTime): how
 * long the other end takes is how least-connections tells a slow node (LeastConnectionsPicker).
 */
export class PendingTable<T> {
  private readonly pending = new Map<number, Pending<T>>()
  private readonly answers = new AnswerTime()
  private nextId = 1
  private bytes_ = 0
  private timer: NodeJS.Timeout | undefined
  private expiryDeferred = false

  constructor(
    private readonly describe: string,
    private readonly sweepMs = 20,
    private readonly observer?: ReplyObserver,
  ) {}

  add(timeoutMs: number, resolve: (value: T) => void, reject: (err: KumoError) => void, bytes = 0): number {
    const id = this.nextId
    this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1
    const now = performance.now()
    this.pending.set(id, { sentAtMs: now, timeoutMs, bytes, deadlineMs: now + timeoutMs, resolve, reject })
    this.bytes_ += bytes
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.sweep(), this.sweepMs)
      this.timer.unref()
    }
    return id
  }

  /** Answers request `id`; `nowMs` (performance.now()) may be read once for a frame of replies. */
  resolve(id: number, value: T, nowMs = performance.now()): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined) return false
    this.pending.delete(id)
    this.bytes_ -= entry.bytes
    this.answers.observe(nowMs - entry.sentAtMs, nowMs)
    this.observer?.answered(nowMs - entry.sentAtMs, nowMs)
    entry.resolve(value)
    return true
  }

  /** How long replies have recently taken (AnswerTime), or undefined. */
  answerMs(): number | undefined {
    return this.answers.value(performance.now())
  }

  reject(id: number, err: KumoError): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined) return false
    this.pending.delete(id)
    this.bytes_ -= entry.bytes
    entry.reject(err)
    return true
  }

  rejectAll(err: KumoError): void {
    const entries = [...this.pending.values()]
    this.pending.clear()
    this.bytes_ = 0
    for (const entry of entries) entry.reject(err)
  }

  /** When the oldest request still awaiting its reply was sent (undefined: none pending). */
  oldestSentAtMs(): number | undefined {
    // Ids are added in time order and a Map iterates in insertion order: the first is the oldest.
    for (const entry of this.pending.values()) return entry.sentAtMs
    return undefined
  }

  private sweep(): void {
    // The expiry runs after this turn's poll for I/O (setImmediate), not in the timer: timers
    // run before the next poll, so after any delay of this process (a GC pause, a busy CPU)
    // replies that arrived meanwhile would still sit unread, and expiring first would time out
    // requests that were answered and avoid nodes that answered.
    if (this.expiryDeferred) return
    this.expiryDeferred = true
    setImmediate(() => {
      this.expiryDeferred = false
      this.expire(performance.now())
    })
  }

  private expire(now: number): void {
    this.observer?.swept?.(now)
    for (const [id, entry] of this.pending) {
      if (entry.deadlineMs <= now) {
        this.pending.delete(id)
        this.bytes_ -= entry.bytes
        this.observer?.timedOut(now - entry.sentAtMs, now)
        entry.reject(new KumoError('TIMEOUT', `${this.describe}: no reply within ${Math.round(entry.timeoutMs)} ms`))
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

  /** Bytes of the requests awaiting a reply (as given to add). */
  get bytes(): number {
    return this.bytes_
  }

  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }
}
