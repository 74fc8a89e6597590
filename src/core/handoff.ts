import assert from 'node:assert/strict'
import { assertValidMap, removedOf, type MapChange, type PartitionMap } from './partition-map.js'

/**
 * Ownership handoff: how a membership change moves replicas without a moment where a partition
 * is read from a copy that is not caught up, and without a copy deleted while any node still
 * uses it. Pure: maps in, maps out; the claimant feeds it readiness, liveness and which map
 * every live node holds.
 *
 * Each moving partition goes through these stages (ScyllaDB's tablet migration stages;
 * Cassandra's pending ranges):
 *  1. write both, read old (stageChange): `targets[p]` is the list it moves to. Writes go to
 *     the old list and the pending replicas (target minus old), and need W of the read list
 *     plus one per other node in the write set (Cassandra's blockFor += pending), so every
 *     quorum of the old list and every quorum of the new one holds each acknowledged write.
 *  2. streaming (outside: anti-entropy): each pending replica copies the partition from a
 *     current replica, compares leaf hashes with every current replica, and reports it ready.
 *  3. write both, read new (advance): once every pending replica is ready, `replicas[p]`
 *     becomes the target; the replicas the reads left are `retiring`: they still take writes,
 *     since a node that has not yet heard of the switch still reads them.
 *  4. use new (advance): once every live node holds a map at least that new, the retiring
 *     replicas drop out of the write set.
 *  5. cleanup (outside: the stray-data sweep): a node deletes its copy of a partition it takes
 *     no writes of once every live node holds a map at least as new as its own.
 * Partitions move a wave at a time (`movesAtOnce` at most in stage 1): the others wait in
 * stage 0 with their end list in `goal` (queued), and each step of the claimant that switches
 * partitions stages as many queued ones in their place. A move's fixed costs (an extra replica on every write of a pending partition, one
 * more quorum acknowledgement, the final comparison) then fall on a wave's share of the writes,
 * not on all of them for the whole change.
 * A pending replica that goes down reverts its partitions to stage 0 (advance), and its queued
 * ones stay where they are, as does cancelChange for every partition still in stage 1 or
 * queued; the old lists never stopped taking writes, so nothing is lost either way. When no partition is moving the change is finished:
 * the nodes a leave, remove or replace took out, and that hold nothing any more, are listed as
 * removed for good.
 */

/**
 * Partitions a change moves at once by default (a wave). A smaller wave puts a move's extra
 * replica and extra acknowledgement on fewer of the clients' writes; each partition staged
 * costs the copier a wait for every node to hold its map and for writes coordinated on older
 * maps to land (anti-entropy), which a larger wave overlaps more.
 */
export const movesAtOnceDefault = 64

/**
 * Per partition, the nodes that take its writes but are not read replicas: pending (stage 1)
 * or retiring (stage 3); empty when it does not move. Computed once per map.
 */
export function extraWriteLists(map: PartitionMap): readonly (readonly string[])[] {
  let lists = extraByMap.get(map)
  if (lists === undefined) {
    const targets = map.targets
    const retiring = map.retiring
    lists = map.replicas.map((list, p) => {
      if (targets === undefined || retiring === undefined) return none
      const pending = targets[p] === list ? none : targets[p]!.filter((id) => !list.includes(id))
      return retiring[p]!.length === 0 ? pending : [...pending, ...retiring[p]!.filter((id) => !pending.includes(id))]
    })
    extraByMap.set(map, lists)
  }
  return lists
}

/** Per partition, every node that takes its writes: the read replicas first, then the extra ones. Computed once per map. */
export function writeLists(map: PartitionMap): readonly (readonly string[])[] {
  if (map.targets === undefined) return map.replicas
  let lists = writeByMap.get(map)
  if (lists === undefined) {
    const extra = extraWriteLists(map)
    lists = map.replicas.map((list, p) => (extra[p]!.length === 0 ? list : [...list, ...extra[p]!]))
    writeByMap.set(map, lists)
  }
  return lists
}

const none: readonly string[] = []
const extraByMap = new WeakMap<PartitionMap, readonly (readonly string[])[]>()
const writeByMap = new WeakMap<PartitionMap, readonly (readonly string[])[]>()

/** Whether partition `p` waits for its pending replicas (stage 1: its target differs from its read list as a set). */
export function isPending(map: PartitionMap, p: number): boolean {
  const target = map.targets?.[p]
  if (target === undefined) return false
  const list = map.replicas[p]!
  return !sameSet(target, list)
}

/** Partitions in stage 1 (waiting for their pending replicas). */
export function pendingPartitions(map: PartitionMap): number[] {
  const out: number[] = []
  if (map.targets === undefined) return out
  for (let p = 0; p < map.partitionCount; p++) if (isPending(map, p)) out.push(p)
  return out
}

/** Partitions in stage 3 (reads moved; retiring replicas still take writes). */
export function retiringPartitions(map: PartitionMap): number[] {
  const out: number[] = []
  map.retiring?.forEach((list, p) => {
    if (list.length > 0) out.push(p)
  })
  return out
}

/** Partitions where `id` is a pending replica (it must copy them and report them ready). */
export function pendingPartitionsOf(map: PartitionMap, id: string): number[] {
  const out: number[] = []
  for (const p of pendingPartitions(map)) if (!map.replicas[p]!.includes(id) && map.targets![p]!.includes(id)) out.push(p)
  return out
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a === b || (a.length === b.length && a.every((id) => b.includes(id)))
}

/** Whether partition `p` waits for a later wave: it is to move, and its wave has not been staged. */
export function isQueued(map: PartitionMap, p: number): boolean {
  const goal = map.goal?.[p]
  return goal !== undefined && !isPending(map, p) && (map.retiring?.[p]?.length ?? 0) === 0 && !sameSet(goal, map.replicas[p]!)
}

/** Partitions waiting for a later wave. */
export function queuedPartitions(map: PartitionMap): number[] {
  const out: number[] = []
  if (map.goal === undefined) return out
  for (let p = 0; p < map.partitionCount; p++) if (isQueued(map, p)) out.push(p)
  return out
}

/** Queued partitions `id` is to become a new replica of (it copies them in a later wave). */
export function queuedPartitionsOf(map: PartitionMap, id: string): number[] {
  return queuedPartitions(map).filter((p) => map.goal![p]!.includes(id) && !map.replicas[p]!.includes(id))
}

/**
 * Stages up to `count` queued partitions (targets[p] := goal[p]), each time for the node that
 * gains replicas with the fewest partitions pending now (the lowest id on a tie), so that every
 * new replica keeps copying: a change's copy rate is shared among its copiers, and one whose
 * turn never came would hold its share idle. Deterministic: the same map gives the same wave on
 * every claimant.
 */
function stageWave(replicas: readonly (readonly string[])[], targets: (readonly string[])[], goal: readonly (readonly string[])[], queued: readonly number[], count: number): void {
  const gainers = (p: number, list: readonly string[]): string[] => list.filter((id) => !replicas[p]!.includes(id))
  const pending = new Map<string, number>()
  for (let p = 0; p < targets.length; p++) {
    if (targets[p] === replicas[p]) continue
    for (const id of gainers(p, targets[p]!)) pending.set(id, (pending.get(id) ?? 0) + 1)
  }
  const lanes = new Map<string, number[]>()
  for (const p of queued) {
    const gainer = gainers(p, goal[p]!)[0] ?? goal[p]![0]!
    let lane = lanes.get(gainer)
    if (lane === undefined) lanes.set(gainer, (lane = []))
    lane.push(p)
  }
  const ids = [...lanes.keys()].sort()
  const next = new Map(ids.map((id) => [id, 0]))
  for (let staged = 0; staged < count; staged++) {
    let best: string | undefined
    for (const id of ids) {
      if (next.get(id)! >= lanes.get(id)!.length) continue
      if (best === undefined || (pending.get(id) ?? 0) < (pending.get(best) ?? 0)) best = id
    }
    if (best === undefined) return
    const p = lanes.get(best)![next.get(best)!]!
    next.set(best, next.get(best)! + 1)
    targets[p] = goal[p]!
    for (const id of gainers(p, goal[p]!)) pending.set(id, (pending.get(id) ?? 0) + 1)
  }
}

/** Whether `id` takes writes of partition `p` (a read replica, a pending one, or a retiring one). */
export function takesWrites(map: PartitionMap, p: number, id: string): boolean {
  return writeLists(map)[p]!.includes(id)
}

/**
 * Starts moving `map` towards `next` (a map assignPartitions, removeNode or replaceNode made
 * from it): partitions whose replica *set* is unchanged take `next`'s order at once (a new
 * primary moves no data); the others get `next`'s list as their goal, and the first
 * `movesAtOnce` of them as their target (the first wave). With nothing to move, the change
 * finishes at once.
 */
export function stageChange(map: PartitionMap, next: PartitionMap, change: Omit<MapChange, 'epoch' | 'cancelled'>, movesAtOnce = Infinity): PartitionMap {
  assert.ok(map.change === undefined, 'one change at a time')
  assert.equal(next.partitionCount, map.partitionCount)
  assert.ok(movesAtOnce >= 1, 'a wave moves at least one partition')
  const epoch = map.epoch + 1
  const replicas: (readonly string[])[] = []
  const goal: (readonly string[])[] = []
  const queued: number[] = []
  for (let p = 0; p < map.partitionCount; p++) {
    const was = map.replicas[p]!
    const now = next.replicas[p]!
    const same = sameSet(was, now)
    replicas.push(same ? now : was)
    goal.push(now)
    if (!same) queued.push(p)
  }
  const targets = [...replicas]
  stageWave(replicas, targets, goal, queued, movesAtOnce)
  const staged: PartitionMap = {
    epoch,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes: nodesOf(replicas, targets, goal),
    replicas,
    ...(removedOf(map).length > 0 ? { removed: removedOf(map) } : {}),
    targets,
    retiring: replicas.map(() => none),
    // Only while some partition waits for a later wave: otherwise the goal is the targets, and
    // the map is the one nodes from before waves make and read.
    ...(queued.length > movesAtOnce ? { goal } : {}),
    change: { kind: change.kind, adds: [...change.adds].sort(), removes: [...change.removes].sort(), epoch },
  }
  if (pendingPartitions(staged).length === 0) return finish(staged)
  assertValidMap(staged)
  return staged
}

export interface AdvanceResult {
  map: PartitionMap
  /** Partitions whose reads moved to their new lists (stage 1 to 3). */
  switched: number[]
  /** Partitions whose retiring replicas stopped taking writes (stage 3 to done). */
  retired: number[]
  /** Partitions that went back to their old lists (a pending replica went down). */
  reverted: number[]
  /** Whether the change finished (nothing moves any more). */
  finished: boolean
}

export interface AdvanceInput {
  /** Whether pending replica `id` has caught up on partition `p`. */
  ready(p: number, id: string): boolean
  /** Whether node `id` is down. */
  down(id: string): boolean
  /** Whether every live node holds a map at least as new as `map` (so all know of its switches). */
  everyNodeOnEpoch: boolean
  /** Partitions in stage 1 at once, at most: queued ones are staged as others switch (default: all at once). */
  movesAtOnce?: number
}

/**
 * One step of the claimant: reverts every stage-1 partition with a pending replica that is
 * down, switches the reads of every one whose pending replicas are all ready, retires the old
 * replicas of stage-3 partitions once every live node holds this map, and finishes the change
 * when nothing moves any more. Returns `map` itself when nothing changed.
 */
export function advance(map: PartitionMap, input: AdvanceInput): AdvanceResult {
  const unchanged: AdvanceResult = { map, switched: [], retired: [], reverted: [], finished: false }
  if (map.change === undefined || map.targets === undefined || map.retiring === undefined) return unchanged
  const switched: number[] = []
  const reverted: number[] = []
  const retired = input.everyNodeOnEpoch ? retiringPartitions(map) : []
  for (const p of pendingPartitions(map)) {
    const pending = map.targets[p]!.filter((id) => !map.replicas[p]!.includes(id))
    if (pending.some((id) => input.down(id))) reverted.push(p)
    else if (pending.every((id) => input.ready(p, id))) switched.push(p)
  }
  // Queued partitions whose new replica is down stay where they are, as its pending ones do.
  const queued = queuedPartitions(map)
  const dropped = queued.filter((p) => map.goal![p]!.some((id) => !map.replicas[p]!.includes(id) && input.down(id)))
  const droppedSet = new Set(dropped)
  const waiting = queued.filter((p) => !droppedSet.has(p))
  const movesAtOnce = input.movesAtOnce ?? Infinity
  const stillPending = pendingPartitions(map).length - switched.length - reverted.length
  // Topped up in the same step that switched partitions (no map more): each new one waits for
  // its own map to reach every node, so nothing is gained by staging them in bigger batches.
  const wave = waiting.length > 0 && stillPending < movesAtOnce ? Math.min(waiting.length, movesAtOnce - stillPending) : 0
  if (switched.length === 0 && reverted.length === 0 && retired.length === 0 && dropped.length === 0 && wave === 0) return unchanged
  const switchedSet = new Set(switched)
  const revertedSet = new Set(reverted)
  const retiredSet = new Set(retired)
  const replicas = map.replicas.map((list, p) => (switchedSet.has(p) ? map.targets![p]! : list))
  const targets = map.targets.map((list, p) => (revertedSet.has(p) ? replicas[p]! : switchedSet.has(p) ? replicas[p]! : list))
  const retiring = map.retiring.map((list, p) => {
    if (retiredSet.has(p)) return none
    if (!switchedSet.has(p)) return list
    const left = map.replicas[p]!.filter((id) => !replicas[p]!.includes(id))
    return left.length === 0 ? none : left
  })
  // A partition that reverted or was dropped ends where it is.
  const goal = map.goal?.map((list, p) => (revertedSet.has(p) || droppedSet.has(p) ? replicas[p]! : list))
  if (goal !== undefined && wave > 0) stageWave(replicas, targets, goal, waiting, wave)
  const next: PartitionMap = {
    ...map,
    epoch: map.epoch + 1,
    replicas,
    targets,
    retiring,
    ...(goal !== undefined ? { goal } : {}),
    ...(wave > 0 ? { change: { ...map.change, waveEpoch: map.epoch + 1 } } : {}),
    nodes: nodesOf(replicas, targets, retiring, goal),
  }
  const reportedReverted = [...reverted, ...dropped].sort((a, b) => a - b)
  if (pendingPartitions(next).length + retiringPartitions(next).length + queuedPartitions(next).length > 0) {
    assertValidMap(next)
    return { map: next, switched, retired, reverted: reportedReverted, finished: false }
  }
  return { map: finish(next), switched, retired, reverted: reportedReverted, finished: true }
}

/**
 * Cancels the change in flight (kumo cancel): every partition still waiting for its pending
 * replicas goes back to its old list, which never stopped taking writes. Partitions whose reads
 * moved already finish moving. A node the change was taking out keeps what it still holds and
 * is not removed.
 */
export function cancelChange(map: PartitionMap): PartitionMap {
  assert.ok(map.change !== undefined && map.targets !== undefined && map.retiring !== undefined, 'a change is in flight')
  const targets = map.targets.map((list, p) => (isPending(map, p) ? map.replicas[p]! : list))
  const next: PartitionMap = {
    ...map,
    epoch: map.epoch + 1,
    targets,
    // Queued partitions stay where they are: the goal is what the targets are now.
    ...(map.goal !== undefined ? { goal: targets } : {}),
    change: { ...map.change, cancelled: true },
  }
  if (retiringPartitions(next).length > 0) {
    const settled = { ...next, nodes: nodesOf(next.replicas, next.targets!, next.retiring) }
    assertValidMap(settled)
    return settled
  }
  return finish(next)
}

/**
 * The map once nothing moves: no targets, no change; the nodes a leave, remove or replace took
 * out (and that no list holds any more) listed as removed for good.
 */
function finish(map: PartitionMap): PartitionMap {
  const change = map.change
  assert.ok(change !== undefined && pendingPartitions(map).length === 0 && retiringPartitions(map).length === 0 && queuedPartitions(map).length === 0, 'finish only a change that moves nothing')
  const nodes = nodesOf(map.replicas, [])
  // A node the change was taking out that holds nothing any more is removed even when the
  // change was cancelled: its drain had finished before the cancel took effect.
  const gone = change.removes.filter((id) => !nodes.includes(id))
  const removed = [...new Set([...removedOf(map), ...gone])].sort()
  const { targets: _targets, retiring: _retiring, goal: _goal, change: _change, removed: _removed, ...rest } = map
  const done: PartitionMap = { ...rest, nodes, ...(removed.length > 0 ? { removed } : {}) }
  assertValidMap(done)
  return done
}

/** Member ids of a map: every node in any of its lists, sorted. */
function nodesOf(...lists: readonly (readonly (readonly string[])[] | undefined)[]): string[] {
  const ids = new Set<string>()
  for (const group of lists) for (const list of group ?? []) for (const id of list) ids.add(id)
  return [...ids].sort()
}

/** "n4 joins", "n2 leaves", ... */
export function describeChange(change: MapChange): string {
  const list = (ids: readonly string[]): string => ids.join(', ')
  const what =
    change.kind === 'join'
      ? `${list(change.adds)} ${change.adds.length === 1 ? 'joins' : 'join'}`
      : change.kind === 'leave'
        ? `${list(change.removes)} leaves`
        : change.kind === 'remove'
          ? `${list(change.removes)} is removed`
          : `${list(change.adds)} replaces ${list(change.removes)}`
  return `${what} (epoch ${change.epoch}${change.cancelled === true ? ', cancelled' : ''})`
}

/** "12 partitions copying, 3 retiring, 40 queued": what the change in flight still moves. */
export function movingSummary(map: PartitionMap): string {
  const pending = pendingPartitions(map).length
  const retiring = retiringPartitions(map).length
  const queued = queuedPartitions(map).length
  return `${pending} partition${pending === 1 ? '' : 's'} copying, ${retiring} retiring${queued > 0 ? `, ${queued} queued` : ''}`
}

