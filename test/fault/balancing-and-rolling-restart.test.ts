import { afterEach, describe, expect, it } from 'vitest'
import { connect, type LoadBalancing } from '../../src/index.js'
import { waitHealthy } from '../../scripts/local-cluster.js'
import { waitFor } from '../helpers/cluster.js'
import { ProcessCluster, readLoad, writeLoad } from '../helpers/processes.js'

let cluster: ProcessCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

describe('load balancing across replicas (real processes)', () => {
  it('least-load and least-connections send a slow node clearly less traffic than round-robin', async () => {
    // n3 burns 85% of its CPU time: slow to answer, and it reports a high load.
    cluster = await ProcessCluster.start(3, [], { n3: { KUMO_TEST_BURN_PERCENT: '85' } })
    const keys = Array.from({ length: 200 }, (_, i) => `lb/${i}`)
    const loader = await cluster.client()
    await loader.batch(keys.map((key) => ({ type: 'put' as const, key, value: 'v' })))
    await loader.close()

    const shareOfSlowNode = async (policy: LoadBalancing, drift = true): Promise<number> => {
      const db = await cluster!.client({ loadBalancing: policy, timeoutMs: 10_000 })
      // Least-load needs the loads gossiped since the burn started.
      await waitFor('loads to be reported', async () => (await db.topology()).nodes.find((n) => n.id === 'n3')!.load > 0.5, 15_000, 100)
      let next = 0
      const reads = 3000
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < reads) {
            await db.get(keys[next++ % keys.length]!)
            // With drift, one read in three waits a turn before the next, so the readers drift
            // apart rather than all leaving in one turn: a fast node then often still has reads
            // in flight when a turn starts. Without it they leave and return together.
            if (drift && next % 3 === 0) await new Promise((resolve) => setImmediate(resolve))
          }
        }),
      )
      const stats = db.requestStats()
      await db.close()
      const total = Object.values(stats).reduce((sum, s) => sum + s.sent, 0)
      return stats.n3!.sent / total
    }
    const roundRobin = await shareOfSlowNode('round-robin')
    const leastConnections = await shareOfSlowNode('least-connections')
    const leastConnectionsTogether = await shareOfSlowNode('least-connections', false)
    const leastLoad = await shareOfSlowNode('least-load')
    console.log(`slow node share: round-robin ${roundRobin.toFixed(3)}, least-connections ${leastConnections.toFixed(3)} (readers together: ${leastConnectionsTogether.toFixed(3)}), least-load ${leastLoad.toFixed(3)}`)
    expect(roundRobin).toBeGreaterThan(0.28)
    expect(leastConnections).toBeLessThan(roundRobin * 0.5)
    expect(leastConnectionsTogether).toBeLessThan(roundRobin * 0.5)
    expect(leastLoad).toBeLessThan(roundRobin * 0.5)
  })
})

describe('graceful shutdown', () => {
  it('a rolling restart of all three nodes under load fails zero requests', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client()
    const load = writeLoad(db, 'rolling/', 16)
    const reads = readLoad(db, load)
    for (const spec of cluster.specs) {
      const before = load.acked.length
      await cluster.stop(spec.id) // SIGTERM: drain, then exit 0
      expect(cluster.children.get(spec.id)!.exitCode).toBe(0)
      await cluster.restart(spec.id)
      await waitHealthy(cluster.specs, 30_000, () => true, cluster.security)
      await waitFor('writes to continue', () => load.acked.length > before + 200, 10_000, 10)
    }
    await reads.stop()
    await load.stop()
    if (load.failures.length + reads.failures.length > 0) {
      for (const [id, log] of cluster.logs) console.log(id, log.filter((l) => l.includes('slow') || l.includes('rror')).slice(-10).join('\n'))
    }
    expect(load.failures).toEqual([])
    expect(reads.failures).toEqual([])
    expect(reads.count).toBeGreaterThan(100)
    await db.close()
  })
})
