import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdir, rm } from 'node:fs/promises'
import path from 'node:path'
import type { BenchTarget } from './targets.js'
import { freePort } from '../scripts/local-cluster.js'

/** Whether a program is on the PATH. */
export function installed(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0
}


async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`timed out waiting for ${what}`)
}

const cli = (port: number, ...args: string[]): string =>
  spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout ?? ''

/**
 * A three-master Redis Cluster on loopback (no replicas, persistence off), set up for the run
 * and torn down after it: a system people know, measured on the same machine and workload.
 * Scans have no cluster-wide key order in Redis, so workload E is not run against it.
 */
export async function redisClusterTarget(root: string): Promise<BenchTarget> {
  if (!installed('redis-server') || !installed('redis-cli')) {
    throw new Error('--peer redis needs redis-server and redis-cli on the PATH (Debian: apt-get install redis-server)')
  }
  const { Cluster } = await import('ioredis')
  const dir = path.join(root, 'redis')
  await mkdir(dir, { recursive: true })
  const ports = await Promise.all([0, 1, 2].map(() => freePort()))
  const servers: ChildProcess[] = ports.map((port) =>
    spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--dir', dir, '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    ),
  )
  const stop = async (): Promise<void> => {
    for (const server of servers) server.kill('SIGTERM')
    await Promise.all(servers.map((s) => (s.exitCode !== null ? undefined : new Promise((r) => s.once('exit', r)))))
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await until('redis servers', () => ports.every((p) => cli(p, 'ping').trim() === 'PONG'), 10_000)
    const created = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' })
    if (created.status !== 0) throw new Error(`redis-cli --cluster create failed: ${created.stderr || created.stdout}`)
    await until('the redis cluster', () => ports.every((p) => cli(p, 'cluster', 'info').includes('cluster_state:ok')), 20_000)
  } catch (err) {
    await stop()
    throw err
  }
  const db = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), { enableAutoPipelining: true })
  return {
    name: 'redis-3',
    description: 'Redis Cluster, 3 masters, no replicas, persistence off',
    put: (key, value) => db.set(key, value),
    get: (key) => db.getBuffer(key),
    scan: () => Promise.reject(new Error('Redis Cluster has no cluster-wide ordered scan')),
    putMany: (entries) => Promise.all(entries.map(([key, value]) => db.set(key, value))),
    getMany: (keys) => Promise.all(keys.map((key) => db.getBuffer(key))),
    pids: servers.map((s) => s.pid).filter((pid): pid is number => pid !== undefined),
    async close() {
      db.disconnect()
      await stop()
    },
  }
}
