import { afterEach, describe, expect, it } from 'vitest'
import { partitionOf } from '../../src/core/partitioner.js'
import { decodeRecord, encodeRecord } from '../../src/core/record.js'
import { encodeVersion } from '../../src/core/version.js'
import { connect } from '../../src/index.js'
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js'

let cluster: TestCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

describe('background repair (the periodic anti-entropy pass)', () => {
  it('brings every replica to a version only one of them holds, without a read, and lets an operator\'s repair run beside it', { timeout: 60_000 }, async () => {
    cluster = await startCluster(3, { repairIntervalMs: 300 })
    const db = await connect({ seeds: cluster.addresses })
    try {
      const keys = Array.from({ length: 40 }, (_, i) => Buffer.from(`background/${i}`))
      await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: 'v0' })))
      const map = cluster.nodes[0]!.membership.map!
      // A newer version of each key written into one replica's storage alone: only anti-entropy
      // can bring it to the others (no hint names it, and nothing reads it).
      const diverge = async (round: number): Promise<void> => {
        const writes = keys.map((key, i) => ({
          partition: partitionOf(key, map.partitionCount),
          key,
          record: encodeRecord(encodeVersion({ ms: Date.now() + 1000 * round, counter: i }, 'test'), Buffer.from(`v${round}`)),
        }))
        await cluster!.nodes[round % 3]!.storage.applyRecords(writes)
      }
      const everywhere = async (round: number): Promise<boolean> => {
        for (const node of cluster!.nodes) {
          for (const key of keys) {
            const [record] = await node!.storage.getRecords(partitionOf(key, map.partitionCount), [key])
            if (record === undefined || decodeRecord(record).value.toString() !== `v${round}`) return false
          }
        }
        return true
      }
      await diverge(1)
      await waitFor('the background passes to bring every replica the newer versions', () => everywhere(1), 30_000, 100)
      // An operator's repair is not queued behind a whole background pass: it answers, done.
      await diverge(2)
      expect((await db.repair()).length).toBe(3)
      expect(await everywhere(2)).toBe(true)
    } finally {
      await db.close()
    }
  })
})
