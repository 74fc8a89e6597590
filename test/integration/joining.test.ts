import { afterEach, describe, expect, it } from 'vitest'
import { connect, startNode, type KumoNode } from '../../src/index.js'
import { partitionOf } from '../../src/core/partitioner.js'
import { waitFor } from '../helpers/cluster.js'
import { inProcessNodes } from '../helpers/in-process.js'

const set = inProcessNodes(64)
const nodes = set.nodes
const nodeOptions = set.options
afterEach(() => set.stopAll())

/** n1 alone, founding its own cluster, with 200 writes that only it acknowledged (it is the whole map). */
async function oneNodeWithEarlyWrites(): Promise<{ first: KumoNode; keys: string[] }> {
  const first = await startNode(await nodeOptions('n1', 'self'))
  nodes.push(first)
  await waitFor('n1 to found a cluster alone', () => first.serving())
  const db = await connect({ seeds: [first.address] })
  const keys = Array.from({ length: 200 }, (_, i) => `early-${i}`)
  await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: `v-${key}` })))
  await db.close()
  return { first, keys }
}

describe('nodes joining a cluster that holds data', () => {
  it('fill the partitions they gain from the other replicas at once, so acknowledged writes survive losing the first node', async () => {
    const { first, keys } = await oneNodeWithEarlyWrites()

    for (const id of ['n2', 'n3']) nodes.push(await startNode(await nodeOptions(id, [first.address])))
    // Joins are staged: the joiners copy, then reads move to them, then the change finishes.
    await waitFor(
      'a map with all three nodes everywhere, no change in flight',
      () => nodes.every((n) => n.membership.map?.nodes.length === 3 && n.membership.map.change === undefined && n.membership.map.epoch === first.membership.map?.epoch),
      15_000,
    )
    const map = first.membership.map!
    // The test's own bound is far below the 10-minute repair interval: the fill is the gain's doing.
    await waitFor(
      'n2 and n3 to hold every early key',
      async () => {
        for (const node of nodes.slice(1)) {
          for (const key of keys) {
            const [record] = await node.storage.getRecords(partitionOf(Buffer.from(key), map.partitionCount), [Buffer.from(key)])
            if (record === undefined) return false
          }
        }
        return true
      },
      15_000,
    )

    await nodes.shift()!.stop()
    const survivors = await connect({ seeds: nodes.map((n) => n.address) })
    for (const key of keys) expect((await survivors.get(key))?.toString(), key).toBe(`v-${key}`)
    await survivors.close()
  })

  it('are not read while they copy: reads stay on the old replicas until the copies caught up, so quorum reads see writes the joiners have not been sent yet', async () => {
    const { first, keys } = await oneNodeWithEarlyWrites()

    // A fill of 20 records a second: the 200 early keys take the joiners about ten seconds.
    for (const id of ['n2', 'n3']) nodes.push(await startNode({ ...(await nodeOptions(id, [first.address])), repairRecordsPerSecond: 20 }))
    await waitFor('a map with all three nodes everywhere', () => nodes.every((n) => n.membership.map?.nodes.length === 3))
    await waitFor('n2 and n3 to be filling', () => nodes.slice(1).every((n) => n.antiEntropy.fillingCount > 0))
    const all = await connect({ seeds: nodes.map((n) => n.address) })
    // Both joiners will answer for every partition; reads while they copy must still find the keys.
    for (const key of keys) expect((await all.get(key))?.toString(), key).toBe(`v-${key}`)
    expect(nodes.slice(1).some((n) => n.antiEntropy.fillingCount > 0), 'the reads ran while the joiners were still filling').toBe(true)
    await all.close()
  })

  it('does not found a cluster alone while its seeds are starting', async () => {
    const options = await Promise.all(['n1', 'n2', 'n3'].map((id) => nodeOptions(id, [])))
    const seeds = options.map((o) => o.listen)
    for (const o of options) o.seeds = seeds
    nodes.push(await startNode(options[0]!))
    // n1 gossips to seeds that refuse the connection; it must not serve a map without them.
    await waitFor('n1 to have gossiped a few rounds', () => nodes[0]!.membership.member('n1')!.heartbeat >= 3, 5000)
    expect(nodes[0]!.membership.map).toBeUndefined()
    for (const o of options.slice(1)) nodes.push(await startNode(o))
    await waitFor('all three serving one map', () => nodes.every((n) => n.serving() && n.membership.map?.nodes.length === 3))
    expect(nodes.map((n) => n.membership.map!.epoch)).toEqual([1, 1, 1])
  })
})
