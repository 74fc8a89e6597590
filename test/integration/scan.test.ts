import { afterEach, describe, expect, it } from 'vitest'
import { connect } from '../../src/index.js'
import { startCluster, type TestCluster } from '../helpers/cluster.js'
import { RawKv } from '../helpers/raw.js'

let cluster: TestCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

describe('scans across nodes', () => {
  it('a scan whose node fails midway reads that node\'s partitions from their other replicas, and returns every key once, in order', { timeout: 60_000 }, async () => {
    // N = 2 on four nodes: the scanning node holds about half the partitions and reads the
    // rest from the others, a group of partitions per node.
    cluster = await startCluster(4, { replicationFactor: 2 })
    const db = await connect({ seeds: [cluster.addresses[0]!] })
    const keys = Array.from({ length: 6000 }, (_, i) => `scan-failover/${String(i).padStart(5, '0')}`)
    for (let i = 0; i < keys.length; i += 500) await db.batch(keys.slice(i, i + 500).map((key) => ({ type: 'put' as const, key, value: key })))
    await db.close()
    // The node's Scan stream read directly, so no client library resumes it elsewhere: the
    // node itself must read the stopped node's partitions from their other replicas.
    const raw = new RawKv(cluster.addresses[0]!)
    try {
      const seen: string[] = []
      let stopped = false
      await new Promise<void>((resolve, reject) => {
        const stream = raw.client.scan({ prefix: Buffer.from('scan-failover/'), pageSize: 20 })
        stream.on('data', (page: { entries: { key: Buffer }[] }) => {
          seen.push(...page.entries.map((e) => e.key.toString()))
          // A few pages in, a node the scan reads from stops (not the one it runs on).
          if (!stopped && seen.length >= 100) {
            stopped = true
            stream.pause()
            void cluster!.stopNode(2).then(() => stream.resume(), reject)
          }
        })
        stream.on('end', () => resolve())
        stream.on('error', reject)
      })
      expect(stopped).toBe(true)
      expect(seen).toEqual(keys)
    } finally {
      raw.close()
    }
  })

  it('returns what a limit and bounds ask for, tombstones left out, from every node', { timeout: 30_000 }, async () => {
    cluster = await startCluster(3)
    const db = await connect({ seeds: cluster.addresses })
    try {
      const keys = Array.from({ length: 300 }, (_, i) => `bounded/${String(i).padStart(4, '0')}`)
      await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: key })))
      await db.batch(keys.filter((_, i) => i % 3 === 0).map((key) => ({ type: 'del' as const, key })))
      const live = keys.filter((_, i) => i % 3 !== 0)
      // Each node's own Scan stream, so every node answers.
      for (const address of cluster.addresses) {
        const raw = new RawKv(address)
        const scan = (request: object): Promise<string[]> =>
          new Promise((resolve, reject) => {
            const out: string[] = []
            const stream = raw.client.scan(request)
            stream.on('data', (page: { entries: { key: Buffer }[] }) => out.push(...page.entries.map((e) => e.key.toString())))
            stream.on('end', () => resolve(out))
            stream.on('error', reject)
          })
        try {
          expect(await scan({ prefix: Buffer.from('bounded/'), limit: 10 }), address).toEqual(live.slice(0, 10))
          expect(await scan({ gte: Buffer.from('bounded/0100'), lt: Buffer.from('bounded/0200') }), address).toEqual(live.filter((k) => k >= 'bounded/0100' && k < 'bounded/0200'))
          expect(await scan({ prefix: Buffer.from('bounded/'), pageSize: 7 }), address).toEqual(live)
        } finally {
          raw.close()
        }
      }
    } finally {
      await db.close()
    }
  })

  it('from one client are spread over the nodes by its load-balancing policy, sequential or concurrent', { timeout: 30_000 }, async () => {
    cluster = await startCluster(3)
    const db = await connect({ seeds: [cluster.addresses[0]!] })
    try {
      const keys = Array.from({ length: 50 }, (_, i) => `spread/${String(i).padStart(3, '0')}`)
      await db.batch(keys.map((key) => ({ type: 'put' as const, key, value: key })))
      const scan = async (): Promise<string[]> => {
        const out: string[] = []
        for await (const { key } of db.scan({ prefix: 'spread/', limit: 20 })) out.push(key.toString())
        return out
      }
      const sentBefore = Object.fromEntries(Object.entries(db.requestStats()).map(([id, s]) => [id, s.sent]))
      for (let i = 0; i < 9; i++) expect(await scan()).toEqual(keys.slice(0, 20))
      const results = await Promise.all(Array.from({ length: 9 }, () => scan()))
      for (const result of results) expect(result).toEqual(keys.slice(0, 20))
      const stats = db.requestStats()
      const scans = Object.entries(stats).map(([id, s]) => s.sent - (sentBefore[id] ?? 0))
      // 18 scans over three equal nodes: every node runs some (before, every scan went to the first).
      expect(scans).toHaveLength(3)
      for (const count of scans) expect(count).toBeGreaterThanOrEqual(3)
      // A scan in flight counts as one: none is left once their streams ended.
      for (const s of Object.values(stats)) expect(s.inFlight).toBe(0)
    } finally {
      await db.close()
    }
  })

  it('that the caller stops early end on the node too: the next scans get its slot at once', { timeout: 30_000 }, async () => {
    // One scan at a time on the node: an abandoned scan that held its slot would make the next wait and be refused.
    cluster = await startCluster(1, { replicationFactor: 1, scansInFlightMax: 1 })
    const db = await connect({ seeds: cluster.addresses })
    try {
      const keys = Array.from({ length: 3000 }, (_, i) => `early/${String(i).padStart(4, '0')}`)
      for (let i = 0; i < keys.length; i += 500) await db.batch(keys.slice(i, i + 500).map((key) => ({ type: 'put' as const, key, value: 'v'.repeat(1000) })))
      for (let round = 0; round < 3; round++) {
        for await (const { key } of db.scan({ prefix: 'early/', pageSize: 10 })) {
          expect(key.toString()).toBe(keys[0])
          break
        }
      }
      const all: string[] = []
      for await (const { key } of db.scan({ prefix: 'early/', timeoutMs: 5000 })) all.push(key.toString())
      expect(all).toEqual(keys)
      expect(Object.values(db.requestStats()).every((s) => s.inFlight === 0)).toBe(true)
    } finally {
      await db.close()
    }
  })
})
