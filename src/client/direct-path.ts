import { randomBytes } from 'node:crypto'
import { requiredAcks, type Consistency } from '../core/consistency.js'
import { KumoError, toKumoError } from '../core/errors.js'
import { HybridClock } from '../core/hlc.js'
import { QuorumTracker } from '../core/quorum.js'
import { digestOutcome, withFetched, type DigestOutcome, type ReplicaRecords } from '../core/digest-read.js'
import { encodeRecord, liveValue, recordHlcCounter, recordHlcMs } from '../core/record.js'
import { transferAllowanceMs } from '../core/responsiveness.js'
import { encodeVersion } from '../core/version.js'
import { requestMsg, type RequestMsg, type ResponseMsg } from '../wire/messages.js'
import type { NodeConnection } from './node-connection.js'
import type { ReplicaAnswer } from './replica-coalescer.js'

/** What the direct path needs of the client: its connections, its policy, and the node path. */
export interface DirectPathHost {
  /**
   * For each of `replicas`, in that order, its connection if a write can go to it this turn
   * (reported up, not draining, not avoided for leaving a request unanswered, storage
   * writable), else undefined.
   */
  writeTargets(replicas: readonly string[]): (NodeConnection | undefined)[]
  /** Usable replicas of `replicas`, in the balancing policy's order for this turn. */
  replicasInOrder(replicas: readonly string[]): NodeConnection[]
  /** The node-coordinated path: sends `req` to a node (retrying others) within `timeoutMs`. */
  coordinate(key: Buffer, req: Omit<RequestMsg, 'id'>, timeoutMs: number): Promise<ResponseMsg>
  /**
   * The node to hold this turn's hints for `target`: any usable node but the target, the same
   * one for the whole turn, so a turn's hints for one replica are one request.
   */
  hintHolder(target: string): NodeConnection | undefined
  /** A request is going to this node (for requestStats). */
  sending(id: string): void
  /** A replica answered with an error (a draining node is avoided from then on). */
  replicaFailed(id: string, error: KumoError): void
}

/** How long one replica may take at most, by default, before it counts as failed (its measured answer times usually give less). */
export const defaultReplicaTimeoutMs = 1000

const ignore = (): void => undefined

/**
 * Of the replicas that failed a request, those now avoided for answering nothing at all: a node
 * taking the request over need not wait on them again. One that failed but answers other
 * requests (slow, or an error of its own) is not named: the node tries it as usual.
 */
function unresponsiveOf(failed: readonly NodeConnection[]): string[] {
  const out: string[] = []
  for (const conn of failed) if (!conn.usable && !out.includes(conn.nodeId)) out.push(conn.nodeId)
  return out
}

/** A record that does not decode fails its read alone, not the others answered with it. */
function undecodable(err: unknown): KumoError {
  return new KumoError('INTERNAL', `a replica answered with a record that does not decode: ${(err as Error).message}`)
}

/** The error a replica's answer (or its absence) amounts to. */
function replicaError(err: unknown, answer: ReplicaAnswer | undefined): KumoError {
  return answer === undefined ? toKumoError(err) : new KumoError(answer.errorCode as KumoError['code'], answer.errorMessage)
}

/**
 * Client-driven coordination (Dynamo, section 6.4): the client stamps each write with a version
 * from its own hybrid logical clock and sends the records to every replica itself, answering at
 * W acknowledgements; a read asks R replicas and returns the newest record, repairing stale
 * replicas after. One hop instead of two, and no coordinator work on the nodes.
 *
 * A replica's failure of any kind (no answer within its timeout, a broken connection, an error
 * answer: a full disk, a clock it cannot trust) is that replica failing, not the request: a
 * write succeeds when W others acknowledge, and the replicas that missed it get hints, handed
 * to another node (a turn's hints for one replica travel as one request). A read asks
 * the next replica in its place. Only when too few replicas remain does the request go to a
 * node to coordinate (sloppy quorum with fallback nodes, or a clear UNAVAILABLE); re-sending a
 * record is harmless, since replicas keep the newest version.
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

  /**
   * How long a write waits for a replica: the cap (replicaTimeoutMs), not the replica's usual
   * answer time. A replica that is merely slow (a compaction, a large value) still takes the
   * write, and giving up on it early would only send the same records again through a node,
   * adding to the load that slowed it. A replica that is gone is caught sooner anyway: once it
   * answers nothing for its usual time, a liveness probe fails it (MultiplexedStream).
   */
  private writeTimeoutFor(remainingMs: number, bytes: number): number {
    return Math.max(1, Math.min(remainingMs, this.replicaTimeoutMs + transferAllowanceMs(bytes)))
  }

  /** How long a read waits for `conn` with `remainingMs` of the call left: its usual answer time, then the next replica is asked. */
  private timeoutFor(conn: NodeConnection, remainingMs: number, bytes = 0): number {
    const allowance = transferAllowanceMs(bytes)
    return Math.max(1, Math.min(remainingMs, this.replicaTimeoutMs + allowance, conn.replicaTimeoutMs(bytes)))
  }

  /**
   * Writes records of keys sharing one replica set; resolves at W acknowledgements. While a
   * membership change moves the partition, `replicas` is its write set, of which `extra`
   * (pending or retiring replicas) each need an acknowledgement more than W.
   */
  write(replicas: readonly string[], keys: Buffer[], records: Buffer[], consistency: Consistency, timeoutMs: number, extra = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs
    /** Replicas that failed: those found unresponsive (avoided) go with a hand-off, so the node does not wait on them again. */
    const failedConns: NodeConnection[] = []
    const handOff = (): Promise<void> =>
      this.host
        .coordinate(keys[0]!, requestMsg({ op: 'REPLICATE', keys, records, consistency, unresponsive: unresponsiveOf(failedConns) }), Math.max(1, deadline - Date.now()))
        .then(ignore)
    const conns = this.host.writeTargets(replicas)
    const required = requiredAcks(consistency, replicas.length - extra) + extra
    let targets = 0
    for (const conn of conns) if (conn !== undefined) targets++
    if (targets < required) return handOff()
    const tracker = new QuorumTracker(required, targets)
    let bytes = 0
    for (let i = 0; i < keys.length; i++) bytes += keys[i]!.length + records[i]!.length
    return new Promise((resolve, reject) => {
      let settled = false
      let outstanding = targets
      /** Replicas without the records: skipped, or failed. */
      const missed: string[] = []
      const failures: KumoError[] = []
      const settle = (error?: unknown): void => {
        if (settled) return
        settled = true
        if (error === undefined) resolve()
        else reject(error)
      }
      // Once every replica asked has answered or failed: hints for those that missed the
      // records. (When W was not met, the node the write was handed to stores them instead.)
      // A hint no node would hold (none usable, or the holder failed it) makes a node
      // replicate the records once more, holding hints itself for replicas that miss them
      // again: replicas keep the newest version, so the records arriving twice is harmless.
      const finished = (): void => {
        if (tracker.state() !== 'met') return
        let replicated = false
        const replicateOnce = (): void => {
          if (replicated) return
          replicated = true
          this.host.coordinate(keys[0]!, requestMsg({ op: 'REPLICATE', keys, records, consistency: 'one' }), this.replicaTimeoutMs * 5).catch(ignore)
        }
        for (const id of missed) {
          const holder = this.host.hintHolder(id)
          if (holder === undefined) replicateOnce()
          else holder.replica.hint(id, keys, records, this.replicaTimeoutMs, (err, res) => {
            if (err !== undefined || res === undefined || res.errorCode !== '') replicateOnce()
          })
        }
      }
      const failed = (conn: NodeConnection, error: KumoError): void => {
        missed.push(conn.nodeId)
        failures.push(error)
        failedConns.push(conn)
        if (tracker.fail() !== 'failed' || settled) return
        // The replicas that failed it refused the request itself (a version too far ahead of
        // the cluster's clock): the caller's error, which a node would refuse as well.
        // Otherwise a node takes the write over.
        if (failures.every((f) => f.code === 'INVALID_ARGUMENT')) settle(failures[0])
        else {
          settled = true
          handOff().then(resolve, reject)
        }
      }
      conns.forEach((conn, i) => {
        if (conn === undefined) {
          missed.push(replicas[i]!)
          return
        }
        this.host.sending(conn.nodeId)
        conn.replica.write(keys, records, this.writeTimeoutFor(deadline - Date.now(), bytes), (err, res) => {
          outstanding--
          if (res !== undefined && res.errorCode === '') {
            if (tracker.ack() === 'met') settle()
          } else {
            const error = replicaError(err, res)
            if (res !== undefined) this.host.replicaFailed(conn.nodeId, error)
            failed(conn, error)
          }
          if (outstanding === 0) finished()
        })
      })
    })
  }

  /**
   * Live values of keys sharing one replica set: the newest of R replicas' records. One
   * replica (the first in the policy's order) is asked for the records and the others for
   * their headers only (digest reads): where a header names a newer version, that replica's
   * record is fetched before answering, and replicas found older are repaired.
   */
  read(replicas: readonly string[], keys: Buffer[], consistency: Consistency, timeoutMs: number): Promise<(Buffer | undefined)[]> {
    const deadline = Date.now() + timeoutMs
    const failedConns: NodeConnection[] = []
    const viaNode = async (): Promise<(Buffer | undefined)[]> => {
      const res = await this.host.coordinate(
        keys[0]!,
        requestMsg({ op: 'GET_MANY', keys, consistency, unresponsive: unresponsiveOf(failedConns) }),
        Math.max(1, deadline - Date.now()),
      )
      return keys.map((_, i) => (res.values?.[i]?.found ? res.values[i]!.value : undefined))
    }
    const required = requiredAcks(consistency, replicas.length)
    const order = this.host.replicasInOrder(replicas)
    if (order.length < required) return viaNode()
    return new Promise((resolve, reject) => {
      const asked: NodeConnection[] = []
      const answers: (ReplicaRecords | undefined)[] = []
      let answered = 0
      let next = 0
      let done = false
      // Asks the next replica in the policy's order that is still usable (another one may have
      // been found unresponsive meanwhile) for records (`whole`) or headers; when none is
      // left, a node reads instead.
      const ask = (whole: boolean): void => {
        if (done) return
        while (next < order.length && !order[next]!.usable) failedConns.push(order[next++]!)
        if (next >= order.length) {
          done = true
          viaNode().then(resolve, reject)
          return
        }
        const conn = order[next++]!
        const slot = asked.length
        asked.push(conn)
        this.host.sending(conn.nodeId)
        conn.replica.read(
          keys,
          this.timeoutFor(conn, deadline - Date.now()),
          (err, res) => {
            if (done) return
            if (res === undefined || res.errorCode !== '' || res.records.length !== keys.length) {
              const error = res !== undefined && res.errorCode === '' ? new KumoError('INTERNAL', `replica ${conn.nodeId} answered ${res.records.length} records for ${keys.length} keys`) : replicaError(err, res)
              if (res !== undefined) this.host.replicaFailed(conn.nodeId, error)
              failedConns.push(conn)
              // Its place goes to the next replica, asked for the same: a failed replica fails no read.
              ask(whole)
              return
            }
            answers[slot] = { records: res.records, whole }
            if (++answered < required) return
            done = true
            const replied = asked.filter((_, a) => answers[a] !== undefined)
            const given = answers.filter((a): a is ReplicaRecords => a !== undefined)
            let outcome: DigestOutcome
            try {
              outcome = digestOutcome(given, keys.length)
              if (outcome.fetch === undefined) return resolve(this.newest(replied, keys, outcome))
            } catch (err) {
              return reject(undecodable(err))
            }
            this.fetchNewer(replied, given, keys, outcome.fetch, deadline, failedConns).then((values) => (values === undefined ? viaNode() : values)).then(resolve, reject)
          },
          !whole,
        )
      }
      ask(true)
      for (let i = 1; i < required; i++) ask(false)
    })
  }

  /**
   * Where only a header names a key's newest version: fetches those records from the replicas
   * that hold them, then answers. Resolves undefined when a node should read the keys instead
   * (a fetch failed, or the replica no longer held what its header named: a purge between).
   */
  private async fetchNewer(
    asked: NodeConnection[],
    answers: ReplicaRecords[],
    keys: Buffer[],
    fetch: Map<number, number[]>,
    deadline: number,
    failedConns: NodeConnection[],
  ): Promise<(Buffer | undefined)[] | undefined> {
    const fetches: Promise<boolean>[] = []
    for (const [a, indexes] of fetch) {
      const conn = asked[a]!
      this.host.sending(conn.nodeId)
      fetches.push(
        new Promise<boolean>((resolve) => {
          conn.replica.read(indexes.map((i) => keys[i]!), this.timeoutFor(conn, deadline - Date.now()), (err, res) => {
            if (res === undefined || res.errorCode !== '' || res.records.length !== indexes.length) {
              // As in the first round: the node the read goes to need not wait on this replica again.
              if (res !== undefined) this.host.replicaFailed(conn.nodeId, replicaError(err, res))
              failedConns.push(conn)
              return resolve(false)
            }
            // Gone or older than its header (a purge between the two): a node reads instead.
            const merged = withFetched(answers[a]!, indexes, res.records)
            if (merged === undefined) return resolve(false)
            answers[a] = merged
            resolve(true)
          })
        }),
      )
    }
    if (!(await Promise.all(fetches)).every(Boolean)) return undefined
    try {
      const outcome = digestOutcome(answers, keys.length)
      return outcome.fetch === undefined ? this.newest(asked, keys, outcome) : undefined
    } catch (err) {
      throw undecodable(err)
    }
  }

  /** The live values of the newest records; stale replicas are repaired in the background. */
  private newest(asked: NodeConnection[], keys: Buffer[], outcome: DigestOutcome): (Buffer | undefined)[] {
    const now = Date.now()
    const { newest, stale } = outcome
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
