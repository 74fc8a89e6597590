import { createPicker, type LoadBalancing, type ReplicaPicker, type ReplicaStats, stickyOrder } from '../core/balancing.js'
import { parseConsistency, requiredAcks, type Consistency } from '../core/consistency.js'
import { KumoError, toKumoError } from '../core/errors.js'
import type { HybridClock } from '../core/hlc.js'
import { extraWriteLists, writeLists } from '../core/handoff.js'
import { removedOf, replicaSetIds } from '../core/partition-map.js'
import { partitionOf } from '../core/partitioner.js'
import { QuorumTracker } from '../core/quorum.js'
import { transferAllowanceMs } from '../core/responsiveness.js'
import { digestOutcome, withFetched, type DigestOutcome, type ReplicaRecords } from '../core/digest-read.js'
import { encodeRecord, liveValue } from '../core/record.js'
import { checkBatch, checkGetMany, checkKey, checkRecords, checkTtl, checkValue } from '../core/validate.js'
import { encodeVersion, hlcBytes, versionTimestamp } from '../core/version.js'
import type { Membership } from '../cluster/membership.js'
import type { StorageEngine } from '../storage/engine.js'
import { requestMsgBytes, type RequestMsg, type ResponseMsg } from '../wire/messages.js'
import type { PeerPool } from '../wire/peer-channel.js'
import { noPeerFields } from '../wire/peer-fields.js'
import { PerTurn } from '../wire/per-turn.js'
import type { HintSink } from './hint-sink.js'

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
  /** A node whose clock is further than this from the cluster's coordinates no writes (it stamps no versions). */
  clockOffsetMaxMs: number
}

export interface CoordinatorDeps {
  selfId: string
  storage: StorageEngine
  membership: Membership
  peers: PeerPool
  clock: HybridClock
  /** This replica's records, as ReplicaServiceDeps.readRecords. */
  readRecords: (partitions: readonly number[], keys: readonly Buffer[]) => Promise<(Buffer | undefined)[]>
  hints: HintSink
  /** Whether this node's own storage fails writes (StorageHealth). */
  storageFailing: () => boolean
}

interface KeyWrite {
  key: Buffer
  value: Buffer | undefined
  ttlMs: number
  /** Already stamped by the client (REPLICATE): written as it is. */
  record?: Buffer
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
  private readonly turnOrder = new PerTurn<string[]>()

  constructor(
    private readonly deps: CoordinatorDeps,
    private readonly config: CoordinatorConfig,
  ) {
    this.picker = createPicker(config.loadBalancing)
    this.stats = {
      inFlight: (id) => (id === deps.selfId ? 0 : (deps.peers.find(id)?.inFlight ?? 0)),
      answerMs: (id) => (id === deps.selfId ? undefined : deps.peers.find(id)?.answerMs()),
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
  /** `clientEpoch`: the map epoch of the client that sent `req` (0: unknown), for its direct writes. */
  async handle(req: RequestMsg, forwarded = false, clientEpoch = 0): Promise<ResponseMsg> {
    try {
      const deadlineMs = Date.now() + (req.timeoutMs > 0 ? req.timeoutMs : this.config.requestTimeoutMs)
      const consistency = parseConsistency(req.consistency, this.config.defaultConsistency)
      if (coordinatedWrites.has(req.op)) this.checkClock()
      switch (req.op) {
        case 'GET': {
          checkKey(req.key)
          const [value] = await this.getMany(req, [req.key], consistency, deadlineMs, forwarded)
          return reply(req.id, value)
        }
        case 'GET_MANY': {
          checkGetMany(req.keys.length)
          for (const key of req.keys) checkKey(key)
          const values = await this.getMany(req, req.keys, consistency, deadlineMs, forwarded, this.skipped(req))
          const res = reply(req.id, undefined)
          res.values = values.map((v) => ({ found: v !== undefined, value: v ?? emptyBuffer }))
          return res
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
        case 'BATCH': {
          const ops = req.ops
          checkBatch(ops.map((op) => ({ key: op.key, value: op.type === 'PUT' ? op.value : undefined })))
          for (const op of ops) checkTtl(op.ttlMs)
          const writes = ops.map((op) => ({ key: op.key, value: op.type === 'DEL' ? undefined : op.value, ttlMs: op.ttlMs }))
          await this.write(req, writes, consistency, deadlineMs, forwarded)
          return reply(req.id, undefined)
        }
        case 'REPLICATE': {
          this.observe(checkRecords(req.keys, req.records, this.clusterNowMs()))
          const writes = req.keys.map((key, i) => ({ key, value: undefined, ttlMs: 0, record: req.records[i]! }))
          await this.write(req, writes, consistency, deadlineMs, forwarded, this.skipped(req))
          return reply(req.id, undefined)
        }
        case 'REPLICA_READ': {
          // Records for `keys`, and only their headers for `versionKeys` (the other replicas
          // of a digest read).
          const versionKeys = req.versionKeys
          checkGetMany(req.keys.length + versionKeys.length)
          for (const key of req.keys) checkKey(key)
          for (const key of versionKeys) checkKey(key)
          const partitions = this.heldPartitions(req.keys, false)
          const versionPartitions = versionKeys.length === 0 ? [] : this.heldPartitions(versionKeys, false)
          const [records, headers] = await Promise.all([
            req.keys.length === 0 ? [] : this.deps.readRecords(partitions, req.keys),
            versionKeys.length === 0 ? [] : this.deps.storage.getHeadersAt(versionPartitions, versionKeys),
          ])
          const res = reply(req.id, undefined)
          res.records = new Array(records.length)
          for (let i = 0; i < records.length; i++) res.records[i] = records[i] ?? emptyBuffer
          if (versionKeys.length > 0) {
            res.versions = new Array(headers.length)
            for (let i = 0; i < headers.length; i++) res.versions[i] = headers[i] ?? emptyBuffer
          }
          return res
        }
        case 'REPLICA_WRITE': {
          this.observe(checkRecords(req.keys, req.records, this.clusterNowMs()))
          const partitions = this.heldPartitions(req.keys, true)
          this.checkClientMap(partitions, clientEpoch)
          await this.deps.storage.applyRecords(req.keys.map((key, i) => ({ partition: partitions[i]!, key, record: req.records[i]! })))
          return reply(req.id, undefined)
        }
        case 'STORE_HINTS': {
          // A client's direct write that a replica missed: held here, delivered when it answers.
          checkRecords(req.keys, req.records, this.clusterNowMs())
          const map = this.partitionMap
          if (!map.nodes.includes(req.hintTarget) && !removedOf(map).includes(req.hintTarget)) {
            throw new KumoError('INVALID_ARGUMENT', `hint target ${JSON.stringify(req.hintTarget)} is not a node of the cluster`)
          }
          const partitions = req.keys.map((key) => partitionOf(key, map.partitionCount))
          // Also for a target that no longer takes the partition's writes (the client planned
          // the write on a map from before a membership change moved it): delivery hands such
          // hints to the partition's current owners, one of which may be the replica the client
          // did not know of. Refusing them would leave that replica without the write.
          await this.deps.hints.store(undefined, req.hintTarget, partitions, req.keys, req.records, this.config.replicaTimeoutMs)
          return reply(req.id, undefined)
        }
        default:
          throw new KumoError('INVALID_ARGUMENT', `unknown operation ${JSON.stringify(req.op)}`)
      }
    } catch (err) {
      const error = toKumoError(err)
      return { id: req.id, errorCode: error.code, errorMessage: error.message, found: false, value: emptyBuffer }
    }
  }

  /**
   * The partition of each key, for a client that reads or writes this node's replicas
   * directly: every key must be of a partition this node reads (or, for a write, takes writes
   * of: a new replica catching up, an old one retiring), or the client's map is stale.
   */
  private heldPartitions(keys: readonly Buffer[], write: boolean): number[] {
    const map = this.partitionMap
    const lists = write ? writeLists(map) : map.replicas
    const partitions = new Array<number>(keys.length)
    for (let i = 0; i < keys.length; i++) {
      const partition = partitionOf(keys[i]!, map.partitionCount)
      if (!lists[partition]!.includes(this.deps.selfId)) {
        throw new KumoError('UNAVAILABLE', `node ${this.deps.selfId} holds no replica of partition ${partition} (partition map epoch ${map.epoch})`)
      }
      partitions[i] = partition
    }
    return partitions
  }

  /**
   * A client's direct write to a partition a membership change moves, sent with a map older
   * than the change (or than its latest wave), went to the old replicas only, counting W of them: the new replicas might
   * never see it before reads move to them. Refused (the client hands the write to a node,
   * which writes the whole write set, and refreshes its map from this answer's epoch).
   */
  private checkClientMap(partitions: readonly number[], clientEpoch: number | undefined): void {
    const map = this.partitionMap
    if (map.change === undefined || clientEpoch === undefined || clientEpoch === 0 || clientEpoch >= (map.change.waveEpoch ?? map.change.epoch)) return
    const extra = extraWriteLists(map)
    for (const p of partitions) {
      if (extra[p]!.length > 0) {
        throw new KumoError('UNAVAILABLE', `partition ${p} is moving (membership change of map epoch ${map.change.epoch}, its latest wave staged at ${map.change.waveEpoch ?? map.change.epoch}) and the client's map (epoch ${clientEpoch}) predates it: write through a node, and refresh the map`)
      }
    }
  }

  /** Replicas the client found unresponsive just now (RequestMsg.unresponsive), bounded: at most a preference list's worth. */
  private skipped(req: RequestMsg): ReadonlySet<string> {
    return req.unresponsive.length === 0 ? noneSkipped : new Set(req.unresponsive.slice(0, 16))
  }

  /** This node's clock corrected by the cluster's (the median of the live nodes' clocks). */
  private clusterNowMs(): number {
    return Date.now() + this.deps.membership.clusterOffsetMs()
  }

  /**
   * A node whose clock is far from the cluster's stamps no versions: they would sort writes
   * wrongly (ahead: later writes by correct nodes lost; behind: its own writes lost). It says
   * why, and the client takes the write to another node.
   */
  private checkClock(): void {
    const skewMs = -this.deps.membership.clusterOffsetMs()
    if (Math.abs(skewMs) > this.config.clockOffsetMaxMs) {
      throw new KumoError(
        'UNAVAILABLE',
        `node ${this.deps.selfId}'s clock is ${(Math.abs(skewMs) / 1000).toFixed(1)} s ${skewMs > 0 ? 'ahead of' : 'behind'} the cluster's (limit ${this.config.clockOffsetMaxMs / 1000} s): it coordinates no writes until its clock is fixed`,
      )
    }
  }

  /** Whether a replica can take a write now: alive, answering this node, and its storage writable. */
  private writable(id: string): boolean {
    if (id === this.deps.selfId) return !this.deps.storageFailing()
    return this.deps.membership.isAlive(id) && this.deps.membership.isWritable(id) && this.deps.peers.find(id)?.usable !== false
  }

  /** Whether a peer may be asked now: not down, and not avoided for leaving a request unanswered. */
  private askable(id: string): boolean {
    return id === this.deps.selfId || (this.deps.membership.isAlive(id) && this.deps.peers.find(id)?.usable !== false)
  }

  /** How long a replica request of `bytes` to `id` may wait: its measured answer times, within the deadline. */
  private timeoutFor(id: string, deadlineMs: number, bytes = 0): number {
    const allowance = transferAllowanceMs(bytes)
    const measured = this.deps.peers.find(id)?.replicaTimeoutMs(bytes) ?? this.config.replicaTimeoutMs + allowance
    return Math.max(1, Math.min(this.config.replicaTimeoutMs + allowance, measured, deadlineMs - Date.now()))
  }

  /** Later writes this node stamps sort above `version` (the newest of a write it applies). */
  observe(version: Buffer | undefined): void {
    if (version !== undefined && version.length >= hlcBytes) this.deps.clock.observe(versionTimestamp(version), Date.now())
  }

  /**
   * Live replicas in the order the balancing policy prefers. The policy orders all live nodes
   * once per event-loop turn, so the reads of one turn go to the same replicas in one frame.
   */
  private ordered(replicas: readonly string[]): string[] {
    const order = this.turnOrder.get(() => this.picker.order(this.partitionMap.nodes.filter((id) => this.askable(id)), this.stats))
    return stickyOrder(order.filter((id) => replicas.includes(id)), this.config.loadBalancing, this.picker, this.stats)
  }

  /**
   * Splits keys into groups that share a preference list, so each group is one message per
   * replica. Keys of partitions this node does not hold (and may not coordinate) are set apart.
   * For writes (`write`), a group is a partition's write set: while a membership change moves
   * it, its new replicas (or retiring old ones) as well, each needing an acknowledgement more.
   */
  private group<T extends { key: Buffer }>(items: readonly T[], forwarded: boolean, write = false): { groups: Group<T>[]; foreign: T[] } {
    const map = this.partitionMap
    const lists = write ? writeLists(map) : map.replicas
    const extras = write && map.targets !== undefined ? extraWriteLists(map) : undefined
    if (items.length === 1) {
      // The common case, one key: no grouping work.
      const partition = partitionOf(items[0]!.key, map.partitionCount)
      const replicas = lists[partition]!
      if (!forwarded && !replicas.includes(this.deps.selfId)) return { groups: [], foreign: [items[0]!] }
      return { groups: [{ replicas, extra: extras?.[partition]!.length ?? 0, items: [items[0]!], partitions: [partition], indexes: [0] }], foreign: [] }
    }
    const byList = new Map<string, Group<T>>()
    const foreign: T[] = []
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!
      const partition = partitionOf(item.key, map.partitionCount)
      const replicas = lists[partition]!
      if (!forwarded && !replicas.includes(this.deps.selfId)) {
        foreign.push(item)
        continue
      }
      const extra = extras?.[partition]!.length ?? 0
      const id = extra === 0 ? replicaSetIds(lists)[partition]! : `${replicaSetIds(lists)[partition]!}\u0001${extra}`
      let group = byList.get(id)
      if (group === undefined) byList.set(id, (group = { replicas, extra, items: [], partitions: [], indexes: [] }))
      group.items.push(item)
      group.partitions.push(partition)
      group.indexes.push(i)
    }
    return { groups: [...byList.values()], foreign }
  }

  /** Sends the request to a replica (trying the next one on failure) and returns its answer. */
  private async forward(req: RequestMsg, replicas: readonly string[], deadlineMs: number): Promise<ResponseMsg> {
    let lastError = new KumoError('UNAVAILABLE', 'no replica of this key is reachable')
    for (const id of this.ordered(replicas)) {
      const address = this.deps.membership.address(id)
      const remaining = deadlineMs - Date.now()
      // Found unresponsive while an earlier replica was tried: not worth waiting on.
      if (address === undefined || !this.askable(id)) continue
      if (remaining <= 0) throw new KumoError('TIMEOUT', 'request deadline passed while forwarding')
      // The replica coordinates it: its answer time plus its own replicas' timeout, at most.
      const attemptMs = Math.max(1, Math.min(remaining, this.timeoutFor(id, deadlineMs, requestMsgBytes(req)) + this.config.replicaTimeoutMs))
      try {
        const res = await this.deps.peers
          .get(id, address)
          .request({ ...noPeerFields, op: 'FORWARD', forward: { ...req, timeoutMs: attemptMs } }, attemptMs)
        const answer = res.forward!
        if (answer.errorCode === 'UNAVAILABLE' || answer.errorCode === 'NOT_SERVING') {
          lastError = new KumoError(answer.errorCode, answer.errorMessage)
          continue
        }
        if (answer.errorCode) throw new KumoError(answer.errorCode as KumoError['code'], answer.errorMessage)
        return answer
      } catch (err) {
        lastError = toKumoError(err)
        // A replica that did not answer in time: the next one may.
        if (!lastError.retryable && lastError.code !== 'TIMEOUT') throw lastError
      }
    }
    throw lastError
  }

  /**
   * Forwards the items of partitions this node holds no replica of: one request per preference
   * list, built by `build` from that list's items. Answers come back in the items' order.
   */
  private async forwardForeign<T extends { key: Buffer }>(
    items: T[],
    build: (items: T[]) => RequestMsg,
    deadlineMs: number,
  ): Promise<{ item: T; answer: ResponseMsg; position: number }[]> {
    const map = this.partitionMap
    const byList = new Map<string, { replicas: readonly string[]; items: T[] }>()
    for (const item of items) {
      const partition = partitionOf(item.key, map.partitionCount)
      const replicas = map.replicas[partition]!
      const id = replicaSetIds(map.replicas)[partition]!
      let group = byList.get(id)
      if (group === undefined) byList.set(id, (group = { replicas, items: [] }))
      group.items.push(item)
    }
    const answered = await Promise.all(
      [...byList.values()].map(async (g) => {
        const answer = await this.forward(build(g.items), g.replicas, deadlineMs)
        return g.items.map((item, position) => ({ item, answer, position }))
      }),
    )
    return answered.flat()
  }

  private async getMany(
    req: RequestMsg,
    keys: readonly Buffer[],
    consistency: Consistency,
    deadlineMs: number,
    forwarded: boolean,
    skip: ReadonlySet<string> = noneSkipped,
  ): Promise<(Buffer | undefined)[]> {
    const out: (Buffer | undefined)[] = new Array(keys.length)
    const items = keys.map((key, index) => ({ key, index }))
    const { groups, foreign } = this.group(items, forwarded)
    // Expiry by the cluster's clock, not this node's alone: a node whose clock is off must not
    // expire values early or late.
    const now = this.clusterNowMs()
    const work: Promise<void>[] = groups.map(async (group) => {
      const records = await this.readGroup(group, consistency, deadlineMs, skip)
      for (let i = 0; i < records.length; i++) out[group.items[i]!.index] = liveValue(records[i], now)
    })
    if (foreign.length > 0) {
      // Forwarded as one GET_MANY per preference list, whatever came in.
      work.push(
        this.forwardForeign(foreign, (group) => ({ ...req, op: 'GET_MANY', key: emptyBuffer, keys: group.map((f) => f.key) }), deadlineMs).then(
          (answers) => {
            for (const { item, answer, position } of answers) {
              const value = answer.values?.[position]
              out[item.index] = value?.found ? value.value : undefined
            }
          },
        ),
      )
    }
    await Promise.all(work)
    return out
  }

  /**
   * The newest record per key among R replicas of one preference list (read repair after).
   * A digest read (`digest`): the first replica asked (this node's own copy when it holds one)
   * sends the records, the others only their headers; a key whose newest version only a header
   * names is fetched from that replica before the read answers (see digest-read.ts). Where a
   * fetch fails, or finds the version gone, the group is read again with whole records from
   * every replica asked.
   */
  private readGroup(group: Group<{ key: Buffer }>, consistency: Consistency, deadlineMs: number, skip: ReadonlySet<string>, digest = true): Promise<(Buffer | undefined)[]> {
    const replicas = group.replicas
    const keys = group.items.map((i) => i.key)
    const required = requiredAcks(consistency, replicas.length)
    const ordered = this.ordered(replicas)
    const candidates = ordered.filter((id) => !skip.has(id))
    // The local replica costs no network hop: ask it first.
    const self = candidates.indexOf(this.deps.selfId)
    if (self > 0) candidates.unshift(...candidates.splice(self, 1))
    // Replicas the client found unresponsive but this node still reaches are asked last, only
    // when the others cannot make R: the client's view may hold a replica that was merely slow
    // to it (a busy machine, a burst of hint delivery after a heal), and a read failed for that
    // would be a read failed needlessly. One this node cannot reach either costs it a replica
    // timeout once; from then on this node avoids it too and fails at once.
    const lastResort = candidates.length < required ? ordered.filter((id) => skip.has(id)) : []
    candidates.push(...lastResort)
    if (candidates.length < required) {
      return Promise.reject(
        new KumoError('UNAVAILABLE', `read needs ${required} replicas; only ${candidates.length} of ${replicas.length} are up`),
      )
    }
    return new Promise((resolve, reject) => {
      const answers = new Map<string, ReplicaRecords>()
      let next = 0
      let outstanding = 0
      // Whether a replica asked for whole records is outstanding or answered: in a digest read
      // every other ask is for headers, and a failed whole ask hands that role to the next
      // replica asked. Otherwise every ask is for whole records.
      let wholeAsked = false
      let settled = false
      let lastError: KumoError | undefined
      const finish = (): void => {
        settled = true
        const ids = [...answers.keys()]
        const given = [...answers.values()]
        let outcome: DigestOutcome
        try {
          outcome = digestOutcome(given, keys.length)
        } catch (err) {
          reject(new KumoError('INTERNAL', `replica answers could not be compared: ${(err as Error).message}`))
          return
        }
        if (outcome.fetch === undefined) {
          resolve(outcome.newest)
          this.repair(ids, group.partitions, keys, outcome)
          return
        }
        this.fetchNewer(ids, given, group.partitions, keys, outcome.fetch, deadlineMs)
          .then((newest) => newest ?? this.readGroup(group, consistency, deadlineMs, skip, false))
          .then(resolve, reject)
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
          // Found unresponsive since the read began: not worth waiting on.
          if (!this.askable(id)) continue
          const whole = !digest || !wholeAsked
          wholeAsked = true
          outstanding++
          this.readReplica(id, group.partitions, keys, deadlineMs, !whole).then(
            (records) => {
              outstanding--
              answers.set(id, { records, whole })
              step()
            },
            (err) => {
              outstanding--
              if (digest && whole) wholeAsked = false
              lastError = toKumoError(err)
              // A replica the client found unresponsive did not answer this node either: it is
              // unreachable, not slow (the client is told so, not to wait longer).
              if (lastError.code === 'TIMEOUT' && lastResort.includes(id)) lastError = new KumoError('UNAVAILABLE', `replica ${id} is unresponsive: ${lastError.message}`)
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

  /**
   * Where only a header names a key's newest version: fetches those records from the replicas
   * that answered the headers. Resolves undefined when the group should be read again whole (a
   * fetch failed, or the replica no longer held what its header named: a purge between).
   */
  private async fetchNewer(
    ids: string[],
    answers: ReplicaRecords[],
    partitions: number[],
    keys: Buffer[],
    fetch: Map<number, number[]>,
    deadlineMs: number,
  ): Promise<(Buffer | undefined)[] | undefined> {
    const fetched = await Promise.all(
      [...fetch].map(async ([a, indexes]) => {
        const records = await this.readReplica(ids[a]!, indexes.map((i) => partitions[i]!), indexes.map((i) => keys[i]!), deadlineMs, false).catch(() => undefined)
        const merged = records === undefined ? undefined : withFetched(answers[a]!, indexes, records)
        if (merged === undefined) return false
        answers[a] = merged
        return true
      }),
    )
    if (!fetched.every(Boolean)) return undefined
    const outcome = digestOutcome(answers, keys.length)
    if (outcome.fetch !== undefined) return undefined
    this.repair(ids, partitions, keys, outcome)
    return outcome.newest
  }

  /** Read repair of the replicas an outcome found stale: best effort; anti-entropy catches what it misses. */
  private repair(ids: string[], partitions: number[], keys: Buffer[], outcome: DigestOutcome): void {
    const { newest, stale } = outcome
    stale?.forEach((indexes, a) => {
      if (indexes.length === 0) return
      void this.writeReplica(
        ids[a]!,
        indexes.map((i) => partitions[i]!),
        indexes.map((i) => keys[i]!),
        indexes.map((i) => newest[i]!),
        this.config.replicaTimeoutMs,
      ).catch(() => undefined)
    })
  }

  /** One replica's records for `keys` (an empty Buffer where it holds none), or their headers only. */
  private async readReplica(id: string, partitions: number[], keys: Buffer[], deadlineMs: number, headersOnly: boolean): Promise<Buffer[]> {
    if (id === this.deps.selfId) {
      const records = await (headersOnly ? this.deps.storage.getHeadersAt(partitions, keys) : this.deps.readRecords(partitions, keys))
      return records.map((r) => r ?? emptyBuffer)
    }
    const address = this.deps.membership.address(id)
    if (address === undefined) throw new KumoError('UNAVAILABLE', `no address known for node ${id}`)
    const res = await this.deps.peers.get(id, address).request({ ...noPeerFields, op: 'READ', ...partitionFields(partitions), keys, headersOnly }, this.timeoutFor(id, deadlineMs))
    if (res.records.length !== keys.length) throw new KumoError('INTERNAL', `replica ${id} answered ${res.records.length} records for ${keys.length} keys`)
    return res.records
  }

  private async writeReplica(id: string, partitions: number[], keys: Buffer[], records: Buffer[], timeoutMs: number): Promise<void> {
    if (id === this.deps.selfId) {
      await this.deps.storage.applyRecords(keys.map((key, i) => ({ partition: partitions[i]!, key, record: records[i]! })))
      return
    }
    const address = this.deps.membership.address(id)
    if (address === undefined) throw new KumoError('UNAVAILABLE', `no address known for node ${id}`)
    await this.deps.peers.get(id, address).request({ ...noPeerFields, op: 'WRITE', ...partitionFields(partitions), keys, records }, timeoutMs)
  }

  /**
   * Writes (one put, one delete, or a batch) stamped with one version. Keys are grouped by
   * preference list; each group is one atomic write on each of its replicas.
   */
  private async write(req: RequestMsg, writes: KeyWrite[], consistency: Consistency, deadlineMs: number, forwarded: boolean, skip: ReadonlySet<string> = noneSkipped): Promise<void> {
    if (writes.length === 0) return
    const { groups, foreign } = this.group(writes, forwarded, true)
    const work: Promise<unknown>[] = groups.map((group) => this.replicate(group, consistency, deadlineMs, skip))
    if (foreign.length > 0) {
      // Forwarded as one BATCH per preference list, whatever came in.
      work.push(
        this.forwardForeign(
          foreign,
          (group) =>
            group[0]!.record !== undefined
              ? { ...req, op: 'REPLICATE', key: emptyBuffer, keys: group.map((w) => w.key), records: group.map((w) => w.record!) }
              : {
                  ...req,
                  op: 'BATCH',
                  ops: group.map((w) => ({ type: w.value === undefined ? ('DEL' as const) : ('PUT' as const), key: w.key, value: w.value ?? emptyBuffer, ttlMs: w.ttlMs })),
                },
          deadlineMs,
        ),
      )
    }
    const results = await Promise.allSettled(work)
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed.length > 0) {
      const first = toKumoError(failed[0]!.reason)
      if (results.length === 1) throw first
      throw new KumoError(
        first.code,
        `${failed.length} of ${results.length} replica groups of the batch failed (each group is atomic on each replica): ${first.message}`,
      )
    }
  }

  /**
   * Sends one group's writes to every replica; resolves at W acknowledgements. A replica that
   * cannot take the write now (down, avoided for leaving a request unanswered, storage failing)
   * or that fails it in any way gets a hint instead, at once.
   */
  private replicate(group: Group<KeyWrite>, consistency: Consistency, deadlineMs: number, skip: ReadonlySet<string>): Promise<void> {
    const replicas = group.replicas
    const now = Date.now()
    const keys = group.items.map((w) => w.key)
    const version = group.items[0]!.record === undefined ? encodeVersion(this.deps.clock.now(now), this.deps.selfId) : undefined
    const records = group.items.map((w) => w.record ?? encodeRecord(version!, w.value, w.ttlMs > 0 ? now + w.ttlMs : 0))
    const partitions = group.partitions
    // W of the read replicas, plus one per extra write replica (a membership change: pending
    // replicas, retiring ones), so quorums of the old list and of the new one both hold it.
    const required = requiredAcks(consistency, replicas.length - group.extra) + group.extra
    const tracker = new QuorumTracker(required, replicas.length)
    let bytes = 0
    for (let i = 0; i < keys.length; i++) bytes += keys[i]!.length + records[i]!.length
    const hintTimeoutMs = Math.max(1, Math.min(this.config.replicaTimeoutMs + transferAllowanceMs(bytes), deadlineMs - now))
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
      // A replica that cannot take the write or fails it gets a hint: on a fallback node
      // (counting toward W when sloppy), or, when there is none, on this node (not counting).
      const onReplicaFailure = (id: string, err: unknown): void => {
        const fallback = this.fallbackFor(partitions[0]!, replicas, usedFallbacks)
        if (fallback !== undefined) usedFallbacks.add(fallback)
        this.deps.hints.store(fallback, id, partitions, keys, records, hintTimeoutMs).then(
          () => {
            if (fallback !== undefined && this.config.quorum === 'sloppy') onAck()
            else onFail(err)
          },
          () => onFail(err),
        )
      }
      // Replicas the client found unresponsive are skipped only while the others can still make
      // W: the client's view may hold a replica that was merely slow to it (jitter, a busy
      // machine), and failing a write this node could have completed would fail it needlessly.
      // One this node cannot reach either costs a replica timeout, then a hint, as any failure.
      const honoured = this.honouredSkips(partitions[0]!, replicas, skip, required)
      for (const id of replicas) {
        if (honoured.has(id) && id !== this.deps.selfId) {
          onReplicaFailure(id, new KumoError('UNAVAILABLE', `node ${id} left the client's request unanswered`))
          continue
        }
        if (!this.writable(id)) {
          onReplicaFailure(id, new KumoError('UNAVAILABLE', `node ${id} cannot take writes now (${this.whyNotWritable(id)})`))
          continue
        }
        // The cap, not the replica's usual answer time (DirectPath.writeTimeoutFor says why).
        const timeoutMs = Math.max(1, Math.min(this.config.replicaTimeoutMs + transferAllowanceMs(bytes), deadlineMs - Date.now()))
        this.writeReplica(id, partitions, keys, records, timeoutMs).then(onAck, (err) => onReplicaFailure(id, err))
      }
    })
  }

  /**
   * Of the replicas the client skipped, those this write skips too: all of them when the rest
   * can still make `required` (counting, under a sloppy quorum, a hint on a fallback node for
   * each skipped replica while fallbacks last, as replicate() does), none otherwise.
   */
  private honouredSkips(partition: number, replicas: readonly string[], skip: ReadonlySet<string>, required: number): ReadonlySet<string> {
    if (skip.size === 0) return noneSkipped
    let others = 0
    let skipped = 0
    for (const id of replicas) {
      if (id !== this.deps.selfId && skip.has(id)) skipped++
      else if (this.writable(id)) others++
    }
    if (this.config.quorum === 'sloppy') {
      const used = new Set<string>()
      for (let i = 0; i < skipped && others < required; i++) {
        const fallback = this.fallbackFor(partition, replicas, used)
        if (fallback === undefined) break
        used.add(fallback)
        others++
      }
    }
    return others >= required ? skip : noneSkipped
  }

  private whyNotWritable(id: string): string {
    if (id === this.deps.selfId) return 'its storage fails writes'
    if (!this.deps.membership.isAlive(id)) return 'down'
    if (!this.deps.membership.isWritable(id)) return 'its storage fails writes'
    return 'it left a request unanswered; probing it'
  }

  /** The first node after the preference list that can take writes, in a per-partition ring order. */
  private fallbackFor(partition: number, replicas: readonly string[], used: Set<string>): string | undefined {
    const nodes = this.partitionMap.nodes
    for (let i = 0; i < nodes.length; i++) {
      const id = nodes[(partition + i) % nodes.length]!
      if (replicas.includes(id) || used.has(id) || id === this.deps.selfId) continue
      if (this.writable(id)) return id
    }
    return undefined
  }
}

const coordinatedWrites = new Set(['PUT', 'DEL', 'BATCH', 'REPLICATE'])
const noneSkipped: ReadonlySet<string> = new Set()

interface Group<T> {
  replicas: readonly string[]
  /** Of `replicas`, how many are extra write replicas (pending or retiring), each needing an acknowledgement more. */
  extra: number
  items: T[]
  /** Partition of each item. */
  partitions: number[]
  /** Position of each item in the request. */
  indexes: number[]
}

/** One partition for all keys goes in `partition`; several go per key in `partitions`. */
function partitionFields(partitions: number[]): { partition: number; partitions: number[] } {
  const first = partitions[0] ?? 0
  for (let i = 1; i < partitions.length; i++) if (partitions[i] !== first) return { partition: 0, partitions }
  return { partition: first, partitions: [] }
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
