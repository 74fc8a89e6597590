import { describe, expect, it } from 'vitest'
import {
  assignPartitions,
  assertValidMap,
  diffMaps,
  mapFingerprint,
  newerMap,
  primaryCounts,
  replicaCounts,
  replicaSetId,
  replicaSetIds,
  removedOf,
  removeNode,
  type PartitionMap,
} from '../../src/core/partition-map.js'
import { mapFromMsg, mapToMsg } from '../../src/wire/map-codec.js'
import { seededRandom } from '../../src/core/random.js'

const ids = (n: number, prefix = 'n'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`)

function expectBalanced(map: PartitionMap): void {
  const n = Math.min(map.replicationFactor, map.nodes.length)
  const mean = (map.partitionCount * n) / map.nodes.length
  for (const [, count] of replicaCounts(map)) {
    expect(count).toBeGreaterThanOrEqual(Math.floor(mean))
    expect(count).toBeLessThanOrEqual(Math.ceil(mean))
  }
}

describe('assignPartitions', () => {
  it('gives a fresh three-node cluster every partition on all three nodes', () => {
    const map = assignPartitions(undefined, ['n1', 'n2', 'n3'], { partitionCount: 256, replicationFactor: 3 })
    expect(map.epoch).toBe(1)
    for (const list of map.replicas) expect([...list].sort()).toEqual(['n1', 'n2', 'n3'])
    const primaries = primaryCounts(map)
    for (const [, count] of primaries) expect(count).toBeGreaterThanOrEqual(85)
  })

  it('uses min(N, M) replicas while the cluster is smaller than N', () => {
    const map = assignPartitions(undefined, ['a'], { partitionCount: 16, replicationFactor: 3 })
    for (const list of map.replicas) expect(list).toEqual(['a'])
    const grown = assignPartitions(map, ['a', 'b'], { partitionCount: 16, replicationFactor: 3 })
    for (const list of grown.replicas) expect([...list].sort()).toEqual(['a', 'b'])
    expect(grown.epoch).toBe(2)
  })

  it('returns the same map when membership did not change', () => {
    const map = assignPartitions(undefined, ['a', 'b', 'c', 'd'], { partitionCount: 64, replicationFactor: 3 })
    expect(assignPartitions(map, ['d', 'c', 'b', 'a'], { partitionCount: 64, replicationFactor: 3 })).toBe(map)
  })

  it('is deterministic: same inputs, same map', () => {
    const config = { partitionCount: 128, replicationFactor: 3 }
    const a = assignPartitions(assignPartitions(undefined, ids(5), config), ids(6), config)
    const b = assignPartitions(assignPartitions(undefined, ids(5).reverse(), config), ids(6).reverse(), config)
    expect(a).toEqual(b)
  })

  it('rejects bad configuration', () => {
    expect(() => assignPartitions(undefined, [], { partitionCount: 8, replicationFactor: 3 })).toThrow()
    expect(() => assignPartitions(undefined, ['a'], { partitionCount: 6, replicationFactor: 3 })).toThrow()
    expect(() => assignPartitions(undefined, ['a'], { partitionCount: 8, replicationFactor: 0 })).toThrow()
  })

  it('holds its invariants over random membership histories', () => {
    for (let seed = 1; seed <= 60; seed++) {
      const random = seededRandom(seed)
      const partitionCount = [8, 64, 256][seed % 3]!
      const replicationFactor = 1 + (seed % 4)
      const config = { partitionCount, replicationFactor }
      let members = ids(1 + Math.floor(random() * 8), `s${seed}-`)
      let map = assignPartitions(undefined, members, config)
      let nextId = members.length + 1
      for (let step = 0; step < 12; step++) {
        const previous = map
        const adding = members.length === 1 || random() < 0.55
        let added: string | undefined
        let removed: string | undefined
        if (adding) {
          added = `s${seed}-${nextId++}`
          members = [...members, added]
        } else {
          removed = members[Math.floor(random() * members.length)]!
          members = members.filter((id) => id !== removed)
        }
        map = assignPartitions(previous, members, config)
        assertValidMap(map)
        expectBalanced(map)
        expect(map.epoch).toBe(previous.epoch + 1)

        // Minimal movement: only the joining node gains replicas, only the leaving node's
        // replicas move, and no more of them than balance requires.
        const moves = diffMaps(previous, map)
        const oldN = Math.min(replicationFactor, previous.nodes.length)
        const newN = Math.min(replicationFactor, map.nodes.length)
        if (added !== undefined) {
          for (const move of moves) expect(move.to).toBe(added)
          expect(moves.length).toBe(replicaCounts(map).get(added))
          if (oldN === newN) {
            // Moves taken from other nodes; it gains only its share.
            for (const move of moves) expect(move.from).not.toBeUndefined()
          }
        } else {
          for (const move of moves) expect(move.from).toBe(removed)
          expect(moves.length).toBe(replicaCounts(previous).get(removed!))
          if (oldN !== newN) {
            // N shrank: the departed node's slot simply goes away.
            for (const move of moves) expect(move.to).toBeUndefined()
          }
        }
      }
    }
  })

  it('balances primaries within one of the mean on a fresh cluster', () => {
    for (let m = 1; m <= 9; m++) {
      const map = assignPartitions(undefined, ids(m), { partitionCount: 256, replicationFactor: 3 })
      for (const [, count] of primaryCounts(map)) {
        expect(Math.abs(count - 256 / m)).toBeLessThanOrEqual(1)
      }
    }
  })
})

describe('removeNode', () => {
  it('over random histories of joins and removals: only the removed node\'s replicas move, balance holds, and removed ids stay removed', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const random = seededRandom(1000 + seed)
      const config = { partitionCount: [16, 64, 256][seed % 3]!, replicationFactor: 1 + (seed % 3) }
      let map = assignPartitions(undefined, ids(2 + Math.floor(random() * 5), `r${seed}-`), config)
      let nextId = 100
      const removedSoFar: string[] = []
      for (let step = 0; step < 10; step++) {
        const previous = map
        if (map.nodes.length > 1 && random() < 0.5) {
          const id = map.nodes[Math.floor(random() * map.nodes.length)]!
          map = removeNode(map, id, config)
          removedSoFar.push(id)
          const moves = diffMaps(previous, map)
          for (const move of moves) expect(move.from).toBe(id)
          expect(moves.length).toBe(replicaCounts(previous).get(id))
        } else {
          // A join (the claimant adds a new member) keeps the removed list.
          map = assignPartitions(previous, [...previous.nodes, `r${seed}-${nextId++}`], config)
        }
        assertValidMap(map)
        expectBalanced(map)
        expect(map.epoch).toBe(previous.epoch + 1)
        expect([...removedOf(map)]).toEqual([...removedSoFar].sort())
        for (const id of removedSoFar) expect(map.nodes).not.toContain(id)
        // The wire form carries the removed list.
        const back = mapFromMsg(mapToMsg(map, [], 'x'))!
        expect([...removedOf(back)]).toEqual([...removedOf(map)])
        expect(back.replicas).toEqual(map.replicas)
      }
    }
  })

  it('refuses the last node and a node not in the map; a wire map listing a removed node as a replica is not a map', () => {
    const config = { partitionCount: 8, replicationFactor: 3 }
    const one = assignPartitions(undefined, ['a'], config)
    expect(() => removeNode(one, 'a', config)).toThrow(/last node/)
    const three = assignPartitions(undefined, ['a', 'b', 'c'], config)
    expect(() => removeNode(three, 'z', config)).toThrow(/is in the map/)
    const msg = mapToMsg(three, [], 'a')
    expect(mapFromMsg({ ...msg, removed: ['a'] })).toBeUndefined()
  })

  it('the removed list is part of the fingerprint (two maps differing only in it do not tie as one)', () => {
    const config = { partitionCount: 8, replicationFactor: 2 }
    const removal = removeNode(assignPartitions(undefined, ['a', 'b', 'c'], config), 'c', config)
    expect(mapFingerprint(removal)).not.toBe(mapFingerprint({ ...removal, removed: [] }))
  })
})

describe('newerMap', () => {
  it('prefers the higher epoch, then a stable fingerprint', () => {
    const config = { partitionCount: 8, replicationFactor: 2 }
    const a = assignPartitions(undefined, ['a', 'b'], config)
    const b = assignPartitions(a, ['a', 'b', 'c'], config)
    expect(newerMap(a, b)).toBe(b)
    expect(newerMap(b, a)).toBe(b)
    const c = assignPartitions(a, ['a', 'b', 'd'], config)
    expect(newerMap(b, c)).toBe(newerMap(c, b))
  })
})

describe('replica set ids', () => {
  it('are the same for every order of one set, differ between sets, and are computed once per list', () => {
    expect(replicaSetId(['a', 'b', 'c'])).toBe(replicaSetId(['c', 'a', 'b']))
    expect(replicaSetId(['a', 'b', 'c'])).not.toBe(replicaSetId(['a', 'b', 'd']))
    expect(replicaSetId(['a'])).toBe('a')
    const lists = [['n1', 'n2'], ['n2', 'n1'], ['n2', 'n3']]
    const ids = replicaSetIds(lists)
    expect(ids[0]).toBe(ids[1])
    expect(ids[0]).not.toBe(ids[2])
    expect(replicaSetIds(lists)).toBe(ids)
  })
})
