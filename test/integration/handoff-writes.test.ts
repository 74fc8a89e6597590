import { afterEach, describe, expect, it } from 'vitest'
import { connect, startNode, type KumoNode } from '../../src/index.js'
import { extraWriteLists, pendingPartitionsOf, queuedPartitionsOf } from '../../src/core/handoff.js'
import { partitionOf } from '../../src/core/partitioner.js'
import { assignPartitions } from '../../src/core/partition-map.js'
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
async function threeNodes(extra: { movesAtOnce?: number } = {}): Promise<KumoNode> {
  const first = await startNode({ ...(await nodeOptions('n1', 'self')), ...extra })
  nodes.push(first)
  for (const id of ['n2', 'n3']) nodes.push(await startNode({ ...(await nodeOptions(id, [first.address])), ...extra }))
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
    // Sent to n4 with the rest: the put may resolve on three acknowledgements of four before
    // n4's own lands, so wait for it.
    await waitFor('n4 to hold the write', async () => (await joiner.storage.getRecords(partition, [key]))[0] !== undefined, 10_000, 20)
    expect(stale.cachedTopology().epoch).toBeGreaterThan(before)
    expect((await stale.get(key))?.toString()).toBe('written-during-the-move')
    await stale.close()
  })
})

describe('what a move has left', () => {
  it('copiesLeft says per new replica how many records its pending partitions hold on a current replica, and how many it has', async () => {
    // Waves of 4 partitions: n4's others wait queued.
    const first = await threeNodes({ movesAtOnce: 4 })
    const db = await connect({ seeds: [first.address] })
    // On every replica: copiesLeft counts a partition's records on whichever replica answers first.
    await db.batch(Array.from({ length: 800 }, (_, i) => ({ type: 'put' as const, key: `left-${i}`, value: 'x' })), { consistency: 'all' })
    // n4 copies 1 record a second: its partitions stay pending.
    // (No stray sweep on n4: the records written into it below stay while copiesLeft looks.)
    const joiner = await startNode({ ...(await nodeOptions('n4', [first.address])), repairRecordsPerSecond: 1, straySweepIntervalMs: 0 })
    nodes.push(joiner)
    await waitFor('the join staged everywhere', () => nodes.every((n) => n.membership.map?.change !== undefined))
    const map = first.membership.map!
    const pending = pendingPartitionsOf(map, 'n4')
    const queued = queuedPartitionsOf(map, 'n4')
    expect(queued.length).toBeGreaterThan(0)
    const sources = new Map<number, number>()
    for (const p of [...pending, ...queued]) sources.set(p, (await first.storage.partitionSize(p)).records)
    // 10 records in each partition n4 is to hold, written into n4 directly with an old version:
    // in its staged partitions they are held (as copied records would be); in the partitions
    // queued for a later wave they are left over (from a cancelled move, say) and must not count.
    const old = encodeRecord(encodeVersion({ ms: 1, counter: 0 }, 'old'), Buffer.from('leftover'))
    for (const p of [...pending, ...queued]) {
      await joiner.storage.applyRecords(Array.from({ length: 10 }, (_, i) => ({ partition: p, key: Buffer.from(`leftover-${p}-${i}`), record: old })))
    }
    // What n4 holds of its staged partitions (those records, and any it copied meanwhile), as
    // copiesLeft counts it: at most what the partition holds on a current replica.
    const held = async (): Promise<number> => {
      let n = 0
      for (const p of pending) n += Math.min((await joiner.storage.partitionSize(p)).records, sources.get(p)!)
      return n
    }
    const heldBefore = await held()
    const left = await waitFor('copiesLeft names n4', async () => (await db.copiesLeft()).find((l) => l.node === 'n4'))
    const heldAfter = await held()
    expect(left.partitions).toBe(pending.length + queued.length)
    expect(left.source).toBe([...sources.values()].reduce((a, b) => a + b, 0))
    expect(heldBefore).toBeGreaterThan(0)
    expect(left.held).toBeGreaterThanOrEqual(heldBefore)
    expect(left.held).toBeLessThanOrEqual(heldAfter)
    // Counted, the queued partitions' records would take held past what n4 holds of its staged ones.
    const leftovers = queued.reduce((n, p) => n + Math.min(10, sources.get(p)!), 0)
    expect(leftovers).toBeGreaterThan(heldAfter - heldBefore)
    await db.close()
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

  it('at a low record rate a copy writes a second\'s worth at a time: progress shows at once, and no faster than the rate', async () => {
    const first = await threeNodes()
    const db = await connect({ seeds: [first.address] })
    for (let i = 0; i < 2000; i += 500) await db.batch(Array.from({ length: 500 }, (_, j) => ({ type: 'put' as const, key: `slow-${i + j}`, value: 'x' })))
    await db.close()
    const rate = 5
    const joiner = await startNode({ ...(await nodeOptions('n4', [first.address])), repairRecordsPerSecond: rate })
    nodes.push(joiner)
    await waitFor('the join staged', () => first.membership.map?.change)
    const started = Date.now()
    // A whole page of 250 records paced at once waited 50 s for its budget before any was written.
    await waitFor('n4 wrote its first copied records', () => joiner.antiEntropy.copiedRecords > 0, 10_000)
    await waitFor('n4 copied more', () => joiner.antiEntropy.copiedRecords > 2 * rate, 10_000)
    const seconds = (Date.now() - started) / 1000
    // The budget's burst (a second's worth) may go at once; the rest is paced.
    expect(joiner.antiEntropy.copiedRecords).toBeLessThanOrEqual(rate * (seconds + 2))
  })
})

/** Starts n4 joining `first` and waits until every node holds a map with n4 and no change in flight. */
async function joinFourth(first: KumoNode): Promise<KumoNode> {
  const joiner = await startNode(await nodeOptions('n4', [first.address]))
  nodes.push(joiner)
  await waitFor('the join of n4 finished everywhere', () => nodes.every((n) => n.membership.map?.nodes.includes('n4') && n.membership.map.change === undefined), 60_000)
  return joiner
}

describe('writes that miss a replica around a membership change', () => {
  it('a client whose map predates a finished change: the replica the move retired refuses its write, and the hint for it reaches the new replica', async () => {
    const first = await threeNodes()
    const stale = await connect({ seeds: [first.address], refreshIntervalMs: 3_600_000 })
    const before = first.membership.map!
    const joiner = await joinFourth(first)
    const after = first.membership.map!
    // A key of a partition n4 took over: the stale client writes its old replicas, one of which no longer takes its writes.
    let i = 0
    const taken = (p: number): boolean => after.replicas[p]!.includes('n4') && !before.replicas[p]!.includes('n4')
    while (!taken(partitionOf(Buffer.from(`late-${i}`), after.partitionCount))) i++
    const key = Buffer.from(`late-${i}`)
    const partition = partitionOf(key, after.partitionCount)
    expect(stale.cachedTopology().epoch).toBe(before.epoch)

    await stale.put(key, 'planned-on-the-old-map')
    await waitFor('the new replica n4 holds the write', async () => (await joiner.storage.getRecords(partition, [key]))[0] !== undefined)
    for (const id of after.replicas[partition]!) {
      const node = nodes.find((n) => n.id === id)!
      await waitFor(`replica ${id} holds the write`, async () => (await node.storage.getRecords(partition, [key]))[0] !== undefined)
    }
    await stale.close()
  })

  it('a node that leaves hands the hints it holds to the partitions\u2019 owners before it stops', async () => {
    const first = await threeNodes()
    const fourth = await joinFourth(first)
    const map = fourth.membership.map!
    // Hints on n4 for n1, as if n1 had missed these writes; n4 does not deliver them by itself meanwhile.
    fourth.hintDelivery.stop()
    const keys = Array.from({ length: 50 }, (_, i) => Buffer.from(`held-${i}`))
    const record = encodeRecord(encodeVersion(new HybridClock().now(Date.now()), 'test'), Buffer.from('hinted'))
    const targets = keys.map((key) => partitionOf(key, map.partitionCount))
    await fourth.storage.putHints(keys.map((key, i) => ({ target: 'n1', partition: targets[i]!, key, record })), Date.now(), 1_000_000)

    const db = await connect({ seeds: [first.address] })
    await db.leaveNode('n4')
    await waitFor('n4 left and stopped', () => !fourth.serving() && nodes.filter((n) => n.id !== 'n4').every((n) => n.membership.map?.removed?.includes('n4')), 60_000)
    // Every owner of each key's partition holds it (n1 among them, where it owns the partition).
    for (let i = 0; i < keys.length; i++) {
      const owners = first.membership.map!.replicas[targets[i]!]!
      for (const id of owners) {
        const node = nodes.find((n) => n.id === id)!
        expect((await node.storage.getRecords(targets[i]!, [keys[i]!]))[0], `${keys[i]} on ${id}`).toBeDefined()
      }
    }
    await db.close()
  })

  it('after a dead node is removed, each node compares the partitions it is primary of with their replicas (the hints the dead node held are gone)', async () => {
    const first = await threeNodes()
    const fourth = await joinFourth(first)
    // A record only one replica holds, as if the others' hints had been on the node that dies;
    // of a partition n4 does not hold, so the removal copies nothing of it.
    const map = first.membership.map!
    let i = 0
    while (map.replicas[partitionOf(Buffer.from(`only-on-one-${i}`), map.partitionCount)]!.includes('n4')) i++
    const key = Buffer.from(`only-on-one-${i}`)
    const partition = partitionOf(key, map.partitionCount)
    const holder = nodes.find((n) => n.id === map.replicas[partition]![1])!
    const record = encodeRecord(encodeVersion(new HybridClock().now(Date.now()), 'test'), Buffer.from('lonely'))
    await holder.storage.applyRecords([{ partition, key, record }])

    await fourth.stop()
    const db = await connect({ seeds: [first.address] })
    await waitFor('the cluster sees n4 down and removes it', async () => {
      try {
        await db.removeNode('n4')
        return true
      } catch (err) {
        if ((err as { code?: string }).code === 'FAILED_PRECONDITION') return false
        throw err
      }
    }, 30_000, 250)
    const final = await waitFor('the removal finished', () => {
      const m = first.membership.map
      return m?.removed?.includes('n4') && m.change === undefined ? m : undefined
    }, 60_000)
    for (const id of final.replicas[partition]!) {
      const node = nodes.find((n) => n.id === id)!
      await waitFor(`replica ${id} holds the record`, async () => (await node.storage.getRecords(partition, [key]))[0] !== undefined, 30_000, 100)
    }
    await db.close()
  })
})

describe('copies that resume', () => {
  it('a source replica that stops mid-copy is replaced by the next one from where the copy stood: every record is copied once, and the join completes', async () => {
    const first = await threeNodes()
    // A partition n4 will gain whose copy comes from n2 or n3 (a source is the first live old replica; n1, the claimant, stays up).
    const before = first.membership.map!
    const goal = assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], { partitionCount: before.partitionCount, replicationFactor: 3 })
    const partition = goal.replicas.findIndex((list, p) => list.includes('n4') && before.replicas[p]![0] !== 'n1')
    expect(partition).toBeGreaterThanOrEqual(0)
    const sourceId = before.replicas[partition]![0]!
    // 5,000 records in that partition: five pages of copy.
    const keys: string[] = []
    for (let i = 0; keys.length < 5000; i++) if (partitionOf(Buffer.from(`src-${i}`), before.partitionCount) === partition) keys.push(`src-${i}`)
    const db = await connect({ seeds: [first.address] })
    for (let i = 0; i < keys.length; i += 500) await db.batch(keys.slice(i, i + 500).map((key) => ({ type: 'put' as const, key, value: 'v'.repeat(100) })))
    // A batch answers at W = 2 of 3: n1's copy of the last one may land just after (the client
    // stays open until it has).
    const total = await waitFor('n1 to hold every record of the partition', async () => {
      const { records } = await first.storage.partitionSize(partition)
      return records >= keys.length ? records : undefined
    })
    await db.close()

    // n4 copies 1,000 records a second: seconds of copying to stop the source in.
    const joiner = await startNode({ ...(await nodeOptions('n4', [first.address])), repairRecordsPerSecond: 1000 })
    nodes.push(joiner)
    const staged = await waitFor('the join staged', () => first.membership.map?.change)
    expect(pendingPartitionsOf(first.membership.map!, 'n4')).toContain(partition)
    await waitFor('n4 copying', () => joiner.antiEntropy.copiedRecords > 1000, 30_000)
    expect(joiner.antiEntropy.copiedRecords).toBeLessThan(total)
    await nodes.find((n) => n.id === sourceId)!.stop()
    await waitFor('the join of n4 finished', () => first.membership.map?.nodes.includes('n4') && first.membership.map.change === undefined, 60_000)
    expect(first.membership.map!.epoch).toBeGreaterThan(staged.epoch)
    // Every record came by the copy (none left to the final comparison), and none twice but for a page at the switch.
    expect(joiner.antiEntropy.copiedRecords).toBeGreaterThanOrEqual(total)
    expect(joiner.antiEntropy.copiedRecords).toBeLessThanOrEqual(total + 1000)
    expect((await joiner.storage.partitionSize(partition)).records).toBe(total)
  })
})
