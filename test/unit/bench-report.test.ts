import { describe, expect, it } from 'vitest'
import { formatTable } from '../../bench/report.js'
import type { RunResult } from '../../bench/runner.js'

const result = (target: string, workload: string, rounds: number[]): RunResult => ({
  target,
  workload,
  ops: 0,
  seconds: 10,
  opsPerSecond: [...rounds].sort((a, b) => a - b)[Math.floor((rounds.length - 1) / 2)]!,
  errors: 0,
  p50: 1,
  p95: 2,
  p99: 3,
  p999: 4,
  max: 5,
  roundsOpsPerSecond: rounds,
})

describe('benchmark report', () => {
  it('gives the goal ratio of the medians and the ratio in each round', () => {
    const text = formatTable([result('embedded', 'read', [100, 50, 40]), result('kumo-3', 'read', [48, 44, 44])])
    expect(text).toContain('reads: kumo-3 44/s vs embedded 50/s = 88% (by round: 48%, 88%, 110%) (goal ≥ 60%: met)')
  })

  it('gives no per-round ratios for a single round', () => {
    const text = formatTable([result('embedded', 'write', [100]), result('kumo-3', 'write', [30])])
    expect(text).toContain('writes: kumo-3 30/s vs embedded 100/s = 30% (goal ≥ 40%: not met)')
  })
})
