import type { StorageEngine } from '../storage/engine.js'

/** Where a gained partition's copy stands: the next key to copy from, or done. */
export type CopyCursor = Buffer | 'done'

const metaName = 'copy-cursors'

/**
 * The progress of the copies a membership change asks of this node, per partition, kept in its
 * storage: a node restarted during the change (before the cluster took it for down) resumes
 * each copy where it stopped instead of starting over. Progress belongs to one change (its
 * staging epoch): that of another change is thrown away. Saved after each page is applied, so
 * a crash repeats at most one page, which is harmless (records apply newest-version-wins).
 */
export class CopyCursors {
  private epoch = 0
  private readonly cursors = new Map<number, CopyCursor>()
  private loaded = false
  private saving: Promise<void> = Promise.resolve()

  constructor(private readonly storage: StorageEngine) {}

  /** The cursor of `partition` for the change staged at `epoch`; undefined: start from the beginning. */
  async get(epoch: number, partition: number): Promise<CopyCursor | undefined> {
    await this.load()
    if (epoch !== this.epoch) return undefined
    return this.cursors.get(partition)
  }

  /** Records the progress of `partition`'s copy for the change staged at `epoch`, and saves it. */
  set(epoch: number, partition: number, cursor: CopyCursor): Promise<void> {
    if (epoch !== this.epoch) {
      this.epoch = epoch
      this.cursors.clear()
    }
    this.cursors.set(partition, cursor)
    const snapshot = JSON.stringify({ epoch, cursors: [...this.cursors].map(([p, c]) => [p, c === 'done' ? 'done' : c.toString('base64')]) })
    // In order: a later save never lands before an earlier one.
    this.saving = this.saving.then(() => this.storage.putMeta(metaName, Buffer.from(snapshot)))
    return this.saving
  }

  private async load(): Promise<void> {
    if (this.loaded) return
    this.loaded = true
    const bytes = await this.storage.getMeta(metaName)
    if (bytes === undefined) return
    try {
      const saved = JSON.parse(bytes.toString()) as { epoch: number; cursors: [number, string][] }
      if (typeof saved.epoch !== 'number' || !Array.isArray(saved.cursors)) return
      // A change staged meanwhile (set) wins over what was saved before.
      if (this.epoch !== 0) return
      this.epoch = saved.epoch
      for (const [p, c] of saved.cursors) if (typeof p === 'number' && typeof c === 'string') this.cursors.set(p, c === 'done' ? 'done' : Buffer.from(c, 'base64'))
    } catch {
      // Unreadable progress costs only a copy from the beginning.
    }
  }
}
