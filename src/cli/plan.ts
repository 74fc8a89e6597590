import type { MembershipPlan } from '../client/client.js'
import { moveBytesPerSecondDefault as defaultBytesPerSecond, moveRecordsPerSecondDefault as defaultRecordsPerSecond } from '../core/move-pace.js'

/**
 * A plan in words (kumo plan): what moves where, per node what it copies in and gives up, and
 * the shortest time the default move rate allows. `sizes`: per moved partition, as one of its
 * current replicas holds it (missing where none answered).
 */
export function planInWords(plan: MembershipPlan, sizes: ReadonlyMap<number, { records: number; bytes: number }>, eachPartition: boolean): string {
  const verb = { join: 'join', leave: 'drain', remove: 'remove' }[plan.kind]
  const lines = [`plan (on map epoch ${plan.baseEpoch}): ${verb} ${plan.nodes.join(', ')}`]
  if (plan.moves.length === 0) {
    lines.push('  nothing moves')
    return `${lines.join('\n')}\n`
  }
  const perNode = new Map<string, { gains: number; loses: number; records: number; bytes: number }>()
  const of = (id: string): { gains: number; loses: number; records: number; bytes: number } => {
    let entry = perNode.get(id)
    if (entry === undefined) perNode.set(id, (entry = { gains: 0, loses: 0, records: 0, bytes: 0 }))
    return entry
  }
  let records = 0
  let bytes = 0
  let unknown = 0
  for (const move of plan.moves) {
    const size = sizes.get(move.partition)
    if (size === undefined && move.to.length > 0) unknown++
    for (const id of move.from) of(id).loses++
    for (const id of move.to) {
      const node = of(id)
      node.gains++
      node.records += size?.records ?? 0
      node.bytes += size?.bytes ?? 0
      records += size?.records ?? 0
      bytes += size?.bytes ?? 0
    }
  }
  const partitions = plan.moves.filter((m) => m.to.length > 0).length
  const shrinking = plan.moves.filter((m) => m.from.length > m.to.length).length
  if (shrinking > 0) lines.push(`  ${shrinking} partitions keep fewer replicas than now: the cluster would have fewer nodes than replicas per partition`)
  lines.push(`  ${plan.replicasMoved} replicas of ${partitions} partitions move: ${records.toLocaleString('en-US')} records, ${mb(bytes)} copied${unknown > 0 ? ` (${unknown} partitions not counted: no replica of theirs answered)` : ''}`)
  const rows = [['NODE', 'GAINS', 'GIVES UP', 'COPIES IN (records)', 'COPIES IN (MB)']]
  for (const [id, n] of [...perNode].sort(([a], [b]) => a.localeCompare(b))) rows.push([id, String(n.gains), String(n.loses), n.records.toLocaleString('en-US'), (n.bytes / 1e6).toFixed(1)])
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  for (const row of rows) lines.push(`  ${row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}`)
  // The copying nodes share the move rate (each takes its part), so the one copying most at
  // its part of the rate sets the time.
  const copiers = [...perNode.values()].filter((n) => n.gains > 0)
  const share = 1 / Math.max(1, copiers.length)
  const slowest = Math.max(...copiers.map((n) => Math.max(n.records / (defaultRecordsPerSecond * share), n.bytes / (defaultBytesPerSecond * share))), 0)
  lines.push(`  at the default move rate (${defaultRecordsPerSecond.toLocaleString('en-US')} records/s and ${defaultBytesPerSecond / (1024 * 1024)} MiB/s for the change, shared by the ${copiers.length} node${copiers.length === 1 ? '' : 's'} that copy) copying takes at least ${Math.ceil(slowest)} s; a busy machine copies slower (kumo transfers shows the real rate once it runs)`)
  if (eachPartition) {
    for (const move of plan.moves) {
      const size = sizes.get(move.partition)
      const change = [move.from.length > 0 ? `${move.from.join(',')} out` : '', move.to.length > 0 ? `${move.to.join(',')} in` : ''].filter((p) => p !== '').join(', ')
      lines.push(`  partition ${move.partition}: ${change} (now ${move.replicas.join(',')})${size === undefined ? '' : `: ${size.records.toLocaleString('en-US')} records, ${mb(size.bytes)}`}`)
    }
  }
  return `${lines.join('\n')}\n`
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`
}
