import type { ChildProcess } from 'node:child_process'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { connect, type ConnectOptions, type KumoClient } from '../../src/index.js'
import * as grpc from '@grpc/grpc-js'
import { makeLocalSecurity, spawnNode, stopChild, waitHealthy, type LocalNodeSpec, type LocalSecurity } from '../../scripts/local-cluster.js'
import { userCallCredentials } from '../../src/wire/channel-security.js'

/**
 * KUMO_TEST_SECURE=1 runs every process cluster with TLS and authentication (npm test runs
 * the fault suite so too): clients connect as an admin user over TLS.
 */
export const secureByDefault = process.env.KUMO_TEST_SECURE === '1'
import { freePort, tempDir, waitFor } from './cluster.js'
import { RawKv } from './raw.js'

/** A cluster of real node processes (the compiled CLI) on loopback ports and temp dirs. */
export class ProcessCluster {
  readonly children = new Map<string, ChildProcess>()
  readonly logs = new Map<string, string[]>()
  private constructor(
    readonly specs: LocalNodeSpec[],
    readonly root: string,
    private readonly extraArgs: string[],
    readonly security: LocalSecurity | undefined,
  ) {}

  readonly env = new Map<string, Record<string, string>>()

  static async start(count = 3, extraArgs: string[] = [], env: Record<string, Record<string, string>> = {}, secure = secureByDefault): Promise<ProcessCluster> {
    const root = await tempDir('kumo-proc-')
    const ports = await Promise.all(Array.from({ length: count }, () => freePort()))
    const specs = ports.map((port, i) => ({ id: `n${i + 1}`, address: `127.0.0.1:${port}`, dataDir: path.join(root, `node${i + 1}`) }))
    const security = secure ? await makeLocalSecurity(path.join(root, 'tls'), specs.map((s) => s.id)) : undefined
    const cluster = new ProcessCluster(specs, root, ['--gossip-interval', '200', ...extraArgs], security)
    for (const [id, vars] of Object.entries(env)) cluster.env.set(id, vars)
    for (const spec of specs) cluster.spawn(spec.id)
    await waitHealthy(specs, 30_000, () => true, security)
    return cluster
  }

  /** A raw Kv client to a node, with the cluster's TLS and admin credentials when it has them. */
  raw(id: string): RawKv {
    const address = this.spec(id).address
    if (this.security === undefined) return new RawKv(address)
    const { tls, credentials } = this.security.client
    const ssl = grpc.credentials.createSsl(tls.ca as Buffer, null, null, { checkServerIdentity: () => undefined })
    return new RawKv(address, grpc.credentials.combineChannelCredentials(ssl, userCallCredentials(credentials)), { 'grpc.ssl_target_name_override': 'kumo-node' })
  }

  /** Starts one more node (a new spec on a free port) with `args`; it is not waited for. */
  async add(id: string, args: string[] = []): Promise<void> {
    const port = await freePort()
    this.specs.push({ id, address: `127.0.0.1:${port}`, dataDir: path.join(this.root, id) })
    this.extraArgsOf.set(id, args)
    if (this.security !== undefined) await this.security.addNode(id)
    this.spawn(id)
  }

  private readonly extraArgsOf = new Map<string, string[]>()

  get seeds(): string[] {
    return this.specs.map((s) => s.address)
  }

  spec(id: string): LocalNodeSpec {
    return this.specs.find((s) => s.id === id)!
  }

  /** Starts node `id` (again); with `args`, those replace the extra arguments it was added with. */
  spawn(id: string, args?: string[]): ChildProcess {
    if (args !== undefined) this.extraArgsOf.set(id, args)
    const spec = this.spec(id)
    const log = this.logs.get(id) ?? []
    this.logs.set(id, log)
    const child = spawnNode(spec, this.seeds, [...this.extraArgs, ...(this.extraArgsOf.get(id) ?? []), ...(this.security?.nodeArgs(id) ?? [])], (line) => {
      log.push(line)
      if (log.length > 200) log.shift()
    }, this.env.get(id) ?? {})
    this.children.set(id, child)
    return child
  }

  /** kill -9: no goodbye, no flush. */
  async kill(id: string): Promise<void> {
    const child = this.children.get(id)!
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }

  async stop(id: string): Promise<void> {
    await stopChild(this.children.get(id)!)
  }

  /** Starts a stopped node again and waits until it serves. */
  async restart(id: string): Promise<void> {
    this.spawn(id)
    await waitFor(`${id} to serve again`, async () => {
      const raw = this.raw(id)
      try {
        await raw.call('Topology', {})
        return true
      } finally {
        raw.close()
      }
    }, 20_000, 50)
  }

  async wipe(id: string): Promise<void> {
    await rm(this.spec(id).dataDir, { recursive: true, force: true })
  }

  /** Hints held anywhere in the cluster, as each live node reports. */
  async hintsHeld(): Promise<number> {
    let total = 0
    for (const spec of this.specs) {
      const child = this.children.get(spec.id)
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) continue
      const raw = this.raw(spec.id)
      try {
        const topology = await raw.call('Topology', {})
        for (const n of topology.nodes) total += Number(n.hintsHeld)
      } finally {
        raw.close()
      }
    }
    return total
  }

  /** Values of `keys` in one node's own storage (consistency one, read locally). */
  async localValues(id: string, keys: string[]): Promise<(string | undefined)[]> {
    const raw = this.raw(id)
    try {
      const out: (string | undefined)[] = []
      for (let i = 0; i < keys.length; i += 1000) {
        const res = await raw.call('GetMany', { keys: keys.slice(i, i + 1000).map((k) => Buffer.from(k)), consistency: 'one' })
        for (const v of res.values) out.push(v.found ? v.value.toString() : undefined)
      }
      return out
    } finally {
      raw.close()
    }
  }

  client(options: Omit<ConnectOptions, 'seeds'> = {}): Promise<KumoClient> {
    return connect({ seeds: this.seeds, ...(this.security?.client ?? {}), ...options })
  }

  async close(): Promise<void> {
    await Promise.all([...this.children.values()].map((c) => stopChild(c, 5000)))
    await rm(this.root, { recursive: true, force: true })
  }
}

export interface WriteLoad {
  acked: string[]
  failures: { key: string; error: string }[]
  /** True once the load has started `maxWrites` writes and so writes no more: a test that waits for more writes must not wait for these. */
  readonly capped: boolean
  stop(): Promise<void>
}

/**
 * Writes unique keys continuously with `concurrency` in flight until stopped (or `maxWrites`).
 * The cap bounds the test's memory; a long test on a fast machine can reach it (the five-change
 * membership test writes ~2,500/s for 80 s), so waits for "more writes" check `capped`.
 */
export function writeLoad(db: KumoClient, prefix: string, concurrency = 16, maxWrites = 1_000_000): WriteLoad {
  const acked: string[] = []
  const failures: { key: string; error: string }[] = []
  let running = true
  let next = 0
  const worker = async (): Promise<void> => {
    while (running && next < maxWrites) {
      const key = `${prefix}${String(next++).padStart(7, '0')}`
      try {
        await db.put(key, `value-of-${key}`)
        acked.push(key)
      } catch (err) {
        failures.push({ key, error: `${(err as { code?: string }).code}: ${(err as Error).message}` })
      }
    }
  }
  const workers = Array.from({ length: concurrency }, worker)
  return {
    acked,
    failures,
    get capped() {
      return next >= maxWrites
    },
    async stop() {
      running = false
      await Promise.all(workers)
    },
  }
}

/** Waits until `load` has acknowledged `more` writes past `after`; fails at once if the load reached its cap instead. */
export async function moreWrites(load: WriteLoad, after: number, more: number, timeoutMs: number, what = 'writes'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (load.acked.length <= after + more) {
    if (load.capped) throw new Error(`waiting for ${more} more ${what}: the write load reached its cap after ${load.acked.length} acknowledged writes (raise its maxWrites)`)
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${more} more ${what} (${load.acked.length - after} in ${timeoutMs} ms)`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

export interface ReadLoad {
  count: number
  failures: string[]
  stop(): Promise<void>
}

/** Reads keys the write load has acknowledged, one at a time, until stopped; a stale or missing value is a failure. */
export function readLoad(db: KumoClient, writes: WriteLoad): ReadLoad {
  let running = true
  const load: ReadLoad = {
    count: 0,
    failures: [],
    async stop() {
      running = false
      await reader
    },
  }
  const reader = (async () => {
    while (running) {
      const key = writes.acked[Math.floor(Math.random() * writes.acked.length)]
      if (key === undefined) {
        await new Promise((r) => setTimeout(r, 5))
        continue
      }
      try {
        if ((await db.get(key))?.toString() !== `value-of-${key}`) load.failures.push(`stale ${key}`)
      } catch (err) {
        load.failures.push(String(err))
      }
      load.count++
    }
  })()
  return load
}
