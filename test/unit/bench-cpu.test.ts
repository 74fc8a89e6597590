import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { expect, it } from 'vitest'
import { CpuMeter } from '../../bench/cpu.js'

it.runIf(process.platform === 'linux')('the benchmark counts the CPU its target servers use', { timeout: 20_000 }, async () => {
  // A server that spins for 300 ms of CPU, then waits to be stopped.
  const server = spawn(process.execPath, ['-e', 'const end = process.cpuUsage().user + 300e3; while (process.cpuUsage().user < end); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] })
  try {
    const meter = new CpuMeter([server.pid!])
    // Wait for the spin to be over: the server's CPU stops growing.
    let last = -1
    for (;;) {
      await new Promise((r) => setTimeout(r, 100))
      const used = meter.usedMicros()!
      if (used.servers >= 150e3 && used.servers === last) break
      last = used.servers
    }
    const used = meter.usedMicros()!
    expect(used.servers).toBeGreaterThanOrEqual(150e3)
    expect(used.servers).toBeLessThan(2e6)
    expect(used.self).toBeGreaterThanOrEqual(0)
  } finally {
    server.kill()
    await once(server, 'exit')
  }
  // A process that is gone cannot be measured: no figure rather than a wrong one.
  expect(new CpuMeter([server.pid!]).usedMicros()).toBeUndefined()
})
