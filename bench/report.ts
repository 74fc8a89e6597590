import type { RunResult } from './runner.js'

function pad(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  const line = (r: string[]): string => '| ' + r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |'
  const rule = '|' + widths.map((w, i) => (i < 2 ? ` ${'-'.repeat(w)} ` : ` ${'-'.repeat(w - 1)}: `)).join('|') + '|'
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n')
}

const n = (x: number): string => Math.round(x).toLocaleString('en-US')
const t = (ms: number): string => ms.toFixed(2)
const percent = (x: number): string => `${(x * 100).toFixed(0)}%`

/**
 * The ratio in each round, where the two targets ran minutes apart at most: the ratio of the
 * medians can pair a fast round of one with a slow round of the other.
 */
function roundRatios(cluster: RunResult, base: RunResult): string {
  const a = cluster.roundsOpsPerSecond
  const b = base.roundsOpsPerSecond
  if (a === undefined || b === undefined || a.length !== b.length || a.length < 2) return ''
  return ` (by round: ${a.map((x, i) => percent(x / b[i]!)).join(', ')})`
}

/**
 * A Markdown table of every run (the median round with --rounds), then the ratios and targets
 * of issue #4. `cpu µs/op` is the CPU of this process (benchmark and client) plus the target's
 * server processes per operation, `servers µs/op` the servers' part of it, and `cores` the
 * cores they kept busy on average: what an operation costs a machine that all of them share.
 * `peak RSS MiB (anon)` is the resident memory of the largest server process at its peak during
 * the run (the benchmark process's own for embedded), and in brackets its anonymous part; the
 * rest is table files LevelDB maps to read them (page cache, dropped under memory pressure).
 */
export function formatTable(results: RunResult[]): string {
  const spread = results.some((r) => r.roundsOpsPerSecond !== undefined)
  // No CPU columns when no run could measure it (a running cluster's processes are not ours).
  const cpuKnown = results.some((r) => r.cpuMicrosPerOp !== undefined)
  const memoryKnown = results.some((r) => r.peakRssMiB !== undefined)
  const rows = [
    ['target', 'workload', 'ops/s', ...(spread ? ['rounds min–max'] : []), 'p50 ms', 'p95 ms', 'p99 ms', 'p99.9 ms', 'max ms', ...(cpuKnown ? ['cpu µs/op', 'servers µs/op', 'cores'] : []), ...(memoryKnown ? ['peak RSS MiB (anon)'] : []), 'errors'],
  ]
  for (const r of results) {
    const range = r.roundsOpsPerSecond === undefined ? [''] : [`${n(Math.min(...r.roundsOpsPerSecond))}–${n(Math.max(...r.roundsOpsPerSecond))}`]
    const cpu =
      r.cpuMicrosPerOp === undefined
        ? ['', '', '']
        : [r.cpuMicrosPerOp.toFixed(1), (r.serverCpuMicrosPerOp ?? 0).toFixed(1), ((r.cpuMicrosPerOp * r.opsPerSecond) / 1e6).toFixed(2)]
    const memory = r.peakRssMiB === undefined ? [''] : [`${n(r.peakRssMiB)} (${n(r.peakAnonMiB ?? r.peakRssMiB)})`]
    rows.push([r.target, r.workload, n(r.opsPerSecond), ...(spread ? range : []), t(r.p50), t(r.p95), t(r.p99), t(r.p999), t(r.max), ...(cpuKnown ? cpu : []), ...(memoryKnown ? memory : []), String(r.errors)])
  }
  const table = pad(rows)
  const find = (target: string, workload: string): RunResult | undefined => results.find((r) => r.target === target && r.workload === workload)
  const lines: string[] = []
  const ratio = (label: string, workload: string, goal: number): void => {
    const base = find('embedded', workload)
    const cluster = find('kumo-3', workload)
    if (base === undefined || cluster === undefined) return
    const value = cluster.opsPerSecond / base.opsPerSecond
    lines.push(
      `${label}: kumo-3 ${n(cluster.opsPerSecond)}/s vs embedded ${n(base.opsPerSecond)}/s = ${percent(value)}${roundRatios(cluster, base)} ` +
        `(goal ≥ ${goal * 100}%: ${value >= goal ? 'met' : 'not met'}); kumo-3 p99 ${t(cluster.p99)} ms (goal < 10 ms: ${cluster.p99 < 10 ? 'met' : 'not met'})`,
    )
  }
  ratio('writes', 'write', 0.4)
  ratio('reads', 'read', 0.6)
  for (const w of ['batch-write', 'batch-read']) {
    const cluster = find('kumo-3', w)
    if (cluster !== undefined) lines.push(`${w} of 100: kumo-3 ${n(cluster.opsPerSecond)} ops/s (goal ≥ 100,000: ${cluster.opsPerSecond >= 100_000 ? 'met' : 'not met'})`)
  }
  return lines.length > 0 ? `${table}\n\n${lines.join('\n')}` : table
}
