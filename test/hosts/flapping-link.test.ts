import { describe, expect, it } from 'vitest'
import { seededRandom } from '../../src/core/random.js'
import { testHostsUnavailable } from '../helpers/netns.js'
import { runScenario } from '../helpers/scenario.js'

const skip = testHostsUnavailable()

describe.skipIf(skip !== undefined)('a flapping link (test hosts)', () => {
  it('cut and restored every 1-2 s for 30 s: no request fails, nothing is lost, and the flaps do not churn the cluster', { timeout: 240_000 }, async () => {
    const seed = 7
    const random = seededRandom(seed)
    let flaps = 0
    let avoided = -1
    let stateChanges = -1
    const result = await runScenario({
      name: 'flapping link, 3 hosts',
      hosts: 3,
      // The fault is the schedule below.
      fault: async () => undefined,
      faultMs: 30_000,
      // The fault's own schedule (seeded, so a run can be replayed): n3's links cut for 1-2 s,
      // then back for 1-2 s, for 30 s.
      during: async (c, load, db) => {
        const epochBefore = (await db.topology()).epoch
        const end = Date.now() + 30_000
        while (Date.now() < end) {
          await c.net.isolate('n3')
          flaps++
          await load.progress(0, 1000 + Math.floor(random() * 1000))
          await c.net.heal()
          await load.progress(0, 1000 + Math.floor(random() * 1000))
        }
        avoided = await c.metric('kumo_peer_avoided_total', { peer: 'n3' })
        stateChanges = await c.metric('kumo_peer_state_changes_total', { peer: 'n3' })
        // Membership does not move: no map change for a node that keeps coming back.
        expect((await db.topology()).epoch).toBe(epochBefore)
      },
    })
    process.stdout.write(`  ${flaps} flaps (seed ${seed}): the other nodes avoided n3 ${avoided} times; its failure-detector state changed ${stateChanges} times\n`)
    expect(result.failures).toEqual([])
    expect(result.lost).toBe(0)
    expect(result.longestGapMs).toBeLessThan(1000)
    // Each node avoids n3 at most once per cut, and gossip flaps it at most up and down per cut.
    expect(avoided).toBeLessThanOrEqual(2 * flaps)
    expect(stateChanges).toBeLessThanOrEqual(2 * 2 * flaps)
  })
})
