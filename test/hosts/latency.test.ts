import { describe, expect, it } from 'vitest'
import { testHostsUnavailable } from '../helpers/netns.js'
import { runScenario } from '../helpers/scenario.js'

const skip = testHostsUnavailable()

describe.skipIf(skip !== undefined)('latency between hosts (test hosts)', () => {
  it('50 ms ± 20 ms each way between every pair of hosts: no request fails, replica timeouts follow the measured latency', { timeout: 240_000 }, async () => {
    let timeouts: Promise<number>[] = []
    let measured: number[] = []
    const result = await runScenario({
      name: 'latency 50 ± 20 ms, 3 hosts',
      hosts: 3,
      cluster: { relays: true },
      fault: (c) => c.setLatency(50, 20),
      faultMs: 15_000,
      during: async (c, load) => {
        await load.progress(0, 15_000)
        // What the nodes now wait for each other: above the round trip (60-140 ms), within the cap.
        timeouts = [1, 2, 3].map(async (n) => c.metric('kumo_peer_replica_timeout_seconds', { node: `n${n}` }))
        measured = (await Promise.all(timeouts)).map((sum) => sum / 2)
      },
      heal: (c) => c.setLatency(0, 0),
    })
    process.stdout.write(`  replica timeouts under latency, per node (mean over its peers): ${measured.map((s) => `${Math.round(s * 1000)} ms`).join(', ')}\n`)
    for (const seconds of measured) {
      expect(seconds).toBeGreaterThanOrEqual(0.25)
      expect(seconds).toBeLessThanOrEqual(1)
    }
    expect(result.failures).toEqual([])
    expect(result.lost).toBe(0)
    // A write waits for two of three replicas, each a round trip of 60-140 ms.
    expect(result.longestGapMs).toBeLessThan(1000)
  })
})
