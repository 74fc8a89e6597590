import { afterEach, describe, expect, it } from 'vitest'
import { connect, startNode, type KumoNode } from '../../src/index.js'
import { extraWriteLists, pendingPartitionsOf } from '../../src/core/handoff.js'
import { partitionOf } from '../../src/core/partitioner.js'
import { requestMsg } from '../../src/wire/messages.js'
import { HybridClock } from '../../src/core/hlc.js'
import { encodeRecord } from '../../src/core/record.js'
import { encodeVersion } from '../../src/core/version.js'
import { waitFor } from '../helpers/cluster.js'
import { inProcessNodes } from '../helpers/in-process.js'
import { RawKv } from '../helpers/raw.js'

const set = inProcessNodes(16)
const nodes = set.nodes
const nodeOptions = set.options
afterEach(() => set.stopAll())

/** n1, then n2 and n3 joining it: resolves with n1 once all three serve and their join has finished. */
async function threeNodes(): Promise<KumoNode> {
  const first = await startNode(await nodeOptions('n1', 'self'))
  nodes.push(first)
  for (const id of ['n2', 'n3']) nodes.push(await startNode(await nodeOptions(id, [first.address])))
  await waitFor('three nodes serving, their join finished', () => nodes.every((n) => n.serving() && n.membership.map?.nodes.length === 3 && n.membership.map.change === undefined))
  return first
}

/** One REPLICA_WRITE on a Pipeline stream, sent in a frame carrying `epoch`; resolves with its error code ('' when applied). */
function replicaWrite(raw: RawKv, key: Buffer, record: Buffer, epoch: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = raw.client.pipeline()
    stream.on('data', (frame: { responses: { errorCode: string; errorMessage: string }[] }) => {
      resolve(frame.responses[0]!.errorCode)
      stream.end()
    })
    stream.on('error', reject)
    stream.write({ requests: [{ ...requestMsg({ op: 'REPLICA_WRITE', keys: [key], records: [record], timeoutMs: 2000 }), id: 1 }], epoch })
  })
}

describe('writes while a membership change moves partitions', () => {
  it('a client whose map predates the change has its direct writes to moving partitions refused, writes through a node instead, and the new replica gets them', async () => {
    const first = await threeNodes()
    // Data for the joiner to copy, and a client on the three-node map that will not refresh by itself.
    const stale = await connect({ seeds: [first.address], refreshIntervalMs: 3_600_000 })
    await stale.batch(Array.from({ length: 400 }, (_, i) => ({ type: 'put' as const, key: `early-${i}`, value: 'x' })))
    const before = stale.cachedTopology().epoch

    // n4 copies 1 record a second: its partitions stay pending for the whole test.
    const joiner = await startNode({ ...(await nodeOptions('n4', [first.address])), repairRecordsPerSecond: 1 })
    nodes.push(joiner)
    const map = await waitFor('the join staged everywhere', () => {
      const m = first.membership.map
      return m?.change !== undefined && nodes.every((n) => n.membership.map?.change?.epoch === m.change!.epoch) ? m : undefined
    })
    const moving = pendingPartitionsOf(map, 'n4')
    expect(moving.length).toBeGreaterThan(0)
    // A key of a moving partition, and an old replica of it.
    let i = 0
    while (!moving.includes(partitionOf(Buffer.from(`k${i}`), map.partitionCount))) i++
    const key = Buffer.from(`k${i}`)
    const partition = partitionOf(key, map.partitionCount)
    expect(extraWriteLists(map)[partition]).toContain('n4')
    const old = nodes.find((n) => n.id === map.replicas[partition]![0])!
    const raw = new RawKv(old.address)
    try {
      const record = encodeRecord(encodeVersion(new HybridClock().now(Date.now()), 'test'), Buffer.from('direct'))
      // A frame with a map older than the change: refused; with the change's map, or none: taken.
      expect(await replicaWrite(raw, key, record, map.change!.epoch - 1)).toBe('UNAVAILABLE')
      expect(await replicaWrite(raw, key, record, map.change!.epoch)).toBe('')
      expect(await replicaWrite(raw, key, record, 0)).toBe('')
    } finally {
      raw.close()
    }

    // The stale client's put goes through a node, which writes the whole write set: n4 has it.
    await stale.put(key, 'written-during-the-move')
    const [stored] = await joiner.storage.getRecords(partition, [key])
    expect(stored).toBeDefined()
    expect(stale.cachedTopology().epoch).toBeGreaterThan(before)
    expect((await stale.get(key))?.toString()).toBe('written-during-the-move')
    await stale.close()
  })
})

describe('the pace of a move', () => {
  it('a new replica copies no faster than its byte budget (repairBytesPerSecond), and the join completes', async () => {
    const first = await threeNodes()
    const db = await connect({ seeds: [first.address] })
    // 2 MB in every replica set: 200 values of 10 KB.
    const value = Buffer.alloc(10_000, 'v')
    for (let i = 0; i < 200; i += 20) await db.batch(Array.from({ length: 20 }, (_, j) => ({ type: 'put' as const, key: `big-${i + j}`, value })))
    await db.close()

    const budget = 200_000
    const started = Date.now()
    const joiner = await startNode({ ...(await nodeOptions('n4', [first.address])), repairBytesPerSecond: budget })
    nodes.push(joiner)
    await waitFor('the join of n4 finished', () => nodes.every((n) => n.membership.map?.nodes.includes('n4') && n.membership.map.change === undefined), 60_000)
    const seconds = (Date.now() - started) / 1000
    // A second's budget may go at once; the rest is paced.
    expect(joiner.antiEntropy.copiedBytes).toBeGreaterThan(budget * 3)
    expect(seconds).toBeGreaterThanOrEqual(joiner.antiEntropy.copiedBytes / budget - 1)
  })
})
