import { afterEach, expect, it } from 'vitest'
import { partitionOf } from '../../src/core/partitioner.js'
import { connect, KumoError } from '../../src/index.js'
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js'

let cluster: TestCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

/** Keys whose preference list is exactly [a, b] in some order (N = 2 of three nodes). */
function keysHeldBy(c: TestCluster, ids: string[], count: number): string[] {
  const map = c.nodes[0]!.membership.map!
  const out: string[] = []
  for (let i = 0; out.length < count; i++) {
    const key = `sloppy-${i}`
    const list = map.replicas[partitionOf(Buffer.from(key), map.partitionCount)]!
    if (list.length === ids.length && ids.every((id) => list.includes(id))) out.push(key)
  }
  return out
}

it('sloppy quorum: a hint on the fallback node stands in for a dead replica, and reaches it when it is back', async () => {
  cluster = await startCluster(3, { replicationFactor: 2 })
  const keys = keysHeldBy(cluster, ['n1', 'n2'], 20)
  await cluster.stopNode(1) // n2 goes; n3 is the fallback for these keys
  const db = await connect({ seeds: [cluster.addresses[0]!] })
  // consistency all = 2 acks: n1 plus the hint held by n3.
  for (const key of keys.slice(0, 10)) await db.put(key, `v-${key}`, { consistency: 'all' })
  // One batch across several partitions: one hint message carrying each key's own partition.
  await db.batch(keys.slice(10).map((key) => ({ type: 'put' as const, key, value: `v-${key}` })), { consistency: 'all' })
  expect(cluster.nodes[2]!.storage.hintCounts().get('n2')).toBe(keys.length)
  // Hints are not data: n3 does not serve them as its own replica.
  const map = cluster.nodes[0]!.membership.map!
  const [record] = await cluster.nodes[2]!.storage.getRecords(partitionOf(Buffer.from(keys[0]!), map.partitionCount), [Buffer.from(keys[0]!)])
  expect(record).toBeUndefined()
  await db.close()

  const n2 = await cluster.restartNode(1)
  await waitFor('the fallback to hand its hints over', () => (cluster!.nodes[2]!.storage.hintCounts().get('n2') ?? 0) === 0, 15_000)
  for (const key of keys) {
    const [held] = await n2.storage.getRecords(partitionOf(Buffer.from(key), map.partitionCount), [Buffer.from(key)])
    expect(held).toBeDefined()
  }
})

it('strict quorum: only true replicas count, so the same write fails, and the hint is kept anyway', async () => {
  cluster = await startCluster(3, { replicationFactor: 2, quorum: 'strict' })
  const keys = keysHeldBy(cluster, ['n1', 'n2'], 5)
  await cluster.stopNode(1)
  const db = await connect({ seeds: [cluster.addresses[0]!], timeoutMs: 3000 })
  const error = await db.put(keys[0]!, 'v', { consistency: 'all' }).then(
    () => undefined,
    (err: KumoError) => err,
  )
  expect(error?.code).toBe('UNAVAILABLE')
  // quorum of 2 is 2 as well; one is enough for consistency one.
  await db.put(keys[1]!, 'v', { consistency: 'one' })
  const held = [...cluster.nodes.filter((n) => n !== undefined).map((n) => n!.storage.hintCounts().get('n2') ?? 0)]
  expect(held.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(2)
  await db.close()
})

it('holds at most hintsPerTargetMax hints for a node; past that the write still succeeds on the live replicas', async () => {
  cluster = await startCluster(3, { replicationFactor: 2, hintsPerTargetMax: 5 })
  const keys = keysHeldBy(cluster, ['n1', 'n2'], 12)
  await cluster.stopNode(1)
  const db = await connect({ seeds: [cluster.addresses[0]!] })
  for (const key of keys) await db.put(key, 'v', { consistency: 'one' })
  const held = cluster.nodes.filter((n) => n !== undefined).map((n) => n!.storage.hintCounts().get('n2') ?? 0)
  expect(Math.max(...held)).toBe(5)
  expect((await db.getMany(keys, { consistency: 'one' })).every((v) => v?.toString() === 'v')).toBe(true)
  await db.close()
})
