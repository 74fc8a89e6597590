import type { ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Command, InvalidArgumentError } from 'commander'
import * as hdr from 'hdr-histogram-js'
import { connect, withRetry, type KumoClient } from '../src/index.js'
import { seededRandom } from '../src/core/random.js'
import { processCpuMicros } from './cpu.js'
import { startCpuProfile } from '../src/cli/cpu-profile-signal.js'
import { localSpecs, portTaken, spawnNode, stopChild, waitHealthy, type LocalNodeSpec } from '../scripts/local-cluster.js'

/**
 * What a membership change costs: a three-node cluster loaded with --records records, a steady
 * 50/50 read/write load (writes overwrite loaded keys), then a fourth node joins (its partitions
 * copied from the others) and leaves again (its partitions copied back). Reports how long each
 * copy took, records and bytes a second, and the client's throughput and latency during each
 * against the steady load.
 */
function wholeNumber(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a whole number, 1 or more')
  return n
}

const program = new Command()
  .name('npm run bench:moves --')
  .description('what a join and a drain cost: copy time and rate, client throughput and p99 during each against a steady load')
  .option('--records <n>', 'records loaded first', wholeNumber, 1_000_000)
  .option('--value-size <bytes>', 'value size', wholeNumber, 100)
  .option('--concurrency <n>', 'client requests in flight during the phases (8: a load the 2-core machine serves at a p99 of 5-8 ms on three nodes and 10-14 ms on four without a move; at 32 the steady phases alone ran at 14-32 ms)', wholeNumber, 8)
  .option('--steady <s>', 'seconds of steady load measured before the join, and before the drain (long enough to take in the slow seconds of compactions that a 10 s window could miss)', wholeNumber, 30)
  .option('--warmup <s>', 'seconds of load before each steady phase, not measured (caches filled after a compaction)', wholeNumber, 10)
  .option('--base-port <port>', 'port of the first node', wholeNumber, 7201)
  .option('--move-rate <records/s>', "every node's copy rate cap (kumo start --move-rate; default: the node's default)", wholeNumber)
  .option('--moves-at-once <partitions>', "partitions a change moves at once (kumo start --moves-at-once; default: the node's default)", wholeNumber)
  .option('--node-args <args>', "more kumo start arguments for every node, space-separated (e.g. '--row-cache 0')")
  .option('--rate <ops/s>', 'offer the load at this rate (open loop: requests are due at fixed times, at most --concurrency in flight, and a request counts its latency from when it was due) rather than as fast as --concurrency requests in flight go (closed loop, the default)', wholeNumber)
  .option('--new-keys', 'write new keys during the phases rather than overwrite loaded ones (the data then grows with the run, and a slower move copies more of it)')
  .option('--timeline', "also print each second's client ops and p99, to see when in a move the latency rises")
  .option('--counters', "also print, per phase, the nodes' fastest-growing counters a second (each node serves metrics on its port + 100)")
  .parse()
const opts = program.opts<{ records: number; valueSize: number; concurrency: number; steady: number; warmup: number; basePort: number; moveRate?: number; movesAtOnce?: number; nodeArgs?: string; rate?: number; newKeys?: boolean; timeline?: boolean; counters?: boolean }>()

interface Phase {
  name: string
  seconds: number
  /** CPU the node processes used during the phase, in µs (user + system). */
  serverCpuMicros?: number
  /** Cores each process used on average during the phase (nodes by id, and this client): where a move's cost lands. */
  coresBy?: Map<string, number>
  histogram: hdr.Histogram
  failures: number
  copied?: { records: number; bytes: number }
  /** Counters summed over the nodes, per second of the phase, fastest first (--counters). */
  counters?: [string, number][]
}

/** The metrics port of a node started by this benchmark (--counters): its gRPC port + 100. */
function metricsPortOf(spec: LocalNodeSpec): number {
  return Number(spec.address.slice(spec.address.lastIndexOf(':') + 1)) + 100
}

/** Every counter (a `_total` series) of one node, by series, or undefined when it does not answer (not started, or gone). */
async function countersOf(spec: LocalNodeSpec): Promise<Map<string, number> | undefined> {
  let text: string
  try {
    text = await (await fetch(`http://127.0.0.1:${metricsPortOf(spec)}/metrics`, { signal: AbortSignal.timeout(2000) })).text()
  } catch {
    return undefined
  }
  const counters = new Map<string, number>()
  for (const line of text.split('\n')) {
    const match = /^([a-z0-9_]+_total)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line)
    if (match === null) continue
    const labels = (match[2] ?? '').replace(/node="[^"]*",?/, '').replace(/,}$/, '}').replace('{}', '')
    counters.set(`${match[1]}${labels}`, Number(match[3]))
  }
  return counters
}

/** How often the benchmark asks whether a move is done (as `kumo join/leave --wait` do). */
const pollMs = 500

const histogram = (): hdr.Histogram => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 })

async function main(): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'kumo-moves-'))
  const specs: LocalNodeSpec[] = localSpecs(4, opts.basePort, root)
  for (const spec of specs) {
    const taken = await portTaken(spec.address)
    if (taken !== undefined) throw new Error(`${taken}; use --base-port`)
  }
  const children = new Map<string, ChildProcess>()
  const seeds = specs.slice(0, 3).map((s) => s.address)
  const spawn = (spec: LocalNodeSpec): void => {
    const rate = [...(opts.moveRate === undefined ? [] : ['--move-rate', String(opts.moveRate)]), ...(opts.movesAtOnce === undefined ? [] : ['--moves-at-once', String(opts.movesAtOnce)]), ...(opts.nodeArgs?.split(' ').filter((a) => a !== '') ?? [])]
    const metrics = opts.counters === true ? ['--metrics-port', String(metricsPortOf(spec))] : []
    children.set(spec.id, spawnNode(spec, seeds, ['--log-level', process.env.KUMO_MOVES_LOG ?? 'error', '--repair-interval', '0', ...rate, ...metrics], (line) => {
      if (process.env.KUMO_MOVES_LOG !== undefined && /gained partitions|: ready|copying the partitions|partitions compared|copy pace/.test(line)) process.stdout.write(`  [${spec.id}] ${line.slice(0, 200)}\n`)
    }))
  }
  let db: KumoClient | undefined
  const cleanup = async (): Promise<void> => {
    await db?.close()
    await Promise.all([...children.values()].map((c) => stopChild(c, 5000)))
    await rm(root, { recursive: true, force: true })
  }
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)))
  try {
    for (const spec of specs.slice(0, 3)) spawn(spec)
    await waitHealthy(specs.slice(0, 3), 30_000)
    db = await connect({ seeds, timeoutMs: 10_000 })
    const value = Buffer.alloc(opts.valueSize, 'v')
    const keyOf = (i: number): string => `move/${String(i).padStart(9, '0')}`
    process.stdout.write(`Kumo moves: ${opts.records} records of ${opts.valueSize} bytes in 3 nodes (N=3), ${opts.rate === undefined ? `${opts.concurrency} in flight` : `${opts.rate} ops/s offered (${opts.concurrency} in flight at most)`}, writes ${opts.newKeys === true ? 'of new keys' : 'overwrite loaded keys'}, move rate ${opts.moveRate ?? 'default'}, moves at once ${opts.movesAtOnce ?? 'default'}, on ${os.cpus().length} cores\n`)
    const loadStarted = Date.now()
    let next = 0
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < opts.records) {
          const from = next
          next = Math.min(opts.records, next + 200)
          const ops: { type: 'put'; key: string; value: Buffer }[] = []
          for (let i = from; i < next; i++) ops.push({ type: 'put' as const, key: keyOf(i), value })
          await withRetry(() => db!.batch(ops))
        }
      }),
    )
    process.stdout.write(`  loaded in ${((Date.now() - loadStarted) / 1000).toFixed(1)} s\n`)
    // Compacted before anything is measured: otherwise the steady phase shares the machine with
    // the compactions the load left, and the ratios compare two different states of the store.
    const compactStarted = Date.now()
    await db.compact()
    process.stdout.write(`  compacted in ${((Date.now() - compactStarted) / 1000).toFixed(1)} s\n`)

    // The load: half reads of loaded keys, half writes, the same through every phase. Writes
    // overwrite loaded keys, so the data a move copies is the --records loaded whatever the
    // move's length (with --new-keys, 3,000-3,500 new keys a second took a 1,000,000-record
    // cluster to 4 million by the drain).
    let phase: Phase = { name: 'warm-up', seconds: 0, histogram: histogram(), failures: 0 }
    let running = true
    let written = 0
    // Failures of the whole run, warm-ups and the settling between phases included.
    let failedInAll = 0
    const random = seededRandom(7)
    // --rate: the next request's due time. A request waits for a free worker when all are busy,
    // and that wait counts in its latency (no coordinated omission): a cluster that falls behind
    // shows it in p99, not by being offered less.
    const intervalNs = opts.rate === undefined ? 0n : BigInt(Math.round(1e9 / opts.rate))
    let nextDue = process.hrtime.bigint()
    const workers = Array.from({ length: opts.concurrency }, async () => {
      while (running) {
        let started = process.hrtime.bigint()
        if (opts.rate !== undefined) {
          const due = nextDue
          nextDue += intervalNs
          const aheadMs = Number(due - started) / 1e6
          if (aheadMs >= 1) await new Promise((r) => setTimeout(r, aheadMs))
          if (!running) break
          // From when it was due, or from when it started if a timer fired early.
          const now = process.hrtime.bigint()
          started = due < now ? due : now
        }
        const current = phase
        const reading = random() < 0.5
        try {
          if (reading) await db!.get(keyOf(Math.floor(random() * opts.records)))
          else if (opts.newKeys === true) await db!.put(`move-new/${written++}`, value)
          else await db!.put(keyOf(Math.floor(random() * opts.records)), value)
        } catch {
          current.failures++
          failedInAll++
        }
        const micros = Math.max(1, Number((process.hrtime.bigint() - started) / 1000n))
        current.histogram.recordValue(micros)
        second.recordValue(micros)
        ;(reading ? secondReads : secondWrites).recordValue(micros)
      }
    })
    // Each second's ops and p99 (--timeline), stamped with the phase it fell in.
    let second = histogram()
    let secondReads = histogram()
    let secondWrites = histogram()
    const timelineStarted = Date.now()
    const timeline = setInterval(() => {
      if (opts.timeline === true) {
        const t = ((Date.now() - timelineStarted) / 1000).toFixed(0)
        process.stdout.write(`  t=${t}s ${phase.name.split(' ')[0]} ops=${second.totalCount} p50=${(second.getValueAtPercentile(50) / 1000).toFixed(1)} p99=${(second.getValueAtPercentile(99) / 1000).toFixed(1)} max=${(second.maxValue / 1000).toFixed(1)} read p50/p99=${(secondReads.getValueAtPercentile(50) / 1000).toFixed(1)}/${(secondReads.getValueAtPercentile(99) / 1000).toFixed(1)} write p50/p99=${(secondWrites.getValueAtPercentile(50) / 1000).toFixed(1)}/${(secondWrites.getValueAtPercentile(99) / 1000).toFixed(1)}\n`)
      }
      second = histogram()
      secondReads = histogram()
      secondWrites = histogram()
    }, 1000)
    const phases: Phase[] = []
    // Each node's CPU time, sampled every 200 ms: a node that stops mid-phase (the drained one)
    // keeps its last reading.
    const cpuSeen = new Map<number, number>()
    const sampleCpu = (): void => {
      for (const child of children.values()) {
        const micros = child.pid === undefined ? undefined : processCpuMicros(child.pid)
        if (micros !== undefined) cpuSeen.set(child.pid!, micros)
      }
    }
    const sampler = setInterval(sampleCpu, 200)
    const cpuTotal = (): number => {
      sampleCpu()
      let sum = 0
      for (const v of cpuSeen.values()) sum += v
      return sum
    }
    const cpuBy = (): Map<string, number> => {
      sampleCpu()
      const by = new Map<string, number>()
      for (const [id, child] of children) if (child.pid !== undefined && cpuSeen.has(child.pid)) by.set(id, cpuSeen.get(child.pid)!)
      const self = process.cpuUsage()
      by.set('client', self.user + self.system)
      return by
    }
    const measure = async (name: string, during: () => Promise<Phase['copied'] | void>): Promise<void> => {
      const current: Phase = { name, seconds: 0, histogram: histogram(), failures: 0 }
      phase = current
      const started = Date.now()
      const cpuBefore = cpuTotal()
      const byBefore = cpuBy()
      // Each node's counters at the start, and its latest reading since (a node that stops
      // mid-phase, the drained one, keeps its last).
      const first = new Map<string, Map<string, number>>()
      const latest = new Map<string, Map<string, number>>()
      const readCounters = async (into: Map<string, Map<string, number>>): Promise<void> => {
        await Promise.all(specs.map(async (spec) => {
          const counters = await countersOf(spec)
          if (counters !== undefined) into.set(spec.id, counters)
        }))
      }
      let counterReader: NodeJS.Timeout | undefined
      if (opts.counters === true) {
        await readCounters(first)
        counterReader = setInterval(() => void readCounters(latest), 1000)
      }
      // KUMO_MOVES_PROFILE=dir: this client's CPU profile of each move, written there.
      const profileDir = name.startsWith('steady') ? undefined : process.env.KUMO_MOVES_PROFILE
      if (profileDir !== undefined) await mkdir(profileDir, { recursive: true })
      const profile = profileDir === undefined ? undefined : await startCpuProfile()
      const copied = await during()
      await profile?.stop(path.join(profileDir!, `client-${name.split(' ')[0]}.cpuprofile`))
      if (counterReader !== undefined) {
        clearInterval(counterReader)
        await readCounters(latest)
        const seconds = (Date.now() - started) / 1000
        const grew = new Map<string, number>()
        for (const [id, counters] of latest) {
          for (const [series, value] of counters) grew.set(series, (grew.get(series) ?? 0) + (value - (first.get(id)?.get(series) ?? 0)) / seconds)
        }
        current.counters = [...grew].filter(([, rate]) => rate > 0).sort((a, b) => b[1] - a[1]).slice(0, 30)
      }
      current.serverCpuMicros = cpuTotal() - cpuBefore
      current.seconds = (Date.now() - started) / 1000
      // Until the next phase starts, requests count in none: the join's histogram took in the
      // settling and the warm-up after it (24 s at 300,000 records), which raised its rate by
      // as much as 90% and lowered its p99, while its seconds stayed the join's own.
      phase = { name: 'between', seconds: 0, histogram: histogram(), failures: 0 }
      current.coresBy = new Map([...cpuBy()].map(([id, micros]) => [id, (micros - (byBefore.get(id) ?? 0)) / 1e6 / current.seconds]))
      if (copied) current.copied = copied
      phases.push(current)
      process.stdout.write(`  ${name}: ${current.seconds.toFixed(1)} s\n`)
    }
    // Polled every 500 ms, as `kumo leave --wait` does: each poll asks every node for its
    // topology (the whole map), and at 100 ms the polling itself cost a node 2-4% of a core.
    const settled = async (epoch: number): Promise<void> => {
      for (;;) {
        if (await db!.changeDone(epoch)) return
        await new Promise((r) => setTimeout(r, pollMs))
      }
    }
    await new Promise((r) => setTimeout(r, opts.warmup * 1000))
    await measure('steady', () => new Promise((r) => setTimeout(r, opts.steady * 1000)))
    const share = (replicasMoved: number, partitions: number): Phase['copied'] => {
      const records = Math.round(((opts.records + written) * replicasMoved) / partitions)
      return { records, bytes: records * (opts.valueSize + 20 + 16) }
    }
    const before = await db.topology()
    await measure('join (n4 added, copies its share)', async () => {
      spawn(specs[3]!)
      // Staged, copied, then switched: done once n4 reads its partitions and no change is in flight.
      let topology = await db!.topology()
      while (topology.change !== undefined || !topology.partitions.some((replicas) => replicas.includes('n4'))) {
        await new Promise((r) => setTimeout(r, pollMs))
        topology = await db!.topology()
      }
      await settled(topology.epoch)
      const gained = topology.partitions.filter((replicas) => replicas.includes('n4')).length
      return share(gained, topology.partitionCount)
    })
    // The drain's baseline: the same load on the four nodes it starts from (a fourth process on
    // the same cores costs by itself), once the copies the join left behind are deleted and
    // compacted away, as after the load: the join's cleanup is not charged to the steady phase.
    const settleStarted = Date.now()
    while ((await db.nodeViews()).some((v) => v.partitionsStray > 0)) await new Promise((r) => setTimeout(r, 500))
    await db.compact()
    process.stdout.write(`  the join's stray copies deleted and compacted in ${((Date.now() - settleStarted) / 1000).toFixed(1)} s\n`)
    await new Promise((r) => setTimeout(r, opts.warmup * 1000))
    await measure('steady (4 nodes)', () => new Promise((r) => setTimeout(r, opts.steady * 1000)))
    await measure('drain (n4 leaves, its share copied back)', async () => {
      const { epoch, replicasMoved } = await db!.leaveNode('n4')
      await settled(epoch)
      return share(replicasMoved, before.partitionCount)
    })
    running = false
    await Promise.all(workers)
    clearInterval(sampler)
    clearInterval(timeline)

    const rate = (p: Phase): number => p.histogram.totalCount / p.seconds
    // Each move against the steady phase before it (the cluster as the move found it) and the
    // one after it (the cluster it makes: on a machine whose cores every node shares, a fourth
    // node process costs throughput by itself, move or not).
    const steadies = phases.filter((q) => q.name.startsWith('steady'))
    const before_ = (p: Phase): Phase => phases.slice(0, phases.indexOf(p) + 1).filter((q) => q.name.startsWith('steady')).at(-1)!
    const after_ = (p: Phase): Phase => (p.name.startsWith('join') ? steadies[1] : steadies[0]) ?? before_(p)
    const ratio = (p: Phase, base: Phase): string => `${Math.round((100 * rate(p)) / rate(base))}%`
    const lines = [
      '',
      '| phase | s | client ops/s (of steady before / after) | p50 ms | p99 ms | failed | copied records | records/s | MB/s | node CPU (cores) | node CPU µs/op |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...phases.map((p) =>
        [
          p.name,
          p.seconds.toFixed(1),
          p.name.startsWith('steady') ? Math.round(rate(p)).toLocaleString('en-US') : `${Math.round(rate(p)).toLocaleString('en-US')} (${ratio(p, before_(p))} / ${ratio(p, after_(p))})`,
          (p.histogram.getValueAtPercentile(50) / 1000).toFixed(2),
          (p.histogram.getValueAtPercentile(99) / 1000).toFixed(2),
          String(p.failures),
          p.copied ? p.copied.records.toLocaleString('en-US') : '',
          p.copied ? Math.round(p.copied.records / p.seconds).toLocaleString('en-US') : '',
          p.copied ? (p.copied.bytes / p.seconds / 1e6).toFixed(1) : '',
          p.serverCpuMicros === undefined ? '' : (p.serverCpuMicros / 1e6 / p.seconds).toFixed(2),
          p.serverCpuMicros === undefined ? '' : Math.round(p.serverCpuMicros / p.histogram.totalCount).toLocaleString('en-US'),
        ].join(' | ').replace(/^/, '| ').replace(/$/, ' |'),
      ),
      '',
      `Failed requests in the whole run (warm-ups and the settling between phases too): ${failedInAll}`,
      '',
      'Cores used per process: ' + phases.map((p) => `${p.name.split(' ')[0]} ${[...(p.coresBy ?? [])].map(([id, cores]) => `${id} ${cores.toFixed(2)}`).join(', ')}`).join('; '),
      '',
      ...phases.flatMap((p) => (p.counters === undefined ? [] : [`Counters a second, ${p.name}: ${p.counters.map(([series, rate]) => `${series} ${Math.round(rate).toLocaleString('en-US')}`).join(', ')}`, ''])),
      'client ops/s (of steady before / after): against the steady phase of the cluster the move starts from and of the one it ends on (join: three nodes / four; drain: four / three).',
      'copied records: the moving replicas\' share of the records (each replica of a partition holds all of its keys).',
      '',
    ]
    process.stdout.write(lines.join('\n'))
  } finally {
    await cleanup()
  }
}

void main().catch((err) => {
  process.stderr.write(`bench:moves: ${(err as Error).stack ?? err}\n`)
  process.exit(2)
})
