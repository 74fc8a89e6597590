import { describe, expect, it } from 'vitest'
import { Membership, type MembershipConfig } from '../../src/cluster/membership.js'
import type { PartitionMap } from '../../src/core/partition-map.js'
import { seededRandom } from '../../src/core/random.js'
import { pendingPartitions, pendingPartitionsOf, queuedPartitions } from '../../src/core/handoff.js'
import type { GossipMsg } from '../../src/wire/messages.js'

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
  /** How late each node says its event loop ran (ms). */
  readonly loopDelay = new Map<string, number>()
  /** Pending partitions each node says it caught up on (default: all of them, at once). */
  readonly ready = new Map<string, number[]>()
  /** Nodes of a version before waves: what they send says nothing of waves, as protobuf drops a field it does not know. */
  readonly older = new Set<string>()
  now = 0

  constructor(
    readonly ids: string[],
    readonly seeds: string[] = ids.map((id) => `addr-${id}`),
    readonly config: MembershipConfig = { gossipIntervalMs: 1000, foundingRoundsMax: 10, phi: {}, partitions: { partitionCount: 16, replicationFactor: 3 } },
    /** Nodes started with --standby: members that own nothing until joined. */
    standby: readonly string[] = [],
  ) {
    for (const id of ids) {
      this.nodes.set(
        id,
        new Membership({ id, address: `addr-${id}`, weight: 1, ...(standby.includes(id) ? { standby: true } : {}) }, seeds, config, {
          gossip: async (_peerId, address, message) => {
            const target = [...this.nodes.values()].find((m) => `addr-${m.selfId}` === address)
            if (target === undefined || !this.up.has(target.selfId)) throw new Error('connection refused')
            const asSent = (from: string, msg: GossipMsg): GossipMsg => (this.older.has(from) ? { ...msg, members: msg.members.map(({ waves: _waves, ...m }) => m) } : msg)
            return asSent(target.selfId, target.receive(asSent(id, message)))
          },
          persist: (map) => this.mapsSeen.push(map),
          now: () => this.now,
          load: () => 0,
          filling: () => this.filling.get(id) ?? 0,
          loopDelayMs: () => this.loopDelay.get(id) ?? 0,
          ...(this.readyOverride(id)),
        }),
      )
    }
  }

  /** One gossip interval: every node that is up runs a round, in the order given. */
  async round(order: readonly string[] = this.ids): Promise<void> {
    this.now += this.config.gossipIntervalMs
    for (const id of order) if (this.up.has(id)) await this.nodes.get(id)!.round()
  }

  /** A node's readiness report: what `ready` says for it, or (absent) Membership's default, all of its pending partitions. */
  private readyOverride(id: string): { ready?: () => { epoch: number; partitions: number[] } } {
    return {
      ready: () => {
        const map = this.nodes.get(id)!.map
        const said = this.ready.get(id)
        const epoch = map?.change?.epoch ?? 0
        if (said !== undefined) return { epoch, partitions: said }
        return { epoch, partitions: map === undefined ? [] : pendingPartitionsOf(map, id) }
      },
    }
  }

  map(id: string): PartitionMap | undefined {
    return this.nodes.get(id)!.map
  }
}

describe('Membership loop delays (the pace of membership copies)', () => {
  it("gives every node the latest loop delay of the live node whose loop runs latest, and forgets a node that went down", async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3'])
    for (const id of sim.ids) sim.up.add(id)
    for (let i = 0; i < 3; i++) await sim.round()
    for (const id of sim.ids) expect(sim.nodes.get(id)!.worstLoopDelayMs()).toBe(0)
    sim.loopDelay.set('n3', 40)
    sim.loopDelay.set('n2', 5)
    for (let i = 0; i < 2; i++) await sim.round()
    for (const id of sim.ids) expect(sim.nodes.get(id)!.worstLoopDelayMs()).toBe(40)
    expect(sim.nodes.get('n2')!.ownLoopDelayMs()).toBe(5)
    // Down for good: its last reading no longer slows anyone.
    sim.up.delete('n3')
    for (let i = 0; i < 30; i++) await sim.round()
    expect(sim.nodes.get('n1')!.worstLoopDelayMs()).toBe(5)
  })
})

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
    // Staged: n4 stays in the map (its partitions' reads stay where they are) until they moved.
    expect(sim.map('n1')?.change).toMatchObject({ kind: 'remove', removes: ['n4'] })
    expect(code(() => n1.remove('n4'))).toMatch(/^FAILED_PRECONDITION: a membership change is in flight: n4 is removed/)
    await settle(sim)
    const final = sim.map('n1')!.epoch
    for (const id of ['n1', 'n2', 'n3']) {
      expect(sim.map(id)?.removed).toEqual(['n4'])
      expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
      expect(sim.map(id)?.change).toBeUndefined()
      expect(sim.nodes.get(id)!.allMembers().map((m) => m.id)).not.toContain('n4')
    }
    expect(code(() => n1.remove('n4'))).toMatch(/removed already/)
    // n4 returns with its old state: it learns it was removed; nobody adds it back.
    const told: number[] = []
    sim.nodes.get('n4')!.onRemoved((e) => told.push(e))
    sim.up.add('n4')
    for (let i = 0; i < 3; i++) await sim.round()
    expect(told).toEqual([final])
    for (const id of ['n1', 'n2', 'n3']) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
  })
})

describe('Membership changes in waves', () => {
  const config: MembershipConfig = { gossipIntervalMs: 1000, foundingRoundsMax: 10, phi: {}, partitions: { partitionCount: 64, replicationFactor: 3 }, movesAtOnce: 4 }

  it('moves a few partitions at once and lands on the same map; all at once while a member of an older version is in the cluster', async () => {
    for (const older of [undefined, 'n2']) {
      const sim = new SimCluster(['n1', 'n2', 'n3', 'n4'], undefined, config)
      if (older !== undefined) sim.older.add(older)
      for (const id of sim.ids) sim.up.add(id)
      for (let i = 0; i < 3; i++) await sim.round()
      const n1 = sim.nodes.get('n1')!
      const before = sim.map('n1')!
      const moving = before.replicas.filter((list) => list.includes('n4')).length
      n1.leave('n4')
      const staged = sim.map('n1')!
      if (older === undefined) {
        expect(pendingPartitions(staged).length).toBe(4)
        expect(queuedPartitions(staged).length).toBe(moving - 4)
      } else {
        expect(pendingPartitions(staged).length).toBe(moving)
        expect(staged.goal).toBeUndefined()
      }
      let most = 0
      for (let i = 0; i < 80 && sim.map('n1')!.change !== undefined; i++) {
        await sim.round()
        const map = sim.map('n1')!
        if (map.change !== undefined) most = Math.max(most, pendingPartitions(map).length)
      }
      expect(sim.map('n1')!.change).toBeUndefined()
      expect(sim.map('n1')!.removed).toEqual(['n4'])
      for (const list of sim.map('n1')!.replicas) expect([...list].sort()).toEqual(['n1', 'n2', 'n3'])
      if (older === undefined) expect(most).toBeLessThanOrEqual(4)
    }
  })
})

/** Gossip rounds until the change in flight has finished everywhere (at most 20). */
async function settle(sim: SimCluster): Promise<void> {
  for (let i = 0; i < 20; i++) {
    await sim.round()
    const maps = [...sim.up].map((id) => sim.map(id))
    if (maps.every((m) => m?.change === undefined && m?.epoch === maps[0]?.epoch)) return
  }
  throw new Error('the change did not finish in 20 rounds')
}

describe('Membership leave', () => {
  it('the claimant drains a live node: it keeps serving until its partitions moved, then hears it left, and is never added back', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3', 'n4'])
    for (const id of sim.ids) sim.up.add(id)
    for (let i = 0; i < 3; i++) await sim.round()
    const n1 = sim.nodes.get('n1')!
    const n3 = sim.nodes.get('n3')!
    const heard: [number, boolean][] = []
    n3.onRemoved((epoch, left) => heard.push([epoch, left]))
    const epoch = sim.map('n1')!.epoch
    // Only the claimant stages changes; another node says which one is.
    expect(() => n3.leave('n3')).toThrow(/membership changes go through the claimant, node n1; ask it to drain n3/)
    sim.filling.set('n2', 1)
    await sim.round()
    expect(() => n1.leave('n3')).toThrow(/a membership change is in flight: n2 is copying 1 partition/)
    sim.filling.set('n2', 0)
    await sim.round()
    const result = n1.leave('n3')
    expect(result.epoch).toBe(epoch + 1)
    expect(result.replicasMoved).toBeGreaterThan(0)
    // Staged: n3 still reads its partitions.
    await sim.round()
    expect(sim.map('n3')?.nodes).toContain('n3')
    expect(heard).toEqual([])
    await settle(sim)
    const final = sim.map('n1')!.epoch
    for (const id of ['n1', 'n2', 'n4']) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n4'])
    expect(heard).toEqual([[final, true]])
    sim.up.delete('n3')
    for (let i = 0; i < 3; i++) await sim.round()
    for (const id of ['n1', 'n2', 'n4']) expect(sim.map(id)?.removed).toEqual(['n3'])
  })

  it('refuses a drain that would leave fewer nodes than replicas per partition', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3'])
    for (const id of sim.ids) sim.up.add(id)
    for (let i = 0; i < 3; i++) await sim.round()
    expect(() => sim.nodes.get('n1')!.leave('n3')).toThrow(/draining n3 would leave 2 nodes for 3 replicas per partition/)
    expect(() => sim.nodes.get('n1')!.plan('leave', ['n3'])).toThrow(/would leave 2 nodes/)
  })

  it('a cancelled drain leaves the node in the map with what it still holds, and a cancelled join is not staged again until the node restarts', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3', 'n4'])
    for (const id of sim.ids) sim.up.add(id)
    for (let i = 0; i < 3; i++) await sim.round()
    const n1 = sim.nodes.get('n1')!
    // Nobody reports ready: the change stays in stage 1 until cancelled.
    for (const id of sim.ids) sim.ready.set(id, [])
    n1.leave('n4')
    await sim.round()
    expect(n1.cancel().partitionsReverted).toBeGreaterThan(0)
    expect(() => n1.cancel()).toThrow(/no membership change is in flight/)
    await settle(sim)
    for (const id of sim.ids) {
      expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3', 'n4'])
      expect(sim.map(id)?.removed).toBeUndefined()
    }
  })
})

describe('Membership plan, commit and standby joins', () => {
  const config: MembershipConfig = { gossipIntervalMs: 1000, foundingRoundsMax: 10, phi: {}, partitions: { partitionCount: 16, replicationFactor: 3 } }
  /** n1..n3 own the map; n4 and n5 are standby members, heard by everyone. */
  async function withStandbys(): Promise<SimCluster> {
    const ids = ['n1', 'n2', 'n3', 'n4', 'n5']
    const sim = new SimCluster(ids, ['addr-n1', 'addr-n2', 'addr-n3'], config, ['n4', 'n5'])
    for (const id of ids) sim.up.add(id)
    for (let i = 0; i < 8; i++) await sim.round()
    return sim
  }

  it('standby members own nothing until joined; kumo join makes several owners in one change', async () => {
    const sim = await withStandbys()
    const n1 = sim.nodes.get('n1')!
    for (const id of sim.ids) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
    expect(n1.isAlive('n4') && n1.isAlive('n5')).toBe(true)
    expect(() => n1.join(['n6'])).toThrow(/no node n6 has made contact with the cluster/)
    expect(() => n1.join(['n2'])).toThrow(/node n2 owns partitions already/)
    expect(() => sim.nodes.get('n2')!.join(['n4'])).toThrow(/go through the claimant, node n1; ask it to join n4/)
    const { epoch, replicasMoved } = n1.join(['n4', 'n5'])
    expect(replicasMoved).toBeGreaterThan(0)
    expect(sim.map('n1')?.change).toMatchObject({ epoch, kind: 'join', adds: ['n4', 'n5'] })
    await settle(sim)
    for (const id of sim.ids) expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3', 'n4', 'n5'])
  })

  it('a plan changes nothing; commit stages exactly it, and is refused without one or once the map changed', async () => {
    const sim = await withStandbys()
    const n1 = sim.nodes.get('n1')!
    expect(() => n1.commit()).toThrow(/no plan to commit: make one first/)
    const epoch = sim.map('n1')!.epoch
    const plan = n1.plan('join', ['n4'])
    expect(plan).toMatchObject({ baseEpoch: epoch, kind: 'join', nodes: ['n4'] })
    expect(plan.replicasMoved).toBeGreaterThan(0)
    expect(plan.moves.every((m) => m.to.every((id) => id === 'n4') && m.replicas.length === 3)).toBe(true)
    // Planning changed nothing, wherever it is asked.
    await sim.round()
    expect(sim.map('n1')?.epoch).toBe(epoch)
    expect(sim.map('n1')?.change).toBeUndefined()
    expect(() => n1.plan('leave', ['n4'])).toThrow(/node n4 is not in the cluster/)
    expect(() => n1.commit(epoch + 7)).toThrow(/the plan kept is another one/)
    const committed = n1.commit(epoch)
    expect(committed.plan).toBe(plan)
    expect(committed.replicasMoved).toBe(plan.replicasMoved)
    await settle(sim)
    // Every replica the plan moved went where it said.
    const final = sim.map('n1')!
    for (const move of plan.moves) expect(final.replicas[move.partition]).toContain('n4')
    // A plan made on an older map is not committed.
    const stale = n1.plan('leave', ['n4'])
    n1.join(['n5'])
    await settle(sim)
    expect(() => n1.commit(stale.baseEpoch)).toThrow(/the map changed since the plan was made/)
    expect(() => n1.commit()).toThrow(/no plan to commit/)
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

describe('Membership claimant failover', () => {
  it('a change the claimant staged is carried on by the next claimant when it dies, from the plan in the map', async () => {
    const sim = new SimCluster(['n1', 'n2', 'n3', 'n4', 'n5'])
    for (const id of ['n1', 'n2', 'n3', 'n4']) sim.up.add(id)
    for (let i = 0; i < 12; i++) await sim.round()
    expect(sim.map('n1')?.nodes).toEqual(['n1', 'n2', 'n3', 'n4'])
    // n5 starts; it has not caught up yet when the claimant n1, which staged its join, dies.
    sim.ready.set('n5', [])
    sim.up.add('n5')
    for (let i = 0; i < 10 && sim.map('n1')?.change === undefined; i++) await sim.round()
    const staged = sim.map('n1')!.change!
    expect(staged).toMatchObject({ kind: 'join', adds: ['n5'] })
    sim.up.delete('n1')
    for (let i = 0; i < 30 && sim.nodes.get('n2')!.isAlive('n1'); i++) await sim.round()
    expect(sim.nodes.get('n2')!.isClaimant()).toBe(true)
    expect(sim.map('n2')?.change?.epoch).toBe(staged.epoch)
    // n5 catches up; n2 switches the reads and finishes the join n1 started.
    sim.ready.delete('n5')
    await settle(sim)
    for (const id of ['n2', 'n3', 'n4', 'n5']) {
      expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3', 'n4', 'n5'])
      expect(sim.map(id)?.change).toBeUndefined()
    }
  })
})

describe('Membership concurrent changes', () => {
  it('only the claimant stages changes, so two are never staged at once: another node refuses and names the claimant', async () => {
    const sim = await fiveWithTwoDead()
    const n1 = sim.nodes.get('n1')!
    const n2 = sim.nodes.get('n2')!
    expect(() => n2.remove('n5')).toThrow(/membership changes go through the claimant, node n1; ask it to remove n5/)
    // Each dead node would hand partitions to the other: they go in one change.
    expect(() => n1.remove('n4')).toThrow(/n5 is down as well and would take partitions: remove it in the same change \(kumo remove n4 n5\)/)
    n1.remove(['n4', 'n5'])
    await settle(sim)

    for (const id of ['n1', 'n2', 'n3']) {
      expect(sim.map(id)?.removed).toEqual(['n4', 'n5'])
      expect(sim.map(id)?.nodes).toEqual(['n1', 'n2', 'n3'])
    }
    expect(sim.map('n1')).toEqual(sim.map('n3'))
  })

  it('a second change waits until the first has finished and every live node holds the newest map', async () => {
    const sim = await fiveWithTwoDead()
    const n1 = sim.nodes.get('n1')!
    sim.up.add('n5')
    for (let i = 0; i < 3; i++) await sim.round()
    const first = n1.remove('n4')
    expect(() => n1.leave('n5')).toThrow(/a membership change is in flight: n4 is removed/)
    await settle(sim)
    const second = n1.leave('n5')
    expect(second.epoch).toBeGreaterThan(first.epoch + 1)
  })
})
