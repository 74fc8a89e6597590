import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import * as hdr from 'hdr-histogram-js'
import cliProgress from 'cli-progress'
import { LatestChooser, ScrambledZipfianChooser, UniformChooser, fnv64Limbs, seededRandom, type KeyChooser, type Random } from './distributions.js'
import { CpuMeter } from './cpu.js'
import { MemorySampler } from './memory.js'
import type { BenchTarget } from './targets.js'
import type { Workload } from './workloads.js'
import { withRetry } from '../src/index.js'

export interface RunConfig {
  records: number
  /** Stop after this many operations (0: no limit)... */
  operations: number
  /** ...or after this long, whichever comes first. */
  durationMs: number
  /**
   * Runs the workload this long before measuring it, so every target is measured warm (caches
   * filled, the previous run's compactions under way) rather than on its first seconds.
   */
  warmupMs: number
  concurrency: number
  valueBytes: number
  distribution: 'zipfian' | 'uniform'
  insertOrder: InsertOrder
  seed: number
  progress: boolean
}

export interface RunResult {
  target: string
  workload: string
  ops: number
  seconds: number
  opsPerSecond: number
  errors: number
  firstError?: string
  /** Latency per call in milliseconds. */
  p50: number
  p95: number
  p99: number
  p999: number
  max: number
  /**
   * CPU per operation, in µs: this process (client and benchmark) plus the target's server
   * processes on this machine; undefined for a cluster whose processes are not ours.
   */
  cpuMicrosPerOp?: number
  /** The part of cpuMicrosPerOp spent in the target's server processes. */
  serverCpuMicrosPerOp?: number
  /**
   * Peak resident memory of the largest server process during the run (this process's for an
   * in-process target), and its anonymous part, in MiB; undefined where it cannot be read.
   */
  peakRssMiB?: number
  peakAnonMiB?: number
  /** With --rounds: ops/s of every round, in order (the result is the median round). */
  roundsOpsPerSecond?: number[]
}

/**
 * How inserted keys are named, as YCSB's `insertorder`: `hashed` (YCSB's default) names record
 * i `user` + the hex of FNV-1a 64 of i, so consecutive inserts land all over the key space;
 * `ordered` names it `user` + i zero-padded, so inserts only ever append. An ordered insert is
 * LevelDB's cheapest case in the embedded store (new tables never overlap old ones) and no
 * cheaper in Kumo, which hashes keys to partitions anyway: with it, the two targets would not
 * be storing the same workload.
 */
export type InsertOrder = 'hashed' | 'ordered'

const hexDigits = Buffer.from('0123456789abcdef')
const keyLimbs = new Uint16Array(4)

/**
 * A record's key, named afresh each time it is used (~0.25 µs). Keys are not kept: the process
 * that loaded 2,000,000 records would hold 2,000,000 small Buffers (~180 MB of heap: 45.8 MB
 * measured at 500,000), and every full collection of the runs after the load would trace them,
 * charging the client's garbage collector for the benchmark's own bookkeeping. A benchmark
 * process started with --no-load kept none (bench/RESULTS.md, 2026-12-02 (third)).
 */
export function keyName(i: number, order: InsertOrder): Buffer {
  if (order === 'ordered') return Buffer.from(`user${String(i).padStart(10, '0')}`)
  // 'user' and 16 hex digits, highest limb first, written straight into the key.
  fnv64Limbs(i, keyLimbs)
  const key = Buffer.allocUnsafe(20)
  key.write('user', 0, 'latin1')
  for (let limb = 0; limb < 4; limb++) {
    const v = keyLimbs[3 - limb]!
    const at = 4 + 4 * limb
    key[at] = hexDigits[v >>> 12]!
    key[at + 1] = hexDigits[(v >>> 8) & 0xf]!
    key[at + 2] = hexDigits[(v >>> 4) & 0xf]!
    key[at + 3] = hexDigits[v & 0xf]!
  }
  return key
}


export function valuePool(bytes: number, count = 64): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(bytes))
}

/**
 * Loads `records` keys: through the target's own fast path when it has one (Kumo's db.load),
 * else with batches of 100, 16 in flight. Resolves the seconds it took and, where the target's
 * processes are known (not a cluster reached through --seeds), the CPU it cost in µs: this
 * process's and the servers'.
 */
export async function load(target: BenchTarget, records: number, values: Buffer[], order: InsertOrder, progress: boolean): Promise<{ seconds: number; cpu?: { self: number; servers: number } }> {
  const started = performance.now()
  // What loading costs in CPU (this process and the target's servers, every thread: LevelDB's
  // compactions included), to tell a load bound by the cores from one that waits.
  const cpu = target.pids !== undefined ? new CpuMeter(target.pids) : undefined
  const bar = progress ? new cliProgress.SingleBar({ format: `  load ${target.name.padEnd(10)} {bar} {percentage}% | {value}/{total} records`, hideCursor: true }, cliProgress.Presets.shades_classic) : undefined
  bar?.start(records, 0)
  let retried = 0
  if (target.load !== undefined) {
    function* entries(): Generator<[Buffer, Buffer]> {
      for (let i = 0; i < records; i++) yield [keyName(i, order), values[i % values.length]!]
    }
    retried = (await target.load(entries(), (loaded) => bar?.update(loaded))).retried
  } else {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < records) {
        const from = next
        next = Math.min(records, next + 100)
        const entries: [Buffer, Buffer][] = []
        for (let i = from; i < next; i++) entries.push([keyName(i, order), values[i % values.length]!])
        // A slow moment (a replica not answering in time, a node overloaded) must not abort a
        // load of millions of records: what is retryable is retried, for a minute at most.
        await withRetry(() => target.putMany(entries), { onRetry: () => retried++ })
        bar?.update(next)
      }
    }
    await Promise.all(Array.from({ length: 16 }, worker))
  }
  bar?.stop()
  if (retried > 0) process.stdout.write(`  load ${target.name}: ${retried} batches retried after a retryable error\n`)
  const used = cpu?.usedMicros()
  return { seconds: (performance.now() - started) / 1000, ...(used === undefined ? {} : { cpu: used }) }
}

export async function run(target: BenchTarget, workload: Workload, config: RunConfig, values: Buffer[], inserted: { count: number }): Promise<RunResult> {
  const random: Random = seededRandom(config.seed)
  const chooser: KeyChooser = workload.latest
    ? new LatestChooser(config.records, random)
    : config.distribution === 'zipfian'
      ? new ScrambledZipfianChooser(config.records, random)
      : new UniformChooser(random)
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 })
  let ops = 0
  let calls = 0
  let errors = 0
  let firstError: string | undefined
  const meter = (): CpuMeter | undefined => (target.pids !== undefined ? new CpuMeter(target.pids) : undefined)
  let cpu = meter()
  const memory = target.pids !== undefined ? new MemorySampler(target.pids) : undefined
  let started = performance.now()
  let deadline = started + config.warmupMs + config.durationMs
  let warming = config.warmupMs > 0
  // Measuring starts once the warm-up is over: what was counted until then is dropped.
  const warmup = warming
    ? setTimeout(() => {
        warming = false
        ops = 0
        calls = 0
        errors = 0
        firstError = undefined
        histogram.reset()
        cpu = meter()
        started = performance.now()
        deadline = started + config.durationMs
      }, config.warmupMs)
    : undefined
  const opsMax = config.operations > 0 ? config.operations : Infinity
  const bar = config.progress
    ? new cliProgress.SingleBar(
        { format: `  ${target.name.padEnd(10)} ${workload.name.padEnd(11)} {bar} {percentage}% | {rate}`, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : undefined
  bar?.start(100, 0, { rate: warming ? 'warming up' : '0 ops/s' })
  const ticker = setInterval(() => {
    const elapsed = performance.now() - started
    if (warming) bar?.update(0, { rate: 'warming up' })
    else bar?.update(Math.min(100, Math.floor((elapsed / config.durationMs) * 100)), { rate: `${Math.round(ops / (elapsed / 1000)).toLocaleString('en-US')} ops/s` })
  }, 250)

  // As in YCSB: reads and updates choose among the loaded records, so every target reads the
  // same key space whatever earlier runs inserted; only D ("latest") follows the inserts.
  const order = config.insertOrder
  const pick = (): Buffer => keyName(chooser.next(workload.latest ? inserted.count : config.records), order)
  const value = (): Buffer => values[(calls + ops) % values.length]!
  const one = async (): Promise<number> => {
    const r = random()
    let at = workload.read
    if (r < at) {
      await target.get(pick())
      return 1
    }
    if (r < (at += workload.update)) {
      await target.put(pick(), value())
      return 1
    }
    if (r < (at += workload.insert)) {
      await target.put(keyName(inserted.count++, order), value())
      return 1
    }
    if (r < (at += workload.scan)) {
      await target.scan(pick(), workload.scanKeys ?? 1 + Math.floor(random() * 100))
      return 1
    }
    const key = pick()
    await target.get(key)
    await target.put(key, value())
    return 1
  }
  const many = async (): Promise<number> => {
    if (workload.insert > 0) {
      const entries: [Buffer, Buffer][] = []
      for (let i = 0; i < workload.batch; i++) entries.push([keyName(inserted.count++, order), value()])
      await target.putMany(entries)
    } else {
      const keys: Buffer[] = []
      for (let i = 0; i < workload.batch; i++) keys.push(pick())
      await target.getMany(keys)
    }
    return workload.batch
  }
  const call = workload.batch > 1 ? many : one

  const worker = async (): Promise<void> => {
    while ((warming || ops < opsMax) && performance.now() < deadline) {
      const t0 = performance.now()
      try {
        // Not `ops += await call()`: that reads `ops` before the await and loses other workers' counts.
        const done = await call()
        ops += done
      } catch (err) {
        errors++
        firstError ??= `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`
      }
      calls++
      histogram.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)))
    }
  }
  await Promise.all(Array.from({ length: config.concurrency }, worker))
  clearTimeout(warmup)
  clearInterval(ticker)
  bar?.update(100, { rate: `${Math.round(ops / ((performance.now() - started) / 1000)).toLocaleString('en-US')} ops/s` })
  bar?.stop()
  const seconds = (performance.now() - started) / 1000
  const cpuMicros = cpu?.usedMicros()
  const peak = memory?.stop()
  const at = (p: number): number => histogram.getValueAtPercentile(p) / 1000
  const result: RunResult = {
    target: target.name,
    workload: workload.name,
    ops,
    seconds,
    opsPerSecond: ops / seconds,
    errors,
    p50: at(50),
    p95: at(95),
    p99: at(99),
    p999: at(99.9),
    max: histogram.maxValue / 1000,
  }
  if (firstError !== undefined) result.firstError = firstError
  if (peak !== undefined) {
    result.peakRssMiB = peak.rssMiB
    result.peakAnonMiB = peak.anonMiB
  }
  if (cpuMicros !== undefined && ops > 0) {
    result.cpuMicrosPerOp = (cpuMicros.self + cpuMicros.servers) / ops
    result.serverCpuMicrosPerOp = cpuMicros.servers / ops
  }
  return result
}

function cpuTimes(): { idle: number; total: number } {
  let idle = 0
  let total = 0
  for (const cpu of os.cpus()) {
    idle += cpu.times.idle
    total += cpu.times.user + cpu.times.nice + cpu.times.sys + cpu.times.irq + cpu.times.idle
  }
  return { idle, total }
}

/** Kilobytes written to block devices so far, by the whole machine (0 where /proc/vmstat is missing). */
function diskWrittenKiB(): number {
  try {
    const line = readFileSync('/proc/vmstat', 'latin1').split('\n').find((l) => l.startsWith('pgpgout '))
    return line === undefined ? 0 : Number(line.slice(8))
  } catch {
    return 0
  }
}

/**
 * Waits until the machine is quiet, for at most `timeoutMs`, so one run's leftovers — LevelDB
 * compacting what a load or a write run wrote, in this process or a node's — are not charged to
 * the next run, whichever target that is. Quiet: over two half-seconds in a row, at least
 * `idleMin` of all cores idle and under 4 MiB/s written to disk. Compaction alternates bursts
 * of CPU with bursts of writes, so CPU alone passes between two bursts. Resolves whether it got
 * quiet in time.
 */
export async function settle(timeoutMs = 15_000, idleMin = 0.85): Promise<boolean> {
  const deadline = performance.now() + timeoutMs
  const sampleMs = 500
  let before = cpuTimes()
  let writtenBefore = diskWrittenKiB()
  let quietSamples = 0
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, sampleMs))
    const after = cpuTimes()
    const writtenAfter = diskWrittenKiB()
    const total = after.total - before.total
    const idle = total > 0 && (after.idle - before.idle) / total >= idleMin
    const diskQuiet = writtenAfter - writtenBefore < (4 * 1024 * sampleMs) / 1000
    quietSamples = idle && diskQuiet ? quietSamples + 1 : 0
    if (quietSamples >= 2) return true
    before = after
    writtenBefore = writtenAfter
  }
  return false
}

/**
 * One result per (target, workload): the round with the median throughput (the lower middle of
 * an even count), carrying every round's throughput. A median, not a mean: one round disturbed
 * by something else on the machine should not move the figure.
 */
export function medianRounds(rounds: readonly RunResult[][]): RunResult[] {
  if (rounds.length === 1) return [...rounds[0]!]
  return rounds[0]!.map((first) => {
    const all = rounds.map((round) => round.find((r) => r.target === first.target && r.workload === first.workload)!)
    const sorted = [...all].sort((a, b) => a.opsPerSecond - b.opsPerSecond)
    return { ...sorted[Math.floor((sorted.length - 1) / 2)]!, roundsOpsPerSecond: all.map((r) => r.opsPerSecond) }
  })
}
