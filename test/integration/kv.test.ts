import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, type KumoClient } from '../../src/index.js'
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js'
import { RawKv } from '../helpers/raw.js'

let cluster: TestCluster
beforeAll(async () => {
  cluster = await startCluster(3)
})
afterAll(async () => {
  await cluster?.close()
})

// Every behaviour twice: with the client coordinating (the default), and through a node.
describe.each(['client', 'node'] as const)('a three-node cluster, %s-coordinated', (coordination) => {
  let db: KumoClient
  beforeAll(async () => {
    db = await connect({ seeds: [cluster.addresses[0]!], coordination })
  })
  afterAll(async () => {
    await db?.close()
  })

  it('round trips put, get and del through each node', async () => {
    for (const [i, address] of cluster.addresses.entries()) {
      const one = await connect({ seeds: [address], coordination })
      await one.put(`node-${i}`, `value-${i}`)
      for (const other of cluster.addresses) {
        const raw = new RawKv(other)
        const res = await raw.call('Get', { key: Buffer.from(`node-${i}`) })
        expect(res.found).toBe(true)
        expect(res.value.toString()).toBe(`value-${i}`)
        raw.close()
      }
      await one.del(`node-${i}`)
      expect(await one.get(`node-${i}`)).toBeUndefined()
      await one.close()
    }
  })

  it('stores bytes exactly, including empty values and binary keys', async () => {
    const key = Buffer.from([0, 255, 1, 254])
    const value = Buffer.from([0, 0, 7, 255])
    await db.put(key, value)
    expect(await db.get(key)).toEqual(value)
    await db.put('empty', '')
    expect(await db.get('empty')).toEqual(Buffer.alloc(0))
    await db.put(new Uint8Array([9, 9]), new Uint8Array([1]))
    expect(await db.get(Buffer.from([9, 9]))).toEqual(Buffer.from([1]))
  })

  it('serves each consistency level', async () => {
    for (const consistency of ['one', 'quorum', 'all'] as const) {
      await db.put(`c-${consistency}`, consistency, { consistency })
      expect((await db.get(`c-${consistency}`, { consistency }))?.toString()).toBe(consistency)
    }
  })

  it('applies batches and reads many keys at once', async () => {
    const ops = Array.from({ length: 300 }, (_, i) => ({ type: 'put' as const, key: `b-${i}`, value: `v${i}` }))
    await db.batch(ops)
    const keys = ops.map((o) => o.key)
    expect((await db.getMany(keys)).map((v) => v?.toString())).toEqual(ops.map((o) => o.value))
    await db.batch(keys.slice(0, 100).map((key) => ({ type: 'del' as const, key })))
    const after = await db.getMany(keys)
    expect(after.slice(0, 100).every((v) => v === undefined)).toBe(true)
    expect(after.slice(100).every((v) => v !== undefined)).toBe(true)
    expect(await db.getMany([])).toEqual([])
    await db.batch([])
  })

  it('expires a value after its TTL', async () => {
    await db.put('ttl-key', 'soon gone', { ttlMs: 200 })
    expect((await db.get('ttl-key'))?.toString()).toBe('soon gone')
    await waitFor('the TTL to pass', async () => (await db.get('ttl-key')) === undefined, 5000)
  })

  it('keeps the last write when a key is written many times concurrently', async () => {
    await Promise.all(Array.from({ length: 50 }, (_, i) => db.put('hot', `v${i}`)))
    const seen = new Set<string>()
    for (const address of cluster.addresses) {
      const one = await connect({ seeds: [address], coordination })
      seen.add((await one.get('hot', { consistency: 'all' }))!.toString())
      await one.close()
    }
    expect(seen.size).toBe(1)
  })

  it('loads many records from an iterable with progress, and refuses bad input naming the records', async () => {
    const progress: number[] = []
    const records = Array.from({ length: 2500 }, (_, i) => ({ key: `load-${coordination}/${i}`, value: `v${i}`, ...(i === 1 ? { ttlMs: 60_000 } : {}) }))
    const done = await db.load(records, { batchSize: 300, concurrency: 4, onProgress: (p) => progress.push(p.records) })
    expect(done.records).toBe(2500)
    expect(done.bytes).toBe(records.reduce((sum, r) => sum + r.key.length + r.value.length, 0))
    expect(progress).toHaveLength(9)
    expect(progress[progress.length - 1]).toBe(2500)
    expect((await db.getMany([`load-${coordination}/0`, `load-${coordination}/2499`])).map((v) => v?.toString())).toEqual(['v0', 'v2499'])
    for (const [options, source] of [
      [{ batchSize: 0 }, records],
      [{ batchSize: 1001 }, records],
      [{ concurrency: 0 }, records],
      [{}, 42],
      [{}, [null]],
    ] as const) {
      await expect(db.load(source as never, options)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    }
    // A source that fails stops the load: no batch after it is sent.
    const broken = Array.from({ length: 600 }, (_, i) => (i === 250 ? null : { key: `broken-${coordination}/${i}`, value: 'x' }))
    await expect(db.load(broken as never, { batchSize: 100, concurrency: 4 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/record 250 /) })
    expect((await db.getMany(Array.from({ length: 300 }, (_, i) => `broken-${coordination}/${300 + i}`))).every((v) => v === undefined)).toBe(true)
    // A record the cluster refuses (an empty key) stops the load; the error names its batch.
    const bad = [...records.slice(0, 150), { key: '', value: 'x' }]
    await expect(db.load(bad, { batchSize: 100, concurrency: 1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/records 100 to 150/) })
  })

  it('scans across all partitions in key order with none missing', async () => {
    const keys = Array.from({ length: 1500 }, (_, i) => `scan/${String(i).padStart(5, '0')}`)
    for (let i = 0; i < keys.length; i += 500) {
      await db.batch(keys.slice(i, i + 500).map((key) => ({ type: 'put' as const, key, value: key.toUpperCase() })))
    }
    await db.del('scan/00007')
    const expected = keys.filter((k) => k !== 'scan/00007')
    const seen: string[] = []
    for await (const { key, value } of db.scan({ prefix: 'scan/', pageSize: 100 })) {
      expect(value.toString()).toBe(key.toString().toUpperCase())
      seen.push(key.toString())
    }
    expect(seen).toEqual(expected)

    const limited: string[] = []
    for await (const { key } of db.scan({ prefix: 'scan/', limit: 10 })) limited.push(key.toString())
    expect(limited).toEqual(expected.slice(0, 10))

    const ranged: string[] = []
    for await (const { key } of db.scan({ gte: 'scan/00100', lt: 'scan/00200' })) ranged.push(key.toString())
    expect(ranged).toEqual(expected.filter((k) => k >= 'scan/00100' && k < 'scan/00200'))

    const none: string[] = []
    for await (const { key } of db.scan({ prefix: 'no-such-prefix/' })) none.push(key.toString())
    expect(none).toEqual([])
  })

  it('reports the topology: every partition on all three nodes', async () => {
    const topology = await db.topology()
    expect(topology.partitionCount).toBe(64)
    expect(topology.nodes.map((n) => n.id).sort()).toEqual(['n1', 'n2', 'n3'])
    expect(topology.nodes.every((n) => n.state === 'up')).toBe(true)
    for (const list of topology.partitions) expect([...list].sort()).toEqual(['n1', 'n2', 'n3'])
  })
})
