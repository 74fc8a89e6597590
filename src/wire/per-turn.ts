/**
 * A value computed at most once per event-loop turn. Requests made in the same turn then make
 * the same choice (the same coordinator, the same replica), so they travel in the same frame:
 * fewer, larger messages, which is where a busy node's time goes (bench/RESULTS.md).
 */
export class PerTurn<T> {
  private value: T | undefined
  private valid = false

  get(compute: () => T): T {
    if (!this.valid) {
      this.value = compute()
      this.valid = true
      setImmediate(() => {
        this.valid = false
        this.value = undefined
      })
    }
    return this.value as T
  }

  /** The next get() computes afresh (what the value was made from has changed). */
  invalidate(): void {
    this.valid = false
    this.value = undefined
  }
}
