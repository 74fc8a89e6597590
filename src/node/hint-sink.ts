import { KumoError } from '../core/errors.js'
import { batchBytesMax, batchOpsMax } from '../core/limits.js'
import type { Membership } from '../cluster/membership.js'
import type { StorageEngine } from '../storage/engine.js'
import type { PeerPool } from '../wire/peer-channel.js'
import { noPeerFields } from '../wire/peer-fields.js'

export interface HintSinkDeps {
  selfId: string
  storage: StorageEngine
  membership: Membership
  peers: PeerPool
  /** Hints held for one target at most (here, or asked of a fallback). */
  hintsPerTargetMax: number
}

interface Waiter {
  resolve: () => void
  reject: (err: unknown) => void
}

interface Gathered {
  holder: string
  target: string
  partitions: number[]
  keys: Buffer[]
  records: Buffer[]
  bytes: number
  timeoutMs: number
  waiters: Waiter[]
}

/**
 * Stores hints (writes held for a replica that missed them) in batches: every hint of one
 * event-loop turn for one target on one holder is one storage batch or one HINT request,
 * however many writes it came from. When a replica stops answering, every write that times
 * out on it in the same moment becomes a hint together, rather than each a request of its own.
 */
export class HintSink {
  private readonly gathered = new Map<string, Gathered>()
  private scheduled = false

  constructor(private readonly deps: HintSinkDeps) {}

  /** Holds the records for `target` on `holder` (this node when undefined); resolves once stored. */
  store(holder: string | undefined, target: string, partitions: readonly number[], keys: readonly Buffer[], records: readonly Buffer[], timeoutMs: number): Promise<void> {
    const at = holder ?? this.deps.selfId
    let bytes = 0
    for (let i = 0; i < keys.length; i++) bytes += keys[i]!.length + records[i]!.length
    const id = `${at}\u0000${target}`
    let batch = this.gathered.get(id)
    if (batch !== undefined && (batch.keys.length + keys.length > batchOpsMax || batch.bytes + bytes > batchBytesMax)) {
      this.gathered.delete(id)
      this.send(batch)
      batch = undefined
    }
    if (batch === undefined) this.gathered.set(id, (batch = { holder: at, target, partitions: [], keys: [], records: [], bytes: 0, timeoutMs: 0, waiters: [] }))
    for (let i = 0; i < keys.length; i++) {
      batch.partitions.push(partitions[i]!)
      batch.keys.push(keys[i]!)
      batch.records.push(records[i]!)
    }
    batch.bytes += bytes
    batch.timeoutMs = Math.max(batch.timeoutMs, timeoutMs)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.flush())
    }
    return new Promise((resolve, reject) => batch.waiters.push({ resolve, reject }))
  }

  private flush(): void {
    this.scheduled = false
    const batches = [...this.gathered.values()]
    this.gathered.clear()
    for (const batch of batches) this.send(batch)
  }

  private send(batch: Gathered): void {
    this.write(batch).then(
      () => {
        for (const w of batch.waiters) w.resolve()
      },
      (err) => {
        for (const w of batch.waiters) w.reject(err)
      },
    )
  }

  private async write(batch: Gathered): Promise<void> {
    if (batch.holder === this.deps.selfId) {
      // A bound on what a long outage can pile up: past it, anti-entropy brings the node back.
      await this.deps.storage.putHints(
        batch.keys.map((key, i) => ({ target: batch.target, partition: batch.partitions[i]!, key, record: batch.records[i]! })),
        Date.now(),
        this.deps.hintsPerTargetMax,
      )
      return
    }
    const address = this.deps.membership.address(batch.holder)
    if (address === undefined) throw new KumoError('UNAVAILABLE', `no address known for node ${batch.holder}`)
    await this.deps.peers
      .get(batch.holder, address)
      .request({ ...noPeerFields, op: 'HINT', partitions: batch.partitions, keys: batch.keys, records: batch.records, hintTarget: batch.target }, batch.timeoutMs)
  }
}
