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
 * A pending replica that goes down reverts its partitions to stage 0 (advance), as does
 * cancelChange for every partition still in stage 1; the old lists never stopped taking
 * writes, so nothing is lost either way. When no partition is moving the change is finished:
 * the nodes a leave, remove or replace took out, and that hold nothing any more, are listed as
 * removed for good.
 */

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
  return target !== list && (target.length !== list.length || target.some((id) => !list.includes(id)))
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

/** Whether `id` takes writes of partition `p` (a read replica, a pending one, or a retiring one). */
export function takesWrites(map: PartitionMap, p: number, id: string): boolean {
  return writeLists(map)[p]!.includes(id)
}

/**
 * Starts moving `map` towards `next` (a map assignPartitions, removeNode or replaceNode made
 * from it): partitions whose replica *set* is unchanged take `next`'s order at once (a new
 * primary moves no data); the others get `next`'s list as their target. With nothing to move,
 * the change finishes at once.
 */
export function stageChange(map: PartitionMap, next: PartitionMap, change: Omit<MapChange, 'epoch' | 'cancelled'>): PartitionMap {
  assert.ok(map.change === undefined, 'one change at a time')
  assert.equal(next.partitionCount, map.partitionCount)
  const epoch = map.epoch + 1
  const replicas: (readonly string[])[] = []
  const targets: (readonly string[])[] = []
  for (let p = 0; p < map.partitionCount; p++) {
    const was = map.replicas[p]!
    const now = next.replicas[p]!
    const same = was.length === now.length && now.every((id) => was.includes(id))
    replicas.push(same ? now : was)
    targets.push(now)
  }
  const staged: PartitionMap = {
    epoch,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes: nodesOf(replicas, targets),
    replicas,
    ...(removedOf(map).length > 0 ? { removed: removedOf(map) } : {}),
    targets,
    retiring: replicas.map(() => none),
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
  if (switched.length === 0 && reverted.length === 0 && retired.length === 0) return unchanged
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
  const next: PartitionMap = { ...map, epoch: map.epoch + 1, replicas, targets, retiring, nodes: nodesOf(replicas, targets, retiring) }
  if (pendingPartitions(next).length + retiringPartitions(next).length > 0) {
    assertValidMap(next)
    return { map: next, switched, retired, reverted, finished: false }
  }
  return { map: finish(next), switched, retired, reverted, finished: true }
}

/**
 * Cancels the change in flight (kumo cancel): every partition still waiting for its pending
 * replicas goes back to its old list, which never stopped taking writes. Partitions whose reads
 * moved already finish moving. A node the change was taking out keeps what it still holds and
 * is not removed.
 */
export function cancelChange(map: PartitionMap): PartitionMap {
  assert.ok(map.change !== undefined && map.targets !== undefined && map.retiring !== undefined, 'a change is in flight')
  const next: PartitionMap = {
    ...map,
    epoch: map.epoch + 1,
    targets: map.targets.map((list, p) => (isPending(map, p) ? map.replicas[p]! : list)),
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
  assert.ok(change !== undefined && pendingPartitions(map).length === 0 && retiringPartitions(map).length === 0, 'finish only a change that moves nothing')
  const nodes = nodesOf(map.replicas, [])
  // A node the change was taking out that holds nothing any more is removed even when the
  // change was cancelled: its drain had finished before the cancel took effect.
  const gone = change.removes.filter((id) => !nodes.includes(id))
  const removed = [...new Set([...removedOf(map), ...gone])].sort()
  const { targets: _targets, retiring: _retiring, change: _change, removed: _removed, ...rest } = map
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

/** "12 partitions copying, 3 retiring": what the change in flight still moves. */
export function movingSummary(map: PartitionMap): string {
  const pending = pendingPartitions(map).length
  const retiring = retiringPartitions(map).length
  return `${pending} partition${pending === 1 ? '' : 's'} copying, ${retiring} retiring`
}

