import { execFileSync } from 'node:child_process'
import { rmSync, statfsSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { healthProbe } from '../../src/cli/probes.js'
import { waitFor } from '../helpers/cluster.js'
import { testHostsUnavailable } from '../helpers/netns.js'
import { runScenario } from '../helpers/scenario.js'

const skip = testHostsUnavailable()

describe.skipIf(skip !== undefined)('a full disk (test hosts)', () => {
  it('one node out of space: no request fails, it says NOT_SERVING and read-only, and takes writes again by itself once space is freed', { timeout: 240_000 }, async () => {
    let filler = ''
    let pid: number | undefined
    const result = await runScenario({
      name: 'full disk on one node, 3 hosts',
      hosts: 3,
      // n3's data directory on a 64 MiB tmpfs, filled to the last byte by the fault.
      cluster: { nodes: { n3: { tmpfsBytes: 64 * 1024 * 1024 } } },
      fault: async (c) => {
        const dir = c.spec('n3').dataDir
        filler = path.join(dir, 'filler')
        pid = c.children.get('n3')!.pid
        // Filled to the last byte: written until the tmpfs says no (the node may be writing too).
        const free = statfsSync(dir)
        execFileSync('sh', ['-c', `head -c ${free.bavail * free.bsize + 1024 * 1024} /dev/zero > ${filler} 2>/dev/null || true`])
      },
      faultMs: 10_000,
      during: async (c, load, db) => {
        const n3 = c.spec('n3').address
        await waitFor('n3 to say NOT_SERVING', async () => (await healthProbe(n3, 1000)).detail === 'NOT_SERVING', 20_000, 100)
        await waitFor('the cluster to see n3 read-only', async () => (await db.topology()).nodes.find((n) => n.id === 'n3')?.readOnly === true, 20_000, 100)
        expect(await c.metric('kumo_storage_failing', { node: 'n3' })).toBe(1)
        await load.progress(500, 5000)
      },
      heal: async (c) => {
        rmSync(filler)
        await waitFor('n3 to serve again without a restart', async () => (await healthProbe(c.spec('n3').address, 1000)).ok, 20_000, 100)
        expect(c.children.get('n3')!.pid).toBe(pid)
      },
    })
    expect(result.failures).toEqual([])
    expect(result.lost).toBe(0)
    expect(result.longestGapMs).toBeLessThan(1000)
  })
})
