import { createPicker, defaultLoadBalancing, loadBalancingPolicies, type LoadBalancing, type ReplicaPicker, type ReplicaStats, stickyOrder } from '../core/balancing.js'
import { parseConsistency, type Consistency } from '../core/consistency.js'
import { KumoError, toKumoError } from '../core/errors.js'
import { describeChange, extraWriteLists, movingSummary, pendingPartitionsOf, queuedPartitionsOf, writeLists } from '../core/handoff.js'
import { replicaSetIds, type MapChangeKind, type PartitionMap } from '../core/partition-map.js'
import { mapFromMsg } from '../wire/map-codec.js'
import { partitionOf } from '../core/partitioner.js'
import { scanLimitMax } from '../core/limits.js'
import { checkBatch, checkGetMany, checkKey, checkTimeout, checkTtl, checkValue, toBuffer, type Bytes } from '../core/validate.js'
import { requestMsg, requestMsgBytes, type RequestMsg, type ResponseMsg, type TopologyMsg } from '../wire/messages.js'
import { fromServiceError } from '../wire/status.js'
import { clientChannels, connectionHint, insecureChannels, type ChannelSecurity, type TlsOptions, type UserCredentials } from '../wire/channel-security.js'
import { PerTurn } from '../wire/per-turn.js'
import { defaultReplicaTimeoutMs, DirectPath } from './direct-path.js'
import { Responsiveness, responsivenessWithin } from '../core/responsiveness.js'
import { NodeConnection, type PlanMsg } from './node-connection.js'
import { planKinds, type PlanKind } from '../core/change-plan.js'
import { bulkLoad, type LoadOptions, type LoadProgress, type LoadRecord } from './bulk-load.js'

export interface ConnectOptions {
  /** host:port of one or more nodes; the rest of the cluster is learned from them. */
  seeds: string[]
  /** Default consistency for reads and writes (default quorum). */
  consistency?: Consistency
  /** Deadline of each call, retries included (default 5000 ms). */
  timeoutMs?: number
  /** How the client picks a replica (default least-connections). */
  loadBalancing?: LoadBalancing
  /** How often node states and the partition map are refreshed (default 1000 ms). */
  refreshIntervalMs?: number
  /**
   * Who coordinates reads and writes. 'client' (default): this client stamps versions and talks
   * to every replica itself, one hop (Dynamo's client-driven coordination), and hands a request
   * to a node whenever a replica is down or fails. 'node': each request goes to one node,
   * which coordinates it.
   */
  coordination?: Coordination
  /**
   * Client coordination: how long one replica may take before the request is handed to a
   * node instead (default 1000 ms, bounded by the call's own deadline).
   */
  replicaTimeoutMs?: number
  /**
   * TLS: the cluster's CA (PEM), and a client certificate and key for a user authenticated
   * by certificate. A node's certificate must name the node connected to (urn:kumo:node:<id>).
   */
  tls?: TlsOptions
  /** A user of the cluster's auth file; sent with every call (TLS only). */
  credentials?: UserCredentials
}

export type Coordination = 'client' | 'node'
export const coordinationModes: readonly Coordination[] = ['client', 'node']

export interface CallOptions {
  consistency?: Consistency
  timeoutMs?: number
}

export interface PutOptions extends CallOptions {
  /** Time to live in milliseconds; the key reads as absent afterwards. */
  ttlMs?: number
}

export type BatchOp =
  | { type: 'put'; key: Bytes; value: Bytes; ttlMs?: number }
  | { type: 'del'; key: Bytes }

export interface ScanOptions {
  prefix?: Bytes
  gte?: Bytes
  lt?: Bytes
  /** At most this many entries (default: all). */
  limit?: number
  /** Entries per message from the node (default 500). */
  pageSize?: number
  timeoutMs?: number
}

export interface NodeState {
  id: string
  address: string
  state: 'up' | 'suspect' | 'down'
  load: number
  weight: number
  hintsHeld: number
  /** Its storage fails writes (a full disk): it serves reads, and writes for it become hints. */
  readOnly: boolean
  /** How far its clock is from the cluster's (the median of the nodes' clocks), as the answering node measures. */
  clockOffsetMs: number
  /** Partitions it gained and is still copying from their other replicas (a membership change in flight). */
  partitionsFilling: number
  /** Records and bytes it copied into gained partitions since it started (as it reports itself; 0 in others' reports). */
  recordsCopied?: number
  bytesCopied?: number
  /** Partitions it holds data of without taking their writes, as of its last sweep (as it reports itself). */
  partitionsStray?: number
}

export interface RepairState {
  inProgress: boolean
  partitionsRepaired: number
  partitionsHeld: number
  oldestRepairMs: number
  lastRepairMs: number
}

export interface RepairReport {
  node: string
  partitions: number
  pulled: number
  pushed: number
  skipped: number
  durationMs: number
}

export interface Topology {
  epoch: number
  partitionCount: number
  replicationFactor: number
  nodes: NodeState[]
  /** Preference list per partition, primary first. */
  partitions: string[][]
  answeredBy: string
  /** Anti-entropy on the answering node. */
  repair: RepairState | undefined
  /** Nodes removed for good (kumo remove). */
  removed: string[]
  /**
   * The membership change in flight, if any: `targets` then holds each partition's new list
   * (the same as its preference list where it does not move), and `retiring` the replicas
   * its reads moved away from that still take its writes.
   */
  change: { epoch: number; kind: MapChangeKind; adds: string[]; removes: string[]; cancelled: boolean } | undefined
  targets: string[][] | undefined
  retiring: string[][] | undefined
  /** While a change moves partitions a wave at a time: each partition's end list (queued ones differ from `targets`). */
  goal: string[][] | undefined
}

const empty = Buffer.alloc(0)

/**
 * The nodes usable this turn, in the policy's order; `up[i]` is order[i]'s connection if it is
 * reported up, and `writable[i]` whether its storage takes writes.
 */
interface TurnView {
  order: string[]
  up: (NodeConnection | undefined)[]
  writable: boolean[]
}

function toTopology(msg: TopologyMsg): Topology {
  return {
    epoch: msg.epoch,
    partitionCount: msg.partitionCount,
    replicationFactor: msg.replicationFactor,
    nodes: msg.nodes.map((n) => ({ ...n, state: n.state as NodeState['state'], partitionsFilling: n.partitionsFilling ?? 0 })),
    partitions: msg.partitions.map((p) => p.nodes),
    answeredBy: msg.answeredBy,
    repair: msg.repair ?? undefined,
    removed: msg.removed ?? [],
    ...changeOf(msg),
  }
}

/** The change fields of a topology message (mapFromMsg checks and decodes them). */
function changeOf(msg: TopologyMsg): Pick<Topology, 'change' | 'targets' | 'retiring' | 'goal'> {
  const map = mapFromMsg(msg)
  if (map?.change === undefined) return { change: undefined, targets: undefined, retiring: undefined, goal: undefined }
  const { epoch, kind, adds, removes, cancelled } = map.change
  return {
    change: { epoch, kind, adds: [...adds], removes: [...removes], cancelled: cancelled === true },
    targets: map.targets!.map((l) => [...l]),
    retiring: map.retiring!.map((l) => [...l]),
    goal: map.goal?.map((l) => [...l]),
  }
}

/** The partition map a topology describes (its node states aside). */
export function topologyMap(topology: Topology): PartitionMap {
  const { change, targets, retiring, goal } = topology
  return {
    epoch: topology.epoch,
    partitionCount: topology.partitionCount,
    replicationFactor: topology.replicationFactor,
    nodes: [...new Set([...topology.partitions.flat(), ...(targets ?? []).flat(), ...(retiring ?? []).flat(), ...(goal ?? []).flat()])].sort(),
    replicas: topology.partitions,
    ...(topology.removed.length > 0 ? { removed: topology.removed } : {}),
    ...(change === undefined || targets === undefined || retiring === undefined
      ? {}
      : {
          // A partition that does not move shares its list (handoff's identity check).
          targets: targets.map((l, p) => (l.length === 0 || sameList(l, topology.partitions[p]!) ? topology.partitions[p]! : l)),
          retiring,
          ...(goal !== undefined ? { goal } : {}),
          change: { epoch: change.epoch, kind: change.kind, adds: change.adds, removes: change.removes, ...(change.cancelled ? { cancelled: true } : {}) },
        }),
  }
}

/** The membership change in flight, in words ("n4 joins (epoch 12), 40 partitions copying, 3 retiring"), or undefined. */
export function changeInWords(topology: Topology): string | undefined {
  const map = topologyMap(topology)
  return map.change === undefined ? undefined : `${describeChange(map.change)}, ${movingSummary(map)}`
}

/** Per partition, the nodes a write goes to, and how many of them are extra (pending or retiring replicas, each needing an acknowledgement more). */
function writeSetsOf(topology: Topology): { lists: readonly (readonly string[])[]; extra: readonly number[] } {
  if (topology.change === undefined) return { lists: topology.partitions, extra: [] }
  const map = topologyMap(topology)
  return { lists: writeLists(map), extra: extraWriteLists(map).map((l) => l.length) }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i])
}

/**
 * The embedded client. Partition-aware: it caches the partition map and sends each request
 * straight to a replica of its key, so the common path has no extra hop. A call that fails on
 * one replica is retried on the next within the call's deadline; a node the cluster reports
 * down is skipped until it is reported up again.
 */
export class KumoClient {
  private readonly connections = new Map<string, NodeConnection>()
  private topology_: Topology
  /**
   * The map epoch sent with request frames: the topology's, three turns late, so a frame never
   * claims a newer map than the one its requests were planned on (replicas refuse direct writes
   * planned on a map older than a change in flight; claiming an older one only costs a hand-off).
   */
  private stampEpoch = 0
  /** Per partition, where writes go while a membership change moves it (writeSetsOf). */
  private writeSets: { lists: readonly (readonly string[])[]; extra: readonly number[] } = { lists: [], extra: [] }
  private readonly picker: ReplicaPicker
  private readonly policy: LoadBalancing
  private readonly stats: ReplicaStats
  private readonly consistency: Consistency
  private readonly timeoutMs: number
  private refreshing: Promise<void> | undefined
  private readonly timer: NodeJS.Timeout
  private closed = false
  private readonly nodeState = new Map<string, NodeState>()
  /** Nodes that answered NOT_SERVING (draining): skipped until this time. */
  private readonly avoidUntil = new Map<string, number>()
  private readonly sent = new Map<string, number>()
  private readonly turn = new PerTurn<TurnView>()
  private readonly direct: DirectPath | undefined
  private readonly replicaTimeoutMs: number
  private readonly responsiveness = new Map<string, { address: string; state: Responsiveness }>()

  /** Use connect(). */
  constructor(
    topology: Topology,
    options: ConnectOptions,
    private readonly security: ChannelSecurity = insecureChannels,
  ) {
    this.consistency = parseConsistency(options.consistency, 'quorum')
    this.timeoutMs = options.timeoutMs ?? 5000
    this.replicaTimeoutMs = options.replicaTimeoutMs ?? defaultReplicaTimeoutMs
    this.policy = options.loadBalancing ?? defaultLoadBalancing
    this.picker = createPicker(this.policy)
    this.stats = {
      inFlight: (id) => this.connections.get(id)?.inFlight ?? 0,
      answerMs: (id) => this.connections.get(id)?.answerMs(),
      load: (id) => this.nodeState.get(id)?.load ?? 0,
      weight: (id) => this.nodeState.get(id)?.weight ?? 1,
    }
    this.topology_ = topology
    this.adopt(topology)
    this.direct =
      options.coordination === 'node'
        ? undefined
        : new DirectPath({
            writeTargets: (replicas) => this.writeTargets(replicas),
            hintHolder: (target) => {
              const { order, up, writable } = this.view()
              for (let i = 0; i < order.length; i++) if (order[i] !== target && up[i] !== undefined && writable[i]) return up[i]
              return undefined
            },
            replicasInOrder: (replicas) => this.replicasInOrder(replicas),
            coordinate: (key, req, timeoutMs) => this.call(key, req, timeoutMs),
            sending: (id) => this.sent.set(id, (this.sent.get(id) ?? 0) + 1),
            replicaFailed: (id, error) => {
              if (error.code === 'NOT_SERVING') this.avoid(id)
            },
          }, options.replicaTimeoutMs)
    this.timer = setInterval(() => void this.refresh().catch(() => undefined), options.refreshIntervalMs ?? 1000)
    this.timer.unref()
  }

  private adopt(topology: Topology): void {
    const epoch = topology.epoch
    if (this.stampEpoch === 0) this.stampEpoch = epoch
    else if (epoch > this.stampEpoch) {
      // Requests planned on the map before this one may still wait in a connection's merger
      // and frame batcher (a turn each): stamp frames with the new epoch only once they are sent.
      setImmediate(() => setImmediate(() => setImmediate(() => (this.stampEpoch = Math.max(this.stampEpoch, epoch)))))
    }
    this.topology_ = topology
    this.writeSets = writeSetsOf(topology)
    this.nodeState.clear()
    for (const node of topology.nodes) this.nodeState.set(node.id, node)
    this.turn.invalidate()
  }

  /** A draining node: no requests to it for a while, from this turn on. */
  private avoid(id: string): void {
    this.avoidUntil.set(id, Date.now() + 3000)
    this.turn.invalidate()
  }

  /** Per node, kept across its connections (a replaced connection must not make an avoided node look fresh). */
  private responsivenessOf(id: string, address: string): Responsiveness {
    let entry = this.responsiveness.get(id)
    if (entry === undefined || entry.address !== address) this.responsiveness.set(id, (entry = { address, state: new Responsiveness(responsivenessWithin(this.replicaTimeoutMs)) }))
    return entry.state
  }

  private connection(id: string): NodeConnection | undefined {
    const node = this.nodeState.get(id)
    // Nothing new once closed (a write's hints are handed off after its call has returned).
    if (node === undefined || this.closed) return undefined
    let conn = this.connections.get(id)
    // Replace a connection whose address changed, or that sits in reconnect backoff while the
    // cluster reports the node up (grpc-js fails calls at once until the backoff ends).
    if (conn !== undefined && (conn.address !== node.address || (!conn.reachable && node.state === 'up' && Date.now() - conn.createdAtMs > 50))) {
      conn.close()
      conn = undefined
    }
    if (conn === undefined) {
      conn = new NodeConnection(
        id,
        node.address,
        (epoch) => {
          if (epoch > this.topology_.epoch) void this.refresh().catch(() => undefined)
        },
        this.responsivenessOf(id, node.address),
        this.security,
        false,
        () => this.stampEpoch,
      )
      this.connections.set(id, conn)
    }
    return conn
  }

  /** Fetches the newest topology from any reachable node (deduplicated while one is running). */
  refresh(): Promise<void> {
    if (this.refreshing !== undefined) return this.refreshing
    this.refreshing = (async () => {
      const candidates = [
        ...this.topology_.nodes.filter((n) => n.state !== 'down').map((n) => n.id),
        ...this.topology_.nodes.filter((n) => n.state === 'down').map((n) => n.id),
      ]
      let lastError: unknown
      for (const id of candidates) {
        const conn = this.connection(id)
        if (conn === undefined || !conn.usable) continue
        try {
          const next = toTopology(await conn.topology(1000))
          if (next.epoch >= this.topology_.epoch) this.adopt(next)
          return
        } catch (err) {
          lastError = err
        }
      }
      if (lastError !== undefined) throw toKumoError(lastError)
    })().finally(() => {
      this.refreshing = undefined
    })
    return this.refreshing
  }

  /**
   * Not reported down (with `upOnly`, reported up), not draining, not known to be unreachable,
   * and not avoided for leaving a request of this client's unanswered (Responsiveness).
   */
  private usable(id: string, now: number, upOnly = false): boolean {
    const state = this.nodeState.get(id)?.state
    if (state === 'down' || (upOnly && state !== 'up')) return false
    if ((this.avoidUntil.get(id) ?? 0) > now) return false
    const conn = this.connections.get(id)
    return conn === undefined || conn.usable
  }

  /**
   * This turn's view of the nodes: the policy orders the usable ones once per event-loop turn,
   * so requests made together go to the same nodes in one frame each. Whether a node is usable
   * (which asks grpc-js for the channel's state) is also decided once per turn rather than per
   * request: a per-request check cost a read ~1.3 µs of the client's CPU (8% of it) with three
   * nodes. A node that fails later in the turn fails its requests over as before.
   */
  private view(): TurnView {
    return this.turn.get(() => {
      const now = Date.now()
      const order = this.picker.order(this.topology_.nodes.map((n) => n.id).filter((id) => this.usable(id, now)), this.stats)
      const up: (NodeConnection | undefined)[] = order.map((id) => (this.usable(id, now, true) ? this.connection(id) : undefined))
      const writable = order.map((id) => this.nodeState.get(id)?.readOnly !== true)
      return { order, up, writable }
    })
  }

  /** Usable replicas in this turn's order, unless the first is far busier (stickyOrder). */
  private orderedReplicas(replicas: readonly string[]): string[] {
    return stickyOrder(this.view().order.filter((id) => replicas.includes(id)), this.policy, this.picker, this.stats)
  }

  /** For each replica, in `replicas`' order, its connection if a write can go to it this turn. */
  private writeTargets(replicas: readonly string[]): (NodeConnection | undefined)[] {
    const { order, up, writable } = this.view()
    return replicas.map((id) => {
      const at = order.indexOf(id)
      return at >= 0 && writable[at] ? up[at] : undefined
    })
  }

  /** The replicas reported up and usable, in this turn's order (see orderedReplicas). */
  private replicasInOrder(replicas: readonly string[]): NodeConnection[] {
    const { order, up } = this.view()
    const conns: NodeConnection[] = []
    for (const id of this.orderedReplicas(replicas)) {
      const conn = up[order.indexOf(id)]
      if (conn !== undefined) conns.push(conn)
    }
    return conns
  }

  /** Nodes to try for a key: its live replicas in policy order, then any other live node. */
  private candidates(key: Buffer): string[] {
    const partition = partitionOf(key, this.topology_.partitionCount)
    const replicas = this.topology_.partitions[partition] ?? []
    const now = Date.now()
    const first = this.orderedReplicas(replicas)
    const others = this.topology_.nodes.map((n) => n.id).filter((id) => !replicas.includes(id) && this.usable(id, now))
    // Down-marked replicas last: the cluster's view may be older than the node's recovery. Not
    // one this client saw leave a request unanswered: it is probed, and tried once it answers.
    const answering = replicas.filter((id) => !this.usable(id, now) && this.connections.get(id)?.usable !== false)
    // Replicas that said NOT_SERVING a moment ago come last of all, not never: one that was
    // starting may be serving by now, and in a rolling restart every node has said it within
    // a few seconds (they answer at once, so asking costs little).
    const avoided = (id: string): boolean => (this.avoidUntil.get(id) ?? 0) > now
    return [...first, ...others, ...answering.filter((id) => !avoided(id)), ...answering.filter(avoided)]
  }

  private async call(key: Buffer, req: Omit<RequestMsg, 'id'>, timeoutMs: number | undefined, prefer?: string): Promise<ResponseMsg> {
    if (this.closed) throw new KumoError('CLOSED', 'client is closed')
    const budget = timeoutMs ?? this.timeoutMs
    checkTimeout(budget)
    const deadline = Date.now() + budget
    req.timeoutMs = budget
    let lastError: KumoError | undefined
    const tried = new Set<string>()
    const attempts: string[] = []
    const replicas = this.topology_.partitions[partitionOf(key, this.topology_.partitionCount)] ?? []
    // Once a replica has answered that too few replicas are up, a node that is not a replica
    // would only forward the request to those same replicas: no use asking it.
    let replicaRefused = false
    let askedAny = false
    const requestBytes = requestMsgBytes({ ...req, id: 0 })
    for (let round = 0; round < 2; round++) {
      // When this client sees every node as unresponsive, it is more likely the one cut off, or
      // the cluster overloaded, than every node gone: the second round tries them all anyway
      // rather than failing without asking (their probes may be about to bring them back).
      const lastResort = round === 1 && !askedAny
      const candidates = lastResort ? this.topology_.nodes.map((n) => n.id) : this.candidates(key)
      if (prefer !== undefined && round === 0 && candidates.includes(prefer)) candidates.unshift(...candidates.splice(candidates.indexOf(prefer), 1))
      for (const id of candidates) {
        if (tried.has(id)) continue
        const remaining = deadline - Date.now()
        if (remaining <= 0) break
        if (replicaRefused && !replicas.includes(id)) continue
        const conn = this.connection(id)
        // Found unresponsive while an earlier candidate was tried: not worth waiting on.
        if (conn === undefined || (!conn.usable && !lastResort)) continue
        tried.add(id)
        askedAny = true
        // Leave time for a second node if the first one hangs, and do not wait on one longer
        // than it answers in plus what coordinating takes (its own replicas' timeout, and a
        // forward's): a node cut off silently is given up on in about a second.
        const attemptMs = Math.max(1, Math.min(tried.size === 1 ? Math.floor(remaining * 0.6) : remaining, conn.replicaTimeoutMs(requestBytes) + 2 * this.replicaTimeoutMs))
        try {
          req.timeoutMs = attemptMs
          this.sent.set(id, (this.sent.get(id) ?? 0) + 1)
          const res = await conn.request({ ...req }, attemptMs)
          if (res.errorCode === '') {
            // Serving again (a restart is over): back among the usual candidates.
            if (this.avoidUntil.delete(id)) this.turn.invalidate()
            return res
          }
          const error = new KumoError(res.errorCode as KumoError['code'], res.errorMessage)
          // A draining node: stop sending to it now, before the cluster reports it down.
          if (error.code === 'NOT_SERVING') this.avoid(id)
          if (error.code === 'UNAVAILABLE' && replicas.includes(id)) replicaRefused = true
          if (!error.retryable) throw error
          lastError = error
        } catch (err) {
          const error = toKumoError(err)
          if (!error.retryable && error.code !== 'TIMEOUT') throw error
          lastError = error
        } finally {
          if (lastError !== undefined && attempts.length < tried.size) attempts.push(`${id}: ${lastError.message}`)
        }
      }
      // Every known node failed: the map may be stale. Refresh once and try the rest.
      if (round === 0) {
        await this.refresh().catch(() => undefined)
        // Round 1 asks again everything round 0 asked (the map may have been stale); when
        // round 0 asked nobody, round 1 is the last resort.
        tried.clear()
        if (Date.now() >= deadline) break
      }
    }
    if (Date.now() >= deadline && (lastError === undefined || lastError.code === 'TIMEOUT')) {
      throw new KumoError('TIMEOUT', `request did not complete within ${budget} ms (tried ${attempts.join(', ') || 'no node'})`)
    }
    if (lastError === undefined) throw new KumoError('UNAVAILABLE', 'no node of the cluster is reachable')
    throw new KumoError(lastError.code, attempts.length > 1 ? `every node failed: ${attempts.join('; ')}` : lastError.message)
  }

  async get(key: Bytes, options: CallOptions = {}): Promise<Buffer | undefined> {
    const k = toBuffer(key, 'key')
    checkKey(k)
    const consistency = this.level(options.consistency)
    const replicas = this.directReplicas(k)
    if (replicas !== undefined) return (await this.direct!.read(replicas, [k], consistency, this.budget(options.timeoutMs)))[0]
    const res = await this.call(k, requestMsg({ op: 'GET', key: k, consistency }), options.timeoutMs)
    return res.found ? res.value : undefined
  }

  async put(key: Bytes, value: Bytes, options: PutOptions = {}): Promise<void> {
    const k = toBuffer(key, 'key')
    const v = toBuffer(value, 'value')
    checkKey(k)
    checkValue(v)
    const ttlMs = options.ttlMs ?? 0
    checkTtl(ttlMs)
    const consistency = this.level(options.consistency)
    const target = this.directWriteSet(k)
    if (target !== undefined) {
      await this.direct!.write(target.replicas, [k], [this.direct!.record(v, ttlMs)], consistency, this.budget(options.timeoutMs), target.extra)
      return
    }
    await this.call(k, requestMsg({ op: 'PUT', key: k, value: v, consistency, ttlMs }), options.timeoutMs)
  }

  async del(key: Bytes, options: CallOptions = {}): Promise<void> {
    const k = toBuffer(key, 'key')
    checkKey(k)
    const consistency = this.level(options.consistency)
    const target = this.directWriteSet(k)
    if (target !== undefined) {
      await this.direct!.write(target.replicas, [k], [this.direct!.record(undefined, 0)], consistency, this.budget(options.timeoutMs), target.extra)
      return
    }
    await this.call(k, requestMsg({ op: 'DEL', key: k, consistency }), options.timeoutMs)
  }

  /**
   * Loads many records fast (bulkLoad): batches of up to `batchSize` records, `concurrency` of
   * them in flight, each retried on retryable errors, with progress. Resolves with the totals.
   */
  load(records: Iterable<LoadRecord> | AsyncIterable<LoadRecord>, options: LoadOptions & CallOptions = {}): Promise<LoadProgress> {
    const call: CallOptions = {
      ...(options.consistency !== undefined ? { consistency: options.consistency } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    }
    return bulkLoad((ops) => this.batch(ops, call), records, options)
  }

  /**
   * Puts and deletes in one call. Operations are grouped by partition; each group is applied
   * atomically on each replica. Groups are not atomic with each other: on failure some may
   * have been applied (retrying the whole batch is safe).
   */
  async batch(ops: readonly BatchOp[], options: CallOptions = {}): Promise<void> {
    if (!Array.isArray(ops)) throw new KumoError('INVALID_ARGUMENT', 'batch takes an array of operations')
    const normalized = ops.map((op) => {
      if (op === null || typeof op !== 'object') throw new KumoError('INVALID_ARGUMENT', 'batch operation must be an object')
      if (op.type === 'put') {
        const ttlMs = op.ttlMs ?? 0
        checkTtl(ttlMs)
        return { type: 'PUT' as const, key: toBuffer(op.key, 'key'), value: toBuffer(op.value, 'value'), ttlMs }
      }
      if (op.type === 'del') return { type: 'DEL' as const, key: toBuffer(op.key, 'key'), value: empty, ttlMs: 0 }
      throw new KumoError('INVALID_ARGUMENT', `batch operation type must be 'put' or 'del', got ${JSON.stringify((op as { type: unknown }).type)}`)
    })
    checkBatch(normalized.map((op) => ({ key: op.key, value: op.type === 'PUT' ? op.value : undefined })))
    const consistency = this.level(options.consistency)
    if (this.direct !== undefined && normalized.length > 0 && this.topology_.partitions.length > 0) {
      // Each replica set's share is written straight to its replicas, in order (a later
      // operation on the same key gets the later version).
      const budget = this.budget(options.timeoutMs)
      const direct = this.direct
      const sets = this.byReplicaSet(normalized, true)
      await Promise.all(
        sets.map(({ replicas, extra, items }) =>
          direct.write(
            replicas,
            items.map((op) => op.key),
            items.map((op) => direct.record(op.type === 'PUT' ? op.value : undefined, op.ttlMs)),
            consistency,
            budget,
            extra,
          ),
        ),
      )
      return
    }
    // One BATCH per coordinating node; the node splits it by preference list.
    const groups = this.byCoordinator(normalized)
    await Promise.all(
      [...groups].map(([node, group]) => {
        return this.call(group[0]!.key, requestMsg({ op: 'BATCH', ops: group, consistency }), options.timeoutMs, node)
      }),
    )
  }

  /** The replicas to talk to directly for `key`, or undefined to go through a node. */
  private directReplicas(key: Buffer): readonly string[] | undefined {
    if (this.direct === undefined) return undefined
    const replicas = this.topology_.partitions[partitionOf(key, this.topology_.partitionCount)]
    return replicas !== undefined && replicas.length > 0 ? replicas : undefined
  }

  /** Where a direct write of `key` goes (its write set while a membership change moves it), or undefined to go through a node. */
  private directWriteSet(key: Buffer): { replicas: readonly string[]; extra: number } | undefined {
    if (this.direct === undefined) return undefined
    const partition = partitionOf(key, this.topology_.partitionCount)
    const replicas = this.writeSets.lists[partition]
    return replicas !== undefined && replicas.length > 0 ? { replicas, extra: this.writeSets.extra[partition] ?? 0 } : undefined
  }

  /** A call's time budget, checked. */
  private budget(timeoutMs: number | undefined): number {
    if (this.closed) throw new KumoError('CLOSED', 'client is closed')
    const budget = timeoutMs ?? this.timeoutMs
    checkTimeout(budget)
    return budget
  }

  /** Items grouped by replica set (order within a group kept); for writes, by write set. */
  private byReplicaSet<T extends { key: Buffer }>(items: readonly T[], write = false): { replicas: readonly string[]; extra: number; items: T[] }[] {
    const count = this.topology_.partitionCount
    const lists = write ? this.writeSets.lists : this.topology_.partitions
    const sets = new Map<string, { replicas: readonly string[]; extra: number; items: T[] }>()
    for (const item of items) {
      const partition = partitionOf(item.key, count)
      const extra = write ? (this.writeSets.extra[partition] ?? 0) : 0
      const id = (replicaSetIds(lists)[partition] ?? '') + (extra === 0 ? '' : `\u0001${extra}`)
      let set = sets.get(id)
      if (set === undefined) sets.set(id, (set = { replicas: lists[partition] ?? [], extra, items: [] }))
      set.items.push(item)
    }
    return [...sets.values()]
  }

  /**
   * Items grouped by the node that should coordinate them: for each item, the first usable
   * replica of its partition in one policy order, so one call carries all of a node's share.
   */
  private byCoordinator<T extends { key: Buffer }>(items: readonly T[]): Map<string, T[]> {
    const now = Date.now()
    const usable = this.topology_.nodes
      .map((n) => n.id)
      .filter((id) => this.usable(id, now))
    const order = this.picker.order(usable, this.stats)
    const groups = new Map<string, T[]>()
    const count = this.topology_.partitionCount
    for (const item of items) {
      const replicas = this.topology_.partitions[partitionOf(item.key, count)] ?? []
      const node = order.find((id) => replicas.includes(id)) ?? order[0] ?? replicas[0] ?? ''
      let group = groups.get(node)
      if (group === undefined) groups.set(node, (group = []))
      group.push(item)
    }
    return groups
  }

  async getMany(keys: readonly Bytes[], options: CallOptions = {}): Promise<(Buffer | undefined)[]> {
    if (!Array.isArray(keys)) throw new KumoError('INVALID_ARGUMENT', 'getMany takes an array of keys')
    checkGetMany(keys.length)
    const buffers = keys.map((key) => {
      const k = toBuffer(key, 'key')
      checkKey(k)
      return k
    })
    const consistency = this.level(options.consistency)
    const out: (Buffer | undefined)[] = new Array(buffers.length)
    if (this.direct !== undefined && buffers.length > 0 && this.topology_.partitions.length > 0) {
      const budget = this.budget(options.timeoutMs)
      const direct = this.direct
      const sets = this.byReplicaSet(buffers.map((key, index) => ({ key, index })))
      await Promise.all(
        sets.map(async ({ replicas, items }) => {
          const values = await direct.read(replicas, items.map((item) => item.key), consistency, budget)
          items.forEach((item, i) => (out[item.index] = values[i]))
        }),
      )
      return out
    }
    const groups = this.byCoordinator(buffers.map((key, index) => ({ key, index })))
    await Promise.all(
      [...groups].map(async ([node, group]) => {
        const req = requestMsg({ op: 'GET_MANY', keys: group.map((g) => g.key), consistency })
        const res = await this.call(group[0]!.key, req, options.timeoutMs, node)
        const values = res.values ?? []
        group.forEach((g, i) => {
          const value = values[i]
          out[g.index] = value?.found ? value.value : undefined
        })
      }),
    )
    return out
  }

  /** Entries in key order across the whole cluster, fetched page by page. */
  async *scan(options: ScanOptions = {}): AsyncGenerator<{ key: Buffer; value: Buffer }> {
    if (this.closed) throw new KumoError('CLOSED', 'client is closed')
    const limit = options.limit ?? 0
    if (!Number.isInteger(limit) || limit < 0 || limit > scanLimitMax) {
      throw new KumoError('INVALID_ARGUMENT', `scan limit must be a whole number from 0 to ${scanLimitMax}`)
    }
    const pageSize = options.pageSize ?? 500
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 5000) {
      throw new KumoError('INVALID_ARGUMENT', 'scan pageSize must be 1 to 5000')
    }
    const prefix = options.prefix === undefined ? empty : toBuffer(options.prefix, 'prefix')
    let gte = options.gte === undefined ? empty : toBuffer(options.gte, 'gte')
    const lt = options.lt === undefined ? empty : toBuffer(options.lt, 'lt')
    const timeoutMs = options.timeoutMs ?? Math.max(this.timeoutMs, 60_000)
    let emitted = 0
    let attempts = 0
    // The node that runs the scan: the first the load-balancing policy orders among the usable
    // ones (every node can run any scan: scans are spread like any other request). On a node
    // failure the scan resumes on another just after the last key it returned; the nodes that
    // failed it go last.
    const failed: string[] = []
    for (;;) {
      const now = Date.now()
      const order = this.picker.order(this.topology_.nodes.map((n) => n.id).filter((id) => this.usable(id, now)), this.stats)
      const untried = order.filter((id) => !failed.includes(id))
      const id = untried[0] ?? order[attempts % Math.max(1, order.length)]
      const conn = id === undefined ? undefined : this.connection(id)
      if (conn === undefined) throw new KumoError('UNAVAILABLE', 'no node of the cluster is reachable')
      this.sent.set(id!, (this.sent.get(id!) ?? 0) + 1)
      const stream = conn.scan(
        { prefix, gte, lt, limit: limit === 0 ? 0 : limit - emitted, pageSize },
        Date.now() + timeoutMs,
      )
      try {
        for await (const page of stream) {
          for (const entry of page.entries) {
            yield entry
            emitted++
            gte = Buffer.concat([entry.key, Buffer.from([0])])
          }
        }
        return
      } catch (err) {
        const mapped = fromServiceError(err)
        failed.push(id!)
        if (!mapped.retryable || ++attempts > order.length + 1) throw mapped
      } finally {
        // A caller that stops early (break) ends the call too, so the node frees its scan slot
        // now rather than at the deadline. Nothing once the call has ended.
        stream.cancel()
      }
    }
  }

  /**
   * Runs anti-entropy on every live node in turn (each compares the partitions it holds with
   * their other replicas and exchanges the differences). `onNode` reports each as it finishes.
   */
  /**
   * Takes a node that is dead for good (or several, in one change) out of the cluster (admin role): its partitions get new
   * replicas, which copy them from the partitions' other replicas (kumo transfers, or
   * changeDone), and once all have moved it is removed for good: it may never come back under
   * its id. FAILED_PRECONDITION for a live node or while another membership change is in
   * flight.
   */
  async removeNode(id: string | readonly string[], options: { timeoutMs?: number } = {}): Promise<{ epoch: number; replicasMoved: number }> {
    const ids = typeof id === 'string' ? [id] : Array.isArray(id) ? [...id] : []
    if (ids.length === 0 || ids.some((n) => typeof n !== 'string' || n === '')) throw new KumoError('INVALID_ARGUMENT', 'removeNode needs a node id (or several, removed in one change)')
    return this.viaClaimant((conn) => conn.remove(ids, options.timeoutMs ?? this.timeoutMs))
  }

  /**
   * Drains live node `id` (admin role): every partition it holds gets a new replica, which
   * copies it while `id` keeps serving; reads move as the copies catch up, and once none is
   * left the node is removed for good and stops. Its id is never taken back.
   */
  async leaveNode(id: string, options: { timeoutMs?: number } = {}): Promise<{ epoch: number; replicasMoved: number }> {
    if (typeof id !== 'string' || id === '') throw new KumoError('INVALID_ARGUMENT', 'leaveNode needs a node id')
    return this.viaClaimant((conn) => conn.remove([id], options.timeoutMs ?? this.timeoutMs, true))
  }

  /**
   * Cancels the membership change in flight (admin role): partitions whose new replicas have
   * not caught up stay with their old ones (which never stopped taking writes); those whose
   * reads moved already finish. FAILED_PRECONDITION when no change is in flight.
   */
  async cancelChange(options: { timeoutMs?: number } = {}): Promise<{ epoch: number; partitionsReverted: number }> {
    return this.viaClaimant((conn) => conn.cancel(options.timeoutMs ?? this.timeoutMs))
  }

  /**
   * Plans a membership change (admin role) without making it: `join` standby nodes (started
   * with --standby), `leave` (drain one live node) or `remove` (nodes dead for good). Says
   * which partitions would move where; the claimant keeps the plan for commitPlan until the
   * map changes or another plan replaces it. Refused (FAILED_PRECONDITION, INVALID_ARGUMENT)
   * exactly as the change itself would be. With `commit`, the change is staged at once.
   */
  async planChange(kind: PlanKind, nodes: readonly string[], options: { commit?: boolean; timeoutMs?: number } = {}): Promise<MembershipPlan> {
    if (!planKinds.includes(kind)) throw new KumoError('INVALID_ARGUMENT', `a plan is to ${planKinds.join(', ')}, not ${JSON.stringify(kind)}`)
    if (!Array.isArray(nodes) || nodes.length === 0 || nodes.some((n) => typeof n !== 'string' || n === '')) throw new KumoError('INVALID_ARGUMENT', `a plan to ${kind} needs node ids`)
    const res = await this.viaClaimant((conn) => conn.plan({ kind, nodes: [...nodes], commit: options.commit === true }, options.timeoutMs ?? this.timeoutMs))
    return planOf(res)
  }

  /** Stages the plan the claimant keeps (admin role): the one made on map `baseEpoch`, when given. FAILED_PRECONDITION if the map changed since. */
  async commitPlan(options: { baseEpoch?: number; timeoutMs?: number } = {}): Promise<MembershipPlan> {
    const res = await this.viaClaimant((conn) => conn.commit(options.baseEpoch ?? 0, options.timeoutMs ?? this.timeoutMs))
    return planOf(res)
  }

  /** Makes standby nodes owners (admin role), in one change: planChange('join', ids, { commit: true }). */
  async joinNodes(ids: readonly string[], options: { timeoutMs?: number } = {}): Promise<{ epoch: number; replicasMoved: number }> {
    const plan = await this.planChange('join', ids, { commit: true, ...options })
    return { epoch: plan.epoch, replicasMoved: plan.replicasMoved }
  }

  /**
   * What a plan's moves copy, per moved partition: its records (tombstones included) and
   * bytes as held by one live current replica (the first that answers), asked once per node.
   * Partitions no live replica answered for are left out.
   */
  planSizes(plan: MembershipPlan, options: { timeoutMs?: number } = {}): Promise<Map<number, { records: number; bytes: number }>> {
    return this.sizesOnReplicas(plan.moves.filter((m) => m.to.length > 0), options.timeoutMs ?? 60_000)
  }

  /**
   * Per node still copying for the change in flight: how many records its pending partitions
   * and those queued for later waves hold on a current replica (`source`), and how many of those
   * it holds already (`held`: its own copies of its pending partitions, written by the copy or
   * by clients meanwhile; none of a queued one, whose copy has not begun).
   * `source - held` is roughly what is left to copy. Nodes or partitions that did not answer are
   * left out.
   */
  async copiesLeft(options: { timeoutMs?: number } = {}): Promise<{ node: string; partitions: number; source: number; held: number }[]> {
    await this.refresh().catch(() => undefined)
    const map = topologyMap(this.topology_)
    const timeoutMs = options.timeoutMs ?? 30_000
    const copying = map.nodes
      .filter((node) => this.nodeState.get(node)?.state !== 'down')
      .map((node) => {
        const staged = pendingPartitionsOf(map, node)
        return { node, staged: staged.length, pending: [...staged, ...queuedPartitionsOf(map, node)] }
      })
      .filter((c) => c.pending.length > 0)
    // Each pending partition's size on a current replica, asked once whoever gains it.
    const pending = [...new Set(copying.flatMap((c) => c.pending))]
    const [sources, ...held] = await Promise.all([
      this.sizesOnReplicas(pending.map((partition) => ({ partition, replicas: map.replicas[partition]! })), timeoutMs),
      // Only staged partitions: what a node holds of a queued one is left over (a cancelled or
      // reverted move, not yet swept), not copied, and its copy will start from the first key.
      ...copying.map((c) => {
        const conn = this.connection(c.node)
        if (conn === undefined) return undefined
        if (c.staged === 0) return { records: [], bytes: [] }
        return conn.partitionSizes(c.pending.slice(0, c.staged), timeoutMs).catch(() => undefined)
      }),
    ])
    const out: { node: string; partitions: number; source: number; held: number }[] = []
    copying.forEach(({ node, pending: mine }, n) => {
      const own = held[n]
      if (own === undefined) return
      let source = 0
      let have = 0
      mine.forEach((p, i) => {
        const size = sources.get(p)
        if (size === undefined) return
        source += size.records
        have += Math.min(own.records[i] ?? 0, size.records)
      })
      out.push({ node, partitions: mine.length, source, held: have })
    })
    return out
  }

  /**
   * Records and bytes of each partition as one of its live `replicas` holds it (the first that
   * answers, in list order), asked once per node a round; a partition no live replica answered
   * for is left out.
   */
  private async sizesOnReplicas(partitions: readonly { partition: number; replicas: readonly string[] }[], timeoutMs: number): Promise<Map<number, { records: number; bytes: number }>> {
    const up = new Set(this.topology_.nodes.filter((n) => n.state !== 'down').map((n) => n.id))
    const sizes = new Map<number, { records: number; bytes: number }>()
    let left = partitions
    // A round per replica position: partitions whose first live replica failed ask the next one.
    for (let round = 0; left.length > 0; round++) {
      const byNode = new Map<string, number[]>()
      for (const { partition, replicas } of left) {
        const source = replicas.filter((id) => up.has(id))[round]
        if (source === undefined) continue
        let list = byNode.get(source)
        if (list === undefined) byNode.set(source, (list = []))
        list.push(partition)
      }
      if (byNode.size === 0) break
      await Promise.all(
        [...byNode].map(async ([id, asked]) => {
          const res = await this.connection(id)?.partitionSizes(asked, timeoutMs).catch(() => undefined)
          if (res === undefined) return
          asked.forEach((p, i) => sizes.set(p, { records: res.records[i] ?? 0, bytes: res.bytes[i] ?? 0 }))
        }),
      )
      left = left.filter((m) => !sizes.has(m.partition))
    }
    return sizes
  }

  /**
   * Runs a membership call on the claimant, the live node with the lowest id, which alone
   * stages and drives changes. A node that sees another claimant says so, and the call goes
   * there once.
   */
  private async viaClaimant<T>(call: (conn: NodeConnection) => Promise<T>): Promise<T> {
    await this.refresh().catch(() => undefined)
    const live = this.topology_.nodes.filter((n) => n.state !== 'down').map((n) => n.id).sort()
    let target = live.find((id) => this.connection(id)?.usable === true)
    for (let attempt = 0; ; attempt++) {
      const conn = target === undefined ? undefined : this.connection(target)
      if (conn === undefined) throw new KumoError('UNAVAILABLE', 'no node was reachable to make the membership change through')
      try {
        const result = await call(conn)
        await this.refresh().catch(() => undefined)
        return result
      } catch (err) {
        const error = toKumoError(err)
        const other = /go through the claimant, node (\S+);/.exec(error.message)?.[1]
        if (attempt > 0 || error.code !== 'FAILED_PRECONDITION' || other === undefined || other === target) throw error
        target = other
      }
    }
  }

  /**
   * Makes each live node check this client's password once now (a unary call; the node
   * remembers it), so the first requests on its streams are not held up by the check, which
   * takes tens of milliseconds: long enough to look like an unanswered request to a short
   * replica timeout. Best effort, concurrent, bounded by `timeoutMs`.
   * @internal called by connect()
   */
  async introduce(timeoutMs: number): Promise<void> {
    await Promise.all(
      this.topology_.nodes
        .filter((node) => node.state !== 'down')
        .map((node) => this.connection(node.id)?.topology(timeoutMs).catch(() => undefined)),
    )
  }

  /**
   * Each reachable node's own view: its map's epoch and the partitions it is still copying.
   * A membership change is done once every node is on its epoch and copies nothing.
   */
  async nodeViews(timeoutMs = 2000): Promise<NodeView[]> {
    await this.refresh().catch(() => undefined)
    const views = await Promise.all(
      this.topology_.nodes
        .filter((node) => node.state !== 'down')
        .map(async (node) => {
          const conn = this.connection(node.id)
          if (conn === undefined) return undefined
          try {
            const view = toTopology(await conn.topology(timeoutMs))
            const self = view.nodes.find((n) => n.id === node.id)
            return {
              id: node.id,
              epoch: view.epoch,
              changeEpoch: view.change?.epoch ?? 0,
              partitionsFilling: self?.partitionsFilling ?? 0,
              recordsCopied: self?.recordsCopied ?? 0,
              partitionsStray: self?.partitionsStray ?? 0,
              bytesCopied: self?.bytesCopied ?? 0,
            }
          } catch {
            return undefined
          }
        }),
    )
    return views.filter((v) => v !== undefined)
  }

  /** Whether the membership change staged in map `epoch` is done (finished, reverted or cancelled): every reachable node holds a map at least that new with that change no longer in flight. */
  async changeDone(epoch: number): Promise<boolean> {
    return changeSettled(await this.nodeViews().catch(() => []), epoch)
  }

  async repair(options: { partition?: number; timeoutMs?: number; onNode?: (report: RepairReport) => void } = {}): Promise<RepairReport[]> {
    if (options.partition !== undefined && (!Number.isInteger(options.partition) || options.partition < 0 || options.partition >= this.topology_.partitionCount)) {
      throw new KumoError('INVALID_ARGUMENT', `partition must be 0..${this.topology_.partitionCount - 1}`)
    }
    return this.onEachNode('repair', (conn) => conn.repair(options.partition, options.timeoutMs ?? 30 * 60 * 1000), options.onNode)
  }

  /** Runs an admin call on every reachable node, one after another; UNAVAILABLE when none was reachable. */
  private async onEachNode<T>(what: string, call: (conn: NodeConnection) => Promise<T>, onNode?: (result: T) => void): Promise<T[]> {
    await this.refresh().catch(() => undefined)
    const results: T[] = []
    for (const node of this.topology_.nodes) {
      if (node.state === 'down') continue
      const conn = this.connection(node.id)
      if (conn === undefined || !conn.usable) continue
      const result = await call(conn)
      results.push(result)
      onNode?.(result)
    }
    if (results.length === 0) throw new KumoError('UNAVAILABLE', `no node was reachable to ${what}`)
    return results
  }

  /**
   * Compacts every reachable node's storage, one node after another (admin). Worth running after
   * a bulk load: until the compactions the load left are done, reads share each node's disk and
   * CPU with them. `onNode` hears of each node as it finishes.
   */
  async compact(options: { timeoutMs?: number; onNode?: (result: { node: string; durationMs: number }) => void } = {}): Promise<{ node: string; durationMs: number }[]> {
    return this.onEachNode('compact', (conn) => conn.compact(options.timeoutMs ?? 60 * 60 * 1000), options.onNode)
  }

  /** The partition map and node states, fresh from a node. */
  async topology(): Promise<Topology> {
    await this.refresh()
    return this.topology_
  }

  /**
   * Requests this client has sent to each node, how many are in flight now, and whether it
   * would send the node a request now (false: down, draining, or avoided for leaving a request
   * unanswered, when it gets only probes).
   */
  requestStats(): Record<string, { sent: number; inFlight: number; usable: boolean }> {
    const out: Record<string, { sent: number; inFlight: number; usable: boolean }> = {}
    const now = Date.now()
    for (const node of this.topology_.nodes) {
      out[node.id] = { sent: this.sent.get(node.id) ?? 0, inFlight: this.connections.get(node.id)?.inFlight ?? 0, usable: this.usable(node.id, now) }
    }
    return out
  }

  /** The cached topology (no network). */
  cachedTopology(): Topology {
    return this.topology_
  }

  private level(consistency: Consistency | undefined): Consistency {
    return consistency === undefined ? this.consistency : parseConsistency(consistency, this.consistency)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    for (const conn of this.connections.values()) conn.close()
    this.connections.clear()
  }

}

/** A membership change planned (kumo plan) or staged (epoch > 0). */
export interface MembershipPlan {
  /** The map it was planned on: commitPlan stages it only on that map. */
  baseEpoch: number
  kind: PlanKind
  nodes: string[]
  /** Per partition whose replicas change: those it loses and gains, and its current ones (the copy's sources). */
  moves: { partition: number; from: string[]; to: string[]; replicas: string[] }[]
  /** Replicas that go to another node. */
  replicasMoved: number
  /** The map epoch that staged it; 0 for a plan only kept. */
  epoch: number
}

function planOf(res: PlanMsg): MembershipPlan {
  return {
    baseEpoch: Number(res.baseEpoch),
    kind: res.kind as PlanKind,
    nodes: res.nodes ?? [],
    moves: (res.moves ?? []).map((m) => ({ partition: m.partition, from: m.from ?? [], to: m.to ?? [], replicas: m.replicas ?? [] })),
    replicasMoved: res.replicasMoved ?? 0,
    epoch: Number(res.epoch ?? 0),
  }
}

/** One node's own view of membership (KumoClient.nodeViews). */
export interface NodeView {
  id: string
  /** The epoch of the map it holds. */
  epoch: number
  /** The epoch that staged the change in flight in its map (0: none). */
  changeEpoch: number
  /** Partitions it is still copying as a pending replica. */
  partitionsFilling: number
  /** Records and bytes it has copied into partitions it was to hold, since it started. */
  recordsCopied: number
  bytesCopied: number
  /** Partitions it holds data of without taking their writes, as of its last sweep (deleted once every node holds the map that moved them). */
  partitionsStray: number
}

/** Whether nodes' own views show the change staged in map `epoch` done: all on that map or later, with that change no longer in flight. */
export function changeSettled(views: readonly Pick<NodeView, 'epoch' | 'changeEpoch'>[], epoch: number): boolean {
  return views.length > 0 && views.every((v) => v.epoch >= epoch && v.changeEpoch !== epoch)
}

/** Connects to a cluster through its seeds; resolves once one seed has answered with the map. */
export async function connect(options: ConnectOptions): Promise<KumoClient> {
  if (options === null || typeof options !== 'object' || !Array.isArray(options.seeds) || options.seeds.length === 0) {
    throw new KumoError('INVALID_ARGUMENT', 'connect needs { seeds: ["host:port", ...] }')
  }
  for (const seed of options.seeds) {
    if (typeof seed !== 'string' || !/^[^:\s]+:\d+$/.test(seed)) throw new KumoError('INVALID_ARGUMENT', `seed ${JSON.stringify(seed)} must be host:port`)
  }
  if (options.loadBalancing !== undefined && !loadBalancingPolicies.includes(options.loadBalancing)) {
    throw new KumoError('INVALID_ARGUMENT', `unknown load balancing ${JSON.stringify(options.loadBalancing)}: use ${loadBalancingPolicies.join(', ')}`)
  }
  if (options.coordination !== undefined && !coordinationModes.includes(options.coordination)) {
    throw new KumoError('INVALID_ARGUMENT', `unknown coordination ${JSON.stringify(options.coordination)}: use ${coordinationModes.join(' or ')}`)
  }
  parseConsistency(options.consistency, 'quorum')
  if (options.credentials !== undefined) {
    const c = options.credentials as Partial<UserCredentials> | null
    if (c === null || typeof c !== 'object' || typeof c.user !== 'string' || c.user === '' || typeof c.password !== 'string') {
      throw new KumoError('INVALID_ARGUMENT', 'credentials must be { user, password } (strings)')
    }
    // grpc-js sends call credentials over TLS only; a password in the clear is refused here.
    if (options.tls === undefined) throw new KumoError('INVALID_ARGUMENT', 'credentials need TLS: give tls: { ca } as well')
  }
  const security = options.tls === undefined ? insecureChannels : clientChannels(options.tls, options.credentials)
  if (options.replicaTimeoutMs !== undefined) checkTimeout(options.replicaTimeoutMs)
  if (options.timeoutMs !== undefined) checkTimeout(options.timeoutMs)
  const deadline = Date.now() + (options.timeoutMs ?? 5000)
  let lastError: unknown
  while (Date.now() < deadline) {
    for (const seed of options.seeds) {
      const conn = new NodeConnection('seed', seed, () => undefined, undefined, security, true)
      try {
        const topology = toTopology(await conn.topology(Math.max(1, Math.min(2000, deadline - Date.now()))))
        const client = new KumoClient(topology, options, security)
        if (options.credentials !== undefined) await client.introduce(Math.max(1, Math.min(2000, deadline - Date.now())))
        return client
      } catch (err) {
        // A deadline cut short by the connect's own deadline says less than the failure before it (a certificate, a refusal).
        if (lastError === undefined || toKumoError(err).code !== 'TIMEOUT') lastError = err
        // Who the caller is, or what it may do, will not change by asking again.
        const code = toKumoError(err).code
        if (code === 'UNAUTHENTICATED' || code === 'PERMISSION_DENIED') throw err
      } finally {
        conn.close()
      }
    }
    // Every seed refused (starting, or not up yet): try again shortly until the deadline.
    await new Promise((r) => setTimeout(r, 100))
  }
  const error = toKumoError(lastError ?? new KumoError('UNAVAILABLE', 'no seed answered'))
  throw new KumoError(error.code === 'NOT_SERVING' ? 'NOT_SERVING' : 'UNAVAILABLE', `cannot connect to ${options.seeds.join(', ')}: ${error.message}${connectionHint(options.tls !== undefined, error.message)}`)
}
