import { execFile } from 'node:child_process'
import path from 'node:path'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { cliPath } from '../../scripts/local-cluster.js'
import type { KumoClient, KumoError } from '../../src/index.js'
import { rejectionOf, waitFor } from '../helpers/cluster.js'
import { moreWrites, ProcessCluster, readLoad, writeLoad, type ReadLoad, type WriteLoad } from '../helpers/processes.js'

let cluster: ProcessCluster | undefined

afterEach(async () => {
  await cluster?.close()
  cluster = undefined
})


/** Waits until every live node is on map `epoch` or later and copies no gained partition. */
async function settled(db: KumoClient, epoch: number): Promise<void> {
  await waitFor(`every node on epoch ${epoch} with nothing left to copy`, () => db.changeDone(epoch), 60_000, 200)
}

/** Four node processes, and quorum writes of unique keys and reads of them running, `writes` acknowledged already. */
async function fourUnderLoad(prefix: string, writes: number): Promise<{ db: KumoClient; load: WriteLoad; reads: ReadLoad }> {
  cluster = await ProcessCluster.start(4, ['--repair-interval', '0'])
  const db = await cluster.client({ timeoutMs: 10_000 })
  const load = writeLoad(db, prefix, 16)
  const reads = readLoad(db, load)
  await waitFor('writes under way', () => load.acked.length > writes, 20_000)
  return { db, load, reads }
}

/** Lets the load run on after a change, stops it, and expects that nothing failed. */
async function finish(load: WriteLoad, reads: ReadLoad): Promise<void> {
  const acked = load.acked.length
  await moreWrites(load, acked, 300, 20_000, 'writes after the move')
  await reads.stop()
  await load.stop()
  expect(load.failures).toEqual([])
  expect(reads.failures).toEqual([])
}

/** Every acknowledged write is on every replica (read at all), hints for n4 went on, and a repair finds nothing to move. */
async function expectConverged(db: KumoClient, acked: string[]): Promise<void> {
  await waitFor('hints for n4 handed on', async () => (await cluster!.hintsHeld()) === 0, 30_000, 250)
  for (let i = 0; i < acked.length; i += 500) {
    const keys = acked.slice(i, i + 500)
    const values = await db.getMany(keys, { consistency: 'all' })
    values.forEach((v, j) => expect(v?.toString(), keys[j]).toBe(`value-of-${keys[j]}`))
  }
  const reports = await db.repair()
  expect(reports.reduce((sum, r) => sum + r.pulled + r.pushed, 0)).toBe(0)
}

/** After n4 left or was removed: every partition has N replicas on the survivors, the map lists n4 as removed, and everything converged. */
async function expectWhole(db: KumoClient, acked: string[]): Promise<void> {
  const topology = await db.topology()
  expect(topology.removed).toEqual(['n4'])
  expect(topology.nodes.map((n) => n.id).sort()).toEqual(['n1', 'n2', 'n3'])
  for (const replicas of topology.partitions) expect([...replicas].sort()).toEqual(['n1', 'n2', 'n3'])
  await expectConverged(db, acked)
}

describe('a live node leaving (drain, real processes)', () => {
  it('under load: no failed request, nothing lost, the node stops with exit 0, every partition back to N replicas', { timeout: 180_000 }, async () => {
    const { db, load, reads } = await fourUnderLoad('leave/', 500)
    // Keys deleted while their partitions move must stay deleted everywhere.
    const doomed = Array.from({ length: 300 }, (_, i) => `leave-deleted/${i}`)
    await db.batch(doomed.map((key) => ({ type: 'put' as const, key, value: 'soon gone' })))
    const exited = new Promise<number | null>((resolve) => cluster!.children.get('n4')!.once('exit', (code) => resolve(code)))
    const started = Date.now()
    const left = await db.leaveNode('n4')
    expect(left.replicasMoved).toBeGreaterThan(0)
    for (const key of doomed) await db.del(key)
    expect(await exited).toBe(0)
    expect(cluster!.logs.get('n4')!.join('\n')).toContain('left the cluster')
    await settled(db, left.epoch)
    process.stdout.write(`  n4 left: ${left.replicasMoved} replicas moved, settled ${((Date.now() - started) / 1000).toFixed(1)} s after the request, ${load.acked.length} writes acknowledged so far\n`)
    await finish(load, reads)
    await expectWhole(db, load.acked)
    const gone = await db.getMany(doomed, { consistency: 'all' })
    expect(gone.filter((v) => v !== undefined)).toEqual([])
    // Leaving again, or removing it, is refused: it is gone for good.
    expect((await rejectionOf(db.leaveNode('n4'))).message).toContain('removed already')
    expect((await rejectionOf(db.removeNode('n4'))).message).toContain('removed already')
    await db.close()
  })
})

describe('replacing a node that is dead for good (real processes)', () => {
  it('under load: the new node takes exactly the dead one\'s partitions, no request fails, nothing is lost', { timeout: 180_000 }, async () => {
    const { db, load, reads } = await fourUnderLoad('replace/', 300)
    const before = await db.topology()
    await cluster!.kill('n4')
    // Started while n4 may still look alive: it waits (and says why) until n4 is down.
    await cluster!.add('n5', ['--replace', 'n4'])
    const replaced = await waitFor('n5 to take n4\'s place', async () => {
      const t = await db.topology()
      return t.removed.includes('n4') && t.nodes.some((n) => n.id === 'n5') ? t : undefined
    }, 30_000, 200)
    await settled(db, replaced.epoch)
    await finish(load, reads)
    // Exactly n4's places, nothing else moved.
    const after = await db.topology()
    after.partitions.forEach((replicas, p) => expect(replicas).toEqual(before.partitions[p]!.map((id) => (id === 'n4' ? 'n5' : id))))
    await expectConverged(db, load.acked)
    await db.close()
  })
})

describe('removing a node that is dead for good (real processes)', () => {
  it('under load: no failed request, nothing lost, every partition back to N replicas, its hints handed on, and the node refused if it comes back', { timeout: 180_000 }, async () => {
    const { db, load, reads } = await fourUnderLoad('remove/', 300)

    // Bad requests first: clear errors, nothing changes.
    expect((await rejectionOf(db.removeNode('nope'))).code).toBe('INVALID_ARGUMENT')
    const alive = await rejectionOf(db.removeNode('n2'))
    expect(alive.code).toBe('FAILED_PRECONDITION')
    expect(alive.message).toContain('dead for good')

    await cluster!.kill('n4')
    // Writes go on while n4 is down; some of them become hints for it.
    const beforeRemoval = load.acked.length
    await moreWrites(load, beforeRemoval, 500, 20_000, 'writes while n4 is down')
    const removal = await waitFor('a node to agree n4 is dead and remove it', async () => {
      try {
        return await db.removeNode('n4')
      } catch (err) {
        if ((err as KumoError).code === 'FAILED_PRECONDITION' && (err as Error).message.includes('is suspect')) return undefined
        throw err
      }
    }, 30_000, 250)
    expect(removal.replicasMoved).toBeGreaterThan(0)
    // One change at a time: asked again while it is in flight, the answer says so.
    expect((await rejectionOf(db.removeNode('n4'))).message).toMatch(/a membership change is in flight: n4 is removed|removed already/)
    await settled(db, removal.epoch)
    expect((await rejectionOf(db.removeNode('n4'))).message).toContain('removed already')
    await finish(load, reads)

    await expectWhole(db, load.acked)

    // n4 comes back on its old data: it learns it was removed, says so, and exits non-zero.
    const child = cluster!.spawn('n4')
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)))
    expect(code).toBe(3)
    expect(cluster!.logs.get('n4')!.join('\n')).toContain('was removed from the cluster for good')
    // Restarted again, it refuses at once: its own map now lists it as removed.
    const again = cluster!.spawn('n4')
    const second = await new Promise<number | null>((resolve) => again.once('exit', (c) => resolve(c)))
    expect(second).not.toBe(0)
    expect(cluster!.logs.get('n4')!.join('\n')).toContain('wipe the data directory and start it under a new id')
    expect((await db.topology()).nodes.map((n) => n.id).sort()).toEqual(['n1', 'n2', 'n3'])
    await db.close()
  })
})

/** Replica slots per node in a topology. */
function replicaCountsOf(partitions: readonly (readonly string[])[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const list of partitions) for (const id of list) counts.set(id, (counts.get(id) ?? 0) + 1)
  return counts
}

describe('a joining node killed while it copies (real processes)', () => {
  it('under load: its moves revert, the old replicas keep serving, nothing is lost, and a retried join completes', { timeout: 180_000 }, async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client({ timeoutMs: 10_000 })
    const load = writeLoad(db, 'join-killed/', 16)
    const reads = readLoad(db, load)
    await waitFor('writes under way', () => load.acked.length > 2000, 30_000)
    // A slow copy (5 records a second): the join is still copying its first wave when n4 dies.
    await cluster.add('n4', ['--move-rate', '5'])
    const staged = await waitFor('the join of n4 staged', async () => {
      const t = await db.topology()
      return t.change?.kind === 'join' && t.change.adds.includes('n4') ? t.change : undefined
    }, 30_000, 100)
    // n4 copying: it reports partitions it gained and has not caught up on. (Not "records copied":
    // a copy used to write a page only once the rate allowed all of it, so at 5 a second the first
    // page could wait most of a minute under a fast load; and a faster rate lets some partitions
    // finish and switch to n4 before it dies, which a revert then keeps. Both failed in
    // clean-clone CI.)
    await waitFor('n4 copying', async () => (await db.nodeViews()).some((v) => v.id === 'n4' && v.partitionsFilling > 0), 60_000, 100)
    await cluster.kill('n4')
    await settled(db, staged.epoch)
    const reverted = await db.topology()
    expect(reverted.change).toBeUndefined()
    expect(reverted.partitions.some((list) => list.includes('n4'))).toBe(false)
    expect(reverted.removed).toEqual([])
    const during = load.acked.length
    await moreWrites(load, during, 300, 20_000, 'writes after the revert')

    // Retried: n4 started again on its data directory (at the default rate) joins again and finishes.
    cluster.spawn('n4', [])
    const joined = await waitFor('n4 joined again', async () => {
      const t = await db.topology()
      return t.change === undefined && t.partitions.some((list) => list.includes('n4')) ? t : undefined
    }, 60_000, 200)
    await settled(db, joined.epoch)
    await finish(load, reads)
    // Balanced: 256 partitions × 3 replicas over 4 nodes.
    for (const [, count] of replicaCountsOf((await db.topology()).partitions)) expect(count).toBe(192)
    await expectConverged(db, load.acked)
    await db.close()
  })
})

describe('a joining node restarted while it copies, before the cluster took it for down (real processes)', () => {
  it('resumes each copy where it stood, and the join it was part of completes', { timeout: 180_000 }, async () => {
    // Gossip every second: a node restarted at once is back long before anyone calls it down.
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0', '--gossip-interval', '1000'])
    const db = await cluster.client({ timeoutMs: 10_000 })
    for (let i = 0; i < 20_000; i += 1000) await db.batch(Array.from({ length: 1000 }, (_, j) => ({ type: 'put' as const, key: `resume/${i + j}`, value: 'v'.repeat(100) })))
    await cluster.add('n4', ['--move-rate', '1000', '--log-level', 'info'])
    const staged = await waitFor('the join of n4 staged', async () => {
      const t = await db.topology()
      return t.change?.kind === 'join' && t.change.adds.includes('n4') ? t.change : undefined
    }, 30_000, 100)
    await waitFor('n4 copying', async () => (await db.nodeViews()).some((v) => v.id === 'n4' && v.recordsCopied > 2000), 30_000, 100)
    await cluster.kill('n4')
    cluster.spawn('n4')
    await waitFor('n4 resuming its copies', () => cluster!.logs.get('n4')!.some((line) => line.includes('resumed the copies of this change where they stood')), 30_000, 100)
    const joined = await waitFor('n4 joined', async () => {
      const t = await db.topology()
      return t.change === undefined && t.partitions.some((list) => list.includes('n4')) ? t : undefined
    }, 60_000, 200)
    await settled(db, joined.epoch)
    // The change staged before the restart is the one that finished: nothing was reverted and staged again.
    expect(cluster.logs.get('n4')!.some((line) => line.includes(`"epoch":${staged.epoch}`))).toBe(true)
    for (let i = 0; i < 20_000; i += 1000) {
      const values = await db.getMany(Array.from({ length: 1000 }, (_, j) => `resume/${i + j}`), { consistency: 'all' })
      expect(values.filter((v) => v?.toString() !== 'v'.repeat(100)).length).toBe(0)
    }
    await db.close()
  })
})

describe('kumo cancel during a drain (real processes)', () => {
  it('under load: the node keeps the partitions that had not moved and stays a member, nothing is lost', { timeout: 180_000 }, async () => {
    cluster = await ProcessCluster.start(4, ['--repair-interval', '0', '--move-rate', '50'])
    const db = await cluster.client({ timeoutMs: 10_000 })
    const load = writeLoad(db, 'cancel/', 16)
    const reads = readLoad(db, load)
    await waitFor('writes under way', () => load.acked.length > 2000, 30_000)
    const before = await db.topology()
    const held = before.partitions.filter((list) => list.includes('n4')).length
    const left = await db.leaveNode('n4')
    await waitFor('the drain copying', async () => (await db.nodeViews()).some((v) => v.recordsCopied > 0), 20_000, 100)
    const cancelled = await db.cancelChange()
    expect(cancelled.partitionsReverted).toBeGreaterThan(0)
    expect((await rejectionOf(db.cancelChange())).code).toBe('FAILED_PRECONDITION')
    await settled(db, left.epoch)
    const after = await db.topology()
    expect(after.change).toBeUndefined()
    expect(after.removed).toEqual([])
    // It keeps every partition whose reads had not moved yet (those reverted).
    expect(after.partitions.filter((list) => list.includes('n4')).length).toBeGreaterThanOrEqual(cancelled.partitionsReverted)
    expect(after.partitions.filter((list) => list.includes('n4')).length).toBeLessThanOrEqual(held)
    expect(cluster.children.get('n4')!.exitCode).toBeNull()
    await finish(load, reads)
    // Every partition still has N replicas, and the data converged.
    for (const list of after.partitions) expect(list.length).toBe(3)
    await expectConverged(db, load.acked)
    await db.close()
  })
})

describe('growing, shrinking and healing a cluster under load (real processes)', () => {
  it('3 → 4 → 5 by join, 5 → 4 by drain, a killed node removed, a dead node replaced: no failed request, nothing lost, N matching replicas, no stray copies, balanced', { timeout: 300_000 }, async () => {
    // Copies at 20,000 records a second, not the default (2,500): the load adds new keys all along,
    // and five changes at the default pace (which spares the clients) took over the 90 s a change
    // is given here by the replacement; what this test checks is that nothing fails or is lost.
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0', '--move-rate', '20000'])
    const db = await cluster.client({ timeoutMs: 10_000 })
    const load = writeLoad(db, 'grow/', 16)
    const reads = readLoad(db, load)
    await waitFor('writes under way', () => load.acked.length > 1000, 30_000)
    const steps: string[] = []
    const started = Date.now()
    /** Waits for the change that `staged` finds in the topology to finish, and checks the cluster then. */
    const change = async (what: string, staged: (t: Awaited<ReturnType<KumoClient['topology']>>) => boolean, members: string[]): Promise<void> => {
      const at = Date.now()
      const done = await waitFor(`${what}: done`, async () => {
        const t = await db.topology()
        return t.change === undefined && staged(t) ? t : undefined
      }, 90_000, 200)
      await settled(db, done.epoch)
      const t = await db.topology()
      expect([...new Set(t.partitions.flat())].sort(), what).toEqual([...members].sort())
      for (const list of t.partitions) expect(list.length, what).toBe(3)
      const mean = (t.partitionCount * 3) / members.length
      for (const [id, count] of replicaCountsOf(t.partitions)) expect(Math.abs(count - mean), `${what}: ${id} holds ${count}`).toBeLessThanOrEqual(1)
      steps.push(`${what} ${((Date.now() - at) / 1000).toFixed(1)} s`)
    }

    await cluster.add('n4')
    await change('n4 joins', (t) => t.partitions.some((l) => l.includes('n4')), ['n1', 'n2', 'n3', 'n4'])
    await cluster.add('n5')
    await change('n5 joins', (t) => t.partitions.some((l) => l.includes('n5')), ['n1', 'n2', 'n3', 'n4', 'n5'])
    const n5exit = new Promise<number | null>((resolve) => cluster!.children.get('n5')!.once('exit', (code) => resolve(code)))
    await db.leaveNode('n5')
    await change('n5 drained', (t) => t.removed.includes('n5'), ['n1', 'n2', 'n3', 'n4'])
    expect(await n5exit).toBe(0)
    await cluster.kill('n4')
    await waitFor('n4 removed once the others agree it is dead', async () => {
      try {
        return await db.removeNode('n4')
      } catch (err) {
        if ((err as KumoError).code === 'FAILED_PRECONDITION' && /is (suspect|up)/.test((err as Error).message)) return undefined
        throw err
      }
    }, 30_000, 250)
    await change('n4 removed', (t) => t.removed.includes('n4'), ['n1', 'n2', 'n3'])
    await cluster.kill('n3')
    await cluster.add('n6', ['--replace', 'n3'])
    await change('n6 replaces n3', (t) => t.removed.includes('n3'), ['n1', 'n2', 'n6'])
    process.stdout.write(`  ${steps.join(', ')}; ${load.acked.length} writes acknowledged in ${((Date.now() - started) / 1000).toFixed(0)} s\n`)

    await finish(load, reads)
    // No node keeps a copy of a partition it does not hold.
    await waitFor('no stray copies left', async () => (await db.nodeViews()).every((v) => v.partitionsStray === 0), 30_000, 250)
    await expectConverged(db, load.acked)
    await db.close()
  })
})

describe('standby nodes joined by plan and commit (the CLI, real processes)', () => {
  it('two standby nodes own nothing until the plan is committed, then join in one change under load: the plan said what moved, nothing failed or was lost', { timeout: 180_000 }, async () => {
    cluster = await ProcessCluster.start(3, ['--repair-interval', '0'])
    const db = await cluster.client({ timeoutMs: 10_000 })
    const load = writeLoad(db, 'planned/', 8)
    const reads = readLoad(db, load)
    await waitFor('writes under way', () => load.acked.length > 1000, 30_000)
    await cluster.add('n4', ['--standby'])
    await cluster.add('n5', ['--standby'])
    // With TLS and authentication (KUMO_TEST_SECURE), as the cluster's admin.
    const security = cluster.security
    const secure = security === undefined ? [] : ['--tls-ca', path.join(security.dir, 'ca.pem'), '--user', security.client.credentials.user]
    const env = security === undefined ? process.env : { ...process.env, KUMO_PASSWORD: security.client.credentials.password }
    const kumo = (...args: string[]) => promisify(execFile)(process.execPath, [cliPath, '--seeds', cluster!.seeds.slice(0, 3).join(','), ...secure, ...args], { timeout: 120_000, env })
    await waitFor('the standby nodes heard by the cluster', async () => {
      const t = await db.topology()
      return ['n4', 'n5'].every((id) => t.nodes.some((n) => n.id === id && n.state === 'up'))
    }, 30_000, 200)
    const before = await db.topology()
    expect(before.partitions.flat().some((id) => id === 'n4' || id === 'n5')).toBe(false)

    const plan = (await kumo('plan', 'join', 'n4', 'n5')).stdout
    process.stdout.write(plan)
    expect(plan).toMatch(/plan \(on map epoch \d+\): join n4, n5/)
    const moved = /(\d+) replicas of (\d+) partitions move: ([\d,]+) records/.exec(plan)
    expect(moved, plan).not.toBeNull()
    expect(Number(moved![3]!.replace(/,/g, ''))).toBeGreaterThan(0)
    expect(plan).toMatch(/n4\s+\d+\s+0\s+[\d,]+/)
    expect(plan).toMatch(/kumo commit makes this change/)
    // Nothing moved for the plan alone.
    expect((await db.topology()).epoch).toBe(before.epoch)

    const committing = kumo('commit', '--wait')
    // While it copies, kumo transfers says per node what is left.
    await waitFor('the join staged', async () => (await db.topology()).change !== undefined, 30_000, 100)
    const transfers = (await kumo('transfers')).stdout
    expect(transfers).toMatch(/change: n4, n5 join|no membership change in flight/)
    expect(transfers).toMatch(/RECORDS LEFT \(approx\.\)/)
    const commit = await committing
    expect(commit.stdout).toMatch(new RegExp(`committed: join n4 n5 \\(change staged at map epoch \\d+\\): ${moved![1]} replicas move`))
    expect(commit.stdout).toMatch(/done: n4 holds \d+ partitions, n5 holds \d+ partitions/)
    const after = await db.topology()
    const counts = replicaCountsOf(after.partitions)
    const mean = (after.partitionCount * 3) / 5
    for (const id of ['n1', 'n2', 'n3', 'n4', 'n5']) expect(Math.abs((counts.get(id) ?? 0) - mean), id).toBeLessThanOrEqual(1)
    // A second commit has no plan left.
    const again = await kumo('commit').then(() => undefined, (err: { stderr: string }) => err.stderr)
    expect(again).toMatch(/FAILED_PRECONDITION: no plan to commit/)

    await finish(load, reads)
    await settled(db, after.epoch)
    await expectConverged(db, load.acked)
    await db.close()
  })
})
