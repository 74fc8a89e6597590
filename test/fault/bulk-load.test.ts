import { afterEach, describe, expect, it } from 'vitest'
import { ProcessCluster } from '../helpers/processes.js'

let cluster: ProcessCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

describe('a bulk load through the client (real processes)', () => {
  it('rides out a moment when no write can succeed (two of three nodes frozen) by retrying, and loads everything (db.load)', { timeout: 120_000 }, async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client({ timeoutMs: 2000 })
    const records = 6000
    const retried: string[] = []
    let frozen = false
    // The records, read as the load takes them; a third of the way in, two nodes freeze for
    // 2 s: no write can meet its quorum.
    async function* source(): AsyncGenerator<{ key: string; value: string }> {
      for (let i = 0; i < records; i++) {
        if (!frozen && i >= records / 3) {
          frozen = true
          for (const id of ['n2', 'n3']) cluster!.children.get(id)!.kill('SIGSTOP')
          setTimeout(() => {
            for (const id of ['n2', 'n3']) cluster!.children.get(id)!.kill('SIGCONT')
          }, 2000)
        }
        yield { key: `bulk/${i}`, value: `value-${i}` }
      }
    }
    const progress: number[] = []
    const limits: number[] = []
    const loaded = await db.load(source(), {
      batchSize: 100,
      concurrency: 8,
      onRetry: (error) => retried.push(error.code),
      onProgress: (p) => {
        progress.push(p.records)
        limits.push(p.inFlightLimit)
      },
    })
    expect(loaded.records).toBe(records)
    expect(loaded.retried).toBe(retried.length)
    expect(progress[progress.length - 1]).toBe(records)
    expect(frozen).toBe(true)
    expect(retried.length).toBeGreaterThan(0)
    expect(retried.every((code) => ['UNAVAILABLE', 'TIMEOUT', 'OVERLOADED', 'NOT_SERVING'].includes(code))).toBe(true)
    // The retries halved the batches in flight; they grew back as batches were acknowledged.
    expect(Math.min(...limits)).toBeLessThan(8)
    expect(limits.every((limit) => limit >= 1 && limit <= 8)).toBe(true)
    for (let i = 0; i < records; i += 1000) {
      const keys = Array.from({ length: Math.min(1000, records - i) }, (_, j) => `bulk/${i + j}`)
      const values = await db.getMany(keys)
      expect(values.map((v) => v?.toString())).toEqual(keys.map((k) => `value-${k.slice(5)}`))
    }
    await db.close()
  })
})
