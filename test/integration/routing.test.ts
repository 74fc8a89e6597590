import { afterAll, beforeAll, expect, it } from 'vitest'
import { partitionOf } from '../../src/core/partitioner.js'
import { connect } from '../../src/index.js'
import { startCluster, type TestCluster } from '../helpers/cluster.js'
import { RawKv } from '../helpers/raw.js'

// N = 2 on three nodes, so every key has a node that is not its replica.
let cluster: TestCluster
beforeAll(async () => {
  cluster = await startCluster(3, { replicationFactor: 2 })
})
afterAll(async () => {
  await cluster?.close()
})

it('forwards a request sent to a node that is not a replica, and answers it', async () => {
  const map = cluster.nodes[0]!.membership.map!
  for (let i = 0; i < 20; i++) {
    const key = Buffer.from(`routed-${i}`)
    const partition = partitionOf(key, map.partitionCount)
    const replicas = map.replicas[partition]!
    const outsider = cluster.nodes.findIndex((n) => !replicas.includes(n!.id))
    expect(outsider).toBeGreaterThanOrEqual(0)
    const raw = new RawKv(cluster.addresses[outsider]!)
    await raw.call('Put', { key, value: Buffer.from(`v${i}`) })
    const res = await raw.call('Get', { key })
    expect(res.value.toString()).toBe(`v${i}`)
    raw.close()
    // The write landed on the replicas and not on the node that forwarded it.
    for (const node of cluster.nodes) {
      const [record] = await node!.storage.getRecords(partition, [key])
      expect(record !== undefined).toBe(replicas.includes(node!.id))
    }
  }
})

it('forwards the parts of a batch and a getMany that a node holds no replica of', async () => {
  const keys = Array.from({ length: 60 }, (_, i) => Buffer.from(`mixed-${i}`))
  for (const address of cluster.addresses) {
    const raw = new RawKv(address)
    await raw.call('Batch', { ops: keys.map((key) => ({ type: 'PUT', key, value: Buffer.concat([key, Buffer.from(address)]) })) })
    const res = await raw.call('GetMany', { keys: [...keys, Buffer.from('never-written')] })
    expect(res.values.map((v: { found: boolean; value: Buffer }) => (v.found ? v.value.toString() : undefined))).toEqual([
      ...keys.map((k) => `${k}${address}`),
      undefined,
    ])
    raw.close()
  }
})

it('scans in key order through a node that holds only some partitions', async () => {
  const db = await connect({ seeds: [cluster.addresses[0]!] })
  const keys = Array.from({ length: 400 }, (_, i) => `routed-scan/${String(i).padStart(4, '0')}`)
  await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: key })))
  await db.close()
  for (const address of cluster.addresses) {
    // A client seeded with one node scans through it; it reads the partitions it lacks remotely.
    const one = await connect({ seeds: [address] })
    const seen: string[] = []
    for await (const { key } of one.scan({ prefix: 'routed-scan/', pageSize: 50 })) seen.push(key.toString())
    expect(seen).toEqual(keys)
    await one.close()
  }
})

it('sends client requests straight to a replica (no forwarding hop needed)', async () => {
  const db = await connect({ seeds: [cluster.addresses[0]!] })
  const topology = await db.topology()
  for (const list of topology.partitions) expect(list).toHaveLength(2)
  await Promise.all(Array.from({ length: 100 }, (_, i) => db.put(`direct-${i}`, 'x')))
  const values = await db.getMany(Array.from({ length: 100 }, (_, i) => `direct-${i}`))
  expect(values.every((v) => v?.toString() === 'x')).toBe(true)
  await db.close()
})
