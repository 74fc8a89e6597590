/**
 * Gathers items produced in one event-loop turn into one frame. A frame is also cut when it
 * reaches `opsMax` items or `bytesMax` bytes, so one message stays bounded.
 */
export class FrameBatcher<T> {
  private items: T[] = []
  private bytes = 0
  private scheduled = false

  constructor(
    private readonly send: (items: T[]) => void,
    private readonly opsMax: number,
    private readonly bytesMax: number,
  ) {}

  push(item: T, bytes: number): void {
    this.items.push(item)
    this.bytes += bytes
    if (this.items.length >= this.opsMax || this.bytes >= this.bytesMax) {
      this.flush()
      return
    }
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => {
        this.scheduled = false
        this.flush()
      })
    }
  }

  flush(): void {
    if (this.items.length === 0) return
    const items = this.items
    this.items = []
    this.bytes = 0
    this.send(items)
  }

  get pending(): number {
    return this.items.length
  }

  /** Drops what is queued and returns it (for failing it when the stream dies). */
  drain(): T[] {
    const items = this.items
    this.items = []
    this.bytes = 0
    return items
  }
}
