import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { NodeConnection } from '../../src/client/node-connection.js'
import { Responsiveness } from '../../src/core/responsiveness.js'
import { startCluster, waitFor, type TestCluster } from '../helpers/cluster.js'

let cluster: TestCluster
beforeAll(async () => {
  cluster = await startCluster(3)
})
afterAll(async () => {
  await cluster?.close()
})

describe('an avoided node (real gRPC)', () => {
  it('is probed back in once it answers, on its own connection or a renewed one', async () => {
    const responsiveness = new Responsiveness({ timeoutFloorMs: 50, timeoutCapMs: 200, avoidMs: 50, avoidMsMax: 200 })
    const conn = new NodeConnection('n1', cluster.addresses[0]!, () => undefined, responsiveness)
    try {
      await conn.request({ id: 0, op: 'REPLICA_READ', key: Buffer.alloc(0), value: Buffer.alloc(0), consistency: '', ttlMs: 0, timeoutMs: 0, ops: [], keys: [], records: [], hintTarget: '', unresponsive: [], versionKeys: [] }, 1000)
      expect(conn.usable).toBe(true)
      // As if a request had gone unanswered for 500 ms with nothing heard since.
      responsiveness.timedOut(500, performance.now() + 1000)
      expect(conn.usable).toBe(false)
      // The connection is told the node is avoided only through its own requests; a fresh
      // connection on the same state (a replaced one) must probe it too.
      const fresh = new NodeConnection('n1', cluster.addresses[0]!, () => undefined, responsiveness)
      try {
        await waitFor('a probe to bring the node back', () => fresh.usable, 3000, 10)
      } finally {
        fresh.close()
      }
    } finally {
      conn.close()
    }
  })
})
