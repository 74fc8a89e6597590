import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect, KumoError, startNode, type KumoClient } from '../../src/index.js'
import { startCluster, type TestCluster } from '../helpers/cluster.js'
import { RawKv } from '../helpers/raw.js'
import { fromServiceError } from '../../src/wire/status.js'

let cluster: TestCluster
let db: KumoClient
let raw: RawKv
beforeAll(async () => {
  cluster = await startCluster(3)
  db = await connect({ seeds: [cluster.addresses[0]!] })
  raw = new RawKv(cluster.addresses[1]!)
})
afterAll(async () => {
  raw?.close()
  await db?.close()
  await cluster?.close()
})

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise
  } catch (err) {
    expect(err).toBeInstanceOf(KumoError)
    return (err as KumoError).code
  }
  return 'no error'
}

const big = (bytes: number): Buffer => Buffer.alloc(bytes, 0x61)

describe('bad input through the client library', () => {
  it('rejects each with INVALID_ARGUMENT', async () => {
    expect(await codeOf(db.put('', 'v'))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.get(''))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.put(big(4097), 'v'))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.put('k', big(1024 * 1024 + 1)))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.batch(Array.from({ length: 1001 }, (_, i) => ({ type: 'put' as const, key: `k${i}`, value: 'v' }))))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.batch(Array.from({ length: 5 }, (_, i) => ({ type: 'put' as const, key: `k${i}`, value: big(1024 * 1024) }))))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.put('k', 'v', { consistency: 'most' as never }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.put('k', 'v', { ttlMs: -1 }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.put(42 as never, 'v'))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.batch([{ type: 'upsert', key: 'k' } as never]))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.getMany(Array.from({ length: 1001 }, (_, i) => `k${i}`)))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(connect({ seeds: ['nonsense'] }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(connect({ seeds: [cluster.addresses[0]!], consistency: 'two' as never }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(connect({ seeds: [cluster.addresses[0]!], coordination: 'server' as never }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(connect({ seeds: [cluster.addresses[0]!], replicaTimeoutMs: 0 }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.put('k', 'v', { timeoutMs: 0 }))).toBe('INVALID_ARGUMENT')
    expect(await codeOf(db.get('k', { timeoutMs: -5 }))).toBe('INVALID_ARGUMENT')
    // A value of exactly the limits is fine.
    await db.put(big(4096), big(1024 * 1024))
    expect((await db.get(big(4096)))?.length).toBe(1024 * 1024)
  })
})

describe('bad input straight to the gRPC port', () => {
  it('answers INVALID_ARGUMENT and keeps serving', async () => {
    expect((await raw.error('Put', { key: Buffer.alloc(0), value: Buffer.from('v') })).code).toBe('INVALID_ARGUMENT')
    expect((await raw.error('Get', { key: big(4097) })).code).toBe('INVALID_ARGUMENT')
    expect((await raw.error('Put', { key: Buffer.from('k'), value: big(1024 * 1024 + 1) })).code).toBe('INVALID_ARGUMENT')
    expect((await raw.error('Put', { key: Buffer.from('k'), value: Buffer.from('v'), consistency: 'sometimes' })).code).toBe('INVALID_ARGUMENT')
    expect(
      (await raw.error('Batch', { ops: Array.from({ length: 1001 }, (_, i) => ({ type: 'PUT', key: Buffer.from(`k${i}`), value: Buffer.from('v') })) })).code,
    ).toBe('INVALID_ARGUMENT')
    expect(
      (await raw.error('Batch', { ops: Array.from({ length: 5 }, (_, i) => ({ type: 'PUT', key: Buffer.from(`k${i}`), value: big(1024 * 1024) })) })).code,
    ).toBe('INVALID_ARGUMENT')
    expect((await raw.error('GetMany', { keys: Array.from({ length: 1001 }, (_, i) => Buffer.from(`k${i}`)) })).code).toBe('INVALID_ARGUMENT')
    const scanError = await new Promise<KumoError>((resolve) => {
      const stream = raw.client.scan({ limit: 2_000_000 })
      stream.on('data', () => undefined)
      stream.on('error', (err: unknown) => resolve(fromServiceError(err)))
    })
    expect(scanError.code).toBe('INVALID_ARGUMENT')
    // Membership admin calls: a kind of change that does not exist, no nodes, partitions out of range, a commit with no plan.
    expect((await raw.error('Plan', { kind: 'explode', nodes: ['n1'] })).code).toBe('INVALID_ARGUMENT')
    expect((await raw.error('Plan', { kind: 'join', nodes: [] })).code).toBe('INVALID_ARGUMENT')
    expect((await raw.error('Plan', { kind: 'join', nodes: ['nobody'] })).code).toMatch(/INVALID_ARGUMENT|FAILED_PRECONDITION/)
    expect((await raw.error('PartitionSizes', { partitions: [1_000_000] })).code).toBe('INVALID_ARGUMENT')
    expect((await raw.error('Commit', { baseEpoch: 0 })).code).toBe('FAILED_PRECONDITION')
    for (const path of ['/kumo.Kv/Put', '/kumo.Kv/Get', '/kumo.Kv/Batch', '/kumo.Kv/Topology', '/kumo.Kv/Plan', '/kumo.Kv/PartitionSizes', '/kumo.Peer/Gossip']) {
      const error = await raw.sendBytes(path, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])).then(
        () => undefined,
        (err: KumoError) => err,
      )
      expect(error?.code, path).toBe('INVALID_ARGUMENT')
    }
    // Still serving, every node.
    await db.put('still', 'alive')
    expect((await raw.call('Get', { key: Buffer.from('still') })).value.toString()).toBe('alive')
  })
})

describe('back-pressure', () => {
  it('answers OVERLOADED past requestsInFlightMax and keeps serving', async () => {
    const small = await startCluster(1, { requestsInFlightMax: 2 })
    try {
      const raw = new RawKv(small.addresses[0]!)
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          raw.call('Put', { key: Buffer.from(`bp-${i}`), value: Buffer.alloc(1000) }).then(
            () => 'ok',
            (err: KumoError) => err.code,
          ),
        ),
      )
      expect(results).toContain('OVERLOADED')
      expect(results).toContain('ok')
      expect(new Set(results)).toEqual(new Set(['ok', 'OVERLOADED']))
      await raw.call('Put', { key: Buffer.from('after'), value: Buffer.from('v') })
      raw.close()
    } finally {
      await small.close()
    }
  })
})

describe('bad startup', () => {
  it('refuses a second node on a data directory in use', async () => {
    const error = await startNode({ id: 'twin', listen: '127.0.0.1:0', dataDir: cluster.dirs[0]! }).then(
      (node) => node.stop().then(() => undefined),
      (err: KumoError) => err,
    )
    expect(error?.code).toBe('DATA_DIR_LOCKED')
    expect(error?.message).toMatch(/in use/)
  })

  it('refuses a listen address in use', async () => {
    const error = await startNode({ id: 'clash', listen: cluster.addresses[0]!, dataDir: `${cluster.dirs[0]}-clash` }).then(
      (node) => node.stop().then(() => undefined),
      (err: KumoError) => err,
    )
    expect(error?.code).toBe('ADDRESS_IN_USE')
  })

  it('refuses bad options with INVALID_ARGUMENT', async () => {
    for (const options of [
      { id: '', listen: '127.0.0.1:0', dataDir: 'x' },
      { id: 'a b', listen: '127.0.0.1:0', dataDir: 'x' },
      { id: 'a', listen: 'nowhere', dataDir: 'x' },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', partitions: 100 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', replicationFactor: 0 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', consistency: 'most' as never },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', rowCacheBytes: -1 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', rowCacheBytes: 1.5 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', openTables: 99 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', openTables: 50_001 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', tableFileBytes: 1024 * 1024 - 1 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', tableFileBytes: 64 * 1024 * 1024 + 1 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', tableFileBytes: 1.5 * 1024 * 1024 + 0.5 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', prewarmBytesMax: -1 },
      { id: 'a', listen: '127.0.0.1:0', dataDir: 'x', prewarmBytesMax: 0.5 },
    ]) {
      const error = await startNode(options).then(
        (node) => node.stop().then(() => undefined),
        (err: KumoError) => err,
      )
      expect(error?.code, JSON.stringify(options)).toBe('INVALID_ARGUMENT')
    }
  })
})
