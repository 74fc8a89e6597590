import { afterAll, beforeAll, expect, it } from 'vitest'
import { partitionOf } from '../../src/core/partitioner.js'
import { connect } from '../../src/index.js'
import { startCluster, type TestCluster } from '../helpers/cluster.js'

let cluster: TestCluster
beforeAll(async () => {
  // A one-second grace, swept on demand, so the test need not wait ten days.
  cluster = await startCluster(3, { tombstoneGraceMs: 1000, purgeIntervalMs: 0 })
})
afterAll(async () => {
  await cluster?.close()
})

it('purges tombstones and expired values once the grace period has passed, and nothing else', async () => {
  const db = await connect({ seeds: [cluster.addresses[0]!] })
  await db.batch([
    { type: 'put', key: 'deleted', value: 'x' },
    { type: 'put', key: 'expiring', value: 'x', ttlMs: 1 },
    { type: 'put', key: 'live', value: 'x' },
  ], { consistency: 'all' })
  await db.del('deleted', { consistency: 'all' })
  const map = cluster.nodes[0]!.membership.map!
  const stored = async (key: string): Promise<boolean[]> =>
    Promise.all(cluster.nodes.map(async (n) => (await n!.storage.getRecords(partitionOf(Buffer.from(key), map.partitionCount), [Buffer.from(key)]))[0] !== undefined))

  // Within the grace period: the tombstone stays (it still has to reach every replica).
  for (const node of cluster.nodes) expect((await node!.purger.purge()).purged).toBe(0)
  expect(await stored('deleted')).toEqual([true, true, true])

  const later = Date.now() + 5000
  for (const node of cluster.nodes) expect((await node!.purger.purge(later)).purged).toBe(2)
  expect(await stored('deleted')).toEqual([false, false, false])
  expect(await stored('expiring')).toEqual([false, false, false])
  expect(await stored('live')).toEqual([true, true, true])
  expect((await db.get('live'))?.toString()).toBe('x')
  expect(await db.get('deleted')).toBeUndefined()
  await db.close()
})
