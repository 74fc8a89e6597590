import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { appendFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ConnectOptions } from '../../src/index.js'
import type { TestNetwork } from './netns.js'
import type { WorkloadOptions, WorkloadReport } from './workload.js'

const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../hosts/load-client.ts')

/** A Workload run by a client process on a test host of its own (test/hosts/load-client.ts). */
export class RemoteWorkload {
  acked = 0
  failed = 0
  private readonly child: ChildProcess
  private final: Promise<{ report: WorkloadReport; keys: string[] }>
  private readonly output: string[] = []

  constructor(net: TestNetwork, host: string, connect: ConnectOptions, load: WorkloadOptions, env: Record<string, string> = {}) {
    this.child = net.spawnIn(host, [process.execPath, '--import', 'tsx', script], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, ...env, KUMO_LOAD: JSON.stringify({ connect, load }) },
      cwd: path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..'),
    })
    // With KUMO_TRACE set, the client's traces are kept in a file for reading after the run.
    const trace = process.env.KUMO_TRACE ? path.join(os.tmpdir(), `kumo-remote-${host}.log`) : undefined
    if (trace !== undefined) writeFileSync(trace, '')
    for (const stream of [this.child.stdout, this.child.stderr]) {
      stream?.on('data', (chunk: Buffer) => {
        this.output.push(chunk.toString())
        if (this.output.length > 200) this.output.shift()
        if (trace !== undefined) appendFileSync(trace, chunk)
      })
    }
    this.final = new Promise((resolve, reject) => {
      this.child.on('message', (message: { acked?: number; failed?: number; report?: WorkloadReport; keys?: string[] }) => {
        if (message.report !== undefined) resolve({ report: message.report, keys: message.keys ?? [] })
        else {
          this.acked = message.acked ?? this.acked
          this.failed = message.failed ?? this.failed
        }
      })
      this.child.once('exit', (code) => reject(new Error(`load client exited (${code}) before its report: ${this.output.join('').slice(-2000)}`)))
    })
    this.final.catch(() => undefined)
  }

  /** Waits until it has `count` acknowledged writes in all. */
  async reached(count: number, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (this.acked < count) {
      if (Date.now() > deadline || this.child.exitCode !== null) throw new Error(`load client: ${this.acked} of ${count} writes acknowledged: ${this.output.join('').slice(-2000)}`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }

  /** Marks when the fault began and ended, for the report's timings. */
  mark(event: 'fault' | 'heal'): void {
    if (this.child.exitCode === null) this.child.send(event)
  }

  async stop(): Promise<{ report: WorkloadReport; keys: string[] }> {
    if (this.child.exitCode === null) this.child.send('stop')
    const result = await this.final
    if (this.child.exitCode === null) await once(this.child, 'exit')
    return result
  }

  kill(): void {
    this.child.kill('SIGKILL')
  }
}
