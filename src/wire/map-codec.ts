import { mapChangeKinds, type MapChangeKind, type PartitionMap } from '../core/partition-map.js'
import type { NodeInfoMsg, TopologyMsg } from './messages.js'

export function mapToMsg(map: PartitionMap, nodes: NodeInfoMsg[], answeredBy: string): TopologyMsg {
  const { targets, retiring, change } = map
  return {
    epoch: map.epoch,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes,
    partitions: map.replicas.map((list, p) => ({
      nodes: [...list],
      target: targets === undefined || targets[p] === list ? [] : [...targets[p]!],
      retiring: retiring === undefined ? [] : [...retiring[p]!],
    })),
    answeredBy,
    removed: [...(map.removed ?? [])],
    change:
      change === undefined
        ? null
        : { epoch: change.epoch, kind: change.kind, adds: [...change.adds], removes: [...change.removes], cancelled: change.cancelled === true },
  }
}

/** A map received from the wire, or undefined if it is not a well-formed map. */
export function mapFromMsg(msg: TopologyMsg | null | undefined): PartitionMap | undefined {
  if (!msg || !msg.epoch || msg.partitions.length !== msg.partitionCount || msg.partitionCount === 0) return undefined
  const change = msg.change
  const moving = change !== null && change !== undefined && change.epoch > 0
  if (moving && !mapChangeKinds.includes(change.kind as MapChangeKind)) return undefined
  const lists = (p: { nodes: string[]; target?: string[]; retiring?: string[] }): string[] =>
    moving ? [...p.nodes, ...(p.target ?? []), ...(p.retiring ?? [])] : p.nodes
  // A removed node listed as a replica: not a map any node made.
  if (msg.removed?.some((id) => msg.partitions.some((p) => lists(p).includes(id)))) return undefined
  const ids = new Set<string>()
  for (const p of msg.partitions) for (const id of lists(p)) ids.add(id)
  const replicas = msg.partitions.map((p) => [...p.nodes])
  return {
    epoch: msg.epoch,
    partitionCount: msg.partitionCount,
    replicationFactor: msg.replicationFactor,
    nodes: [...ids].sort(),
    replicas,
    ...(msg.removed !== undefined && msg.removed.length > 0 ? { removed: [...msg.removed].sort() } : {}),
    ...(moving
      ? {
          // A partition that does not move shares its list object (handoff's identity check).
          targets: msg.partitions.map((p, i) => (p.target !== undefined && p.target.length > 0 ? [...p.target] : replicas[i]!)),
          retiring: msg.partitions.map((p) => [...(p.retiring ?? [])]),
          change: {
            epoch: change.epoch,
            kind: change.kind as MapChangeKind,
            adds: [...change.adds],
            removes: [...change.removes],
            ...(change.cancelled === true ? { cancelled: true } : {}),
          },
        }
      : {}),
  }
}
