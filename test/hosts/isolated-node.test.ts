import { describe, expect, it } from 'vitest'
import { testHostsUnavailable } from '../helpers/netns.js'
import { waitFor } from '../helpers/cluster.js'
import { runScenario } from '../helpers/scenario.js'

const skip = testHostsUnavailable()

describe.skipIf(skip !== undefined)('a node silently cut off the network (test hosts)', () => {
  for (const hosts of [3, 5]) {
    it(`one of ${hosts}: no failed request, no second without an acknowledged write, nothing lost, the node avoided at once`, { timeout: 240_000 }, async () => {
      const cut = 'n1'
      let sentWhileCut = -1
      let avoidedAfterMs = -1
      const result = await runScenario({
        name: `isolated node, ${hosts} hosts`,
        hosts,
        // The lowest id: the claimant, and a seed of every client.
        fault: (c) => c.net.isolate(cut),
        faultMs: 6000,
        // 32 writes in flight, as fast as the machine allows.
        load: { writers: 32, readers: 4, writesPerSecond: undefined, readsPerSecond: undefined },
        during: async (_c, load, db) => {
          // The first request in flight when the cut came times out within the replica
          // timeout (1 s at most, less when answers were fast), and the client avoids the node
          // from then on: it sends it nothing but probes, long before the failure detector
          // marks it down (seconds of missed heartbeats).
          const cutAt = Date.now()
          await waitFor('the client avoids the cut node', () => !db.requestStats()[cut]!.usable, 5000, 10)
          avoidedAfterMs = Date.now() - cutAt
          const before = db.requestStats()[cut]!.sent
          await load.progress(0, 5000)
          sentWhileCut = db.requestStats()[cut]!.sent - before
        },
      })
      expect(result.failures).toEqual([])
      expect(result.lost).toBe(0)
      expect(result.longestGapMs).toBeLessThan(1000)
      // The replica timeout's cap, and the turns of a busy two-core machine on top.
      expect(avoidedAfterMs).toBeLessThan(2000)
      expect(sentWhileCut).toBe(0)
      // Writes the cut node missed became hints together, many per request, not one each.
      expect(result.hintsAtHeal).toBeGreaterThan(1000)
      expect(result.handOffRequests).toBeLessThan(result.hintsAtHeal / 4)
    })
  }
})
