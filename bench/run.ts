import { writeFile } from 'node:fs/promises'
import os from 'node:os'
import { Command, InvalidArgumentError, Option } from 'commander'
import { load, medianRounds, run, settle, valuePool, type InsertOrder, type RunConfig, type RunResult } from './runner.js'
import { coordinatedBy, embeddedTarget, kumoLocalTarget, kumoTarget, tempRoot, type BenchTarget } from './targets.js'
import { coordinationModes, type Coordination } from '../src/client/client.js'
import { fullSet, quickSet, workloads, type WorkloadName } from './workloads.js'
import { rm } from 'node:fs/promises'
import { formatTable } from './report.js'
import { installed, redisClusterTarget } from './redis.js'

function wholeNumber(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number')
  return n
}

function positiveNumber(value: string): number {
  const n = wholeNumber(value)
  if (n < 1) throw new InvalidArgumentError('must be 1 or more')
  return n
}

/** How long the benchmark waits at most for the machine to get quiet after a load. */
const loadSettleMs = 180_000

const program = new Command()
  .name('npm run bench --')
  .description(
    'Read/write benchmarks. With no --seeds it measures, one after another on this machine:\n' +
      '  embedded  classic-level in this process (the ceiling)\n' +
      '  kumo-1    one Kumo node, N=1\n' +
      '  kumo-3    three Kumo nodes, N=3, quorum reads and writes\n' +
      '  kumo-1-tls, kumo-3-tls: the same with TLS and authentication (--tls adds them)\n' +
      'Each workload runs on every target one after another (after the machine is quiet), and\n' +
      'prints a table with the ratio of kumo-3 to embedded.',
  )
  .addOption(
    new Option('--profile <name>', "a preset: 'large' is data larger than the caches (2,000,000 records of 1,000 bytes, uniform keys; workloads read, batch-read, E, scan, write on embedded and kumo-3); options given beside it win")
      .choices(['default', 'large'])
      .default('default'),
  )
  .option('--seeds <hosts>', 'measure a running cluster instead (comma-separated host:port)')
  .option('--quick', 'a run of under a minute: fewer records, shorter runs, fewer workloads')
  .option('--workload <names>', `comma-separated: ${fullSet.join(', ')} (default: all; --quick: ${quickSet.join(', ')})`)
  .option('--targets <names>', 'comma-separated: embedded, kumo-1, kumo-3, kumo-1-tls, kumo-3-tls', 'embedded,kumo-1,kumo-3')
  .option('--tls', 'also measure each kumo target with TLS and authentication on (kumo-N-tls), beside the plain one')
  .option('--records <n>', 'records loaded before the runs', wholeNumber)
  .option('--operations <n>', 'operations per run at most (0: time-bound only)', wholeNumber, 0)
  .option('--duration <s>', 'seconds per run', positiveNumber)
  .option('--warmup <s>', 'seconds each run runs before it is measured (default 3; --quick: 0)', wholeNumber)
  .option('--concurrency <n>', 'requests in flight', wholeNumber, 64)
  .option('--rounds <n>', 'run every workload on every target this many times; report the median', positiveNumber, 1)
  .option('--batch-concurrency <n>', 'batch/getMany calls in flight (each of 100 operations)', wholeNumber, 8)
  .option('--value-size <bytes>', 'value size (YCSB uses 1000)', wholeNumber, 100)
  .addOption(new Option('--distribution <d>', 'key choice').choices(['zipfian', 'uniform']).default('zipfian'))
  .addOption(new Option('--insert-order <o>', "inserted keys' names: hashed (YCSB's default) or ordered (ascending)").choices(['hashed', 'ordered']).default('hashed'))
  .option('--seed <n>', 'random seed', wholeNumber, 42)
  .addOption(
    new Option('--coordination <mode>', "who coordinates the kumo targets' reads and writes: client (the client library's default: one hop to every replica) or node (each request to one node, which asks the replicas)")
      .choices([...coordinationModes])
      .default('client'),
  )
  .addOption(new Option('--peer <system>', 'also run the same workloads against a system people know').choices(['redis']))
  .option('--no-load', 'with --seeds: the cluster already holds the records (an earlier run with the same --records, --value-size and --insert-order loaded them); measure without loading')
  .option('--no-compact', 'measure right after the load, without compacting each target\'s storage first (embedded: compactRange; Kumo: kumo compact on every node)')
  .option('--json <file>', 'write the results as JSON')
  .option('--no-progress', 'no progress bars')
  .parse()

interface Options {
  profile: string
  compact: boolean
  load: boolean
  seeds?: string
  quick?: boolean
  workload?: string
  targets: string
  records?: number
  operations: number
  duration?: number
  warmup?: number
  concurrency: number
  valueSize: number
  distribution: 'zipfian' | 'uniform'
  insertOrder: InsertOrder
  seed: number
  json?: string
  progress: boolean
  peer?: 'redis'
  batchConcurrency: number
  rounds: number
  tls?: boolean
  coordination: Coordination
}
/**
 * Presets of --profile: option values used where the command line does not give one. 'large'
 * is the run of issue #18: data several times larger than LevelDB's block cache and the row
 * cache, read with a uniform key choice, as real data is.
 */
const profiles: Record<string, Partial<Options>> = {
  default: {},
  // Reads first, each on the store as the load and `kumo compact` left it; the write run last,
  // since the compactions it leaves would be charged to whatever runs after it.
  large: { records: 2_000_000, valueSize: 1000, distribution: 'uniform', duration: 10, warmup: 3, workload: 'read,batch-read,E,scan,write', targets: 'embedded,kumo-3' },
}
const opts = program.opts<Options>()
for (const [name, value] of Object.entries(profiles[opts.profile] ?? {})) {
  const source = program.getOptionValueSource(name)
  if (source === undefined || source === 'default') (opts as unknown as Record<string, unknown>)[name] = value
}

async function main(): Promise<void> {
  if (!opts.load && !opts.seeds) throw new InvalidArgumentError('--no-load needs --seeds: the targets this command starts are empty')
  const names = (opts.workload?.split(',').map((s) => s.trim()) ?? (opts.quick ? quickSet : fullSet)) as WorkloadName[]
  for (const name of names) if (!(name in workloads)) throw new InvalidArgumentError(`unknown workload ${name}`)
  const records = opts.records ?? (opts.quick ? 20_000 : 200_000)
  const config: RunConfig = {
    records,
    operations: opts.operations,
    durationMs: (opts.duration ?? (opts.quick ? 2 : 10)) * 1000,
    warmupMs: (opts.warmup ?? (opts.quick ? 0 : 3)) * 1000,
    concurrency: opts.concurrency,
    valueBytes: opts.valueSize,
    distribution: opts.distribution,
    insertOrder: opts.insertOrder,
    seed: opts.seed,
    progress: opts.progress && process.stdout.isTTY === true,
  }
  const values = valuePool(config.valueBytes)
  const root = await tempRoot()
  const results: RunResult[] = []
  const targetNames = opts.seeds ? ['cluster'] : opts.targets.split(',').map((s) => s.trim())
  if (opts.tls && !opts.seeds) {
    for (const plain of ['kumo-1', 'kumo-3']) if (targetNames.includes(plain) && !targetNames.includes(`${plain}-tls`)) targetNames.splice(targetNames.indexOf(plain) + 1, 0, `${plain}-tls`)
  }
  if (opts.peer === 'redis') {
    if (installed('redis-server') && installed('redis-cli')) targetNames.push('redis-3')
    else process.stdout.write('note: --peer redis skipped: redis-server and redis-cli are not installed (Debian: apt-get install redis-server)\n')
  }
  process.stdout.write(
    `Kumo benchmark: ${records} records, ${config.valueBytes}-byte values, ${config.distribution}, ${config.insertOrder} inserts, ${config.concurrency} in flight, ${config.durationMs / 1000} s per run after ${config.warmupMs / 1000} s of warm-up\n` +
      `machine: ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}\n`,
  )
  const open: { target: BenchTarget; inserted: { count: number } }[] = []
  try {
    // Every target is opened and loaded first; then each workload runs on every target one
    // after another, so the runs a ratio compares are seconds apart, not minutes.
    for (const name of targetNames) {
      let target: BenchTarget
      const coordination = opts.coordination
      if (opts.seeds) target = await kumoTarget('cluster', `running cluster at ${opts.seeds}${coordinatedBy(coordination)}`, opts.seeds.split(','), {}, coordination)
      else if (name === 'embedded') target = await embeddedTarget(root)
      else if (name === 'kumo-1') target = await kumoLocalTarget(root, 'kumo-1', 1, 1, false, coordination)
      else if (name === 'kumo-3') target = await kumoLocalTarget(root, 'kumo-3', 3, 3, false, coordination)
      else if (name === 'kumo-1-tls') target = await kumoLocalTarget(root, 'kumo-1-tls', 1, 1, true, coordination)
      else if (name === 'kumo-3-tls') target = await kumoLocalTarget(root, 'kumo-3-tls', 3, 3, true, coordination)
      else if (name === 'redis-3') target = await redisClusterTarget(root)
      else throw new InvalidArgumentError(`unknown target ${name}`)
      open.push({ target, inserted: { count: records } })
      process.stdout.write(`\n${target.name}: ${target.description}\n`)
      if (!opts.load) {
        process.stdout.write(`  not loaded (--no-load): the cluster is taken to hold ${records} records\n`)
        continue
      }
      const loaded = await load(target, records, values, config.insertOrder, config.progress)
      const cpu = loaded.cpu
      const servers = cpu !== undefined && target.pids !== undefined && target.pids.length > 0 ? ` (servers ${(cpu.servers / records).toFixed(1)})` : ''
      const cost = cpu === undefined || records === 0 ? '' : `, CPU ${((cpu.self + cpu.servers) / records).toFixed(1)} µs a record${servers}, ${((cpu.self + cpu.servers) / 1e6 / loaded.seconds).toFixed(2)} cores`
      const rate = records === 0 || loaded.seconds === 0 ? '' : ` (${Math.round(records / loaded.seconds).toLocaleString('en-US')} records/s${cost})`
      process.stdout.write(`  loaded ${records} records in ${loaded.seconds.toFixed(1)} s${rate}\n`)
      // A load leaves LevelDB compactions to do, the more the more it wrote (N copies on this one
      // machine): the next target's load, or the first workload, would pay for them. Reads
      // through the overlapping files of a fresh load also start compactions of their own.
      if (opts.compact && target.compact !== undefined) {
        const compactStart = performance.now()
        await target.compact()
        process.stdout.write(`  compacted in ${((performance.now() - compactStart) / 1000).toFixed(1)} s\n`)
      }
      const settleStart = performance.now()
      const quiet = await settle(loadSettleMs)
      process.stdout.write(`  ${quiet ? 'compactions done' : 'still compacting'} ${((performance.now() - settleStart) / 1000).toFixed(1)} s after the load\n`)
    }
    const rounds: RunResult[][] = []
    for (let round = 1; round <= opts.rounds; round++) {
      process.stdout.write(opts.rounds > 1 ? `\nround ${round} of ${opts.rounds}\n` : '\n')
      const thisRound: RunResult[] = []
      for (const workloadName of names) {
        const workload = workloads[workloadName]
        for (const { target, inserted } of open) {
          if (workload.scan > 0 && target.name === 'redis-3') continue
          if (!(await settle())) process.stdout.write('  note: the machine did not get quiet within 15 s; running anyway\n')
          const result = await run(target, workload, workload.batch > 1 ? { ...config, concurrency: opts.batchConcurrency } : config, values, inserted)
          thisRound.push(result)
          if (!config.progress) {
            process.stdout.write(`  ${target.name.padEnd(9)} ${workloadName.padEnd(11)} ${Math.round(result.opsPerSecond).toLocaleString('en-US')} ops/s, p99 ${result.p99.toFixed(2)} ms${result.cpuMicrosPerOp === undefined ? '' : `, cpu ${result.cpuMicrosPerOp.toFixed(1)} µs/op`}${result.errors ? `, ${result.errors} errors (${result.firstError})` : ''}\n`)
          }
        }
      }
      rounds.push(thisRound)
    }
    // The table reads by target, as each target's workloads in the order they ran.
    const targetOrder = open.map(({ target }) => target.name)
    results.push(...medianRounds(rounds).sort((a, b) => targetOrder.indexOf(a.target) - targetOrder.indexOf(b.target)))
  } finally {
    for (const { target } of open) await target.close().catch((err: unknown) => process.stderr.write(`bench: closing ${target.name}: ${(err as Error).message}\n`))
    await rm(root, { recursive: true, force: true })
  }
  process.stdout.write(`\n${formatTable(results)}\n`)
  if (opts.json) {
    await writeFile(
      opts.json,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: { cores: os.cpus().length, memoryGiB: os.totalmem() / 2 ** 30, node: process.version },
          config: { ...config, workloads: names, targets: targetNames, coordination: opts.coordination },
          results,
        },
        null,
        2,
      ),
    )
    process.stdout.write(`results written to ${opts.json}\n`)
  }
}

main().catch((err) => {
  process.stderr.write(`bench: ${(err as Error).message}\n`)
  process.exit(1)
})
