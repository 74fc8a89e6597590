import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { ClassicLevel } from 'classic-level'
import { connect, type ConnectOptions, type Coordination, type KumoClient } from '../src/index.js'
import { compactFully } from '../src/storage/full-compaction.js'
import { levelOptions } from '../src/storage/classic-level-engine.js'
import { storedKeyBounds } from '../src/storage/keys.js'
import { nodeCacheSizes, nodeOpenTables } from '../src/node/node.js'
import { freePort, makeLocalSecurity, spawnNode, stopChild, waitHealthy, type LocalNodeSpec } from '../scripts/local-cluster.js'

/** What a benchmark drives: the same operations on every system measured. */
export interface BenchTarget {
  readonly name: string
  readonly description: string
  put(key: Buffer, value: Buffer): Promise<unknown>
  get(key: Buffer): Promise<unknown>
  /** Reads up to `count` entries from `start` in key order; resolves how many it read. */
  scan(start: Buffer, count: number): Promise<number>
  putMany(entries: [Buffer, Buffer][]): Promise<unknown>
  /**
   * Loads records the target's own fast way (Kumo: db.load), telling of progress; resolves the
   * batches retried. Absent: the benchmark loads with putMany.
   */
  load?(records: Iterable<[Buffer, Buffer]>, onProgress: (loaded: number) => void): Promise<{ retried: number }>
  /** Compacts the target's storage (every node's), when it has storage to compact. */
  compact?(): Promise<unknown>
  getMany(keys: Buffer[]): Promise<unknown>
  /**
   * Server processes on this machine doing the target's work, whose CPU is counted with this
   * process's: empty when all of it runs in this process, absent when it is not known (a
   * running cluster reached through its seeds).
   */
  readonly pids?: readonly number[]
  close(): Promise<void>
}

export async function tempRoot(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'kumo-bench-'))
}

/** (a) The ceiling: classic-level in this process. No network, no replication, no versions. */
export async function embeddedTarget(root: string): Promise<BenchTarget> {
  const dir = path.join(root, 'embedded')
  // The same LevelDB settings as a Kumo node's storage, and as much cache: a node's block cache
  // and row cache together, all of it as block cache (embedded has no row cache); as many table
  // files kept open as a node keeps.
  const caches = nodeCacheSizes()
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', ...levelOptions, cacheSize: caches.blockCacheBytes + caches.rowCacheBytes, maxOpenFiles: nodeOpenTables() })
  await db.open()
  return {
    name: 'embedded',
    description: 'classic-level in the benchmark process (no network, no replication)',
    put: (key, value) => db.put(key, value),
    get: (key) => db.get(key),
    async scan(start, count) {
      const entries = await db.iterator({ gte: start, limit: count }).all()
      return entries.length
    },
    putMany: (entries) => db.batch(entries.map(([key, value]) => ({ type: 'put' as const, key, value }))),
    getMany: (keys) => db.getMany(keys),
    // The benchmark's keys ('user' and digits) lie within the bounds of Kumo's stored keys.
    compact: () => compactFully(db, storedKeyBounds.start, storedKeyBounds.end),
    pids: [],
    async close() {
      await db.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}


/** A Kumo cluster of `nodes` node processes with N = `replicas`, started for the run. */
export async function kumoLocalTarget(root: string, name: string, nodes: number, replicas: number, secure = false, coordination: Coordination = 'client'): Promise<BenchTarget> {
  const ports = await Promise.all(Array.from({ length: nodes }, () => freePort()))
  const specs: LocalNodeSpec[] = ports.map((port, i) => ({ id: `n${i + 1}`, address: `127.0.0.1:${port}`, dataDir: path.join(root, name, `node${i + 1}`) }))
  const seeds = specs.map((s) => s.address)
  // TLS between every pair and to the client, and a user authenticated by password.
  const security = secure ? await makeLocalSecurity(path.join(root, name, 'tls'), specs.map((s) => s.id)) : undefined
  const children: ChildProcess[] = specs.map((spec) =>
    spawnNode(spec, seeds, ['--replicas', String(replicas), '--log-level', 'error', '--repair-interval', '0', ...(security?.nodeArgs(spec.id) ?? [])]),
  )
  try {
    await waitHealthy(specs, 30_000, () => true, security)
  } catch (err) {
    await Promise.all(children.map((c) => stopChild(c)))
    throw err
  }
  const target = await kumoTarget(name, `${nodes} node${nodes > 1 ? 's' : ''}, N=${replicas}, quorum${secure ? ', TLS and authentication' : ''}${coordinatedBy(coordination)}`, seeds, security?.client, coordination)
  return {
    ...target,
    pids: children.map((c) => c.pid).filter((pid): pid is number => pid !== undefined),
    async close() {
      await target.close()
      await Promise.all(children.map((c) => stopChild(c)))
      await rm(path.join(root, name), { recursive: true, force: true })
    },
  }
}

/** How a target's description says who coordinates its requests: nothing for the client library's default. */
export function coordinatedBy(coordination: Coordination): string {
  return coordination === 'client' ? '' : `, coordinated by the ${coordination}`
}

/** A running Kumo cluster reached through its seeds; `coordination` as the client library's option. */
export async function kumoTarget(name: string, description: string, seeds: string[], security: Pick<ConnectOptions, 'tls' | 'credentials'> = {}, coordination: Coordination = 'client'): Promise<BenchTarget> {
  const db: KumoClient = await connect({ seeds, timeoutMs: 10_000, ...security, coordination })
  return {
    name,
    description,
    put: (key, value) => db.put(key, value),
    get: (key) => db.get(key),
    async scan(start, count) {
      let n = 0
      for await (const _ of db.scan({ gte: start, limit: count, pageSize: Math.max(1, count) })) n++
      return n
    },
    putMany: (entries) => db.batch(entries.map(([key, value]) => ({ type: 'put' as const, key, value }))),
    async load(records, onProgress) {
      function* asRecords(): Generator<{ key: Buffer; value: Buffer }> {
        for (const [key, value] of records) yield { key, value }
      }
      return db.load(asRecords(), { onProgress: (p) => onProgress(p.records) })
    },
    getMany: (keys) => db.getMany(keys),
    compact: () => db.compact(),
    close: () => db.close(),
  }
}
