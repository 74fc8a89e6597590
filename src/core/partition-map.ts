import assert from 'node:assert/strict'
import murmurhash from 'murmurhash'
import { assertPartitionCount } from './partitioner.js'

/**
 * Which nodes hold each partition. Pure data, replaced (never mutated) when membership
 * changes; a newer epoch always wins.
 */
export interface PartitionMap {
  readonly epoch: number
  readonly partitionCount: number
  /** N: replicas per partition once the cluster has at least N nodes. */
  readonly replicationFactor: number
  /** Member node ids, sorted. */
  readonly nodes: readonly string[]
  /** Per partition, its preference list: min(N, nodes) distinct node ids, primary first. */
  readonly replicas: readonly (readonly string[])[]
  /**
   * Nodes removed for good (kumo remove), sorted: never members again under these ids, and
   * refused if they come back. Absent in maps persisted before removal existed.
   */
  readonly removed?: readonly string[]
  /**
   * While a membership change moves replicas (core/handoff.ts): per partition, the list it
   * moves to (the same set as `replicas[p]` where nothing moves). Absent when nothing moves.
   */
  readonly targets?: readonly (readonly string[])[]
  /**
   * While a change is in flight: per partition, the replicas its reads moved away from that
   * still take its writes until every live node holds the map that moved the reads (empty
   * elsewhere). Absent when nothing moves.
   */
  readonly retiring?: readonly (readonly string[])[]
  /**
   * While a change is in flight: per partition, the list the change ends it on. A partition
   * whose goal differs from its read list (as a set) and that is not pending yet is queued: the
   * claimant moves partitions a wave at a time (core/handoff), so `targets` differs from
   * `replicas` only for the wave. Absent in maps of a change staged before waves existed: the
   * goal is then `targets`.
   */
  readonly goal?: readonly (readonly string[])[]
  /** The membership change in flight, with `targets`, `retiring` and `goal`. */
  readonly change?: MapChange
}

/** A membership change in flight (one at a time). */
export interface MapChange {
  /** The epoch of the map that staged it: names the change. */
  readonly epoch: number
  readonly kind: MapChangeKind
  /** Nodes it adds (a join; replace's new node). */
  readonly adds: readonly string[]
  /** Nodes it takes out (leave, remove; replace's dead node): removed for good when it finishes. */
  readonly removes: readonly string[]
  /** Set by cancelChange on the way to finishing: nobody is removed. */
  readonly cancelled?: boolean
  /**
   * The epoch of the map that staged the latest wave (absent: the change's own epoch). A client
   * whose map is older may not know which partitions move, so its direct writes to moving
   * partitions are refused (node/coordinator).
   */
  readonly waveEpoch?: number
}

export type MapChangeKind = 'join' | 'leave' | 'remove' | 'replace'
export const mapChangeKinds: readonly MapChangeKind[] = ['join', 'leave', 'remove', 'replace']

export interface PartitionMapConfig {
  partitionCount: number
  replicationFactor: number
}

export interface ReplicaMove {
  partition: number
  /** The node that stops holding the partition (undefined when a slot was added). */
  from: string | undefined
  /** The node that starts holding it (undefined when a slot was dropped). */
  to: string | undefined
}

/** A stable pseudo-random tie-breaker, so equal choices do not pile onto the lowest id. */
function tiebreak(partition: number, node: string): number {
  return murmurhash.v3(`${partition}/${node}`, 0x6b756d6f)
}

function sortedUnique(ids: readonly string[]): string[] {
  return [...new Set(ids)].sort()
}

/**
 * The partition map for `members`, computed from `previous` so that as few replicas as possible
 * change owner:
 *  1. drop departed nodes from every preference list (the next replica moves up);
 *  2. give each node a target of floor or ceil of P·n/M replicas, the larger targets to the
 *     nodes that already hold the most;
 *  3. fill short lists with the node furthest below its target;
 *  4. move replicas from nodes above target to nodes below it, one at a time;
 *  5. reorder lists (no data moves) so each node is primary for about P/M partitions.
 * Deterministic: the same inputs give the same map on every node.
 */
export function assignPartitions(
  previous: PartitionMap | undefined,
  members: readonly string[],
  config: PartitionMapConfig,
): PartitionMap {
  const nodes = sortedUnique(members)
  assert.ok(nodes.length > 0, 'a partition map needs at least one node')
  assertPartitionCount(config.partitionCount)
  assert.ok(config.replicationFactor >= 1, 'replication factor must be at least 1')
  if (previous !== undefined) {
    assert.ok(previous.change === undefined, 'a new assignment starts from a map with no change in flight')
    assert.equal(previous.partitionCount, config.partitionCount, 'partition count is fixed')
    if (
      previous.replicationFactor === config.replicationFactor &&
      previous.nodes.length === nodes.length &&
      previous.nodes.every((id, i) => id === nodes[i])
    ) {
      return previous
    }
  }

  const P = config.partitionCount
  const n = Math.min(config.replicationFactor, nodes.length)
  const members_ = new Set(nodes)
  const lists: string[][] = []
  for (let p = 0; p < P; p++) {
    const kept = (previous?.replicas[p] ?? []).filter((id) => members_.has(id))
    lists.push(kept.slice(0, n))
  }
  if (previous === undefined) {
    // A fresh cluster: a ring layout is already perfectly balanced, primaries included.
    for (let p = 0; p < P; p++) {
      for (let i = 0; i < n; i++) lists[p]!.push(nodes[(p + i) % nodes.length]!)
    }
  }

  const counts = new Map<string, number>(nodes.map((id) => [id, 0]))
  for (const list of lists) for (const id of list) counts.set(id, counts.get(id)! + 1)

  const totalSlots = P * n
  const base = Math.floor(totalSlots / nodes.length)
  const extra = totalSlots % nodes.length
  const byLoad = [...nodes].sort((a, b) => counts.get(b)! - counts.get(a)! || (a < b ? -1 : 1))
  const targets = new Map<string, number>(byLoad.map((id, i) => [id, base + (i < extra ? 1 : 0)]))
  const deficit = (id: string): number => targets.get(id)! - counts.get(id)!

  // 3. Fill: a bipartite matching of empty slots to under-target nodes (Kuhn's augmenting
  // paths), so a slot that only an already-busy node can take gets it by shifting that node's
  // other new slot elsewhere, rather than overshooting a target and forcing an extra move later.
  const holes: number[] = []
  for (let p = 0; p < P; p++) for (let i = lists[p]!.length; i < n; i++) holes.push(p)
  const holder: (string | undefined)[] = holes.map(() => undefined)
  const taken = new Map<string, number[]>(nodes.map((id) => [id, []]))
  const takenIn = (p: number, id: string): boolean =>
    lists[p]!.includes(id) || taken.get(id)!.some((h) => holes[h] === p)
  const augment = (hole: number, visited: Set<string>): boolean => {
    const p = holes[hole]!
    const before = holder[hole]
    const candidates = nodes
      .filter((id) => !visited.has(id) && !takenIn(p, id))
      .sort((a, b) => deficit(b) - taken.get(b)!.length - (deficit(a) - taken.get(a)!.length) || tiebreak(p, a) - tiebreak(p, b))
    for (const id of candidates) {
      visited.add(id)
      const mine = taken.get(id)!
      if (mine.length < deficit(id)) {
        mine.push(hole)
        holder[hole] = id
        return true
      }
      for (let k = 0; k < mine.length; k++) {
        const other = mine[k]!
        mine[k] = hole // hold the place so the recursion does not hand `other` back to us
        holder[hole] = id
        if (augment(other, visited)) return true
        mine[k] = other
        holder[hole] = before
      }
    }
    return false
  }
  for (let h = 0; h < holes.length; h++) augment(h, new Set())
  for (let h = 0; h < holes.length; h++) {
    const p = holes[h]!
    let id = holder[h]
    if (id === undefined) {
      // No under-target node fits: take the least loaded eligible one; step 4 evens it out.
      for (const candidate of nodes) {
        if (takenIn(p, candidate)) continue
        if (id === undefined || deficit(candidate) > deficit(id)) id = candidate
      }
      assert.ok(id !== undefined, 'a node outside the list always exists since n <= M')
      taken.get(id)!.push(h)
    }
  }
  for (const [id, hs] of taken) for (const h of hs) lists[holes[h]!]!.push(id)
  for (const [id, hs] of taken) counts.set(id, counts.get(id)! + hs.length)

  // 4. Rebalance: each step takes one replica from an over-target node to an under-target one.
  // Termination: every step lowers the total excess by one.
  for (let step = 0; ; step++) {
    assert.ok(step <= totalSlots, 'rebalance must terminate')
    const over = nodes.filter((id) => deficit(id) < 0).sort((a, b) => deficit(a) - deficit(b))
    if (over.length === 0) break
    const under = nodes.filter((id) => deficit(id) > 0).sort((a, b) => deficit(b) - deficit(a))
    assert.ok(under.length > 0, 'slots are conserved, so excess implies a deficit')
    let moved = false
    for (const from of over) {
      for (const to of under) {
        const start = tiebreak(0, from + '>' + to) % P
        for (let k = 0; k < P && !moved; k++) {
          const list = lists[(start + k) % P]!
          const at = list.indexOf(from)
          if (at >= 0 && !list.includes(to)) {
            list[at] = to
            moved = true
          }
        }
        if (moved) {
          counts.set(from, counts.get(from)! - 1)
          counts.set(to, counts.get(to)! + 1)
          break
        }
      }
      if (moved) break
    }
    assert.ok(moved, 'an over-target node holds a partition an under-target node lacks')
  }

  balancePrimaries(lists, nodes)

  const map: PartitionMap = {
    epoch: (previous?.epoch ?? 0) + 1,
    partitionCount: P,
    replicationFactor: config.replicationFactor,
    nodes,
    replicas: lists,
    ...(removedOf(previous).length > 0 ? { removed: removedOf(previous) } : {}),
  }
  assertValidMap(map)
  return map
}

/** The nodes a map says were removed for good. */
export function removedOf(map: PartitionMap | undefined): readonly string[] {
  return map?.removed ?? []
}

/**
 * The map with `fresh` in exactly `dead`'s places (kumo start --replace): no other replica
 * moves, and `dead` is listed as removed for good.
 */
export function replaceNode(map: PartitionMap, dead: string, fresh: string): PartitionMap {
  assert.ok(map.nodes.includes(dead), `node ${dead} is in the map`)
  assert.ok(!map.nodes.includes(fresh) && !removedOf(map).includes(fresh), `node ${fresh} is new`)
  const next: PartitionMap = {
    epoch: map.epoch + 1,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes: sortedUnique([...map.nodes.filter((id) => id !== dead), fresh]),
    replicas: map.replicas.map((list) => list.map((id) => (id === dead ? fresh : id))),
    removed: sortedUnique([...removedOf(map), dead]),
  }
  assertValidMap(next)
  return next
}

/**
 * The map without `id`, removed for good: its replicas go to the other nodes (only its own
 * replicas move, each node staying within one of the mean), and the id is listed as removed.
 */
export function removeNode(map: PartitionMap, id: string, config: PartitionMapConfig): PartitionMap {
  assert.ok(map.nodes.includes(id), `node ${id} is in the map`)
  assert.ok(map.nodes.length > 1, 'the last node cannot be removed')
  const next = assignPartitions(map, map.nodes.filter((n) => n !== id), config)
  return { ...next, removed: sortedUnique([...removedOf(map), id]) }
}

/** Swaps list order so each node is primary (first) for floor or ceil of P/M partitions. */
function balancePrimaries(lists: string[][], nodes: readonly string[]): void {
  const P = lists.length
  const primaries = new Map<string, number>(nodes.map((id) => [id, 0]))
  for (const list of lists) primaries.set(list[0]!, primaries.get(list[0]!)! + 1)
  const floor = Math.floor(P / nodes.length)
  const ceil = Math.ceil(P / nodes.length)
  for (let step = 0; step < P; step++) {
    const over = nodes.find((id) => primaries.get(id)! > ceil)
    const under = nodes.find((id) => primaries.get(id)! < floor)
    let from: string | undefined
    let to: string | undefined
    if (over !== undefined) {
      from = over
      to = under ?? nodes.find((id) => primaries.get(id)! < ceil)
    } else if (under !== undefined) {
      from = nodes.find((id) => primaries.get(id)! > floor)
      to = under
    }
    if (from === undefined || to === undefined) return
    const under_ = to
    const p = lists.findIndex((list) => list[0] === from && list.includes(under_))
    if (p < 0) return
    const list = lists[p]!
    list[list.indexOf(under_)] = from
    list[0] = under_
    primaries.set(from, primaries.get(from)! - 1)
    primaries.set(under_, primaries.get(under_)! + 1)
  }
}

export function assertValidMap(map: PartitionMap): void {
  assert.equal(map.replicas.length, map.partitionCount)
  const n = Math.min(map.replicationFactor, map.nodes.length)
  const members = new Set(map.nodes)
  for (const id of removedOf(map)) assert.ok(!members.has(id), 'a removed node is not a member')
  const check = (list: readonly string[], exact: boolean): void => {
    // While a change moves replicas, lists may be of the old size or the new one (a cluster
    // growing past N or shrinking below it), and a change reverted while it grew a cluster
    // smaller than N leaves some lists short until the next change; otherwise all are min(N, M).
    if (exact) assert.ok(list.length >= 1 && list.length <= n, 'every preference list has 1..min(N, M) replicas')
    else assert.ok(list.length >= 1 && list.length <= map.replicationFactor, 'a preference list has 1..N replicas')
    assert.equal(new Set(list).size, list.length, 'a preference list has distinct nodes')
    for (const id of list) assert.ok(members.has(id), 'replicas are members')
  }
  assert.equal(map.targets === undefined, map.change === undefined, 'targets exactly while a change is in flight')
  assert.equal(map.retiring === undefined, map.change === undefined, 'retiring lists exactly while a change is in flight')
  assert.ok(map.goal === undefined || map.change !== undefined, 'goal lists only while a change is in flight')
  for (const list of map.replicas) check(list, map.targets === undefined)
  if (map.targets !== undefined) {
    assert.equal(map.targets.length, map.partitionCount)
    for (const list of map.targets) check(list, false)
    if (map.goal !== undefined) {
      assert.equal(map.goal.length, map.partitionCount)
      for (const list of map.goal) check(list, false)
    }
    map.retiring!.forEach((list, p) => {
      for (const id of list) {
        assert.ok(members.has(id), 'retiring replicas are members')
        assert.ok(!map.replicas[p]!.includes(id), 'a retiring replica is not a read replica')
      }
    })
  }
}

/** Replicas held per node (primary or not). */
export function replicaCounts(map: PartitionMap): Map<string, number> {
  const counts = new Map<string, number>(map.nodes.map((id) => [id, 0]))
  for (const list of map.replicas) for (const id of list) counts.set(id, (counts.get(id) ?? 0) + 1)
  return counts
}

/** Partitions where each node is primary. */
export function primaryCounts(map: PartitionMap): Map<string, number> {
  const counts = new Map<string, number>(map.nodes.map((id) => [id, 0]))
  for (const list of map.replicas) counts.set(list[0]!, (counts.get(list[0]!) ?? 0) + 1)
  return counts
}

/** Replica slots that change owner between two maps (reordering within a list is not a move). */
export function diffMaps(before: PartitionMap, after: PartitionMap): ReplicaMove[] {
  const moves: ReplicaMove[] = []
  for (let p = 0; p < after.partitionCount; p++) {
    const was = new Set(before.replicas[p])
    const now = new Set(after.replicas[p])
    const gone = [...was].filter((id) => !now.has(id))
    const came = [...now].filter((id) => !was.has(id))
    for (let i = 0; i < Math.max(gone.length, came.length); i++) {
      moves.push({ partition: p, from: gone[i], to: came[i] })
    }
  }
  return moves
}

/** Which map wins when two disagree: the higher epoch, then the larger content hash. */
export function newerMap(a: PartitionMap, b: PartitionMap): PartitionMap {
  if (a.epoch !== b.epoch) return a.epoch > b.epoch ? a : b
  return mapFingerprint(a) >= mapFingerprint(b) ? a : b
}

export function mapFingerprint(map: PartitionMap): number {
  // The goal only when there is one: a map without it hashes as it did before waves existed, so
  // nodes of both versions pick the same winner between two maps of one epoch.
  const fields: unknown[] = [map.nodes, map.replicas, removedOf(map), map.targets ?? null, map.retiring ?? null, map.change ?? null]
  if (map.goal !== undefined) fields.push(map.goal)
  return murmurhash.v3(JSON.stringify(fields), 0)
}

/**
 * An id of a preference list's replica *set*: requests are grouped by it, because writes go to
 * every replica and reads pick replicas by policy, so list order (the primary) does not matter
 * and [a,b,c] and [b,c,a] share one message.
 */
export function replicaSetId(replicas: readonly string[]): string {
  return replicas.length === 1 ? replicas[0]! : [...replicas].sort().join('\u0000')
}

const setIdsByLists = new WeakMap<readonly (readonly string[])[], string[]>()

/** replicaSetId of every partition's list, computed once per (immutable) list of lists. */
export function replicaSetIds(lists: readonly (readonly string[])[]): string[] {
  let ids = setIdsByLists.get(lists)
  if (ids === undefined) setIdsByLists.set(lists, (ids = lists.map((replicas) => replicaSetId(replicas))))
  return ids
}
