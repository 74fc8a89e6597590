import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../helpers/cluster.js'
import { ProcessCluster, readLoad, writeLoad } from '../helpers/processes.js'

let cluster: ProcessCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

/** Waits until `count` more writes have been acknowledged and at least `minMs` has passed. */
async function progress(load: { acked: string[] }, count: number, minMs = 0): Promise<void> {
  const target = load.acked.length + count
  const notBefore = Date.now() + minMs
  await waitFor(`${count} more acknowledged writes`, () => load.acked.length >= target && Date.now() >= notBefore, 20_000 + minMs, 10)
}

async function expectEveryReplicaHolds(c: ProcessCluster, keys: string[]): Promise<void> {
  await waitFor('hints to drain', async () => (await c.hintsHeld()) === 0, 30_000, 100)
  for (const spec of c.specs) {
    const values = await c.localValues(spec.id, keys)
    const missing = keys.filter((_, i) => values[i] !== `value-of-${keys[i]}`)
    expect(missing, `missing on ${spec.id}`).toEqual([])
  }
}

describe('one node of three freezes (real processes, SIGSTOP)', () => {
  it('fails no request: writes meet W on the other two, reads move on after the replica timeout', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client({ replicaTimeoutMs: 300, timeoutMs: 10_000 })
    const load = writeLoad(db, 'frozen/')
    const reads = readLoad(db, load)
    await progress(load, 300)
    const frozen = cluster.children.get('n3')!
    frozen.kill('SIGSTOP')
    try {
      // Frozen, not dead: its connections stay open and requests to it simply get no answer.
      await progress(load, 500, 3000)
    } finally {
      frozen.kill('SIGCONT')
    }
    await progress(load, 300)
    await reads.stop()
    await load.stop()
    expect(load.failures).toEqual([])
    expect(reads.failures).toEqual([])
    expect(reads.count).toBeGreaterThan(100)
    await expectEveryReplicaHolds(cluster, load.acked)
    await db.close()
  })
})

describe('one node of three dies (real processes, kill -9)', () => {
  it('fails no request and loses no acknowledged write; replicas converge after it returns', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client()
    const load = writeLoad(db, 'kill/')
    await progress(load, 300)
    await cluster.kill('n3')
    // Down for a few seconds: long enough for the failure detector to mark it down.
    await progress(load, 500, 3000)
    await cluster.restart('n3')
    await progress(load, 500)
    await load.stop()
    expect(load.failures).toEqual([])
    const values = await db.getMany(load.acked.slice(0, 1000))
    expect(values.every((v, i) => v?.toString() === `value-of-${load.acked[i]}`)).toBe(true)
    for (let i = 0; i < load.acked.length; i += 1000) {
      const chunk = load.acked.slice(i, i + 1000)
      const got = await db.getMany(chunk)
      expect(got.filter((v) => v === undefined)).toHaveLength(0)
    }
    await expectEveryReplicaHolds(cluster, load.acked)
    await db.close()
  })

  it('keeps serving every request on the two survivors while the node stays down', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client()
    const load = writeLoad(db, 'down/')
    await progress(load, 300)
    await cluster.kill('n2')
    await progress(load, 1500, 3000)
    // Reads too, while it is down.
    const reads = await Promise.all(load.acked.slice(0, 500).map((k) => db.get(k)))
    expect(reads.every((v) => v !== undefined)).toBe(true)
    await load.stop()
    expect(load.failures).toEqual([])
    for (let i = 0; i < load.acked.length; i += 1000) {
      const got = await db.getMany(load.acked.slice(i, i + 1000))
      expect(got.filter((v) => v === undefined)).toHaveLength(0)
    }
    await db.close()
  })

  it('keeps keys deleted while a replica was down deleted everywhere once it returns', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client()
    const keys = Array.from({ length: 200 }, (_, i) => `del/${i}`)
    await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: `value-of-${key}` })), { consistency: 'all' })
    await cluster.kill('n1')
    for (const key of keys.slice(0, 100)) await db.del(key)
    await cluster.restart('n1')
    await waitFor('hints to drain', async () => (await cluster!.hintsHeld()) === 0, 30_000, 100)
    for (const spec of cluster.specs) {
      const values = await cluster.localValues(spec.id, keys)
      expect(values.slice(0, 100).filter((v) => v !== undefined), `deleted keys on ${spec.id}`).toEqual([])
      expect(values.slice(100).every((v, i) => v === `value-of-${keys[100 + i]}`), `kept keys on ${spec.id}`).toBe(true)
    }
    await db.close()
  })

  it('refills a node whose data directory was wiped, with kumo repair', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client()
    const keys = Array.from({ length: 3000 }, (_, i) => `wipe/${i}`)
    for (let i = 0; i < keys.length; i += 500) {
      await db.batch(keys.slice(i, i + 500).map((key) => ({ type: 'put' as const, key, value: `value-of-${key}` })))
    }
    await db.del(keys[0]!)
    // A batch n2 answered late (a loaded machine) was acknowledged by the other two and left as
    // a hint for n2: delivered before the wipe, not after it, so that the wiped n2 starts empty.
    await waitFor('hints for n2 delivered', async () => (await cluster!.hintsHeld()) === 0, 30_000, 200)
    await cluster.kill('n2')
    await cluster.wipe('n2')
    await cluster.restart('n2')
    const before = await cluster.localValues('n2', keys)
    expect(before.filter((v) => v !== undefined).length).toBeLessThan(keys.length / 2)
    const reports = await db.repair()
    expect(reports.map((r) => r.node).sort()).toEqual(['n1', 'n2', 'n3'])
    expect(reports.reduce((sum, r) => sum + r.pulled + r.pushed, 0)).toBeGreaterThan(0)
    const after = await cluster.localValues('n2', keys)
    expect(after[0]).toBeUndefined()
    expect(after.slice(1).every((v, i) => v === `value-of-${keys[i + 1]}`)).toBe(true)
    // A second repair finds nothing left to exchange.
    const again = await db.repair()
    expect(again.reduce((sum, r) => sum + r.pulled + r.pushed, 0)).toBe(0)
    await db.close()
  })

  it('keeps hints across a restart of the node that holds them', async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    await cluster.kill('n3')
    // n1 coordinates these writes itself, so it holds the hints for n3.
    const raw = cluster.raw('n1')
    const keys = Array.from({ length: 100 }, (_, i) => `hint/${i}`)
    await waitFor('n1 to see n3 down', async () => (await raw.call('Topology', {})).nodes.find((n: { id: string }) => n.id === 'n3').state === 'down', 15_000, 100)
    for (const key of keys) await raw.call('Put', { key: Buffer.from(key), value: Buffer.from(`value-of-${key}`) })
    raw.close()
    const heldBy = async (id: string): Promise<number> => {
      const r = cluster!.raw(id)
      try {
        const topology = await r.call('Topology', {})
        return Number(topology.nodes.find((n: { id: string }) => n.id === 'n3').hintsHeld)
      } finally {
        r.close()
      }
    }
    expect(await heldBy('n1')).toBe(100)
    await cluster.stop('n1')
    await cluster.restart('n1')
    expect(await heldBy('n1')).toBe(100)
    await cluster.restart('n3')
    await waitFor('hints to drain', async () => (await cluster!.hintsHeld()) === 0, 30_000, 100)
    const values = await cluster.localValues('n3', keys)
    expect(values.every((v, i) => v === `value-of-${keys[i]}`)).toBe(true)
  })
})
