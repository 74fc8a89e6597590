import type { ChildProcess } from 'node:child_process'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { mkdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { connect, type ConnectOptions, type KumoClient } from '../../src/index.js'
import { spawnNode, stopChild, waitHealthy, type LocalNodeSpec } from '../../scripts/local-cluster.js'
import { tempDir, waitFor } from './cluster.js'
import { aptInstall, has, TestNetwork } from './netns.js'
import { RawKv } from './raw.js'

export interface HostNodeOptions {
  /** Runs the node under libfaketime with this offset, e.g. '+120s'. */
  faketime?: string
  /** Puts the node's data directory on a tmpfs of this many bytes (to fill it). */
  tmpfsBytes?: number
  args?: string[]
}

export interface HostClusterOptions {
  /** Arguments for every node. */
  args?: string[]
  nodes?: Record<string, HostNodeOptions>
  /** Extra hosts without a node (for clients run in a namespace of their own). */
  clientHosts?: string[]
  /**
   * Put a delaying relay (test/hosts/delay-relay.ts) in front of every node: peers and clients
   * reach it through the relay, whose delay setLatency() sets (none at first).
   */
  relays?: boolean
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const relayScript = path.join(repoRoot, 'test/hosts/delay-relay.ts')

/** The environment that runs a process with its wall clock shifted by `offset` (e.g. '+120s'). */
export function faketimeEnv(offset: string): Record<string, string> {
  if (!has('faketime') && !aptInstall('faketime')) throw new Error('faketime is not installed (apt-get install -y faketime)')
  // libfaketime preloaded into the process itself (the faketime command would run it as a child,
  // and the pid measured would be the wrapper's). The multi-threaded variant: LevelDB and libuv
  // have threads of their own. Only the wall clock is shifted: timers keep running on the real
  // monotonic clock.
  return { LD_PRELOAD: libfaketime(), FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' }
}

/** Where Debian's libfaketime package puts the library. */
function libfaketime(): string {
  const out = execFileSync('dpkg', ['-L', 'libfaketime'], { encoding: 'utf8' })
  const lib = out.split('\n').find((line) => line.endsWith('/libfaketimeMT.so.1'))
  if (lib === undefined) throw new Error('libfaketime is installed without libfaketimeMT.so.1')
  return lib
}

/** The port every node listens on, each in its own namespace, and its metrics port. */
export const hostPort = 7000
export const metricsPort = 9100

/**
 * Real node processes, one per test host (network namespace) on its own address, on one
 * bridge with the test process (the client side) in the root namespace. See TestNetwork.
 */
export class HostCluster {
  readonly children = new Map<string, ChildProcess>()
  readonly logs = new Map<string, string[]>()
  private readonly mounts: string[] = []

  private constructor(
    readonly net: TestNetwork,
    readonly specs: LocalNodeSpec[],
    readonly root: string,
    private readonly options: HostClusterOptions,
  ) {}

  static async start(count: number, options: HostClusterOptions = {}): Promise<HostCluster> {
    const ids = Array.from({ length: count }, (_, i) => `n${i + 1}`)
    const net = await TestNetwork.create([...ids, ...(options.clientHosts ?? [])])
    const root = await tempDir('kumo-hosts-')
    const specs = ids.map((id) => ({
      id,
      address: `${net.host(id).ip}:${hostPort}`,
      dataDir: path.join(root, id),
      ...(options.relays ? { listen: `${net.host(id).ip}:${hostPort + 1}` } : {}),
    }))
    const cluster = new HostCluster(net, specs, root, options)
    try {
      if (options.relays) for (const spec of specs) await cluster.startRelay(spec)
      for (const spec of specs) {
        const tmpfs = options.nodes?.[spec.id]?.tmpfsBytes
        await mkdir(spec.dataDir, { recursive: true })
        if (tmpfs !== undefined) {
          execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${tmpfs}`, 'tmpfs', spec.dataDir])
          cluster.mounts.push(spec.dataDir)
        }
      }
      for (const spec of specs) cluster.spawn(spec.id)
      await waitHealthy(specs, 60_000)
    } catch (err) {
      await cluster.close()
      throw err
    }
    return cluster
  }

  private readonly relays: ChildProcess[] = []

  private async startRelay(spec: LocalNodeSpec): Promise<void> {
    const relay = this.net.spawnIn(spec.id, [process.execPath, '--import', 'tsx', relayScript], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, KUMO_RELAY: JSON.stringify({ listen: spec.address, target: spec.listen }) },
      cwd: repoRoot,
    })
    this.relays.push(relay)
    const [message] = (await once(relay, 'message')) as [string]
    if (message !== 'listening') throw new Error(`relay for ${spec.id} did not start`)
  }

  /** Every message between hosts (and from clients) is delayed by delayMs ± jitterMs, each way. */
  async setLatency(delayMs: number, jitterMs = 0): Promise<void> {
    await Promise.all(
      this.relays.map(async (relay) => {
        const set = once(relay, 'message')
        relay.send({ delayMs, jitterMs })
        await set
      }),
    )
  }

  get seeds(): string[] {
    return this.specs.map((s) => s.address)
  }

  spec(id: string): LocalNodeSpec {
    const spec = this.specs.find((s) => s.id === id)
    if (spec === undefined) throw new Error(`no node ${id}`)
    return spec
  }

  spawn(id: string): ChildProcess {
    const spec = this.spec(id)
    const node = this.options.nodes?.[id] ?? {}
    const log = this.logs.get(id) ?? []
    this.logs.set(id, log)
    const launcher = ['ip', 'netns', 'exec', this.net.host(id).ns]
    const env: Record<string, string> = node.faketime === undefined ? {} : faketimeEnv(node.faketime)
    // --insecure: the test hosts' addresses are not loopback, but the network is one the test made and nobody else reaches.
    const args = ['--insecure', '--metrics-port', String(metricsPort), ...(this.options.args ?? []), ...(node.args ?? [])]
    const child = spawnNode(spec, this.seeds, args, (line) => {
      log.push(line)
      if (log.length > 5000) log.shift()
    }, env, launcher)
    this.children.set(id, child)
    return child
  }

  alive(id: string): boolean {
    const child = this.children.get(id)
    return child !== undefined && child.exitCode === null && child.signalCode === null
  }

  async kill(id: string): Promise<void> {
    const child = this.children.get(id)!
    if (!this.alive(id)) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }

  async stop(id: string): Promise<void> {
    await stopChild(this.children.get(id)!)
  }

  async restart(id: string): Promise<void> {
    this.spawn(id)
    await waitFor(`${id} to serve again`, async () => {
      const raw = new RawKv(this.spec(id).address)
      try {
        await raw.call('Topology', {})
        return true
      } finally {
        raw.close()
      }
    }, 30_000, 50)
  }

  /** Peak resident memory of each running node (VmHWM), in MiB. */
  async peakRssMiB(): Promise<Record<string, number>> {
    const out: Record<string, number> = {}
    for (const spec of this.specs) {
      const pid = this.children.get(spec.id)?.pid
      if (pid === undefined || !this.alive(spec.id)) continue
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN)
      if (Number.isFinite(kb)) out[spec.id] = Math.round(kb / 1024)
    }
    return out
  }

  /** The sum of a metric's samples on every running node whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    let total = 0
    for (const spec of this.specs) {
      if (!this.alive(spec.id)) continue
      const res = await fetch(`http://${this.net.host(spec.id).ip}:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) }).catch(() => undefined)
      if (res === undefined || !res.ok) continue
      for (const line of (await res.text()).split('\n')) {
        const m = /^(\w+)(?:\{([^}]*)\})? (\S+)$/.exec(line)
        if (m === null || m[1] !== name) continue
        const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]))
        if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3])
      }
    }
    return total
  }

  /**
   * Hints held anywhere in the cluster, as each running node reports. With `reachableOnly`, a
   * node that does not answer within a second (cut off) is left out instead of failing the call.
   */
  async hintsHeld(reachableOnly = false): Promise<number> {
    let total = 0
    for (const spec of this.specs) {
      if (!this.alive(spec.id)) continue
      const raw = new RawKv(spec.address)
      try {
        const topology = await raw.call('Topology', {}, reachableOnly ? 1000 : 10_000)
        for (const n of topology.nodes) total += Number(n.hintsHeld)
      } catch (err) {
        if (!reachableOnly) throw err
      } finally {
        raw.close()
      }
    }
    return total
  }

  client(options: Omit<ConnectOptions, 'seeds'> = {}): Promise<KumoClient> {
    return connect({ seeds: this.seeds, ...options })
  }

  /** The last lines a node logged (for a failing test's message). */
  tail(id: string, lines = 20): string {
    return (this.logs.get(id) ?? []).slice(-lines).join('\n')
  }

  async close(): Promise<void> {
    await this.net.heal().catch(() => undefined)
    await Promise.all([...this.children.values()].map((c) => stopChild(c, 5000)))
    for (const relay of this.relays) relay.kill()
    await this.net.close()
    for (const dir of this.mounts.splice(0)) {
      try {
        execFileSync('umount', ['-l', dir])
      } catch {
        // not mounted
      }
    }
    await rm(this.root, { recursive: true, force: true })
  }
}
