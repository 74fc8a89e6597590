import { primaryCounts, replicaCounts } from '../core/partition-map.js'
import { connect, type RepairState, type Topology } from '../client/client.js'
import { healthProbe, storageProbe, tcpProbe, type ProbeResult } from './probes.js'

export interface NodeStatus {
  id: string
  address: string
  /** The node's state as each reachable node sees it. */
  seenAs: Record<string, string>
  primaries: number
  replicas: number
  l4: ProbeResult
  l7: ProbeResult
  storage: ProbeResult & { writeMs?: number; readMs?: number }
  /** Hints held by other nodes for this node. */
  hintsFor: number
  /** Hints this node holds, by target. */
  hintsHeld: Record<string, number>
  repair: RepairState | undefined
}

export interface ClusterStatus {
  epoch: number
  partitionCount: number
  replicationFactor: number
  nodes: NodeStatus[]
}

export async function clusterStatus(seeds: string[], timeoutMs: number): Promise<ClusterStatus> {
  const db = await connect({ seeds, timeoutMs })
  try {
    const topology = await db.topology()
    const map = {
      epoch: topology.epoch,
      partitionCount: topology.partitionCount,
      replicationFactor: topology.replicationFactor,
      nodes: [...new Set(topology.partitions.flat())].sort(),
      replicas: topology.partitions,
    }
    const primaries = primaryCounts(map)
    const replicas = replicaCounts(map)
    // Every node's own view, so a disagreement (a partition between nodes) shows.
    const views = new Map<string, Topology>()
    await Promise.all(
      topology.nodes.map(async (node) => {
        try {
          const one = await connect({ seeds: [node.address], timeoutMs: Math.min(timeoutMs, 2000) })
          try {
            views.set(node.id, one.cachedTopology())
          } finally {
            await one.close()
          }
        } catch {
          // Unreachable: its view is simply absent.
        }
      }),
    )
    const nodes = await Promise.all(
      topology.nodes.map(async (node): Promise<NodeStatus> => {
        const [l4, l7, storage] = await Promise.all([tcpProbe(node.address, timeoutMs), healthProbe(node.address, timeoutMs), storageProbe(node.address, timeoutMs)])
        const seenAs: Record<string, string> = {}
        let hintsFor = 0
        for (const [viewer, view] of views) {
          const seen = view.nodes.find((n) => n.id === node.id)
          if (seen !== undefined && viewer !== node.id) seenAs[viewer] = seen.state
          hintsFor += seen?.hintsHeld ?? 0
        }
        const own = views.get(node.id)
        const hintsHeld: Record<string, number> = {}
        for (const n of own?.nodes ?? []) if (n.hintsHeld > 0) hintsHeld[n.id] = n.hintsHeld
        return {
          hintsHeld,
          repair: own?.repair,
          id: node.id,
          address: node.address,
          seenAs,
          primaries: primaries.get(node.id) ?? 0,
          replicas: replicas.get(node.id) ?? 0,
          l4,
          l7,
          storage,
          hintsFor,
        }
      }),
    )
    nodes.sort((a, b) => (a.id < b.id ? -1 : 1))
    return { epoch: topology.epoch, partitionCount: topology.partitionCount, replicationFactor: topology.replicationFactor, nodes }
  } finally {
    await db.close()
  }
}

function pad(cells: string[][]): string {
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)))
  return cells.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

export function formatStatus(status: ClusterStatus): string {
  const rows = [['NODE', 'ADDRESS', 'STATE', 'SEEN AS', 'PRIMARY', 'REPLICA', 'L4 TCP', 'L7 HEALTH', 'L7 STORAGE', 'HINTS FOR IT', 'HINTS HELD', 'REPAIR']]
  const now = Date.now()
  for (const n of status.nodes) {
    const views = Object.values(n.seenAs)
    const state = !n.l4.ok ? 'down' : n.l7.ok ? 'up' : n.l7.detail.toLowerCase()
    rows.push([
      n.id,
      n.address,
      state,
      Object.entries(n.seenAs).map(([by, s]) => `${by}:${s}`).join(',') || (views.length === 0 ? '-' : ''),
      String(n.primaries),
      String(n.replicas),
      n.l4.ok ? `ok ${n.l4.ms.toFixed(1)}ms` : `fail (${short(n.l4.detail)})`,
      n.l7.ok ? `${n.l7.detail} ${n.l7.ms.toFixed(1)}ms` : `fail (${short(n.l7.detail)})`,
      n.storage.ok ? `ok w ${n.storage.writeMs!.toFixed(1)}ms r ${n.storage.readMs!.toFixed(1)}ms` : `fail (${short(n.storage.detail)})`,
      String(n.hintsFor),
      Object.entries(n.hintsHeld).map(([to, count]) => `${to}:${count}`).join(',') || '0',
      formatRepair(n.repair, now),
    ])
  }
  return `cluster epoch ${status.epoch}, ${status.partitionCount} partitions, N=${status.replicationFactor}\n${pad(rows)}`
}

function formatRepair(repair: RepairState | undefined, now: number): string {
  if (repair === undefined) return '-'
  const age = (ms: number): string => {
    const s = Math.round((now - ms) / 1000)
    return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
  }
  const parts = [`${repair.partitionsRepaired}/${repair.partitionsHeld} repaired`]
  if (repair.oldestRepairMs > 0) parts.push(`oldest ${age(repair.oldestRepairMs)}`)
  else if (repair.lastRepairMs > 0) parts.push(`last ${age(repair.lastRepairMs)}`)
  if (repair.inProgress) parts.push('IN PROGRESS')
  return parts.join(', ')
}

/** A probe failure in a few words (gRPC's details run long). */
function short(detail: string): string {
  if (/ECONNREFUSED/.test(detail)) return 'connection refused'
  if (/timeout|deadline/i.test(detail)) return 'timeout'
  const first = detail.split(/[.:]/)[0]!.trim()
  return first.length > 40 ? `${first.slice(0, 37)}...` : first
}
