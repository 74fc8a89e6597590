import { batchBytesMax, batchOpsMax } from '../core/limits.js'
import { requestMsg, type RequestMsg, type ResponseMsg } from '../wire/messages.js'

/** Where merged requests go: a node's multiplexed stream. */
export interface RequestSender {
  request(req: Omit<RequestMsg, 'id'>, timeoutMs: number, immediate: boolean): Promise<ResponseMsg>
}

/** A replica's answer to one caller's share of a merged request. */
export interface ReplicaAnswer {
  errorCode: string
  errorMessage: string
  /** REPLICA_READ: one record (or header, when versions were asked) per key of this caller (empty where none). */
  records: Buffer[]
}

/**
 * Called once, with the answer or with the transport error (a callback, not a promise: this
 * runs per operation). It must not throw: the callers merged into one request are answered in
 * a loop, and a throw would leave the rest unanswered.
 */
export type ReplicaCallback = (err: unknown, answer?: ReplicaAnswer) => void

interface Waiter {
  from: number
  count: number
  /** Asked for record headers (versionKeys), not records. */
  versions: boolean
  done: ReplicaCallback
}

interface Merged {
  keys: Buffer[]
  /** REPLICA_READ: keys whose record headers only are asked. */
  versionKeys: Buffer[]
  records: Buffer[]
  bytes: number
  timeoutMs: number
  waiters: Waiter[]
}

const none: Buffer[] = []
/** Requests of at least this many keys are not merged with others. */
const coalesceKeysMax = 32

/**
 * Merges the direct replica requests made for one node in one event-loop turn: all of a turn's
 * REPLICA_WRITEs become one request (one atomic LevelDB batch on the node, one answer), all its
 * REPLICA_READs one read. Per operation, that saves a request and a response to encode, decode,
 * track and answer on both sides, which is most of what a small operation costs. A turn's
 * reads of records and of record headers only (digest reads) share one request. Merged
 * writes are atomic together on the replica, which is stronger than each alone.
 */
export class ReplicaCoalescer {
  private writes: Merged | undefined
  private reads: Merged | undefined
  /** Records to hold for each replica that missed them, by that replica's id. */
  private hints = new Map<string, Merged>()
  private scheduled = false
  private waiting = 0

  constructor(private readonly conn: RequestSender) {}

  /** Callers awaiting an answer: each is one request to the load-balancing policy. */
  get inFlight(): number {
    return this.waiting
  }

  write(keys: Buffer[], records: Buffer[], timeoutMs: number, done: ReplicaCallback): void {
    if (keys.length >= coalesceKeysMax) return this.alone('REPLICA_WRITE', keys, records, timeoutMs, done)
    let bytes = 0
    for (let i = 0; i < keys.length; i++) bytes += keys[i]!.length + records[i]!.length
    if (this.writes !== undefined && (this.writes.keys.length + keys.length > batchOpsMax || this.writes.bytes + bytes > batchBytesMax)) {
      this.send('REPLICA_WRITE', this.writes)
      this.writes = undefined
    }
    this.writes ??= { keys: [], versionKeys: [], records: [], bytes: 0, timeoutMs: 0, waiters: [] }
    this.add(this.writes, keys, records, bytes, timeoutMs, done)
  }

  /**
   * Asks this node to hold `records` for replica `target`, which failed to take them, and to
   * deliver them once it answers again (hinted handoff). A turn's hints for one target are one
   * request, however many writes they came from.
   */
  hint(target: string, keys: Buffer[], records: Buffer[], timeoutMs: number, done: ReplicaCallback): void {
    let bytes = 0
    for (let i = 0; i < keys.length; i++) bytes += keys[i]!.length + records[i]!.length
    let merged = this.hints.get(target)
    if (merged !== undefined && (merged.keys.length + keys.length > batchOpsMax || merged.bytes + bytes > batchBytesMax)) {
      this.send('STORE_HINTS', merged, target)
      merged = undefined
    }
    if (merged === undefined) this.hints.set(target, (merged = { keys: [], versionKeys: [], records: [], bytes: 0, timeoutMs: 0, waiters: [] }))
    this.add(merged, keys, records, bytes, timeoutMs, done)
  }

  /**
   * Reads the records of `keys` from this replica; with `versions`, only their headers
   * (version, flags, expiry): the other replicas of a digest read.
   */
  read(keys: Buffer[], timeoutMs: number, done: ReplicaCallback, versions = false): void {
    if (keys.length >= coalesceKeysMax) return this.alone('REPLICA_READ', keys, [], timeoutMs, done, versions)
    if (this.reads !== undefined && this.reads.keys.length + this.reads.versionKeys.length + keys.length > batchOpsMax) {
      this.send('REPLICA_READ', this.reads)
      this.reads = undefined
    }
    this.reads ??= { keys: [], versionKeys: [], records: [], bytes: 0, timeoutMs: 0, waiters: [] }
    this.add(this.reads, keys, [], 0, timeoutMs, done, versions)
  }

  /**
   * A request already large enough goes on its own (still in the turn's frame): merging it
   * would only make callers wait for each other, and the node answers each as it finishes.
   */
  private alone(op: 'REPLICA_WRITE' | 'REPLICA_READ', keys: Buffer[], records: Buffer[], timeoutMs: number, done: ReplicaCallback, versions = false): void {
    this.waiting++
    const req = versions ? requestMsg({ op, versionKeys: keys, timeoutMs }) : requestMsg({ op, keys, records, timeoutMs })
    this.conn.request(req, timeoutMs, false).then(
      (res) => {
        this.waiting--
        done(undefined, { errorCode: res.errorCode, errorMessage: res.errorMessage, records: (versions ? res.versions : res.records) ?? [] })
      },
      (err) => {
        this.waiting--
        done(err)
      },
    )
  }

  private add(merged: Merged, keys: Buffer[], records: Buffer[], bytes: number, timeoutMs: number, done: ReplicaCallback, versions = false): void {
    this.waiting++
    const into = versions ? merged.versionKeys : merged.keys
    merged.waiters.push({ from: into.length, count: keys.length, versions, done })
    for (let i = 0; i < keys.length; i++) into.push(keys[i]!)
    for (let i = 0; i < records.length; i++) merged.records.push(records[i]!)
    merged.bytes += bytes
    if (timeoutMs > merged.timeoutMs) merged.timeoutMs = timeoutMs
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.flush())
    }
  }

  private flush(): void {
    this.scheduled = false
    if (this.writes !== undefined) this.send('REPLICA_WRITE', this.writes)
    if (this.reads !== undefined) this.send('REPLICA_READ', this.reads)
    for (const [target, merged] of this.hints) this.send('STORE_HINTS', merged, target)
    this.writes = undefined
    this.reads = undefined
    this.hints.clear()
  }

  private send(op: 'REPLICA_WRITE' | 'REPLICA_READ' | 'STORE_HINTS', merged: Merged, hintTarget = ''): void {
    // Already gathered for this turn: onto the wire now rather than a turn later.
    const req = requestMsg({ op, keys: merged.keys, versionKeys: merged.versionKeys, records: merged.records, timeoutMs: merged.timeoutMs, hintTarget })
    this.conn.request(req, merged.timeoutMs, true).then(
      (res) => {
        const records = res.records ?? []
        const versions = res.versions ?? []
        const reading = op === 'REPLICA_READ' && res.errorCode === ''
        this.waiting -= merged.waiters.length
        for (const w of merged.waiters) {
          const answered = !reading ? none : (w.versions ? versions : records).slice(w.from, w.from + w.count)
          w.done(undefined, { errorCode: res.errorCode, errorMessage: res.errorMessage, records: answered })
        }
      },
      (err) => {
        this.waiting -= merged.waiters.length
        for (const w of merged.waiters) w.done(err)
      },
    )
  }
}
