import type { PartitionMap } from '../core/partition-map.js'
import type { NodeInfoMsg, TopologyMsg } from '../wire/messages.js'

export function mapToMsg(map: PartitionMap, nodes: NodeInfoMsg[], answeredBy: string): TopologyMsg {
  return {
    epoch: map.epoch,
    partitionCount: map.partitionCount,
    replicationFactor: map.replicationFactor,
    nodes,
    partitions: map.replicas.map((list) => ({ nodes: [...list] })),
    answeredBy,
    removed: [...(map.removed ?? [])],
  }
}

/** A map received from the wire, or undefined if it is not a well-formed map. */
export function mapFromMsg(msg: TopologyMsg | null | undefined): PartitionMap | undefined {
  if (!msg || !msg.epoch || msg.partitions.length !== msg.partitionCount || msg.partitionCount === 0) return undefined
  // A removed node listed as a replica: not a map any node made.
  if (msg.removed?.some((id) => msg.partitions.some((p) => p.nodes.includes(id)))) return undefined
  const ids = new Set<string>()
  for (const p of msg.partitions) for (const id of p.nodes) ids.add(id)
  return {
    epoch: msg.epoch,
    partitionCount: msg.partitionCount,
    replicationFactor: msg.replicationFactor,
    nodes: [...ids].sort(),
    replicas: msg.partitions.map((p) => [...p.nodes]),
    ...(msg.removed !== undefined && msg.removed.length > 0 ? { removed: [...msg.removed].sort() } : {}),
  }
}
