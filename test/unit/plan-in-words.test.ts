import { describe, expect, it } from 'vitest'
import { planInWords } from '../../src/cli/plan.js'
import { moveRecordsPerSecondDefault } from '../../src/core/move-pace.js'

describe('kumo plan in words', () => {
  it('states the default move rate it estimates at, and the time at that rate shared by the copiers', () => {
    // A drain of n4: its two partitions go to n1 and n2, 30,000 records each.
    const plan = {
      baseEpoch: 7,
      kind: 'leave' as const,
      nodes: ['n4'],
      moves: [
        { partition: 0, from: ['n4'], to: ['n1'], replicas: ['n4', 'n2', 'n3'] },
        { partition: 1, from: ['n4'], to: ['n2'], replicas: ['n4', 'n1', 'n3'] },
      ],
      replicasMoved: 2,
      epoch: 0,
    }
    const sizes = new Map([
      [0, { records: 30_000, bytes: 3_000_000 }],
      [1, { records: 30_000, bytes: 3_000_000 }],
    ])
    const text = planInWords(plan, sizes, false)
    expect(text).toContain(`at the default move rate (${moveRecordsPerSecondDefault.toLocaleString('en-US')} records/s and 32 MiB/s for the change, shared by the 2 nodes that copy)`)
    // Each copier takes half the default rate: 30,000 records at 1,250 a second.
    expect(text).toContain(`copying takes at least ${Math.ceil(30_000 / (moveRecordsPerSecondDefault / 2))} s`)
    expect(text).toContain('2 replicas of 2 partitions move: 60,000 records')
  })
})
