import { ClockOffsets } from '../core/clock-offsets.js'
import { PhiAccrualDetector, type NodeHealth, type PhiAccrualConfig } from '../core/failure-detector.js'
import { KumoError } from '../core/errors.js'
import { advance, cancelChange, describeChange, movesAtOnceDefault, movingSummary, pendingPartitions, pendingPartitionsOf, queuedPartitions, stageChange } from '../core/handoff.js'
import { assignPartitions, diffMaps, newerMap, removedOf, replaceNode, type MapChange, type PartitionMap, type PartitionMapConfig } from '../core/partition-map.js'
import { plannedMoves, type ChangePlan, type PlanKind } from '../core/change-plan.js'
import type { GossipMsg, MemberMsg } from '../wire/messages.js'
import { mapFromMsg, mapToMsg } from '../wire/map-codec.js'

export interface MemberView {
  id: string
  address: string
  generation: number
  heartbeat: number
  /** 'read-only' while its storage fails writes (it still serves reads). */
  status: MemberStatus
  load: number
  weight: number
  /** Partitions it gained and is still copying from their other replicas. */
  filling: number
  /** The dead node it was started to replace, until it is in the map. */
  replaces?: string
  /** Started with --standby: owns nothing until a join (kumo join) makes it an owner. */
  standby?: boolean
  /** The epoch of the map it holds (0: unknown). */
  mapEpoch?: number
  /** The change (its staging epoch) whose pending partitions it reports caught up on, and which. */
  readyEpoch?: number
  ready?: readonly number[]
  /** How late its event loop ran over its last heartbeat interval (p99, ms; 0: not known). */
  loopDelayMs?: number
  /** It moves a change's partitions in waves (reads goal lists and wave epochs): absent on older nodes. */
  waves?: boolean
}

export type MemberStatus = 'up' | 'read-only' | 'stopping'


function memberStatus(wire: string): MemberStatus {
  return wire === 'stopping' || wire === 'read-only' ? wire : 'up'
}

export interface MembershipConfig {
  gossipIntervalMs: number
  /**
   * Gossip rounds a node without a map waits for every seed to answer before it founds a
   * cluster without the missing ones. Nodes started together then found one map with all of
   * them, instead of one node founding alone and acknowledging writes no other replica holds.
   */
  foundingRoundsMax: number
  phi: Partial<PhiAccrualConfig>
  partitions: PartitionMapConfig
  /** Partitions a change moves at once (core/handoff waves; default movesAtOnceDefault). */
  movesAtOnce?: number
}

export interface MembershipIo {
  /** Sends a gossip message to an address; resolves with the peer's answer. */
  gossip(peerId: string | undefined, address: string, message: GossipMsg): Promise<GossipMsg>
  /** Persists the map (so a restarted node serves at once). */
  persist(map: PartitionMap, members: MemberView[]): void
  now(): number
  /** This node's current load, 0..1. */
  load(): number
  /** How late this node's event loop ran since the last call (p99, ms). */
  loopDelayMs?(): number
  /** Partitions this node gained and is still copying (default 0). */
  filling?(): number
  /**
   * The pending partitions of the change in flight this node has caught up on (copied, and
   * compared with every current replica). Default: all of them (a node with nothing to copy).
   */
  ready?(): { epoch: number; partitions: readonly number[] }
}

/**
 * Who is in the cluster, who is alive, and the partition map. Nodes gossip their member tables
 * and maps to every known peer each interval; a member's heartbeat counter rising is the
 * heartbeat the failure detector hears. The claimant (the live member with the lowest id)
 * adds newly seen members to the map; every node adopts the newest map it sees.
 */
export class Membership {
  private readonly members = new Map<string, MemberView>()
  private readonly detectors = new Map<string, PhiAccrualDetector>()
  private map_: PartitionMap | undefined
  private timer: NodeJS.Timeout | undefined
  private readonly listeners: (() => void)[] = []
  private rounds = 0
  private stopping = false
  private readonly clocks = new ClockOffsets()
  /** Each peer's health as last noted, and how often it changed (to up, suspect or down). */
  private readonly lastHealth = new Map<string, NodeHealth>()
  readonly healthChanges = new Map<string, { up: number; suspect: number; down: number }>()

  constructor(
    private readonly self: { id: string; address: string; weight: number; replaces?: string; standby?: boolean },
    private readonly seeds: readonly string[],
    private readonly config: MembershipConfig,
    private readonly io: MembershipIo,
    restored?: { map: PartitionMap; members: MemberView[] },
  ) {
    const now = io.now()
    this.members.set(self.id, {
      id: self.id,
      address: self.address,
      generation: now,
      heartbeat: 0,
      status: 'up',
      load: 0,
      weight: self.weight,
      filling: 0,
      waves: true,
      ...(self.replaces === undefined ? {} : { replaces: self.replaces }),
      ...(self.standby === true ? { standby: true } : {}),
    })
    if (restored !== undefined) {
      this.map_ = restored.map
      this.noteOwnLeave(restored.map)
      for (const m of restored.members) {
        if (m.id === self.id) continue
        // Known from disk, not heard from yet: no heartbeat, map or readiness until gossip brings
        // them. Its failure detector starts now, so one that never answers goes down.
        // (Nor whether it moves in waves: an older version may answer.)
        const { waves: _waves, ...known } = m
        this.members.set(m.id, { ...known, heartbeat: 0, generation: 0, filling: 0, mapEpoch: 0, readyEpoch: 0, ready: [] })
        const detector = new PhiAccrualDetector({ firstIntervalMs: config.gossipIntervalMs, ...config.phi })
        detector.heartbeat(now)
        this.detectors.set(m.id, detector)
      }
      this.dropRemoved(restored.map)
    }
  }

  get map(): PartitionMap | undefined {
    return this.map_
  }

  get selfId(): string {
    return this.self.id
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener)
  }


  private changed(): void {
    for (const listener of this.listeners) listener()
  }

  private readonly removedListeners: ((epoch: number, left: boolean) => void)[] = []
  private removedAt: number | undefined
  /** This node asked to leave (leave()), so its removal is the end of a drain, not news. */
  private leaving = false

  /** Called once when the cluster's map says this node was removed for good (kumo remove), or it left (kumo leave). */
  onRemoved(listener: (epoch: number, left: boolean) => void): void {
    this.removedListeners.push(listener)
  }

  /** Forgets removed nodes: no member entry, no detector, never gossiped to again. */
  private dropRemoved(map: PartitionMap): void {
    for (const id of removedOf(map)) {
      if (id === this.self.id) continue
      this.members.delete(id)
      this.detectors.delete(id)
      this.lastHealth.delete(id)
    }
    if (removedOf(map).includes(this.self.id) && this.removedAt === undefined) {
      this.removedAt = map.epoch
      this.stopping = true
      for (const listener of this.removedListeners) listener(map.epoch, this.leaving)
    }
  }

  /** While this node waits to replace a dead one: why it is not in the map yet, or undefined. */
  replacementWait(): string | undefined {
    const target = this.members.get(this.self.id)!.replaces
    if (target === undefined || this.map_?.nodes.includes(this.self.id)) return undefined
    if (this.map_ === undefined) return `waiting for the cluster's map (to replace ${target})`
    if (removedOf(this.map_).includes(target)) return `${target} was removed already; start this node without --replace to join as a new node`
    if (!this.map_.nodes.includes(target)) return `${target} is not in the cluster (its nodes: ${this.map_.nodes.join(', ')})`
    if (this.isAlive(target)) return `${target} is ${this.health(target)} as this node sees it: only a dead node is replaced`
    return this.changeInFlight() ?? `waiting for the claimant to hand ${target}'s partitions over`
  }

  /**
   * Why a membership change may not start now, or undefined: while the map has a change in
   * flight, while any live node does not hold the newest map yet (a change made on an older
   * one could undo it), or while any live node is still copying partitions (one change at a
   * time).
   */
  changeInFlight(): string | undefined {
    const map = this.map_
    const epoch = map?.epoch ?? 0
    if (map?.change !== undefined) return `a membership change is in flight: ${describeChange(map.change)}, ${movingSummary(map)}; wait for it (kumo transfers) or cancel it (kumo cancel)`
    const live = [...this.members.values()].filter((m) => m.id !== this.self.id && this.isAlive(m.id) && map?.nodes.includes(m.id))
    const behind = live.filter((m) => m.mapEpoch !== undefined && m.mapEpoch > 0 && m.mapEpoch < epoch)
    if (behind.length > 0) return `a membership change is in flight: ${behind.map((m) => m.id).join(', ')} ${behind.length === 1 ? 'has' : 'have'} not taken map epoch ${epoch} yet; try again in a moment`
    const own = this.io.filling?.() ?? 0
    const busy = [...live.filter((m) => m.filling > 0), ...(own > 0 ? [{ id: this.self.id, filling: own }] : [])]
    if (busy.length === 0) return undefined
    return `a membership change is in flight: ${busy.map((m) => `${m.id} is copying ${m.filling} partition${m.filling === 1 ? '' : 's'}`).join(', ')}; try again when it is done (kumo status)`
  }

  /**
   * Resolves once every live node says it holds this node's map (everyNodeOnEpoch), or after
   * `timeoutMs`: a change asked for right after the last one finished waits for the gossip
   * round that brings the others' word, rather than being refused for it.
   */
  async mapsAgree(timeoutMs: number): Promise<boolean> {
    const deadline = this.io.now() + timeoutMs
    while (!this.everyNodeOnEpoch()) {
      if (this.io.now() >= deadline) return false
      await new Promise((resolve) => setTimeout(resolve, Math.max(10, Math.floor(this.config.gossipIntervalMs / 4))))
    }
    return true
  }

  /** The claimant's id as this node sees it (the lowest live id), or undefined. */
  claimantId(): string | undefined {
    let best: string | undefined
    for (const m of this.members.values()) {
      if (m.status === 'stopping' || !this.isAlive(m.id)) continue
      if (m.id === this.self.id && this.stopping) continue
      if (best === undefined || m.id < best) best = m.id
    }
    return best
  }

  /**
   * Membership changes are staged and driven by the claimant alone, so two nodes never stage
   * two changes at once on the same map (one of them would be lost).
   */
  private checkClaimant(what: string): PartitionMap {
    const map = this.map_
    if (map === undefined) throw new KumoError('FAILED_PRECONDITION', 'this node has not joined a cluster yet')
    if (!this.isClaimant()) {
      throw new KumoError('FAILED_PRECONDITION', `membership changes go through the claimant, node ${this.claimantId() ?? '(none live)'}; ask it to ${what} (this is ${this.self.id})`)
    }
    return map
  }

  /**
   * Stages the drain of live node `id` (kumo leave): every partition it holds gets a new
   * replica, which copies it while `id` keeps serving; reads move partition by partition as
   * the copies catch up, and once none is left the node is removed for good (it then stops).
   * Throws INVALID_ARGUMENT for an unknown node and FAILED_PRECONDITION for a dead one (remove
   * it instead), for the last node, on a node that is not the claimant, or while another
   * change is in flight.
   */
  leave(id: string): { epoch: number; replicasMoved: number } {
    return this.stagePrepared(this.prepare('leave', [id]))
  }

  /**
   * Stages taking nodes dead for good out of the map (kumo remove ID...): their replicas go to
   * the other nodes, which copy them from the partitions' other replicas, and once they have,
   * the nodes are listed as removed, so they are refused if they come back. Several dead nodes
   * go in one change (each would otherwise hand partitions to the other). Throws
   * INVALID_ARGUMENT for an unknown node and FAILED_PRECONDITION for a live one, for this node
   * itself, for the last nodes, on a node that is not the claimant, or while another change is
   * in flight.
   */
  remove(idOrIds: string | readonly string[]): { epoch: number; replicasMoved: number } {
    return this.stagePrepared(this.prepare('remove', typeof idOrIds === 'string' ? [idOrIds] : idOrIds))
  }

  /**
   * Stages standby nodes (started with --standby) becoming owners (kumo join ID...): several in
   * one change, so the data moves once. Throws INVALID_ARGUMENT for a node the cluster has not
   * heard of, FAILED_PRECONDITION for one that is down, in the map already, or removed, on a
   * node that is not the claimant, or while another change is in flight.
   */
  join(ids: readonly string[]): { epoch: number; replicasMoved: number } {
    return this.stagePrepared(this.prepare('join', ids))
  }

  /**
   * What a change would move, without staging it (kumo plan): kept until committed (commit),
   * replaced by the next plan, or made stale by any map change. Throws as the change itself would.
   */
  plan(kind: PlanKind, ids: readonly string[]): ChangePlan {
    const prepared = this.prepare(kind, ids)
    const busy = this.changeInFlight()
    if (busy !== undefined) throw new KumoError('FAILED_PRECONDITION', busy)
    const goal = prepared.goalOf()
    const plan: ChangePlan = { baseEpoch: prepared.map.epoch, kind, nodes: [...prepared.change.adds, ...prepared.change.removes], ...plannedMoves(prepared.map, goal) }
    this.kept = plan
    return plan
  }

  /**
   * Stages the kept plan (kumo commit), the one made on map `baseEpoch` when given: refused
   * (FAILED_PRECONDITION) when there is none, or the map changed since it was made.
   */
  commit(baseEpoch = 0): { epoch: number; replicasMoved: number; plan: ChangePlan } {
    const plan = this.kept
    const map = this.checkClaimant('commit the plan')
    if (plan === undefined) throw new KumoError('FAILED_PRECONDITION', 'no plan to commit: make one first (kumo plan join|leave|remove ID...)')
    if (baseEpoch !== 0 && baseEpoch !== plan.baseEpoch) {
      throw new KumoError('FAILED_PRECONDITION', `the plan kept is another one (made on map epoch ${plan.baseEpoch}, ${plan.kind} ${plan.nodes.join(' ')}): look at it again (kumo plan)`)
    }
    if (map.epoch !== plan.baseEpoch) {
      this.kept = undefined
      throw new KumoError('FAILED_PRECONDITION', `the map changed since the plan was made (epoch ${plan.baseEpoch}, now ${map.epoch}): plan again`)
    }
    const staged = this.stagePrepared(this.prepare(plan.kind, plan.nodes))
    this.kept = undefined
    return { ...staged, plan }
  }

  /** The plan kept for commit (kumo plan), if any. */
  private kept: ChangePlan | undefined

  /** Checks a change of `kind` on `ids` and says how to make its goal; throws what the change would. */
  private prepare(kind: PlanKind, idsIn: readonly string[]): { map: PartitionMap; goalOf: () => PartitionMap; change: Omit<MapChange, 'epoch' | 'cancelled'> } {
    const ids = [...new Set(idsIn)]
    const map = this.map_
    if (map === undefined) throw new KumoError('FAILED_PRECONDITION', 'this node has not joined a cluster yet')
    if (ids.length === 0) throw new KumoError('INVALID_ARGUMENT', `${kind} needs a node id`)
    if (kind === 'leave') {
      const id = ids[0]!
      if (ids.length > 1) throw new KumoError('INVALID_ARGUMENT', 'leave drains one node at a time')
      this.checkClaimant(`drain ${id}`)
      if (removedOf(map).includes(id)) throw new KumoError('FAILED_PRECONDITION', `node ${id} was removed already (epoch ${map.epoch} lists it)`)
      if (!map.nodes.includes(id)) throw new KumoError('INVALID_ARGUMENT', `node ${id} is not in the cluster (its nodes: ${map.nodes.join(', ')})`)
      if (map.nodes.length === 1) throw new KumoError('FAILED_PRECONDITION', 'the last node of a cluster cannot leave it')
      if (!this.isAlive(id)) throw new KumoError('FAILED_PRECONDITION', `node ${id} is down: a node that is dead for good is removed (kumo remove ${id}), not drained`)
      // A drain is a choice, unlike a removal: it may not cost partitions a copy.
      const n = this.config.partitions.replicationFactor
      if (map.nodes.length - 1 < n) {
        throw new KumoError(
          'FAILED_PRECONDITION',
          `draining ${id} would leave ${map.nodes.length - 1} nodes for ${n} replicas per partition: every partition would lose a copy, and quorum writes would need every replica; add a node first (start it, then kumo join), or, if ${id} is dead for good, remove it`,
        )
      }
      return { map, goalOf: () => this.goalWithout(map, [id], 'leave'), change: { kind: 'leave', adds: [], removes: [id] } }
    }
    if (kind === 'remove') {
      for (const id of ids) {
        if (removedOf(map).includes(id)) throw new KumoError('FAILED_PRECONDITION', `node ${id} was removed already (epoch ${map.epoch} lists it)`)
        if (!map.nodes.includes(id)) throw new KumoError('INVALID_ARGUMENT', `node ${id} is not in the cluster (its nodes: ${map.nodes.join(', ')})`)
        if (id === this.self.id) throw new KumoError('FAILED_PRECONDITION', `node ${id} cannot remove itself; ask another node, or have it leave (kumo leave ${id})`)
        if (this.isAlive(id)) {
          throw new KumoError('FAILED_PRECONDITION', `node ${id} is ${this.health(id)}: remove is for a node that is dead for good; a live node leaves (kumo leave ${id})`)
        }
      }
      if (map.nodes.length <= ids.length) throw new KumoError('FAILED_PRECONDITION', 'the last node of a cluster cannot be removed')
      this.checkClaimant(`remove ${ids.join(' ')}`)
      return { map, goalOf: () => this.goalWithout(map, ids, 'remove'), change: { kind: 'remove', adds: [], removes: ids } }
    }
    if (kind === 'join') {
      this.checkClaimant(`join ${ids.join(' ')}`)
      for (const id of ids) {
        const member = this.members.get(id)
        if (removedOf(map).includes(id)) throw new KumoError('FAILED_PRECONDITION', `node ${id} was removed for good (epoch ${map.epoch} lists it); a machine comes back under a new id, with its data directory wiped`)
        if (map.nodes.includes(id)) throw new KumoError('FAILED_PRECONDITION', `node ${id} owns partitions already (it is in map epoch ${map.epoch})`)
        if (member === undefined) throw new KumoError('INVALID_ARGUMENT', `no node ${id} has made contact with the cluster: start it with --seeds (and --standby to join it by hand)`)
        if (member.replaces !== undefined) throw new KumoError('FAILED_PRECONDITION', `node ${id} was started to replace ${member.replaces}: it takes exactly that node's partitions once it is down`)
        if (member.status === 'stopping' || !this.isAlive(id)) throw new KumoError('FAILED_PRECONDITION', `node ${id} is ${this.health(id)}: only a live node joins`)
      }
      const nodes = [...map.nodes, ...ids]
      return { map, goalOf: () => assignPartitions(map, nodes, this.config.partitions), change: { kind: 'join', adds: ids, removes: [] } }
    }
    throw new KumoError('INVALID_ARGUMENT', `unknown kind of change ${JSON.stringify(kind)}: join, leave or remove`)
  }

  private stagePrepared(prepared: ReturnType<Membership['prepare']>): { epoch: number; replicasMoved: number } {
    return this.stage(prepared.map, prepared.goalOf, prepared.change)
  }

  /**
   * The balanced map without `ids`, refused if it would hand partitions to a node that is down:
   * such a move could never finish (its copy has nowhere to go) and would be reverted.
   */
  private goalWithout(map: PartitionMap, ids: readonly string[], verb: 'remove' | 'leave'): PartitionMap {
    const goal = assignPartitions(map, map.nodes.filter((n) => !ids.includes(n)), this.config.partitions)
    const down = [...new Set(diffMaps(map, goal).flatMap((m) => (m.to !== undefined && !this.isAlive(m.to) ? [m.to] : [])))].sort()
    if (down.length > 0) {
      const them = down.join(', ')
      throw new KumoError(
        'FAILED_PRECONDITION',
        verb === 'remove'
          ? `${them} ${down.length === 1 ? 'is' : 'are'} down as well and would take partitions: remove ${down.length === 1 ? 'it' : 'them'} in the same change (kumo remove ${[...ids, ...down].join(' ')}), or bring ${down.length === 1 ? 'it' : 'them'} back first`
          : `${them} ${down.length === 1 ? 'is' : 'are'} down and would take partitions: remove ${down.length === 1 ? 'it' : 'them'} first (kumo remove ${down.join(' ')}), or bring ${down.length === 1 ? 'it' : 'them'} back`,
      )
    }
    return goal
  }

  /**
   * Cancels the change in flight (kumo cancel): partitions whose copies have not caught up go
   * back to their old replicas, which never stopped taking writes; those whose reads moved
   * already finish. A node being drained or removed keeps what it still holds. A cancelled
   * join is not staged again until the node restarts.
   */
  cancel(): { epoch: number; partitionsReverted: number } {
    const map = this.checkClaimant('cancel the change in flight')
    if (map.change === undefined) throw new KumoError('FAILED_PRECONDITION', 'no membership change is in flight')
    if (map.change.cancelled === true) throw new KumoError('FAILED_PRECONDITION', `the change was cancelled already; ${movingSummary(map)}`)
    for (const id of map.change.adds) {
      const member = this.members.get(id)
      if (member !== undefined) this.declined.set(id, member.generation)
    }
    // Copying or queued for a later wave: they stay where they were.
    const reverted = pendingPartitions(map).length + queuedPartitions(map).length
    const next = cancelChange(map)
    this.adoptOwn(next)
    return { epoch: next.epoch, partitionsReverted: reverted }
  }

  /** Joiners whose join was cancelled, by process generation: not staged again until they restart. */
  private readonly declined = new Map<string, number>()

  /**
   * Partitions a change staged now moves at once: all of them while any member (live or not)
   * has not said it moves in waves. A node of an older version ignores goal lists and wave
   * epochs: as claimant it would finish a change with partitions still queued, and as a replica
   * it would take direct writes from clients that missed the latest wave.
   */
  private movesAtOnce(): number {
    const everyone = [...this.members.values()].every((m) => m.waves === true)
    return everyone ? (this.config.movesAtOnce ?? movesAtOnceDefault) : Infinity
  }

  /** Stages the change towards the map `goalOf()` makes, if no other change is in flight. */
  private stage(map: PartitionMap, goalOf: () => PartitionMap, change: Omit<MapChange, 'epoch' | 'cancelled'>): { epoch: number; replicasMoved: number } {
    const busy = this.changeInFlight()
    if (busy !== undefined) throw new KumoError('FAILED_PRECONDITION', busy)
    const goal = goalOf()
    // Replicas that go to another node; a list that only shrinks (a cluster falling below N) moves nothing.
    const replicasMoved = diffMaps(map, goal).filter((m) => m.to !== undefined).length
    const next = stageChange(map, goal, change, this.movesAtOnce())
    this.adoptOwn(next)
    return { epoch: next.epoch, replicasMoved }
  }

  /**
   * Takes a map this node made (a staged change, or the claimant's step through one): persisted
   * and gossiped at once. When it removes this node (the end of its own drain), peers are told
   * before this node calls itself gone.
   */
  private adoptOwn(next: PartitionMap): void {
    this.map_ = next
    this.noteOwnLeave(next)
    this.io.persist(next, this.allMembers())
    this.changed()
    const sent = this.broadcast()
    if (removedOf(next).includes(this.self.id)) void sent.then(() => this.dropRemoved(next))
    else this.dropRemoved(next)
  }

  /** Whether this node's removal will be the end of its own drain (a leave), not news. */
  private noteOwnLeave(map: PartitionMap): void {
    if (map.change !== undefined) this.leaving = map.change.kind === 'leave' && map.change.removes.includes(this.self.id) && map.change.cancelled !== true
  }

  /** The pending partitions this node has caught up on, for the change in flight. */
  private ownReady(): { epoch: number; partitions: readonly number[] } {
    const map = this.map_
    if (map?.change === undefined) return { epoch: 0, partitions: [] }
    if (this.io.ready !== undefined) return this.io.ready()
    return { epoch: map.change.epoch, partitions: pendingPartitionsOf(map, this.self.id) }
  }

  /**
   * Whether every live node in the map holds a map at least as new as this node's (or as
   * `epoch`), as their gossip last said; with `exact`, the same one (none newer).
   */
  everyNodeOnEpoch(exact = false, epoch = this.map_?.epoch ?? 0): boolean {
    for (const m of this.members.values()) {
      // A member known only from disk that has not answered since this node started has said
      // nothing yet: it does not agree (and goes down if it never answers).
      if (m.id === this.self.id || !this.isAlive(m.id) || !this.map_?.nodes.includes(m.id)) continue
      const theirs = m.mapEpoch ?? 0
      if (theirs < epoch || (exact && theirs > epoch)) return false
    }
    return true
  }

  /**
   * The claimant's step through the change in flight (core/handoff advance): reverts the
   * partitions of pending replicas that are down, moves reads where every pending replica is
   * ready, retires old replicas once every live node holds the map that moved the reads.
   */
  private progress(map: PartitionMap, change: MapChange): void {
    const own = this.ownReady()
    const readySets = new Map<string, Set<number>>()
    const readyOf = (id: string): Set<number> => {
      let set = readySets.get(id)
      if (set === undefined) {
        const report = id === this.self.id ? own : { epoch: this.members.get(id)?.readyEpoch ?? 0, partitions: this.members.get(id)?.ready ?? [] }
        set = new Set(report.epoch === change.epoch ? report.partitions : [])
        readySets.set(id, set)
      }
      return set
    }
    const result = advance(map, {
      ready: (p, id) => readyOf(id).has(p),
      // A new replica whose storage fails writes cannot catch up either: its moves revert too.
      down: (id) => !this.isAlive(id) || this.members.get(id)?.status !== 'up' || (id === this.self.id && this.stopping),
      everyNodeOnEpoch: this.everyNodeOnEpoch(),
      movesAtOnce: map.goal === undefined ? Infinity : this.config.movesAtOnce ?? movesAtOnceDefault,
    })
    if (result.map !== map) this.adoptOwn(result.map)
  }

  start(): void {
    void this.round()
    this.timer = setInterval(() => void this.round(), this.config.gossipIntervalMs)
    this.timer.unref()
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** Marks this node read-only (its storage fails writes) or writable again, and tells every peer now. */
  async setReadOnly(readOnly: boolean): Promise<void> {
    const me = this.members.get(this.self.id)!
    if (me.status === 'stopping' || (me.status === 'read-only') === readOnly) return
    me.status = readOnly ? 'read-only' : 'up'
    me.heartbeat++
    this.changed()
    await this.broadcast()
  }

  /** Whether the map lists `id` as removed for good. */
  isRemoved(id: string): boolean {
    return removedOf(this.map_).includes(id)
  }

  /** Whether a node's storage takes writes, as far as gossip says (false for unknown nodes). */
  isWritable(id: string): boolean {
    const member = this.members.get(id)
    return member !== undefined && member.status === 'up'
  }

  /**
   * The cluster's clock minus this node's, in ms: the median of the live nodes' clock offsets
   * (ClockOffsets). This node's clock plus it is the cluster's time.
   */
  clusterOffsetMs(): number {
    const now = this.io.now()
    const live = [...this.members.keys()].filter((id) => id !== this.self.id && this.isAlive(id))
    return this.clocks.clusterOffsetMs(live, now)
  }

  /** A node's clock minus the cluster's, in ms, as measured here (undefined when unknown). */
  clockOffsetOf(id: string): number | undefined {
    const cluster = this.clusterOffsetMs()
    if (id === this.self.id) return -cluster
    const offset = this.clocks.offsetOf(id, this.io.now())
    return offset === undefined ? undefined : offset - cluster
  }

  /** Marks this node as stopping and tells every peer now (graceful shutdown). */
  async announceStopping(): Promise<void> {
    this.stopping = true
    const me = this.members.get(this.self.id)!
    me.status = 'stopping'
    me.heartbeat++
    await this.broadcast()
  }

  health(id: string): NodeHealth {
    if (id === this.self.id) return 'up'
    const member = this.members.get(id)
    if (member?.status === 'stopping') return 'down'
    if (member === undefined) return 'down'
    // Known (from disk) but not heard from since we started: try it; a dead peer fails fast.
    return this.detectors.get(id)?.state(this.io.now()) ?? 'up'
  }

  /** Notes which peers' health changed since the last round (once a round: a count of flaps, not of every phi value). */
  private noteHealth(): void {
    for (const id of this.members.keys()) {
      if (id === this.self.id) continue
      const health = this.health(id)
      const before = this.lastHealth.get(id)
      if (before === health) continue
      this.lastHealth.set(id, health)
      if (before === undefined) continue
      let changes = this.healthChanges.get(id)
      if (changes === undefined) this.healthChanges.set(id, (changes = { up: 0, suspect: 0, down: 0 }))
      changes[health]++
    }
  }

  isAlive(id: string): boolean {
    return this.health(id) !== 'down'
  }

  member(id: string): MemberView | undefined {
    return this.members.get(id)
  }

  allMembers(): MemberView[] {
    return [...this.members.values()]
  }

  /**
   * The latest event-loop delay of the live node whose loop runs latest, this one included: a
   * node that copies partitions slows down while any node of the cluster is late (the clients
   * wait on all of them).
   */
  /** This node's loop delay as of its last heartbeat (ms). */
  ownLoopDelayMs(): number {
    return this.members.get(this.self.id)?.loopDelayMs ?? 0
  }

  worstLoopDelayMs(): number {
    let worst = 0
    for (const m of this.members.values()) {
      if (m.id !== this.self.id && !this.isAlive(m.id)) continue
      worst = Math.max(worst, m.loopDelayMs ?? 0)
    }
    return worst
  }

  address(id: string): string | undefined {
    return this.members.get(id)?.address
  }

  message(): GossipMsg {
    return {
      from: this.self.id,
      members: [...this.members.values()].map((m) => {
        if (m.id !== this.self.id) return { ...m, ready: [...(m.ready ?? [])] }
        const ready = this.ownReady()
        return { ...m, mapEpoch: this.map_?.epoch ?? 0, filling: this.io.filling?.() ?? m.filling, readyEpoch: ready.epoch, ready: [...ready.partitions] }
      }),
      map: this.map_ === undefined ? null : mapToMsg(this.map_, [], this.self.id),
      sentAtMs: this.io.now(),
      echoSentAtMs: 0,
    }
  }

  /** Handles gossip from a peer; returns our state as the answer (with our clock, for its offset). */
  receive(message: GossipMsg): GossipMsg {
    this.merge(message)
    this.heardFromCluster()
    return { ...this.message(), echoSentAtMs: message.sentAtMs }
  }

  /**
   * Answers gossip from a node removed for good without taking anything from it: it learns
   * from our map that it was removed (and stops), and its stale view changes nothing here.
   */
  answerRemoved(message: GossipMsg): GossipMsg {
    return { ...this.message(), echoSentAtMs: message.sentAtMs }
  }

  private confirmed_ = false

  /**
   * Whether this node has checked its map with the cluster since it started: a peer answered
   * or called (or it is alone in its map, or `foundingRoundsMax` rounds passed with nobody
   * answering). A node restarted on the data of a node removed meanwhile must not serve
   * from its stale map before a peer could tell it so.
   */
  get confirmed(): boolean {
    return this.confirmed_ || (this.map_ !== undefined && this.map_.nodes.length === 1) || this.rounds >= this.config.foundingRoundsMax
  }

  private heardFromCluster(): void {
    if (this.confirmed_) return
    this.confirmed_ = true
    this.changed()
  }

  private async broadcast(): Promise<void> {
    const message = this.message()
    const targets = new Map<string, string | undefined>()
    for (const m of this.members.values()) if (m.id !== this.self.id) targets.set(m.address, m.id)
    for (const seed of this.seeds) if (seed !== this.self.address && !targets.has(seed)) targets.set(seed, undefined)
    await Promise.all(
      [...targets].map(async ([address, id]) => {
        try {
          const reply = await this.io.gossip(id, address, message)
          if (reply.from && reply.echoSentAtMs === message.sentAtMs) this.clocks.sample(reply.from, message.sentAtMs, reply.sentAtMs, this.io.now())
          this.merge(reply)
          this.heardFromCluster()
        } catch {
          // An unreachable peer is the failure detector's business, not an error here.
        }
      }),
    )
  }

  /** One gossip round: heartbeat, gossip to every peer and seed, then claim. `start()` runs one per interval. */
  async round(): Promise<void> {
    const me = this.members.get(this.self.id)!
    me.heartbeat++
    me.load = this.io.load()
    me.loopDelayMs = this.io.loopDelayMs?.() ?? 0
    me.filling = this.io.filling?.() ?? 0
    if (me.replaces !== undefined && this.map_?.nodes.includes(this.self.id)) delete me.replaces
    await this.broadcast()
    this.rounds++
    if (this.rounds === this.config.foundingRoundsMax && !this.confirmed_) this.changed()
    this.noteHealth()
    this.claim()
  }

  private merge(message: GossipMsg): void {
    const now = this.io.now()
    let changed = false
    const theirs = mapFromMsg(message.map)
    const removed = new Set([...removedOf(this.map_), ...removedOf(theirs)])
    for (const incoming of message.members) {
      if (incoming.id === this.self.id || !incoming.id || removed.has(incoming.id)) continue
      const known = this.members.get(incoming.id)
      if (known === undefined || newer(incoming, known)) {
        const heartbeatAdvanced =
          known === undefined || incoming.generation !== known.generation || incoming.heartbeat > known.heartbeat
        const status = memberStatus(incoming.status)
        if (known === undefined || known.address !== incoming.address || known.status !== status) changed = true
        this.members.set(incoming.id, {
          id: incoming.id,
          address: incoming.address,
          generation: incoming.generation,
          heartbeat: incoming.heartbeat,
          status,
          load: incoming.load,
          weight: incoming.weight || 1,
          filling: incoming.filling ?? 0,
          mapEpoch: incoming.mapEpoch ?? 0,
          readyEpoch: incoming.readyEpoch ?? 0,
          ready: incoming.ready ?? [],
          loopDelayMs: incoming.loopDelayMs ?? 0,
          ...(incoming.waves === true ? { waves: true } : {}),
          ...(incoming.replaces ? { replaces: incoming.replaces } : {}),
          ...(incoming.standby === true ? { standby: true } : {}),
        })
        if (heartbeatAdvanced && status !== 'stopping') {
          let detector = this.detectors.get(incoming.id)
          const wasDown = detector === undefined || detector.state(now) === 'down'
          if (detector === undefined || (known !== undefined && incoming.generation !== known.generation)) {
            detector = new PhiAccrualDetector({ firstIntervalMs: this.config.gossipIntervalMs, ...this.config.phi })
            this.detectors.set(incoming.id, detector)
          }
          detector.heartbeat(now)
          if (wasDown) changed = true
        }
      }
    }
    // newerMap keeps ours on a tie, so an identical map is not adopted again.
    if (theirs !== undefined && (this.map_ === undefined || newerMap(this.map_, theirs) === theirs)) {
      this.map_ = theirs
      this.noteOwnLeave(theirs)
      this.dropRemoved(theirs)
      this.io.persist(theirs, this.allMembers())
      changed = true
    }
    if (changed) this.changed()
  }

  /** Whether this node is the claimant: the lowest id among live members. */
  isClaimant(): boolean {
    for (const m of this.members.values()) {
      if (m.id < this.self.id && this.isAlive(m.id) && m.status !== 'stopping') return false
    }
    return !this.stopping
  }

  /**
   * Whether a node without a map may found the cluster now: after at least one gossip round,
   * and once every seed has answered or `foundingRoundsMax` rounds have passed.
   */
  private mayFound(): boolean {
    if (this.rounds < 1) return false
    if (this.rounds >= this.config.foundingRoundsMax) return true
    const heard = new Set<string>([this.self.address])
    for (const m of this.members.values()) if (m.status !== 'stopping' && this.isAlive(m.id)) heard.add(m.address)
    return this.seeds.every((seed) => heard.has(seed))
  }

  /**
   * The claimant's round: with a change in flight, one step through it (progress); otherwise
   * it stages the next change: a node started to replace a dead one, or live members the map
   * lacks (a join). Without a map it founds one only when `mayFound()` says so, so nodes
   * started together join one map instead of each founding its own or one founding alone.
   */
  private claim(): void {
    if (!this.isClaimant()) return
    if (this.map_ === undefined ? !this.mayFound() : this.rounds < 1) return
    const map = this.map_
    if (map?.change !== undefined) {
      this.progress(map, map.change)
      return
    }
    const inMap = new Set(map?.nodes ?? [])
    const removed = new Set(removedOf(map))
    const candidates = [...this.members.values()].filter(
      (m) => !inMap.has(m.id) && !removed.has(m.id) && m.status !== 'stopping' && this.isAlive(m.id) && this.declined.get(m.id) !== m.generation,
    )
    if (map === undefined) {
      const founders = candidates.filter((m) => m.replaces === undefined && m.standby !== true)
      if (founders.length === 0) return
      const founded = assignPartitions(undefined, founders.map((m) => m.id), this.config.partitions)
      this.adoptOwn(founded)
      return
    }
    if (candidates.length === 0 || this.changeInFlight() !== undefined) return
    // A node started to replace a dead one takes exactly its partitions, once that node is
    // down; it is never added as an ordinary joiner.
    const replacing = candidates.find((m) => m.replaces !== undefined && map.nodes.includes(m.replaces) && !this.isAlive(m.replaces))
    if (replacing !== undefined) {
      this.stage(map, () => replaceNode(map, replacing.replaces!, replacing.id), { kind: 'replace', adds: [replacing.id], removes: [replacing.replaces!] })
      return
    }
    // Standby nodes wait for kumo join (or a committed plan).
    const joining = candidates.filter((m) => m.replaces === undefined && m.standby !== true)
    if (joining.length === 0) return
    this.stage(map, () => assignPartitions(map, [...inMap, ...joining.map((m) => m.id)], this.config.partitions), { kind: 'join', adds: joining.map((m) => m.id), removes: [] })
  }
}

function newer(incoming: MemberMsg, known: MemberView): boolean {
  if (incoming.generation !== known.generation) return incoming.generation > known.generation
  return incoming.heartbeat > known.heartbeat
}
