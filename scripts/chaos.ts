import type { ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Command, InvalidArgumentError } from 'commander'
import * as hdr from 'hdr-histogram-js'
import { connect, type KumoClient } from '../src/index.js'
import { seededRandom } from '../src/core/random.js'
import { localSpecs, makeLocalSecurity, portTaken, spawnNode, stopChild, waitHealthy, type LocalNodeSpec } from './local-cluster.js'

function wholeNumber(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive whole number')
  return n
}

const program = new Command()
  .name('npm run chaos --')
  .description(
    'Runs a read/write load against a local three-node cluster while killing (kill -9) and restarting\n' +
      'random nodes, never more than one down at a time; then reports failures, latency and lost writes.\n' +
      'It starts its own cluster (so it can kill its processes) on --base-port..+2, data in a temp dir.',
  )
  .option('--duration <s>', 'seconds of load', wholeNumber, 60)
  .option('--concurrency <n>', 'requests in flight', wholeNumber, 32)
  .option('--base-port <port>', 'port of the first node', wholeNumber, 7101)
  .option('--down <ms>', 'how long a killed node stays down (random up to this)', wholeNumber, 5000)
  .option('--between <ms>', 'pause between a restart and the next kill (random up to this)', wholeNumber, 6000)
  .option('--seed <n>', 'random seed (printed, so a run can be replayed)', wholeNumber)
  .option('--json', 'print the report as JSON too')
  .option('--secure', 'run the nodes with TLS and authentication (a throwaway CA and admin user)')
  .option('--membership', 'also change membership: join new nodes (up to 5), drain nodes (kumo leave) and remove killed ones (kumo remove), never below 3')
  .parse()
const opts = program.opts<{ duration: number; concurrency: number; basePort: number; down: number; between: number; seed?: number; json?: boolean; secure?: boolean; membership?: boolean }>()

const histogram = (): hdr.Histogram => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 })
const ms = (us: number): string => `${(us / 1000).toFixed(2)} ms`

interface KillWindow {
  node: string
  atMs: number
  downMs: number
  histogram: hdr.Histogram
  failures: number
}

async function main(): Promise<void> {
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31)
  const random = seededRandom(seed)
  const root = await mkdtemp(path.join(os.tmpdir(), 'kumo-chaos-'))
  const specs = localSpecs(3, opts.basePort, root)
  for (const spec of specs) {
    const taken = await portTaken(spec.address)
    if (taken !== undefined) {
      process.stderr.write(`chaos: ${taken}; use --base-port\n`)
      process.exit(1)
    }
  }
  const seeds = specs.map((s) => s.address)
  const security = opts.secure ? await makeLocalSecurity(path.join(root, 'tls'), specs.map((s) => s.id)) : undefined
  const clientSecurity = security?.client ?? {}
  const children = new Map<string, ChildProcess>()
  const spawn = (spec: LocalNodeSpec): void => {
    children.set(spec.id, spawnNode(spec, seeds, ['--gossip-interval', '500', ...(security?.nodeArgs(spec.id) ?? [])]))
  }
  let db: KumoClient | undefined
  const cleanup = async (): Promise<void> => {
    await db?.close()
    await Promise.all([...children.values()].map((c) => stopChild(c, 5000)))
    await rm(root, { recursive: true, force: true })
  }
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)))

  process.stdout.write(`chaos: seed ${seed}; starting 3 nodes on ${seeds.join(', ')}${security ? ' with TLS and authentication' : ''}...\n`)
  for (const spec of specs) spawn(spec)
  await waitHealthy(specs, 30_000, () => true, security)
  db = await connect({ seeds, timeoutMs: 5000, ...clientSecurity })

  const overall = histogram()
  const windows: KillWindow[] = []
  const acked = new Map<string, string>()
  const ackedKeys: string[] = []
  let requests = 0
  let failures = 0
  const failureSamples: string[] = []
  let mismatches = 0
  let running = true
  let nextKey = 0
  const started = Date.now()
  const endAt = started + opts.duration * 1000
  const requestsMax = opts.duration * 200_000

  const record = (startedNs: bigint, ok: boolean): void => {
    const us = Number((process.hrtime.bigint() - startedNs) / 1000n)
    requests++
    overall.recordValue(Math.max(1, us))
    const now = Date.now()
    for (const w of windows) {
      if (now - w.atMs <= 5000) {
        w.histogram.recordValue(Math.max(1, us))
        if (!ok) w.failures++
      }
    }
  }

  const worker = async (): Promise<void> => {
    while (running && requests < requestsMax) {
      const t0 = process.hrtime.bigint()
      const write = ackedKeys.length < 100 || random() < 0.5
      try {
        if (write) {
          const key = `chaos/${String(nextKey++).padStart(8, '0')}`
          const value = `v-${key}`
          await db!.put(key, value)
          acked.set(key, value)
          ackedKeys.push(key)
        } else {
          const key = ackedKeys[Math.floor(random() * ackedKeys.length)]!
          const value = await db!.get(key)
          if (value?.toString() !== acked.get(key)) mismatches++
        }
        record(t0, true)
      } catch (err) {
        failures++
        if (failureSamples.length < 5) failureSamples.push(`${(err as { code?: string }).code}: ${(err as Error).message}`)
        record(t0, false)
      }
    }
  }

  const progress = setInterval(() => {
    const s = ((Date.now() - started) / 1000).toFixed(0)
    const down = specs.filter((sp) => children.get(sp.id)?.exitCode !== null || children.get(sp.id)?.signalCode !== null).map((sp) => sp.id)
    process.stdout.write(`  ${s}s: ${requests} requests, ${failures} failed, ${acked.size} writes acknowledged${down.length ? `, down: ${down.join(',')}` : ''}\n`)
  }, 5000)

  const at = (): string => ((Date.now() - started) / 1000).toFixed(1)
  /** Until every live node is on map `epoch` or later and copies nothing. */
  const settled = async (epoch: number): Promise<void> => {
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      if (await db!.changeDone(epoch)) return
      await new Promise((r) => setTimeout(r, 250))
    }
    throw new Error(`the cluster did not settle on epoch ${epoch} within 120 s`)
  }
  let nextNode = specs.length + 1
  /** One membership change, chosen at random among those that keep 3 to 5 nodes; false if none applies. */
  const changeMembership = async (): Promise<boolean> => {
    const roll = random()
    if (specs.length < 5 && (roll < 0.4 || specs.length === 3)) {
      const id = `n${nextNode++}`
      const spec: LocalNodeSpec = { id, address: `127.0.0.1:${opts.basePort + nextNode - 2}`, dataDir: path.join(root, `node-${id}`) }
      if (security !== undefined) await security.addNode(id)
      specs.push(spec)
      spawn(spec)
      process.stdout.write(`  ${at()}s: ${id} joins\n`)
      await waitHealthy(specs, 60_000, () => true, security)
      // The join is staged, copied, then switched partition by partition: done once the map holds it with no change in flight.
      const deadline = Date.now() + 120_000
      for (;;) {
        const topology = await db!.topology()
        if (topology.change === undefined && topology.partitions.some((list) => list.includes(id))) {
          await settled(topology.epoch)
          break
        }
        if (Date.now() > deadline) throw new Error(`${id} did not finish joining within 120 s`)
        await new Promise((r) => setTimeout(r, 250))
      }
      process.stdout.write(`  ${at()}s: ${id} joined, its partitions copied\n`)
      return true
    }
    if (specs.length <= 3) return false
    const spec = specs[1 + Math.floor(random() * (specs.length - 1))]!
    const child = children.get(spec.id)!
    const exited = new Promise((r) => child.once('exit', r))
    if (roll < 0.7) {
      process.stdout.write(`  ${at()}s: ${spec.id} leaves\n`)
      const { epoch } = await db!.leaveNode(spec.id)
      await exited
      specs.splice(specs.indexOf(spec), 1)
      await settled(epoch)
      process.stdout.write(`  ${at()}s: ${spec.id} left, its partitions copied\n`)
      return true
    }
    child.kill('SIGKILL')
    await exited
    windows.push({ node: spec.id, atMs: Date.now(), downMs: 0, histogram: histogram(), failures: 0 })
    process.stdout.write(`  ${at()}s: kill -9 ${spec.id}, then remove it\n`)
    specs.splice(specs.indexOf(spec), 1)
    for (;;) {
      try {
        const { epoch } = await db!.removeNode(spec.id)
        await settled(epoch)
        break
      } catch (err) {
        // The cluster has not seen it die yet, or the last change is still settling.
        if ((err as { code?: string }).code !== 'FAILED_PRECONDITION') throw err
        await new Promise((r) => setTimeout(r, 250))
      }
    }
    process.stdout.write(`  ${at()}s: ${spec.id} removed, its partitions copied\n`)
    return true
  }
  let changes = 0

  const chaos = async (): Promise<void> => {
    await new Promise((r) => setTimeout(r, 2000 + random() * opts.between))
    while (Date.now() < endAt - 3000) {
      if (opts.membership && random() < 0.6 && (await changeMembership())) {
        changes++
        await new Promise((r) => setTimeout(r, 1000 + random() * opts.between))
        continue
      }
      const spec = specs[Math.floor(random() * specs.length)]!
      const downMs = Math.max(1000, Math.floor(random() * opts.down))
      const child = children.get(spec.id)!
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGKILL')
      await exited
      const window: KillWindow = { node: spec.id, atMs: Date.now(), downMs, histogram: histogram(), failures: 0 }
      windows.push(window)
      process.stdout.write(`  ${((window.atMs - started) / 1000).toFixed(1)}s: kill -9 ${spec.id}, down for ${(downMs / 1000).toFixed(1)} s\n`)
      await new Promise((r) => setTimeout(r, downMs))
      spawn(spec)
      await waitHealthy(specs, 30_000, () => true, security)
      process.stdout.write(`  ${((Date.now() - started) / 1000).toFixed(1)}s: ${spec.id} back\n`)
      await new Promise((r) => setTimeout(r, 1000 + random() * opts.between))
    }
  }

  const workers = Array.from({ length: opts.concurrency }, worker)
  await Promise.race([chaos(), new Promise((r) => setTimeout(r, endAt - Date.now()))])
  while (Date.now() < endAt) await new Promise((r) => setTimeout(r, 100))
  running = false
  await Promise.all(workers)
  clearInterval(progress)
  // Make sure every node runs before judging convergence.
  for (const spec of specs) {
    const child = children.get(spec.id)!
    if (child.exitCode !== null || child.signalCode !== null) spawn(spec)
  }
  await waitHealthy(specs, 30_000, () => true, security)

  // Convergence: every node holds every acknowledged write in its own storage.
  const convergeStarted = Date.now()
  const keys = [...acked.keys()]
  let converged = false
  let missingLast = 0
  while (Date.now() - convergeStarted < 120_000) {
    missingLast = 0
    for (const spec of specs) {
      const one = await connect({ seeds: [spec.address], timeoutMs: 10_000, ...clientSecurity })
      for (let i = 0; i < keys.length; i += 1000) {
        const chunk = keys.slice(i, i + 1000)
        const values = await one.getMany(chunk, { consistency: 'one' }).catch(() => chunk.map(() => undefined))
        missingLast += values.filter((v, j) => v?.toString() !== acked.get(chunk[j]!)).length
      }
      await one.close()
    }
    if (missingLast === 0) {
      converged = true
      break
    }
    await new Promise((r) => setTimeout(r, 500))
  }
  const convergeMs = Date.now() - convergeStarted

  // Lost: acknowledged, but a quorum read does not return it.
  let lost = 0
  for (let i = 0; i < keys.length; i += 1000) {
    const chunk = keys.slice(i, i + 1000)
    const values = await db.getMany(chunk)
    lost += values.filter((v, j) => v?.toString() !== acked.get(chunk[j]!)).length
  }

  const seconds = opts.duration
  const lines = [
    '',
    `Kumo chaos report (seed ${seed}, ${seconds} s, ${opts.concurrency} in flight, 50% writes / 50% reads, quorum)`,
    `  requests              ${requests} (${Math.round(requests / seconds)}/s)`,
    `  failed requests       ${failures}${failureSamples.length ? ` e.g. ${failureSamples[0]}` : ''}`,
    `  stale/missing reads   ${mismatches}`,
    `  latency overall       p50 ${ms(overall.getValueAtPercentile(50))}  p99 ${ms(overall.getValueAtPercentile(99))}  max ${ms(overall.maxValue)}`,
    ...windows.map(
      (w) =>
        `  5 s after kill ${w.node.padEnd(3)} at ${((w.atMs - started) / 1000).toFixed(1).padStart(5)}s: ${String(w.histogram.totalCount).padStart(6)} requests, ${w.failures} failed, p50 ${ms(w.histogram.getValueAtPercentile(50))}  p99 ${ms(w.histogram.getValueAtPercentile(99))}  max ${ms(w.histogram.maxValue)}`,
    ),
    `  kills                 ${windows.length}`,
    ...(opts.membership ? [`  membership changes    ${changes} (nodes at the end: ${specs.map((sp) => sp.id).join(', ')})`] : []),
    `  acknowledged writes   ${acked.size}`,
    `  acknowledged lost     ${lost}`,
    `  replicas converged    ${converged ? `yes, ${(convergeMs / 1000).toFixed(1)} s after the load stopped` : `NO (${missingLast} replica copies still missing after 120 s)`}`,
    '',
  ]
  process.stdout.write(lines.join('\n'))
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify({ seed, requests, failures, mismatches, lost, kills: windows.length, membershipChanges: changes, acknowledged: acked.size, converged, convergeMs, p50us: overall.getValueAtPercentile(50), p99us: overall.getValueAtPercentile(99), maxUs: overall.maxValue })}\n`,
    )
  }
  await cleanup()
  process.exit(failures === 0 && lost === 0 && converged ? 0 : 1)
}

void main().catch((err) => {
  process.stderr.write(`chaos: ${(err as Error).stack ?? err}\n`)
  process.exit(2)
})
