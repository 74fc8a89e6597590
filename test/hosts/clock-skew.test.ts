import { describe, expect, it } from 'vitest'
import { NodeConnection } from '../../src/client/node-connection.js'
import { recordHlcMs } from '../../src/core/record.js'
import { requestMsg } from '../../src/wire/messages.js'
import { waitFor } from '../helpers/cluster.js'
import { has, testHostsUnavailable } from '../helpers/netns.js'
import { RawKv } from '../helpers/raw.js'
import { faketimeEnv } from '../helpers/host-cluster.js'
import { runScenario } from '../helpers/scenario.js'

const skip = testHostsUnavailable()

describe.skipIf(skip !== undefined)('a node with a wrong clock (test hosts, faketime)', () => {
  for (const offset of ['+120s', '-120s']) {
    it(`n3 ${offset}: no request fails or is lost; n3 knows its clock is off, coordinates no writes, and bends no other clock`, { timeout: 240_000 }, async () => {
      const ahead = offset.startsWith('+')
      const result = await runScenario({
        name: `clock ${offset} on one node, 3 hosts`,
        hosts: 3,
        // The clock is wrong from the start; the fault is what the checks below do with it.
        cluster: { nodes: { n3: { faketime: offset } } },
        fault: async () => undefined,
        faultMs: 0,
        during: async (c, load, db) => {
          const n3 = new RawKv(c.spec('n3').address)
          const n1 = new RawKv(c.spec('n1').address)
          try {
            // Everyone measures n3 about 120 s off (gossip rounds to both peers), n3 included.
            const offsetOfN3 = async (at: RawKv): Promise<number> => (await at.call('Topology', {})).nodes.find((n: { id: string }) => n.id === 'n3').clockOffsetMs
            for (const at of [n1, n3]) await waitFor('the offsets to be measured', async () => Math.abs(Math.abs(await offsetOfN3(at)) - 120_000) < 5000, 20_000, 200)
            expect(Math.sign(await offsetOfN3(n3))).toBe(ahead ? 1 : -1)

            // n3 stamps no versions: a write it would coordinate is refused, naming its clock.
            const refused = await n3.error('Put', { key: Buffer.from('skew/overwritten'), value: Buffer.from('from n3') })
            expect(refused.code).toBe('UNAVAILABLE')
            expect(refused.message).toMatch(/clock is 1\d\d\.\d s (ahead of|behind) the cluster's/)
            // So a later write by a correct node is never shadowed by one n3 stamped.
            await n1.call('Put', { key: Buffer.from('skew/overwritten'), value: Buffer.from('from n1') })
            expect((await db.get('skew/overwritten'))?.toString()).toBe('from n1')

            // Expiry follows the cluster's clock, not n3's: a 60 s TTL read through n3 is there.
            await db.put('skew/ttl', 'alive', { ttlMs: 60_000 })
            const through = await n3.call('Get', { key: Buffer.from('skew/ttl'), consistency: 'all' })
            expect(through.found).toBe(true)

            // n1's clock was not pulled towards n3's: what it stamps now is about now.
            await n1.call('Put', { key: Buffer.from('skew/stamp'), value: Buffer.from('x') })
            const conn = new NodeConnection('n1', c.spec('n1').address, () => undefined)
            try {
              const res = await conn.request(requestMsg({ op: 'REPLICA_READ', keys: [Buffer.from('skew/stamp')] }), 5000)
              const stamped = res.records?.[0]
              if (stamped !== undefined && stamped.length > 0) expect(Math.abs(recordHlcMs(stamped) - Date.now())).toBeLessThan(10_000)
            } finally {
              conn.close()
            }
          } finally {
            n3.close()
            n1.close()
          }
          await load.progress(300)
        },
      })
      expect(result.failures).toEqual([])
      expect(result.lost).toBe(0)
    })
  }
})

describe.skipIf(skip !== undefined)('a client with a wrong clock (test hosts, faketime)', () => {
  it("+120 s: every write it makes is refused with INVALID_ARGUMENT that names the client's clock; other clients go on", { timeout: 240_000 }, async () => {
    const result = await runScenario({
      name: 'client clock +120s, 3 hosts',
      hosts: 3,
      cluster: { clientHosts: ['c2'] },
      remoteClients: [{ host: 'c2', seeds: ['n1'], env: faketimeEnv('+120s'), load: { readers: 0 }, expectWrites: false }],
      fault: async () => undefined,
      faultMs: 5000,
    })
    expect(result.failures).toEqual([])
    expect(result.lost).toBe(0)
    const skewed = result.remote[0]!
    expect(skewed.acknowledged).toBe(0)
    expect(Object.keys(skewed.failuresByKind)).toEqual(['put INVALID_ARGUMENT'])
    expect(skewed.failures[0]!.error).toMatch(/ahead of the cluster's clock.*check the client's system time/)
  })
})

if (skip === undefined && !has('faketime')) process.stdout.write('clock tests: faketime is installed on first use (apt-get install -y faketime)\n')
