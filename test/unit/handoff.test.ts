import { describe, expect, it } from 'vitest'
import { requiredAcks } from '../../src/core/consistency.js'
import {
  advance,
  cancelChange,
  extraWriteLists,
  pendingPartitions,
  pendingPartitionsOf,
  queuedPartitions,
  queuedPartitionsOf,
  retiringPartitions,
  stageChange,
  writeLists,
  type AdvanceInput,
} from '../../src/core/handoff.js'
import { assignPartitions, assertValidMap, mapFingerprint, removedOf, replaceNode, replicaCounts, type PartitionMap } from '../../src/core/partition-map.js'
import { mapFromMsg, mapToMsg } from '../../src/wire/map-codec.js'
import { seededRandom } from '../../src/core/random.js'

const config = { partitionCount: 64, replicationFactor: 3 }
const allReady: AdvanceInput = { ready: () => true, down: () => false, everyNodeOnEpoch: true }

function cluster(ids: string[]): PartitionMap {
  return assignPartitions(undefined, ids, config)
}

/** Runs the claimant's steps until the change finishes (every pending replica ready, every node on the epoch). */
function runToEnd(map: PartitionMap, input: AdvanceInput = allReady): PartitionMap {
  for (let step = 0; step < 200 && map.change !== undefined; step++) map = advance(map, input).map
  expect(map.change).toBeUndefined()
  return map
}

/**
 * Quorum intersection across one step: a write acknowledged under `writer`'s map (W of its read
 * list plus one per extra write replica, from its write list) shares a node with every quorum
 * read of `reader`'s read list. Checked both ways for consecutive maps: nodes learn a new map
 * at different moments, so a reader may be one step behind a writer or ahead of it.
 */
function expectQuorumsIntersect(writer: PartitionMap, reader: PartitionMap): void {
  const writes = writeLists(writer)
  const extra = extraWriteLists(writer)
  // Checked plainly and reported at once: this runs for every step of the random histories.
  const broken: string[] = []
  for (let p = 0; p < writer.partitionCount; p++) {
    const required = requiredAcks('quorum', writer.replicas[p]!.length) + extra[p]!.length
    if (required > writes[p]!.length) broken.push(`partition ${p}: epoch ${writer.epoch} needs ${required} of ${writes[p]!.length} writers`)
    const reads = reader.replicas[p]!
    const outside = writes[p]!.filter((id) => !reads.includes(id)).length
    // The fewest of the write's acknowledgements that can fall in the reader's list.
    const inside = required - outside
    if (inside < reads.length - requiredAcks('quorum', reads.length) + 1) broken.push(`partition ${p}: epoch ${writer.epoch} writes vs epoch ${reader.epoch} reads`)
  }
  expect(broken).toEqual([])
}

describe('ownership handoff (stageChange / advance / cancelChange)', () => {
  it('a join: the new node takes writes first, reads move once it is ready, the old replicas retire once every node knows, then the map is the balanced one', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const goal = assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config)
    const staged = stageChange(before, goal, { kind: 'join', adds: ['n4'], removes: [] })
    expect(staged.epoch).toBe(before.epoch + 1)
    expect(staged.change).toEqual({ epoch: staged.epoch, kind: 'join', adds: ['n4'], removes: [] })
    expect(staged.nodes).toEqual(['n1', 'n2', 'n3', 'n4'])
    const moving = pendingPartitions(staged)
    expect(moving).toEqual(pendingPartitionsOf(staged, 'n4'))
    expect(moving.length).toBe(replicaCounts(goal).get('n4'))
    for (let p = 0; p < config.partitionCount; p++) {
      // Reads stay on the old lists; writes also reach n4 where it is pending.
      expect(new Set(staged.replicas[p])).toEqual(new Set(before.replicas[p]))
      expect(writeLists(staged)[p]!.includes('n4')).toBe(moving.includes(p))
    }
    expectQuorumsIntersect(staged, before)
    expectQuorumsIntersect(before, staged)

    // Half the partitions ready: only those switch; n4 is not down, so nothing reverts.
    const readyHalf = new Set(moving.slice(0, moving.length / 2))
    const half = advance(staged, { ready: (p) => readyHalf.has(p), down: () => false, everyNodeOnEpoch: false })
    expect(half.switched).toEqual([...readyHalf])
    expect(half.reverted).toEqual([])
    expect(half.finished).toBe(false)
    for (const p of readyHalf) {
      expect(half.map.replicas[p]).toEqual(goal.replicas[p])
      // The replica the reads left still takes writes.
      expect(half.map.retiring![p]!.length).toBe(1)
      expect(writeLists(half.map)[p]!.length).toBe(4)
    }
    expectQuorumsIntersect(half.map, staged)
    expectQuorumsIntersect(staged, half.map)
    // Not every node holds the switch yet: nothing retires, nothing changes.
    expect(advance(half.map, { ready: (p) => readyHalf.has(p), down: () => false, everyNodeOnEpoch: false }).map).toBe(half.map)

    const retired = advance(half.map, { ready: (p) => readyHalf.has(p), down: () => false, everyNodeOnEpoch: true })
    expect(retired.retired).toEqual([...readyHalf])
    expect(retiringPartitions(retired.map)).toEqual([])
    expectQuorumsIntersect(retired.map, half.map)
    expectQuorumsIntersect(half.map, retired.map)

    const done = runToEnd(retired.map)
    expect(done.replicas).toEqual(goal.replicas)
    expect(done.nodes).toEqual(goal.nodes)
    expect(done.targets).toBeUndefined()
    expect(removedOf(done)).toEqual([])
  })

  it('a leave or remove: the node stays a read replica until its partitions moved, then it is removed for good', () => {
    const before = cluster(['n1', 'n2', 'n3', 'n4'])
    for (const kind of ['leave', 'remove'] as const) {
      const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3'], config), { kind, adds: [], removes: ['n4'] })
      const held = before.replicas.flatMap((list, p) => (list.includes('n4') ? [p] : []))
      expect(pendingPartitions(staged)).toEqual(held)
      for (const p of held) expect(staged.replicas[p]).toContain('n4')
      const done = runToEnd(staged)
      expect(done.nodes).toEqual(['n1', 'n2', 'n3'])
      expect(removedOf(done)).toEqual(['n4'])
      for (const list of done.replicas) expect([...list].sort()).toEqual(['n1', 'n2', 'n3'])
    }
  })

  it('a replace: only the dead node\'s partitions move, to the new node', () => {
    const before = cluster(['n1', 'n2', 'n3', 'n4'])
    const staged = stageChange(before, replaceNode(before, 'n2', 'n5'), { kind: 'replace', adds: ['n5'], removes: ['n2'] })
    expect(pendingPartitionsOf(staged, 'n5')).toEqual(before.replicas.flatMap((list, p) => (list.includes('n2') ? [p] : [])))
    const done = runToEnd(staged)
    expect(done.replicas).toEqual(before.replicas.map((list) => list.map((id) => (id === 'n2' ? 'n5' : id))))
    expect(removedOf(done)).toEqual(['n2'])
  })

  it('a pending replica that goes down: its partitions revert to the old lists, and a joiner that holds nothing drops out of the map', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config), { kind: 'join', adds: ['n4'], removes: [] })
    const moving = pendingPartitions(staged)
    const first = moving.slice(0, 5)
    // A few partitions switched before n4 died; they stay switched.
    const part = advance(staged, { ready: (p) => first.includes(p), down: () => false, everyNodeOnEpoch: true })
    const died = advance(part.map, { ready: () => false, down: (id) => id === 'n4', everyNodeOnEpoch: true })
    expect(died.reverted).toEqual(moving.slice(5))
    const done = runToEnd(died.map, { ready: () => false, down: (id) => id === 'n4', everyNodeOnEpoch: true })
    for (let p = 0; p < config.partitionCount; p++) {
      expect(done.replicas[p]).toEqual(first.includes(p) ? staged.targets![p] : staged.replicas[p])
    }
    assertValidMap(done)
    // Every partition n4 did not finish is back where it was.
    const untouched = cluster(['n1', 'n2', 'n3', 'n4'].slice(0, 3))
    const reverted = runToEnd(advance(staged, { ready: () => false, down: (id) => id === 'n4', everyNodeOnEpoch: true }).map)
    expect(reverted.replicas.map((l) => [...l].sort())).toEqual(untouched.replicas.map((l) => [...l].sort()))
    expect(reverted.nodes).toEqual(['n1', 'n2', 'n3'])
  })

  it('cancel during a drain: partitions not yet switched stay with the leaving node, which is not removed', () => {
    const before = cluster(['n1', 'n2', 'n3', 'n4'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3'], config), { kind: 'leave', adds: [], removes: ['n4'] })
    const moving = pendingPartitions(staged)
    const part = advance(staged, { ready: (p) => p === moving[0], down: () => false, everyNodeOnEpoch: false })
    expect(part.switched).toEqual([moving[0]])
    const cancelled = cancelChange(part.map)
    // The switched partition still has a retiring replica: the change finishes once it retires.
    expect(cancelled.change?.cancelled).toBe(true)
    expect(pendingPartitions(cancelled)).toEqual([])
    expectQuorumsIntersect(cancelled, part.map)
    expectQuorumsIntersect(part.map, cancelled)
    const done = runToEnd(cancelled)
    expect(removedOf(done)).toEqual([])
    expect(done.nodes).toContain('n4')
    for (let p = 0; p < config.partitionCount; p++) expect(done.replicas[p]!.includes('n4')).toBe(before.replicas[p]!.includes('n4') && p !== moving[0])
    // Cancelling a change in stage 1 only finishes at once.
    expect(cancelChange(staged).change).toBeUndefined()
    expect(cancelChange(staged).replicas).toEqual(staged.replicas)
  })

  it('a change that moves nothing (only primaries reorder) finishes at once', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const reordered: PartitionMap = { ...before, epoch: before.epoch + 1, replicas: before.replicas.map((l) => [...l].reverse()) }
    const staged = stageChange(before, reordered, { kind: 'join', adds: [], removes: [] })
    expect(staged.change).toBeUndefined()
    expect(staged.replicas).toEqual(reordered.replicas)
  })

  it('survives the wire: stage, switch, retire and cancel round-trip through the topology message', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config), { kind: 'join', adds: ['n4'], removes: [] })
    const moving = pendingPartitions(staged)
    const part = advance(staged, { ready: (p) => p === moving[0], down: () => false, everyNodeOnEpoch: false }).map
    for (const map of [staged, part, cancelChange(part)]) {
      const back = mapFromMsg(mapToMsg(map, [], 'n1'))!
      expect(back).toEqual(map)
      expect(writeLists(back)).toEqual(writeLists(map))
      expect(pendingPartitions(back)).toEqual(pendingPartitions(map))
    }
  })

  it('in waves: a few partitions move at once, queued ones are staged as others switch, and the change lands on the same map', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const goal = assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config)
    const moving = replicaCounts(goal).get('n4')!
    const staged = stageChange(before, goal, { kind: 'join', adds: ['n4'], removes: [] }, 4)
    expect(pendingPartitions(staged).length).toBe(4)
    expect(queuedPartitions(staged).length).toBe(moving - 4)
    expect(queuedPartitionsOf(staged, 'n4')).toEqual(queuedPartitions(staged))
    expect(staged.nodes).toEqual(['n1', 'n2', 'n3', 'n4'])
    // Queued partitions take writes only on their old lists.
    for (const p of queuedPartitions(staged)) expect(writeLists(staged)[p]).toEqual(staged.replicas[p])
    const wave = pendingPartitions(staged)
    // Nothing ready: nothing moves.
    expect(advance(staged, { ready: () => false, down: () => false, everyNodeOnEpoch: false, movesAtOnce: 4 }).map).toBe(staged)
    // One of four ready: it switches, and one queued partition takes its place in the same step.
    const one = advance(staged, { ready: (p) => p === wave[0], down: () => false, everyNodeOnEpoch: false, movesAtOnce: 4 })
    expect(one.switched).toEqual([wave[0]])
    expect(pendingPartitions(one.map).length).toBe(4)
    expect(queuedPartitions(one.map).length).toBe(moving - 5)
    // Two more ready: two more staged.
    const three = advance(one.map, { ready: (p) => p === wave[1] || p === wave[2], down: () => false, everyNodeOnEpoch: false, movesAtOnce: 4 })
    expect(pendingPartitions(three.map).length).toBe(4)
    expect(queuedPartitions(three.map).length).toBe(moving - 7)
    // The map that staged the latest partitions names itself: clients on an older map may not know of them.
    expect(staged.change!.waveEpoch).toBeUndefined()
    expect(one.map.change!.waveEpoch).toBe(one.map.epoch)
    expect(three.map.change!.waveEpoch).toBe(three.map.epoch)
    expectQuorumsIntersect(three.map, one.map)
    expectQuorumsIntersect(one.map, three.map)
    let map = three.map
    let most = 0
    for (let step = 0; step < 500 && map.change !== undefined; step++) {
      const previous = map
      map = advance(map, { ...allReady, movesAtOnce: 4 }).map
      most = Math.max(most, map.change === undefined ? 0 : pendingPartitions(map).length)
      expectQuorumsIntersect(previous, map)
      expectQuorumsIntersect(map, previous)
    }
    expect(most).toBeLessThanOrEqual(4)
    expect(map.change).toBeUndefined()
    expect(map.goal).toBeUndefined()
    expect(map.replicas).toEqual(goal.replicas)
  })

  it('in waves: every node that gains replicas copies from the first wave on', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3', 'n4', 'n5'], config), { kind: 'join', adds: ['n4', 'n5'], removes: [] }, 2)
    expect(pendingPartitions(staged).length).toBe(2)
    expect(pendingPartitionsOf(staged, 'n4').length).toBeGreaterThanOrEqual(1)
    expect(pendingPartitionsOf(staged, 'n5').length).toBeGreaterThanOrEqual(1)
  })

  it('in waves: each partition staged goes to the gainer with the fewest pending, so every gainer keeps copying', () => {
    const before = cluster(['n1', 'n2', 'n3', 'n4'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3'], config), { kind: 'leave', adds: [], removes: ['n4'] }, 3)
    const counts = (map: PartitionMap): number[] => ['n1', 'n2', 'n3'].map((id) => pendingPartitionsOf(map, id).length)
    expect(counts(staged)).toEqual([1, 1, 1])
    // Only n3's partitions become ready: each one staged in their place is n3's again (not n1's, the lowest id).
    let map = staged
    for (let step = 0; step < 5; step++) {
      map = advance(map, { ready: (_p, id) => id === 'n3', down: () => false, everyNodeOnEpoch: true, movesAtOnce: 3 }).map
      expect(counts(map)).toEqual([1, 1, 1])
    }
  })

  it('in waves: a joiner that goes down takes its queued partitions with it, and the change finishes without it', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config), { kind: 'join', adds: ['n4'], removes: [] }, 4)
    const died = advance(staged, { ready: () => false, down: (id) => id === 'n4', everyNodeOnEpoch: true, movesAtOnce: 4 })
    expect(died.reverted.length).toBe(replicaCounts(assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config)).get('n4'))
    expect(died.finished).toBe(true)
    expect(died.map.nodes).toEqual(['n1', 'n2', 'n3'])
    expect(died.map.replicas.map((l) => [...l].sort())).toEqual(before.replicas.map((l) => [...l].sort()))
  })

  it('in waves: a cancel leaves the queued partitions where they are', () => {
    const before = cluster(['n1', 'n2', 'n3', 'n4'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3'], config), { kind: 'leave', adds: [], removes: ['n4'] }, 4)
    const wave = pendingPartitions(staged)
    const part = advance(staged, { ready: (p) => p === wave[0], down: () => false, everyNodeOnEpoch: false, movesAtOnce: 4 })
    const cancelled = cancelChange(part.map)
    expect(queuedPartitions(cancelled)).toEqual([])
    expect(pendingPartitions(cancelled)).toEqual([])
    const done = runToEnd(cancelled, { ...allReady, movesAtOnce: 4 })
    expect(removedOf(done)).toEqual([])
    for (let p = 0; p < config.partitionCount; p++) expect(done.replicas[p]!.includes('n4')).toBe(before.replicas[p]!.includes('n4') && p !== wave[0])
  })

  it('in waves: survives the wire with its goal lists, and hashes as before when it has none', () => {
    const before = cluster(['n1', 'n2', 'n3'])
    const staged = stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config), { kind: 'join', adds: ['n4'], removes: [] }, 4)
    const part = advance(staged, { ...allReady, movesAtOnce: 4 }).map
    for (const map of [staged, part, cancelChange(part)]) {
      const back = mapFromMsg(mapToMsg(map, [], 'n1'))!
      expect(back).toEqual(map)
      // (A decoded map orders its change's fields as the codec does: compared decoded to decoded.)
      expect(mapFingerprint(mapFromMsg(mapToMsg(back, [], 'n2'))!)).toBe(mapFingerprint(back))
      expect(queuedPartitions(back)).toEqual(queuedPartitions(map))
    }
    // A persisted map (JSON) keeps them too.
    expect(mapFingerprint(JSON.parse(JSON.stringify(staged)) as PartitionMap)).toBe(mapFingerprint(staged))
    // All at once: no goal lists, the map older nodes make.
    expect(stageChange(before, assignPartitions(before, ['n1', 'n2', 'n3', 'n4'], config), { kind: 'join', adds: ['n4'], removes: [] }).goal).toBeUndefined()
  })

  it('over random histories of joins, drains, removes, replaces, readiness, deaths and cancels: maps stay valid, quorums intersect across every step, and finished maps stay balanced', () => {
    for (let seed = 1; seed <= 32; seed++) {
      const random = seededRandom(seed)
      // Waves of every size, and all at once.
      const movesAtOnce = [1, 3, 8, Infinity][seed % 4]!
      let members = ['a', 'b', 'c', 'd'].slice(0, 2 + Math.floor(random() * 3))
      let map = assignPartitions(undefined, members, config)
      let next = 0
      // The map the change in flight aims at, while nothing reverted or cancelled it.
      let goal: PartitionMap | undefined
      for (let step = 0; step < 120; step++) {
        const previous = map
        if (map.change === undefined) {
          const roll = random()
          if (roll < 0.4 || members.length <= 2) {
            const id = `j${seed}-${next++}`
            goal = assignPartitions(map, [...members, id], config)
            map = stageChange(map, goal, { kind: 'join', adds: [id], removes: [] }, movesAtOnce)
          } else if (roll < 0.8) {
            const id = members[Math.floor(random() * members.length)]!
            const kind = roll < 0.6 ? 'leave' : 'remove'
            goal = assignPartitions(map, members.filter((m) => m !== id), config)
            map = stageChange(map, goal, { kind, adds: [], removes: [id] }, movesAtOnce)
          } else {
            const dead = members[Math.floor(random() * members.length)]!
            const id = `r${seed}-${next++}`
            goal = replaceNode(map, dead, id)
            map = stageChange(map, goal, { kind: 'replace', adds: [id], removes: [dead] }, movesAtOnce)
          }
        } else if (random() < 0.04) {
          map = cancelChange(map)
          goal = undefined
        } else {
          const adds = map.change.adds
          const dying = random() < 0.1 ? adds[0] : undefined
          const result = advance(map, {
            ready: () => random() < 0.5,
            down: (id) => id === dying,
            everyNodeOnEpoch: random() < 0.6,
            movesAtOnce,
          })
          if (map.change !== undefined && result.map.change !== undefined) expect(pendingPartitions(result.map).length).toBeLessThanOrEqual(Math.max(movesAtOnce, pendingPartitions(map).length))
          if (result.reverted.length > 0) goal = undefined
          map = result.map
        }
        assertValidMap(map)
        expectQuorumsIntersect(previous, map)
        expectQuorumsIntersect(map, previous)
        for (const id of removedOf(map)) expect(writeLists(map).some((l) => l.includes(id))).toBe(false)
        if (map.change === undefined) {
          members = [...map.nodes]
          // A change nothing reverted or cancelled lands exactly on its balanced goal; reverts
          // and cancels leave the map valid, and the next change rebalances it.
          if (goal !== undefined) {
            expect(map.replicas.map((l) => [...l].sort())).toEqual(goal.replicas.map((l) => [...l].sort()))
            const n = Math.min(config.replicationFactor, members.length)
            const mean = (config.partitionCount * n) / members.length
            // (A replace keeps whatever balance the map had: the new node takes the dead one's places.)
            if (previous.change?.kind !== 'replace') for (const [, count] of replicaCounts(map)) expect(Math.abs(count - mean)).toBeLessThan(1)
          }
          goal = undefined
        }
      }
    }
  })
})
