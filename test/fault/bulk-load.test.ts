import { afterEach, describe, expect, it } from 'vitest'
import { withRetry, type KumoError } from '../../src/index.js'
import { ProcessCluster } from '../helpers/processes.js'

let cluster: ProcessCluster | undefined
afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})

describe('a bulk load through the client (real processes)', () => {
  it('rides out a moment when no write can succeed (two of three nodes frozen) by retrying, and loads everything', { timeout: 120_000 }, async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client({ timeoutMs: 2000 })
    const records = 6000
    const retried: string[] = []
    let next = 0
    let frozen = false
    const worker = async (): Promise<void> => {
      while (next < records) {
        const from = next
        next = Math.min(records, next + 100)
        const ops = Array.from({ length: next - from }, (_, i) => ({ type: 'put' as const, key: `bulk/${from + i}`, value: `value-${from + i}` }))
        await withRetry(() => db.batch(ops), { timeoutMs: 60_000, onRetry: (error: KumoError) => retried.push(error.code) })
        // Freeze two nodes once, a third of the way in: no write can meet its quorum.
        if (!frozen && next >= records / 3) {
          frozen = true
          for (const id of ['n2', 'n3']) cluster!.children.get(id)!.kill('SIGSTOP')
          setTimeout(() => {
            for (const id of ['n2', 'n3']) cluster!.children.get(id)!.kill('SIGCONT')
          }, 2000)
        }
      }
    }
    await Promise.all(Array.from({ length: 8 }, worker))
    expect(frozen).toBe(true)
    expect(retried.length).toBeGreaterThan(0)
    expect(retried.every((code) => ['UNAVAILABLE', 'TIMEOUT', 'OVERLOADED', 'NOT_SERVING'].includes(code))).toBe(true)
    for (let i = 0; i < records; i += 1000) {
      const keys = Array.from({ length: Math.min(1000, records - i) }, (_, j) => `bulk/${i + j}`)
      const values = await db.getMany(keys)
      expect(values.map((v) => v?.toString())).toEqual(keys.map((k) => `value-${k.slice(5)}`))
    }
    await db.close()
  })
})
