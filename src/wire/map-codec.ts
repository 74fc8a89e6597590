import { mapChangeKinds, type MapChangeKind, type PartitionMap } from '../core/partition-map.js'
import type { NodeInfoMsg, TopologyMsg } from './messages.js'

export function mapToMsg(map: PartitionMap, nodes: NodeInfoMsg[], answeredBy: string): TopologyMsg {
  const { targets, retiring, goal, change } = map
  return {
    epoch: map.epoch,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes,
    partitions: map.replicas.map((list, p) => ({
      nodes: [...list],
      target: targets === undefined || targets[p] === list ? [] : [...targets[p]!],
      retiring: retiring === undefined ? [] : [...retiring[p]!],
      goal: goal === undefined || targets === undefined || goal[p] === targets[p] ? [] : [...goal[p]!],
    })),
    answeredBy,
    removed: [...(map.removed ?? [])],
    change:
      change === undefined
        ? null
        : { epoch: change.epoch, kind: change.kind, adds: [...change.adds], removes: [...change.removes], cancelled: change.cancelled === true, waves: goal !== undefined, waveEpoch: change.waveEpoch ?? 0 },
  }
}

/** A map received from the wire, or undefined if it is not a well-formed map. */
export function mapFromMsg(msg: TopologyMsg | null | undefined): PartitionMap | undefined {
  if (!msg || !msg.epoch || msg.partitions.length !== msg.partitionCount || msg.partitionCount === 0) return undefined
  const change = msg.change
  const moving = change !== null && change !== undefined && change.epoch > 0
  if (moving && !mapChangeKinds.includes(change.kind as MapChangeKind)) return undefined
  const lists = (p: { nodes: string[]; target?: string[]; retiring?: string[]; goal?: string[] }): string[] =>
    moving ? [...p.nodes, ...(p.target ?? []), ...(p.retiring ?? []), ...(p.goal ?? [])] : p.nodes
  // A removed node listed as a replica: not a map any node made.
  if (msg.removed?.some((id) => msg.partitions.some((p) => lists(p).includes(id)))) return undefined
  const ids = new Set<string>()
  for (const p of msg.partitions) for (const id of lists(p)) ids.add(id)
  const replicas = msg.partitions.map((p) => [...p.nodes])
  // A partition that does not move shares its list object (handoff's identity check), and one
  // whose goal is its target shares that.
  const targets = msg.partitions.map((p, i) => (p.target !== undefined && p.target.length > 0 ? [...p.target] : replicas[i]!))
  return {
    epoch: msg.epoch,
    partitionCount: msg.partitionCount,
    replicationFactor: msg.replicationFactor,
    nodes: [...ids].sort(),
    replicas,
    ...(msg.removed !== undefined && msg.removed.length > 0 ? { removed: [...msg.removed].sort() } : {}),
    ...(moving
      ? {
          targets,
          retiring: msg.partitions.map((p) => [...(p.retiring ?? [])]),
          ...(change.waves === true ? { goal: msg.partitions.map((p, i) => (p.goal !== undefined && p.goal.length > 0 ? [...p.goal] : targets[i]!)) } : {}),
          change: {
            epoch: change.epoch,
            kind: change.kind as MapChangeKind,
            adds: [...change.adds],
            removes: [...change.removes],
            ...(change.cancelled === true ? { cancelled: true } : {}),
            ...(change.waveEpoch !== undefined && change.waveEpoch > 0 ? { waveEpoch: Number(change.waveEpoch) } : {}),
          },
        }
      : {}),
  }
}
