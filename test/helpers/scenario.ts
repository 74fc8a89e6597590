import { appendFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { ConnectOptions, KumoClient } from '../../src/index.js'
import { waitFor } from './cluster.js'
import { HostCluster, type HostClusterOptions } from './host-cluster.js'
import { RemoteWorkload } from './remote-workload.js'
import { readBack, Workload, type WorkloadOptions, type WorkloadReport } from './workload.js'

/**
 * A fault scenario on test hosts, as data: how many hosts, what the fault is, how long it
 * lasts. runScenario puts the cluster under a bounded load of quorum writes of unique keys and
 * quorum reads, applies the fault, holds it, heals it, and ends with a read-back of every
 * acknowledged write at `all`.
 */
export interface Scenario {
  name: string
  hosts: number
  cluster?: HostClusterOptions
  client?: Omit<ConnectOptions, 'seeds'>
  load?: Partial<WorkloadOptions>
  /** Runs before the load starts (data the scenario needs). */
  prepare?(cluster: HostCluster, db: KumoClient): Promise<void>
  /** Puts the fault in place. */
  fault(cluster: HostCluster): Promise<void>
  /** How long the fault lasts under load. */
  faultMs: number
  /** Runs while the fault lasts (the default only waits faultMs). */
  during?(cluster: HostCluster, load: Workload, db: KumoClient): Promise<void>
  /** Takes the fault away (default: every cut healed). */
  heal?(cluster: HostCluster): Promise<void>
  /** Clients on test hosts of their own (cluster.clientHosts), each with its own load, seeded by these nodes. */
  remoteClients?: { host: string; seeds: string[]; env?: Record<string, string>; load?: Partial<WorkloadOptions>; expectWrites?: boolean }[]
}

export interface RemoteClientResult extends WorkloadReport {
  host: string
}

export interface ScenarioResult extends WorkloadReport {
  name: string
  /** Hints held in the cluster when the fault was healed (by the nodes that could be asked). */
  hintsAtHeal: number
  /** Requests that carried hints to their holder (STORE_HINTS, REPLICATE, HINT), over the whole run. */
  handOffRequests: number
  lost: number
  lostKeys: string[]
  /** From when the heal began until every hint was delivered and the read-back at `all` found every write. */
  convergeMs: number
  peakRssMiB: Record<string, number>
  remote: RemoteClientResult[]
}

export async function runScenario(scenario: Scenario): Promise<ScenarioResult> {
  const cluster = await HostCluster.start(scenario.hosts, scenario.cluster)
  let db: KumoClient | undefined
  let load: Workload | undefined
  const remotes: RemoteWorkload[] = []
  try {
    const name = scenario.name.replace(/\W+/g, '-')
    const loadOptions = { prefix: `${name}/`, writers: 16, readers: 4, writesPerSecond: 800, readsPerSecond: 400, ...scenario.load }
    db = await cluster.client({ timeoutMs: 5000, ...scenario.client })
    await scenario.prepare?.(cluster, db)
    load = new Workload(db, loadOptions).start()
    for (const remote of scenario.remoteClients ?? []) {
      const seeds = remote.seeds.map((id) => cluster.spec(id).address)
      remotes.push(new RemoteWorkload(cluster.net, remote.host, { seeds, timeoutMs: 5000, ...scenario.client }, { ...loadOptions, prefix: `${name}/${remote.host}/`, ...remote.load }, remote.env))
    }
    await load.progress(300)
    for (const [i, remote] of remotes.entries()) if (scenario.remoteClients![i]!.expectWrites !== false) await remote.reached(300)
    const trace = (what: string): void => {
      if (process.env.KUMO_TRACE || process.env.KUMO_SCENARIO_DEBUG) process.stdout.write(`${new Date().toISOString()} scenario: ${what}\n`)
    }
    trace('fault begins')
    await scenario.fault(cluster)
    trace('fault in place')
    load.markFault()
    for (const r of remotes) r.mark('fault')
    if (scenario.during !== undefined) await scenario.during(cluster, load, db)
    else await load.progress(0, scenario.faultMs)
    const hintsAtHeal = await cluster.hintsHeld(true)
    // The heal is marked as it begins: links come back one after another while it runs, and
    // a read that reaches a replica the hints have not caught up with yet (sloppy quorum's
    // trade) may come before the last link is back.
    trace('heal begins')
    load.markHeal()
    for (const r of remotes) r.mark('heal')
    const healedAt = Date.now()
    await (scenario.heal ?? ((c) => c.net.heal()))(cluster)
    trace('healed')
    await load.progress(300)
    for (const [i, remote] of remotes.entries()) if (scenario.remoteClients![i]!.expectWrites !== false) await remote.reached(remote.acked + 100)
    const report = await load.stop()
    const remote: RemoteClientResult[] = []
    const remoteKeys: string[] = []
    for (const [i, r] of remotes.entries()) {
      const { report: theirs, keys } = await r.stop()
      remote.push({ host: scenario.remoteClients![i]!.host, ...theirs })
      remoteKeys.push(...keys)
    }
    await waitFor('every hint delivered', async () => {
      const held = await cluster.hintsHeld()
      if (process.env.KUMO_SCENARIO_DEBUG) process.stdout.write(`  ${((Date.now() - healedAt) / 1000).toFixed(1)} s after heal: ${held} hints held\n`)
      return held === 0
    }, 120_000, process.env.KUMO_SCENARIO_DEBUG ? 1000 : 200)
    let lostKeys = await readBack(db, [...load.acked, ...remoteKeys])
    // A read at `all` repairs what it finds stale: the first pass may have done the converging.
    if (lostKeys.length > 0) lostKeys = await readBack(db, lostKeys)
    const convergeMs = Date.now() - healedAt
    // Requests that carried hints to the node holding them: a client's STORE_HINTS, a write a
    // client handed to a node (REPLICATE), and a coordinator's HINT to a fallback node.
    const handOffRequests =
      (await cluster.metric('kumo_requests_total', { op: 'STORE_HINTS' })) +
      (await cluster.metric('kumo_requests_total', { op: 'REPLICATE' })) +
      (await cluster.metric('kumo_replica_messages_total', { op: 'HINT', direction: 'received' }))
    const result: ScenarioResult = {
      name: scenario.name,
      ...report,
      hintsAtHeal,
      handOffRequests,
      lost: lostKeys.length,
      lostKeys: lostKeys.slice(0, 10),
      convergeMs,
      peakRssMiB: await cluster.peakRssMiB(),
      remote,
    }
    reportScenario(result)
    return result
  } finally {
    // With KUMO_TRACE set, each node's log is kept in a file for reading after the run.
    if (process.env.KUMO_TRACE) for (const [id, lines] of cluster.logs) writeFileSync(path.join(os.tmpdir(), `kumo-node-${id}.log`), lines.join('\n'))
    for (const r of remotes) r.kill()
    await load?.stop()
    await db?.close()
    await cluster.close()
  }
}

/** One line per scenario on stdout, and in $KUMO_SCENARIO_LOG (JSON lines) when set. */
export function reportScenario(r: ScenarioResult): void {
  const rss = Object.entries(r.peakRssMiB).map(([id, mib]) => `${id} ${mib}`).join(', ')
  process.stdout.write(
    `scenario "${r.name}": ${r.requests} requests, ${r.failed} failed, ${r.acknowledged} writes acknowledged, ${r.lost} lost, ` +
      `longest gap ${r.longestGapMs} ms, p99 during fault ${r.faultP99Ms.toFixed(1)} ms (overall ${r.p99Ms.toFixed(1)} ms), ` +
      `converged ${(r.convergeMs / 1000).toFixed(1)} s after heal, ${r.hintsAtHeal} hints at heal in ${r.handOffRequests} hand-off requests, peak RSS MiB: ${rss}\n` +
      (r.gaps.length > 0 ? `  gaps (ms after the fault began: length): ${r.gaps.map((g) => `${g.atMs}: ${g.ms}`).join(', ')}\n` : '') +
      (r.failed > 0 ? `  failures ${JSON.stringify(r.failuresByKind)}, p99 ${r.failureP99Ms.toFixed(0)} ms, max ${r.failureMsMax.toFixed(0)} ms to fail (${r.settledFailureMsMax.toFixed(0)} ms once settled)\n` : '') +
      r.slowFailures.map((f) => `  slow failure ${f.atMs} ms after the fault: ${f.op} ${f.key} after ${f.ms.toFixed(0)} ms: ${f.error}\n`).join('') +
      (r.failures.length > 0 ? `  first failures: ${r.failures.slice(0, 3).map((f) => `${f.atMs} ms ${f.op} ${f.error}`).join(' | ')}\n` : ''),
  )
  for (const c of r.remote) {
    process.stdout.write(
      `  client on ${c.host}: ${c.requests} requests, ${c.failed} failed ${JSON.stringify(c.failuresByKind)} (p99 ${c.failureP99Ms.toFixed(0)} ms, max ${c.failureMsMax.toFixed(0)} ms to fail; ${c.settledFailureMsMax.toFixed(0)} ms once settled), ${c.acknowledged} writes acknowledged, longest gap ${c.longestGapMs} ms` +
        (c.failures.length > 0 ? `; first failures: ${c.failures.slice(0, 2).map((f) => `${f.op} after ${f.ms.toFixed(0)} ms: ${f.error}`).join(' | ')}` : '') +
        '\n' +
        c.slowFailures.map((f) => `    slow failure ${f.atMs} ms after the fault: ${f.op} ${f.key} after ${f.ms.toFixed(0)} ms: ${f.error}\n`).join(''),
    )
  }
  const log = process.env.KUMO_SCENARIO_LOG
  if (log) appendFileSync(log, `${JSON.stringify({ ...r, failures: r.failures.slice(0, 3) })}\n`)
}
