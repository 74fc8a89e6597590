import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

/** Clock ticks per second of /proc's CPU times (getconf CLK_TCK; 100 on Linux almost always). */
const ticksPerSecond = ((): number => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout
  const ticks = Number(out?.trim())
  return Number.isInteger(ticks) && ticks > 0 ? ticks : 100
})()

/** CPU time (user + system, every thread) a process has used, in µs; undefined where /proc cannot say. */
export function processCpuMicros(pid: number): number | undefined {
  try {
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond
  } catch {
    return undefined
  }
}

/**
 * CPU used by this process and by `pids` since it was made, in µs: the cost of a run on a
 * machine whose cores the benchmark, its target's servers and everything else share. Undefined
 * when a server's CPU cannot be read (not Linux, or the process is gone).
 */
export class CpuMeter {
  private readonly self = process.cpuUsage()
  private readonly servers: (number | undefined)[]

  constructor(private readonly pids: readonly number[]) {
    this.servers = pids.map(processCpuMicros)
  }

  usedMicros(): { self: number; servers: number } | undefined {
    const self = process.cpuUsage(this.self)
    let servers = 0
    for (let i = 0; i < this.pids.length; i++) {
      const before = this.servers[i]
      const now = processCpuMicros(this.pids[i]!)
      if (before === undefined || now === undefined) return undefined
      servers += now - before
    }
    return { self: self.user + self.system, servers }
  }
}
