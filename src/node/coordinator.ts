import { createPicker, type LoadBalancing, type ReplicaPicker, type ReplicaStats } from '../core/balancing.js'
import { parseConsistency, requiredAcks, type Consistency } from '../core/consistency.js'
import { KumoError, toKumoError } from '../core/errors.js'
import type { HybridClock } from '../core/hlc.js'
import { partitionOf } from '../core/partitioner.js'
import { QuorumTracker } from '../core/quorum.js'
import { encodeRecord, liveValue, recordVersion } from '../core/record.js'
import { checkBatch, checkKey, checkTtl, checkValue } from '../core/validate.js'
import { encodeVersion } from '../core/version.js'
import type { Membership } from '../cluster/membership.js'
import type { StorageEngine } from '../storage/engine.js'
import type { BatchOpMsg, RequestMsg, ResponseMsg } from '../wire/messages.js'
import type { PeerPool } from '../wire/peer-channel.js'
import { noPeerFields } from '../wire/peer-fields.js'

export interface CoordinatorConfig {
  defaultConsistency: Consistency
  /** How long one replica may take before the coordinator counts it as failed. */
  replicaTimeoutMs: number
  /** Deadline of a request that did not bring its own. */
  requestTimeoutMs: number
  loadBalancing: LoadBalancing
  /**
   * sloppy: a hint stored on a healthy non-replica stands in for a failed replica and counts
   * toward W (Dynamo). strict: only true replicas count; hints are still stored.
   */
  quorum: 'sloppy' | 'strict'
}

export interface CoordinatorDeps {
  selfId: string
  storage: StorageEngine
  membership: Membership
  peers: PeerPool
  clock: HybridClock
}

interface KeyWrite {
  key: Buffer
  value: Buffer | undefined
  ttlMs: number
}

const emptyBuffer = Buffer.alloc(0)

/**
 * Coordinates client requests: finds the key's replicas in the partition map, writes to all of
 * them and answers after W acknowledgements, reads from R and returns the newest version,
 * repairing stale replicas in the background. A node that is not a replica forwards the request
 * once to one that is.
 */
export class Coordinator {
  private readonly picker: ReplicaPicker
  private readonly stats: ReplicaStats

  constructor(
    private readonly deps: CoordinatorDeps,
    private readonly config: CoordinatorConfig,
  ) {
    this.picker = createPicker(config.loadBalancing)
    this.stats = {
      inFlight: (id) => (id === deps.selfId ? 0 : (deps.peers.find(id)?.inFlight ?? 0)),
      load: (id) => deps.membership.member(id)?.load ?? 0,
      weight: (id) => deps.membership.member(id)?.weight ?? 1,
    }
  }

  private get partitionMap() {
    const map = this.deps.membership.map
    if (map === undefined) throw new KumoError('NOT_SERVING', 'this node has not joined a cluster yet')
    return map
  }

  /** Answers one client request; never rejects (errors become error responses). */
  async handle(req: RequestMsg, forwarded = false): Promise<ResponseMsg> {
    try {
      const deadlineMs = Date.now() + (req.timeoutMs > 0 ? req.timeoutMs : this.config.requestTimeoutMs)
      const consistency = parseConsistency(req.consistency, this.config.defaultConsistency)
      switch (req.op) {
        case 'GET': {
          checkKey(req.key)
          const value = await this.get(req, consistency, deadlineMs, forwarded)
          return reply(req.id, value)
        }
        case 'PUT':
          checkKey(req.key)
          checkValue(req.value)
          checkTtl(req.ttlMs)
          await this.write(req, [{ key: req.key, value: req.value, ttlMs: req.ttlMs }], consistency, deadlineMs, forwarded)
          return reply(req.id, undefined)
        case 'DEL':
          checkKey(req.key)
          await this.write(req, [{ key: req.key, value: undefined, ttlMs: 0 }], consistency, deadlineMs, forwarded)
          return reply(req.id, undefined)
        case 'BATCH':
          await this.batch(req, consistency, deadlineMs, forwarded)
          return reply(req.id, undefined)
        default:
          throw new KumoError('INVALID_ARGUMENT', `unknown operation ${JSON.stringify(req.op)}`)
      }
    } catch (err) {
      const error = toKumoError(err)
      return { id: req.id, errorCode: error.code, errorMessage: error.message, found: false, value: emptyBuffer }
    }
  }

  private replicasOf(partition: number): readonly string[] {
    return this.partitionMap.replicas[partition]!
  }

  /** Live replicas in the order the balancing policy prefers. */
  private ordered(replicas: readonly string[]): string[] {
    const alive = replicas.filter((id) => this.deps.membership.isAlive(id))
    return this.picker.order(alive, this.stats)
  }

  /** Sends the request to a replica (trying the next one on failure) and returns its answer. */
  private async forward(req: RequestMsg, replicas: readonly string[], deadlineMs: number): Promise<ResponseMsg> {
    let lastError: KumoError = new KumoError('UNAVAILABLE', 'no replica of this key is reachable')
    for (const id of this.ordered(replicas)) {
      const address = this.deps.membership.address(id)
      const remaining = deadlineMs - Date.now()
      if (address === undefined) continue
      if (remaining <= 0) throw new KumoError('TIMEOUT', 'request deadline passed while forwarding')
      try {
        const res = await this.deps.peers
          .get(id, address)
          .request({ ...noPeerFields, op: 'FORWARD', forward: { ...req, timeoutMs: remaining } }, remaining)
        const answer = res.forward!
        if (answer.errorCode === 'UNAVAILABLE' || answer.errorCode === 'NOT_SERVING') {
          lastError = new KumoError(answer.errorCode, answer.errorMessage)
          continue
        }
        return answer
      } catch (err) {
        lastError = toKumoError(err)
        if (!lastError.retryable) throw lastError
      }
    }
    throw lastError
  }

  private async get(
    req: RequestMsg,
    consistency: Consistency,
    deadlineMs: number,
    forwarded: boolean,
  ): Promise<Buffer | undefined> {
    const partition = partitionOf(req.key, this.partitionMap.partitionCount)
    const replicas = this.replicasOf(partition)
    if (!forwarded && !replicas.includes(this.deps.selfId)) {
      const answer = await this.forward(req, replicas, deadlineMs)
      if (answer.errorCode) throw new KumoError(answer.errorCode as KumoError['code'], answer.errorMessage)
      return answer.found ? answer.value : undefined
    }
    const record = await this.readRecord(partition, req.key, replicas, consistency, deadlineMs)
    return liveValue(record, Date.now())
  }

  /** The newest record among R replicas (read repair for the stale ones runs after). */
  private readRecord(
    partition: number,
    key: Buffer,
    replicas: readonly string[],
    consistency: Consistency,
    deadlineMs: number,
  ): Promise<Buffer | undefined> {
    const required = requiredAcks(consistency, replicas.length)
    const candidates = this.ordered(replicas)
    // The local replica costs no network hop: ask it first.
    const self = candidates.indexOf(this.deps.selfId)
    if (self > 0) candidates.unshift(...candidates.splice(self, 1))
    if (candidates.length < required) {
      return Promise.reject(
        new KumoError('UNAVAILABLE', `read needs ${required} replicas; only ${candidates.length} of ${replicas.length} are up`),
      )
    }
    return new Promise((resolve, reject) => {
      const answers = new Map<string, Buffer | undefined>()
      let next = 0
      let outstanding = 0
      let settled = false
      let lastError: KumoError | undefined
      const finish = (): void => {
        settled = true
        let newest: Buffer | undefined
        for (const record of answers.values()) {
          if (record !== undefined && (newest === undefined || Buffer.compare(recordVersion(record), recordVersion(newest)) > 0)) {
            newest = record
          }
        }
        resolve(newest)
        if (newest !== undefined) {
          const stale = [...answers].filter(([, r]) => r === undefined || !r.equals(newest!)).map(([id]) => id)
          if (stale.length > 0) this.repair(partition, key, newest, stale)
        }
      }
      // Called after every answer or failure: finish, ask another replica, or give up.
      const step = (): void => {
        if (settled) return
        if (answers.size >= required) {
          finish()
          return
        }
        while (answers.size + outstanding < required && next < candidates.length) {
          const id = candidates[next++]!
          outstanding++
          this.readReplica(id, partition, key, deadlineMs).then(
            (record) => {
              outstanding--
              answers.set(id, record)
              step()
            },
            (err) => {
              outstanding--
              lastError = toKumoError(err)
              step()
            },
          )
        }
        if (!settled && answers.size + outstanding < required) {
          settled = true
          const cause = lastError ?? new KumoError('UNAVAILABLE', 'no replica answered')
          reject(
            new KumoError(
              cause.code === 'TIMEOUT' ? 'TIMEOUT' : 'UNAVAILABLE',
              `read got ${answers.size} of ${required} required replies (${consistency}): ${cause.message}`,
            ),
          )
        }
      }
      step()
    })
  }

  private async readReplica(id: string, partition: number, key: Buffer, deadlineMs: number): Promise<Buffer | undefined> {
    if (id === this.deps.selfId) {
      const [record] = await this.deps.storage.getRecords(partition, [key])
      return record
    }
    const address = this.deps.membership.address(id)
    if (address === undefined) throw new KumoError('UNAVAILABLE', `no address known for node ${id}`)
    const timeoutMs = Math.max(1, Math.min(this.config.replicaTimeoutMs, deadlineMs - Date.now()))
    const res = await this.deps.peers
      .get(id, address)
      .request({ ...noPeerFields, op: 'READ', partition, keys: [key] }, timeoutMs)
    const record = res.records[0]
    return record === undefined || record.length === 0 ? undefined : record
  }

  /** Writes the newest record to replicas that answered with an older one. Best effort. */
  private repair(partition: number, key: Buffer, record: Buffer, stale: string[]): void {
    for (const id of stale) {
      void this.writeReplica(id, partition, [key], [record], this.config.replicaTimeoutMs).catch(() => {
        // Anti-entropy catches what read repair misses.
      })
    }
  }

  private async writeReplica(
    id: string,
    partition: number,
    keys: Buffer[],
    records: Buffer[],
    timeoutMs: number,
  ): Promise<void> {
    if (id === this.deps.selfId) {
      await this.deps.storage.applyRecords(keys.map((key, i) => ({ partition, key, record: records[i]! })))
      return
    }
    const address = this.deps.membership.address(id)
    if (address === undefined) throw new KumoError('UNAVAILABLE', `no address known for node ${id}`)
    await this.deps.peers.get(id, address).request({ ...noPeerFields, op: 'WRITE', partition, keys, records }, timeoutMs)
  }

  private async write(
    req: RequestMsg,
    writes: KeyWrite[],
    consistency: Consistency,
    deadlineMs: number,
    forwarded: boolean,
  ): Promise<void> {
    const partition = partitionOf(writes[0]!.key, this.partitionMap.partitionCount)
    const replicas = this.replicasOf(partition)
    if (!forwarded && !replicas.includes(this.deps.selfId)) {
      const answer = await this.forward(req, replicas, deadlineMs)
      if (answer.errorCode) throw new KumoError(answer.errorCode as KumoError['code'], answer.errorMessage)
      return
    }
    await this.replicate(partition, writes, replicas, consistency, deadlineMs)
  }

  /** Stamps the writes with one version and sends them to every replica; resolves at W acks. */
  private replicate(
    partition: number,
    writes: KeyWrite[],
    replicas: readonly string[],
    consistency: Consistency,
    deadlineMs: number,
  ): Promise<void> {
    const now = Date.now()
    const version = encodeVersion(this.deps.clock.now(now), this.deps.selfId)
    const keys = writes.map((w) => w.key)
    const records = writes.map((w) => encodeRecord(version, w.value, w.ttlMs > 0 ? now + w.ttlMs : 0))
    const required = requiredAcks(consistency, replicas.length)
    const tracker = new QuorumTracker(required, replicas.length)
    const timeoutMs = Math.max(1, Math.min(this.config.replicaTimeoutMs, deadlineMs - now))
    return new Promise((resolve, reject) => {
      let settled = false
      let lastError: KumoError | undefined
      const onAck = (): void => {
        if (!settled && tracker.ack() === 'met') {
          settled = true
          resolve()
        }
      }
      const onFail = (err: unknown): void => {
        lastError = toKumoError(err)
        if (!settled && tracker.fail() === 'failed') {
          settled = true
          reject(
            new KumoError(
              'UNAVAILABLE',
              `write reached ${tracker.acknowledged} of ${required} required replicas (${consistency}): ${lastError.message}`,
            ),
          )
        }
      }
      const usedFallbacks = new Set<string>()
      // A replica that is down or fails gets a hint: on a fallback node (counting toward W
      // when sloppy), or, when there is none, on this node (not counting).
      const onReplicaFailure = (id: string, err: unknown): void => {
        const fallback = this.fallbackFor(partition, replicas, usedFallbacks)
        if (fallback !== undefined) usedFallbacks.add(fallback)
        this.storeHint(fallback, id, partition, keys, records, timeoutMs).then(
          () => {
            if (fallback !== undefined && this.config.quorum === 'sloppy') onAck()
            else onFail(err)
          },
          () => onFail(err),
        )
      }
      for (const id of replicas) {
        if (id !== this.deps.selfId && !this.deps.membership.isAlive(id)) {
          onReplicaFailure(id, new KumoError('UNAVAILABLE', `node ${id} is down`))
          continue
        }
        this.writeReplica(id, partition, keys, records, timeoutMs).then(onAck, (err) => onReplicaFailure(id, err))
      }
    })
  }

  /** The first live node after the preference list, in a per-partition ring order. */
  private fallbackFor(partition: number, replicas: readonly string[], used: Set<string>): string | undefined {
    const nodes = this.partitionMap.nodes
    for (let i = 0; i < nodes.length; i++) {
      const id = nodes[(partition + i) % nodes.length]!
      if (replicas.includes(id) || used.has(id) || id === this.deps.selfId) continue
      if (this.deps.membership.isAlive(id)) return id
    }
    return undefined
  }

  /** Stores records as hints for `target` on `holder` (this node when undefined). */
  private async storeHint(
    holder: string | undefined,
    target: string,
    partition: number,
    keys: Buffer[],
    records: Buffer[],
    timeoutMs: number,
  ): Promise<void> {
    if (holder === undefined || holder === this.deps.selfId) {
      await this.deps.storage.putHints(
        keys.map((key, i) => ({ target, partition, key, record: records[i]! })),
        Date.now(),
      )
      return
    }
    const address = this.deps.membership.address(holder)
    if (address === undefined) throw new KumoError('UNAVAILABLE', `no address known for node ${holder}`)
    await this.deps.peers
      .get(holder, address)
      .request({ ...noPeerFields, op: 'HINT', partition, keys, records, hintTarget: target }, timeoutMs)
  }

  private async batch(req: RequestMsg, consistency: Consistency, deadlineMs: number, forwarded: boolean): Promise<void> {
    const ops = req.ops
    checkBatch(ops.map((op) => ({ key: op.key, value: op.type === 'PUT' ? op.value : undefined })))
    for (const op of ops) checkTtl(op.ttlMs)
    if (ops.length === 0) return
    const byPartition = new Map<number, BatchOpMsg[]>()
    const count = this.partitionMap.partitionCount
    for (const op of ops) {
      const p = partitionOf(op.key, count)
      let group = byPartition.get(p)
      if (group === undefined) byPartition.set(p, (group = []))
      group.push(op)
    }
    const results = await Promise.allSettled(
      [...byPartition].map(([partition, group]) => {
        const replicas = this.replicasOf(partition)
        if (!forwarded && !replicas.includes(this.deps.selfId)) {
          const sub: RequestMsg = { ...req, ops: group }
          return this.forward(sub, replicas, deadlineMs).then((answer) => {
            if (answer.errorCode) throw new KumoError(answer.errorCode as KumoError['code'], answer.errorMessage)
          })
        }
        const writes = group.map((op) => ({
          key: op.key,
          value: op.type === 'DEL' ? undefined : op.value,
          ttlMs: op.ttlMs,
        }))
        return this.replicate(partition, writes, replicas, consistency, deadlineMs)
      }),
    )
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed.length > 0) {
      const first = toKumoError(failed[0]!.reason)
      throw new KumoError(
        first.code,
        `${failed.length} of ${results.length} partition groups of the batch failed (each group is atomic on each replica): ${first.message}`,
      )
    }
  }
}

function reply(id: number, value: Buffer | undefined): ResponseMsg {
  return {
    id,
    errorCode: '',
    errorMessage: '',
    found: value !== undefined,
    value: value ?? emptyBuffer,
  }
}
