import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { expect, it } from 'vitest'
import { CpuMeter } from '../../bench/cpu.js'

/**
 * A server that, once told to, spins for 300 ms of user CPU and reports what its own
 * process.cpuUsage() says the spin cost (user + system), then idles until it is stopped.
 */
const spinner = `
process.on('message', () => {
  const start = process.cpuUsage()
  while (process.cpuUsage(start).user < 300e3);
  const used = process.cpuUsage(start)
  process.send(used.user + used.system)
})
process.send('ready')
setInterval(() => {}, 1000)
`

it.runIf(process.platform === 'linux')('the benchmark counts the CPU its target servers use, as the servers themselves count it', { timeout: 20_000 }, async () => {
  const server = spawn(process.execPath, ['-e', spinner], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] })
  try {
    // Node's start-up is not part of what is measured: the meter starts once the server is ready.
    const [ready] = (await once(server, 'message')) as [unknown]
    expect(ready).toBe('ready')
    const meter = new CpuMeter([server.pid!])
    server.send('go')
    const [reportedMicros] = (await once(server, 'message')) as [number]
    const used = meter.usedMicros()!
    // /proc counts in clock ticks (10 ms), and the server's IPC handling is outside its own
    // figure: the two agree to a few ticks, whatever else the machine is doing.
    expect(reportedMicros).toBeGreaterThanOrEqual(300e3)
    expect(Math.abs(used.servers - reportedMicros)).toBeLessThanOrEqual(50e3 + 0.1 * reportedMicros)
    expect(used.self).toBeGreaterThanOrEqual(0)
  } finally {
    server.kill()
    await once(server, 'exit')
  }
  // A process that is gone cannot be measured: no figure rather than a wrong one.
  expect(new CpuMeter([server.pid!]).usedMicros()).toBeUndefined()
})
