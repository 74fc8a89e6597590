import { describe, expect, it } from 'vitest'
import { Membership, type MembershipConfig } from '../../src/cluster/membership.js'
import type { PartitionMap } from '../../src/core/partition-map.js'
import { seededRandom } from '../../src/core/random.js'

/**
 * Membership driven round by round over a simulated network with a manual clock: nodes that
 * are "up" answer gossip in place, the others refuse it, as a closed port would.
 */
class SimCluster {
  readonly nodes = new Map<string, Membership>()
  readonly up = new Set<string>()
  /** Every map any node adopted or founded, in order. */
  readonly mapsSeen: PartitionMap[] = []
  /** Partitions each node says it is still copying. */
  readonly filling = new Map<string, number>()
  now = 0

  constructor(
    readonly ids: string[],
    readonly seeds: string[] = ids.map((id) => `addr-${id}`),
    readonly config: MembershipConfig = { gossipIntervalMs: 1000, foundingRoundsMax: 10, phi: {}, partitions: { partitionCount: 16, replicationFactor: 3 } },
  ) {
    for (const id of ids) {
      this.nodes.set(
        id,
        new Membership({ id, address: `addr-${id}`, weight: 1 }, seeds, config, {
          gossip: async (_peerId, address, message) => {
            const target = [...this.nodes.values()].find((m) => `addr-${m.selfId}` === address)
            if (target === undefined || !this.up.has(target.selfId)) throw new Error('connection refused')
            return target.receive(message)
          },
          persist: (map) => this.mapsSeen.push(map),
          now: () => this.now,
          load: () => 0,
          filling: () => this.filling.get(id) ?? 0,
        }),
      )
    }
  }

  /** One gossip interval: every node that is up runs a round, in the order given. */
  async round(order: readonly string[] = this.ids): Promise<void> {
    this.now += this.config.gossipIntervalMs
    for (const id of order) if (this.up.has(id)) await this.nodes.get(id)!.round()
  }

  map(id: string): PartitionMap | undefined {
    return this.nodes.get(id)!.map
  }
}

describe('Membership founding', () => {
  it('does not found a cluster while a seed has not answered, for up to foundingRoundsMax rounds', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3'])
    sim.up.add('n1')
    for (let i = 0; i < 9; i++) await sim.round()
    expect(sim.map('n1')).toBeUndefined()
    sim.up.add('n2')
    sim.up.add('n3')
    for (let i = 0; i < 3; i++) await sim.round()
    for (const id of sim.ids) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
    // No node ever held a map without all three: no write could be acknowledged by one alone.
    for (const map of sim.mapsSeen) expect(map.nodes).toEqual(['n1', 'n2', 'n3'])
  })

  it('founds without the seeds that never answer once foundingRoundsMax rounds have passed', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3'])
    sim.up.add('n1')
    for (let i = 0; i < 9; i++) await sim.round()
    expect(sim.map('n1')).toBeUndefined()
    await sim.round()
    expect(sim.map('n1')?.nodes).toEqual(['n1'])
    // A seed that comes up later joins the map that exists.
    sim.up.add('n3')
    for (let i = 0; i < 3; i++) await sim.round()
    expect(sim.map('n3')?.nodes).toEqual(['n1', 'n3'])
    expect(sim.map('n1')?.epoch).toBe(sim.map('n3')?.epoch)
  })

  it('founds after one round when it is its only seed', async () => {
    const sim = new SimCluster(['n1'])
    sim.up.add('n1')
    await sim.round()
    expect(sim.map('n1')?.nodes).toEqual(['n1'])
  })

  it('founds one map with every node whatever the start order and gossip order (200 seeded runs)', async () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = seededRandom(seed)
      const ids = ['n1', 'n2', 'n3', 'n4', 'n5']
      const sim = new SimCluster(ids)
      // Each node comes up within the first 8 rounds, before the founding limit.
      const startRound = new Map(ids.map((id) => [id, Math.floor(random() * 8)]))
      for (let r = 0; r < 20; r++) {
        for (const id of ids) if (startRound.get(id) === r) sim.up.add(id)
        const order = [...ids].sort(() => random() - 0.5)
        await sim.round(order)
      }
      for (const id of ids) expect(sim.map(id)?.nodes, `seed ${seed}, ${id}`).toEqual(ids)
      for (const map of sim.mapsSeen) expect(map.nodes.length, `seed ${seed}`).toBe(ids.length)
      expect(new Set(ids.map((id) => sim.map(id)!.epoch)).size, `seed ${seed}`).toBe(1)
    }
  })
})

describe('Membership remove', () => {
  it('takes a dead node out for good, one change at a time, and tells it so if it comes back', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3', 'n4'])
    for (const id of sim.ids) sim.up.add(id)
    for (let i = 0; i < 3; i++) await sim.round()
    expect(sim.map('n1')?.nodes).toEqual(['n1', 'n2', 'n3', 'n4'])
    const n1 = sim.nodes.get('n1')!
    const code = (work: () => unknown): string => {
      try {
        work()
      } catch (err) {
        return `${(err as { code: string }).code}: ${(err as Error).message}`
      }
      return 'ok'
    }
    expect(code(() => n1.remove('n4'))).toMatch(/^FAILED_PRECONDITION: node n4 is up: remove is for a node that is dead for good/)
    sim.up.delete('n4')
    for (let i = 0; i < 30 && n1.isAlive('n4'); i++) await sim.round()
    expect(n1.isAlive('n4')).toBe(false)
    expect(code(() => n1.remove('zz'))).toMatch(/^INVALID_ARGUMENT: node zz is not in the cluster/)
    expect(code(() => n1.remove('n1'))).toMatch(/^FAILED_PRECONDITION: node n1 cannot remove itself/)
    // Another change still being copied: refused, nothing changes.
    sim.filling.set('n2', 3)
    await sim.round()
    const epoch = sim.map('n1')!.epoch
    expect(code(() => n1.remove('n4'))).toMatch(/^FAILED_PRECONDITION: a membership change is in flight: n2 is copying 3 partitions/)
    expect(sim.map('n1')!.epoch).toBe(epoch)
    sim.filling.set('n2', 0)
    await sim.round()
    const result = n1.remove('n4')
    expect(result.epoch).toBe(epoch + 1)
    for (let i = 0; i < 2; i++) await sim.round()
    for (const id of ['n1', 'n2', 'n3']) {
      expect(sim.map(id)?.removed).toEqual(['n4'])
      expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
      expect(sim.nodes.get(id)!.allMembers().map((m) => m.id)).not.toContain('n4')
    }
    expect(code(() => n1.remove('n4'))).toMatch(/removed already/)
    // n4 returns with its old state: it learns it was removed; nobody adds it back.
    const told: number[] = []
    sim.nodes.get('n4')!.onRemoved((e) => told.push(e))
    sim.up.add('n4')
    for (let i = 0; i < 3; i++) await sim.round()
    expect(told).toEqual([epoch + 1])
    for (const id of ['n1', 'n2', 'n3']) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
  })
})

describe('Membership leave', () => {
  it('a live node takes itself out, tells every peer before it calls itself gone, and is never added back', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3', 'n4'])
    for (const id of sim.ids) sim.up.add(id)
    for (let i = 0; i < 3; i++) await sim.round()
    const n3 = sim.nodes.get('n3')!
    const heard: [number, boolean][] = []
    n3.onRemoved((epoch, left) => heard.push([epoch, left]))
    const epoch = sim.map('n1')!.epoch
    sim.filling.set('n1', 1)
    await sim.round()
    await expect(n3.leave()).rejects.toThrow(/a membership change is in flight: n1 is copying 1 partition/)
    sim.filling.set('n1', 0)
    await sim.round()
    const result = await n3.leave()
    expect(result.epoch).toBe(epoch + 1)
    // Every live peer has the map without n3 as soon as leave() resolves.
    for (const id of ['n1', 'n2', 'n4']) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n4'])
    expect(heard).toEqual([[epoch + 1, true]])
    sim.up.delete('n3')
    for (let i = 0; i < 3; i++) await sim.round()
    for (const id of ['n1', 'n2', 'n4']) expect(sim.map(id)?.removed).toEqual(['n3'])
  })
})

/** Five nodes in one map, then n4 and n5 dead as every live node sees it. */
async function fiveWithTwoDead(): Promise<SimCluster> {
  const sim = new SimCluster(['n1', 'n2', 'n3', 'n4', 'n5'])
  for (const id of sim.ids) sim.up.add(id)
  for (let i = 0; i < 3; i++) await sim.round()
  sim.up.delete('n4')
  sim.up.delete('n5')
  const live = ['n1', 'n2', 'n3'].map((id) => sim.nodes.get(id)!)
  for (let i = 0; i < 30 && live.some((m) => m.isAlive('n4') || m.isAlive('n5')); i++) await sim.round()
  return sim
}

describe('Membership concurrent changes', () => {
  it('two removals made at the same moment on different nodes both hold in the end (removals are never undone)', async () => {
    const sim = await fiveWithTwoDead()
    const n1 = sim.nodes.get('n1')!
    const n2 = sim.nodes.get('n2')!
    // Neither hears of the other's change (each is cut off for the moment it makes it): both
    // start from the same epoch.
    sim.up.clear()
    sim.up.add('n1')
    const a = n1.remove('n4')
    sim.up.clear()
    sim.up.add('n2')
    const b = n2.remove('n5')
    expect(a.epoch).toBe(b.epoch)
    for (const id of ['n1', 'n2', 'n3']) sim.up.add(id)
    for (let i = 0; i < 4; i++) await sim.round()
    for (const id of ['n1', 'n2', 'n3']) {
      expect(sim.map(id)?.removed).toEqual(['n4', 'n5'])
      expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
    }
    expect(sim.map('n1')).toEqual(sim.map('n3'))
  })

  it('a second change waits until every live node holds the newest map', async () => {
    const sim = await fiveWithTwoDead()
    const n1 = sim.nodes.get('n1')!
    const first = n1.remove('n4')
    // Peers took the map (the removal gossips at once) but have not said so back yet.
    expect(() => n1.remove('n5')).toThrow(/has not taken map epoch|have not taken map epoch/)
    await sim.round()
    const second = n1.remove('n5')
    expect(second.epoch).toBe(first.epoch + 1)
  })
})
