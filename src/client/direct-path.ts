import { randomBytes } from 'node:crypto'
import { requiredAcks, type Consistency } from '../core/consistency.js'
import { KumoError, toKumoError } from '../core/errors.js'
import { HybridClock } from '../core/hlc.js'
import { QuorumTracker } from '../core/quorum.js'
import { encodeRecord, liveValue, quorumResult, recordHlcCounter, recordHlcMs } from '../core/record.js'
import { encodeVersion } from '../core/version.js'
import { requestMsg, type RequestMsg, type ResponseMsg } from '../wire/messages.js'
import type { NodeConnection } from './node-connection.js'

/** What the direct path needs of the client: its connections, its policy, and the node path. */
export interface DirectPathHost {
  /** Connections to every replica in `replicas`, or undefined when any of them is not usable. */
  allReplicas(replicas: readonly string[]): NodeConnection[] | undefined
  /** Usable replicas of `replicas`, in the balancing policy's order for this turn. */
  replicasInOrder(replicas: readonly string[]): NodeConnection[]
  /** The node-coordinated path: sends `req` to a node (retrying others) within `timeoutMs`. */
  coordinate(key: Buffer, req: Omit<RequestMsg, 'id'>, timeoutMs: number): Promise<ResponseMsg>
  /** A request is going to this node (for requestStats). */
  sending(id: string): void
  /** A replica answered with an error (a draining node is avoided from then on). */
  replicaFailed(id: string, error: KumoError): void
}

/** How long one replica may take, by default, before its share is handed to a coordinating node. */
export const defaultReplicaTimeoutMs = 1000

const ignore = (): void => undefined

/**
 * Client-driven coordination (Dynamo, section 6.4): the client stamps each write with a version
 * from its own hybrid logical clock and sends the records to every replica itself, answering at
 * W acknowledgements; a read asks R replicas and returns the newest record, repairing stale
 * replicas after. One hop instead of two, and no coordinator work on the nodes.
 *
 * Failure handling stays on the nodes: whenever a replica is not usable or fails, the same
 * versioned records go to a node to coordinate (sloppy quorum, hints), and a read is retried
 * through a node. Re-sending a record is harmless: replicas keep the newest version.
 */
export class DirectPath {
  private readonly clock = new HybridClock()
  /** The writer id in this client's versions: distinct per client, so versions never tie. */
  readonly writerId = `c${randomBytes(6).toString('hex')}`
  private readonly writerIdBytes = Buffer.from(this.writerId)

  constructor(
    private readonly host: DirectPathHost,
    private readonly replicaTimeoutMs = defaultReplicaTimeoutMs,
  ) {}

  /** A record for `value` (undefined: a tombstone) under a fresh version. */
  record(value: Buffer | undefined, ttlMs: number): Buffer {
    const now = Date.now()
    return encodeRecord(encodeVersion(this.clock.now(now), this.writerIdBytes), value, ttlMs > 0 ? now + ttlMs : 0)
  }

  /** Writes records of keys sharing one replica set; resolves at W acknowledgements. */
  write(replicas: readonly string[], keys: Buffer[], records: Buffer[], consistency: Consistency, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    const handOff = (): Promise<unknown> =>
      this.host.coordinate(keys[0]!, requestMsg({ op: 'REPLICATE', keys, records, consistency }), Math.max(1, deadline - Date.now()))
    const conns = this.host.allReplicas(replicas)
    if (conns === undefined) return handOff().then(() => undefined)
    const tracker = new QuorumTracker(requiredAcks(consistency, conns.length), conns.length)
    const replicaMs = Math.min(timeoutMs, this.replicaTimeoutMs)
    return new Promise((resolve, reject) => {
      let settled = false
      let handedOff = false
      const settle = (error?: unknown): void => {
        if (settled) return
        settled = true
        if (error === undefined) resolve()
        else reject(error)
      }
      // A replica that failed still needs the records: a node takes them over and stores a
      // hint for it. If W is not met directly, the call's outcome is the node's.
      const failed = (): void => {
        tracker.fail()
        if (handedOff) return
        handedOff = true
        handOff().then(() => settle(), (err) => settle(toKumoError(err)))
      }
      for (const conn of conns) {
        this.host.sending(conn.nodeId)
        conn.replica.write(keys, records, replicaMs, (_err, res) => {
          if (res === undefined) {
            failed()
            return
          }
          if (res.errorCode === '') {
            if (tracker.ack() === 'met') settle()
            return
          }
          const error = new KumoError(res.errorCode as KumoError['code'], res.errorMessage)
          this.host.replicaFailed(conn.nodeId, error)
          if (!error.retryable) settle(error)
          else failed()
        })
      }
    })
  }

  /** Live values of keys sharing one replica set: the newest of R replicas' records. */
  read(replicas: readonly string[], keys: Buffer[], consistency: Consistency, timeoutMs: number): Promise<(Buffer | undefined)[]> {
    const deadline = Date.now() + timeoutMs
    const viaNode = async (): Promise<(Buffer | undefined)[]> => {
      const res = await this.host.coordinate(keys[0]!, requestMsg({ op: 'GET_MANY', keys, consistency }), Math.max(1, deadline - Date.now()))
      return keys.map((_, i) => (res.values?.[i]?.found ? res.values[i]!.value : undefined))
    }
    const required = requiredAcks(consistency, replicas.length)
    const order = this.host.replicasInOrder(replicas)
    if (order.length < required) return viaNode()
    const replicaMs = Math.min(timeoutMs, this.replicaTimeoutMs)
    const asked = order.slice(0, required)
    return new Promise((resolve, reject) => {
      const answers: Buffer[][] = new Array(asked.length)
      let pending = asked.length
      let failed = false
      const fail = (error: KumoError): void => {
        if (failed) return
        failed = true
        if (!error.retryable && error.code !== 'TIMEOUT') reject(error)
        else viaNode().then(resolve, reject)
      }
      asked.forEach((conn, a) => {
        this.host.sending(conn.nodeId)
        conn.replica.read(keys, replicaMs, (err, res) => {
          if (failed) return
          if (res === undefined) return fail(toKumoError(err))
          if (res.errorCode !== '') {
            const error = new KumoError(res.errorCode as KumoError['code'], res.errorMessage)
            this.host.replicaFailed(conn.nodeId, error)
            return fail(error)
          }
          answers[a] = res.records
          if (--pending > 0) return
          // A record that does not decode fails this read alone, not the others answered with it.
          try {
            resolve(this.newest(asked, keys, answers))
          } catch (err) {
            reject(new KumoError('INTERNAL', `a replica answered with a record that does not decode: ${(err as Error).message}`))
          }
        })
      })
    })
  }

  /** The newest record per key across the answers; stale replicas are repaired in the background. */
  private newest(asked: NodeConnection[], keys: Buffer[], answers: Buffer[][]): (Buffer | undefined)[] {
    const now = Date.now()
    const { newest, stale } = quorumResult(answers, keys.length)
    stale?.forEach((indexes, a) => {
      if (indexes.length === 0) return
      // Read repair, best effort: anti-entropy catches what it misses.
      asked[a]!.replica.write(indexes.map((i) => keys[i]!), indexes.map((i) => newest[i]!), this.replicaTimeoutMs, ignore)
    })
    const values: (Buffer | undefined)[] = new Array(keys.length)
    for (let i = 0; i < keys.length; i++) {
      const record = newest[i]
      if (record === undefined) continue
      values[i] = liveValue(record, now)
      // Writes this client makes after reading this one sort above it.
      this.clock.observeReading(recordHlcMs(record), recordHlcCounter(record), now)
    }
    return values
  }
}
