import { diffMaps, type PartitionMap, type ReplicaMove } from './partition-map.js'

/** The changes an operator plans (kumo plan) and commits; the claimant stages replaces and unplanned joins by itself. */
export type PlanKind = 'join' | 'leave' | 'remove'
export const planKinds: readonly PlanKind[] = ['join', 'leave', 'remove']

/** A change planned on map `baseEpoch` (kumo plan), not staged yet. */
export interface ChangePlan {
  readonly baseEpoch: number
  readonly kind: PlanKind
  readonly nodes: readonly string[]
  /** Each partition whose replica list changes: the replicas it loses and gains, and its current ones (the new ones copy from these). */
  readonly moves: readonly PlannedMove[]
  /** Replicas that go to another node. */
  readonly replicasMoved: number
}

export interface PlannedMove {
  readonly partition: number
  readonly from: readonly string[]
  readonly to: readonly string[]
  readonly replicas: readonly string[]
}

/** The moves between two maps, per partition (diffMaps grouped). */
export function plannedMoves(before: PartitionMap, after: PartitionMap): { moves: PlannedMove[]; replicasMoved: number } {
  const diff: ReplicaMove[] = diffMaps(before, after)
  const byPartition = new Map<number, { partition: number; from: string[]; to: string[]; replicas: string[] }>()
  for (const move of diff) {
    let entry = byPartition.get(move.partition)
    if (entry === undefined) byPartition.set(move.partition, (entry = { partition: move.partition, from: [], to: [], replicas: [...before.replicas[move.partition]!] }))
    if (move.from !== undefined) entry.from.push(move.from)
    if (move.to !== undefined) entry.to.push(move.to)
  }
  return { moves: [...byPartition.values()], replicasMoved: diff.filter((m) => m.to !== undefined).length }
}
