import { mappedTablesMax } from '../core/cache-sizes.js'
import { primaryCounts, replicaCounts } from '../core/partition-map.js'
import { changeInWords, connect, type RepairState } from '../client/client.js'
import { NodeConnection } from '../client/node-connection.js'
import type { TopologyMsg } from '../wire/messages.js'
import { clientChannels, insecureChannels, type TlsOptions, type UserCredentials } from '../wire/channel-security.js'
import { healthProbe, storageProbe, tcpProbe, type CacheFigures, type ProbeResult } from './probes.js'

export interface NodeStatus {
  id: string
  address: string
  /** The node's state as each reachable node sees it. */
  seenAs: Record<string, string>
  primaries: number
  replicas: number
  l4: ProbeResult
  l7: ProbeResult
  storage: ProbeResult & { writeMs?: number; readMs?: number; caches?: CacheFigures }
  /** Hints held by other nodes for this node. */
  hintsFor: number
  /** Hints this node holds, by target. */
  hintsHeld: Record<string, number>
  repair: RepairState | undefined
  /** Its storage fails writes (it serves reads; writes for it become hints), as it says itself. */
  readOnly: boolean
  /** Its clock minus the cluster's, in ms, as it measures it (undefined: unreachable). */
  clockOffsetMs: number | undefined
  /** Partitions it gained and is still copying (a membership change in flight). */
  partitionsFilling: number
}

export interface PartitionStatus {
  partition: number
  replicas: string[]
  /** Per replica, wall-clock ms of its last completed repair of this partition (0: never, absent: unreachable). */
  lastRepairMs: Record<string, number>
}

export interface ClusterStatus {
  epoch: number
  partitionCount: number
  replicationFactor: number
  nodes: NodeStatus[]
  /** Nodes removed for good. */
  removed: string[]
  /** The membership change in flight, in words (changeInWords). */
  change?: string
  /** With { partitions: true }. */
  partitions?: PartitionStatus[]
}

export async function clusterStatus(seeds: string[], timeoutMs: number, options: { partitions?: boolean; tls?: TlsOptions; credentials?: UserCredentials } = {}): Promise<ClusterStatus> {
  const db = await connect({ seeds, timeoutMs, ...(options.tls === undefined ? {} : { tls: options.tls }), ...(options.credentials === undefined ? {} : { credentials: options.credentials }) })
  const security = options.tls === undefined ? insecureChannels : clientChannels(options.tls, options.credentials)
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
    const views = new Map<string, TopologyMsg>()
    await Promise.all(
      topology.nodes.map(async (node) => {
        const conn = new NodeConnection(node.id, node.address, () => undefined, undefined, security)
        try {
          views.set(node.id, await conn.topology(Math.min(timeoutMs, 2000), options.partitions === true))
        } catch {
          // Unreachable: its view is simply absent.
        } finally {
          conn.close()
        }
      }),
    )
    const nodes = await Promise.all(
      topology.nodes.map(async (node): Promise<NodeStatus> => {
        const [l4, l7, storage] = await Promise.all([tcpProbe(node.address, timeoutMs), healthProbe(node.address, timeoutMs, '', security, node.id), storageProbe(node.address, timeoutMs, security, node.id)])
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
        const self = own?.nodes.find((n) => n.id === node.id)
        return {
          hintsHeld,
          repair: own?.repair ?? undefined,
          readOnly: self?.readOnly ?? node.readOnly,
          clockOffsetMs: self?.clockOffsetMs,
          partitionsFilling: self?.partitionsFilling ?? node.partitionsFilling,
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
    const change = changeInWords(topology)
    const status: ClusterStatus = { epoch: topology.epoch, partitionCount: topology.partitionCount, replicationFactor: topology.replicationFactor, nodes, removed: topology.removed, ...(change === undefined ? {} : { change }) }
    if (options.partitions) {
      status.partitions = topology.partitions.map((replicas, partition) => {
        const lastRepairMs: Record<string, number> = {}
        for (const id of replicas) {
          const times = views.get(id)?.repair?.partitionRepairedMs
          if (times !== undefined) lastRepairMs[id] = times[partition] ?? 0
        }
        return { partition, replicas, lastRepairMs }
      })
    }
    return status
  } finally {
    await db.close()
  }
}

function pad(cells: string[][]): string {
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)))
  return cells.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

export function formatStatus(status: ClusterStatus): string {
  const rows = [['NODE', 'ADDRESS', 'STATE', 'SEEN AS', 'PRIMARY', 'REPLICA', 'L4 TCP', 'L7 HEALTH', 'L7 STORAGE', 'CLOCK', 'CACHES', 'HINTS FOR IT', 'HINTS HELD', 'REPAIR']]
  const now = Date.now()
  for (const n of status.nodes) {
    const views = Object.values(n.seenAs)
    const state = !n.l4.ok ? 'down' : n.readOnly ? 'read-only' : n.l7.ok ? 'up' : n.l7.detail.toLowerCase()
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
      formatOffset(n.clockOffsetMs),
      formatCaches(n.storage.caches),
      String(n.hintsFor),
      Object.entries(n.hintsHeld).map(([to, count]) => `${to}:${count}`).join(',') || '0',
      `${n.partitionsFilling > 0 ? `copying ${n.partitionsFilling} gained; ` : ''}${formatRepair(n.repair, now)}`,
    ])
  }
  const removed = status.removed.length > 0 ? `, removed for good: ${status.removed.join(', ')}` : ''
  const filling = status.nodes.reduce((sum, n) => sum + n.partitionsFilling, 0)
  const change =
    status.change !== undefined
      ? `\na membership change is in flight: ${status.change} (kumo transfers)`
      : filling > 0
        ? `\na membership change is in flight: ${filling} partition replicas still being copied`
        : ''
  return `cluster epoch ${status.epoch}, ${status.partitionCount} partitions, N=${status.replicationFactor}${removed}${change}\n${pad(rows)}`
}

/**
 * A node's caches: 'block 192M row 64M hit 41% tables 280/3072' (the row cache's hit rate
 * since the node started, LevelDB does not count its block cache's hits; its table files and
 * those it keeps open, with a '!' when there are more files than it keeps open or maps: reads
 * then reopen files or copy their blocks, see --open-tables and --table-file-size). '-' when
 * unknown.
 */
export function formatCaches(c: CacheFigures | undefined): string {
  if (c === undefined || !Number.isFinite(c.blockCacheBytes)) return '-'
  const mib = (bytes: number): string => `${Math.round(bytes / (1024 * 1024))}M`
  const lookups = c.rowCacheHits + c.rowCacheMisses
  const hit = c.rowCacheBytes === 0 ? 'off' : lookups === 0 ? 'hit -' : `hit ${Math.round((100 * c.rowCacheHits) / lookups)}%`
  const tables = c.openTablesMax > 0 ? ` tables ${c.tableFiles}/${c.openTablesMax}${c.tableFiles > Math.min(c.openTablesMax, mappedTablesMax) ? '!' : ''}` : ''
  return `block ${mib(c.blockCacheBytes)} row ${mib(c.rowCacheBytes)} ${hit}${tables}`
}

/** A node's clock against the cluster's: '+0.01s', '-120.3s'; '-' when unknown. */
function formatOffset(ms: number | undefined): string {
  if (ms === undefined) return '-'
  const s = ms / 1000
  return `${s >= 0 ? '+' : ''}${Math.abs(s) < 10 ? s.toFixed(2) : s.toFixed(1)}s`
}

function age(ms: number, now: number): string {
  const s = Math.round((now - ms) / 1000)
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

/** One row per partition: its replicas and when each last completed a repair of it. */
export function formatPartitions(status: ClusterStatus): string {
  const now = Date.now()
  const rows = [['PARTITION', 'REPLICAS (primary first)', 'LAST REPAIR']]
  for (const p of status.partitions ?? []) {
    const repairs = p.replicas.map((id) => {
      const at = p.lastRepairMs[id]
      return `${id}:${at === undefined ? 'unreachable' : at === 0 ? 'never' : age(at, now)}`
    })
    rows.push([String(p.partition), p.replicas.join(','), repairs.join(' ')])
  }
  return pad(rows)
}

function formatRepair(repair: RepairState | undefined, now: number): string {
  if (repair === undefined) return '-'
  const parts = [`${repair.partitionsRepaired}/${repair.partitionsHeld} repaired`]
  if (repair.oldestRepairMs > 0) parts.push(`oldest ${age(repair.oldestRepairMs, now)}`)
  else if (repair.lastRepairMs > 0) parts.push(`last ${age(repair.lastRepairMs, now)}`)
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
