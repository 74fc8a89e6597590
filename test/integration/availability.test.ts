import { afterEach, describe, expect, it } from 'vitest'
import { connect, KumoError } from '../../src/index.js'
import { partitionOf } from '../../src/core/partitioner.js'
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js'

let cluster: TestCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

describe('availability', () => {
  it('serves quorum reads and writes with one of three nodes stopped', async () => {
    cluster = await startCluster(3)
    const db = await connect({ seeds: cluster.addresses })
    await Promise.all(Array.from({ length: 50 }, (_, i) => db.put(`before-${i}`, `v${i}`)))
    await cluster.stopNode(2)
    for (let i = 0; i < 50; i++) {
      await db.put(`after-${i}`, `w${i}`)
      expect((await db.get(`before-${i}`))?.toString()).toBe(`v${i}`)
      expect((await db.get(`after-${i}`))?.toString()).toBe(`w${i}`)
    }
    await db.close()
  })

  it('fails fast with UNAVAILABLE when two of three nodes are stopped', async () => {
    cluster = await startCluster(3)
    const db = await connect({ seeds: cluster.addresses, timeoutMs: 10_000 })
    await db.put('k', 'v')
    await cluster.stopNode(1)
    await cluster.stopNode(2)
    for (const op of [() => db.put('k2', 'v'), () => db.get('k')]) {
      const started = Date.now()
      const error = await op().then(
        () => undefined,
        (err: unknown) => err,
      )
      expect(error).toBeInstanceOf(KumoError)
      expect((error as KumoError).code).toBe('UNAVAILABLE')
      // Well inside the 10 s deadline: the cluster knows the replicas are gone.
      expect(Date.now() - started).toBeLessThan(3000)
    }
    // One replica is still enough at consistency one.
    expect((await db.get('k', { consistency: 'one' }))?.toString()).toBe('v')
    await db.close()
  })

  it('keeps its data across a restart', async () => {
    cluster = await startCluster(3)
    const db = await connect({ seeds: cluster.addresses })
    const keys = Array.from({ length: 100 }, (_, i) => `durable-${i}`)
    await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: key })), { consistency: 'all' })
    await db.close()
    const node = await cluster.restartNode(0)
    // Serves at once from its persisted map, without waiting to be re-admitted.
    await waitFor('the restarted node to serve', () => node.serving(), 5000)
    const map = node.membership.map!
    for (const key of keys) {
      const [record] = await node.storage.getRecords(partitionOf(Buffer.from(key), map.partitionCount), [Buffer.from(key)])
      expect(record).toBeDefined()
    }
    const again = await connect({ seeds: [node.address], consistency: 'all' })
    expect((await again.getMany(keys)).map((v) => v?.toString())).toEqual(keys)
    await again.close()
  })
})
