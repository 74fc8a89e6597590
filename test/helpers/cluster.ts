import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { startNode, type KumoNode, type NodeOptions } from '../../src/index.js'

export { freePort } from '../../scripts/local-cluster.js'
import { freePort } from '../../scripts/local-cluster.js'

export async function tempDir(prefix = 'kumo-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix))
}

/** Polls `check` until it returns truthy or `timeoutMs` passes (then throws with `what`). */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (;;) {
    try {
      const value = await check()
      if (value) return value as NonNullable<T>
    } catch (err) {
      lastError = err
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${lastError ? `: ${(lastError as Error).message}` : ''}`)
    }
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/** The error `work` rejects with; fails the test if it resolves. */
export async function rejectionOf<E = import('../../src/index.js').KumoError>(work: Promise<unknown>): Promise<E> {
  try {
    await work
  } catch (err) {
    return err as E
  }
  throw new Error('expected a rejection, but it succeeded')
}

export interface TestCluster {
  nodes: (KumoNode | undefined)[]
  addresses: string[]
  dirs: string[]
  options: NodeOptions[]
  stopNode(i: number): Promise<void>
  restartNode(i: number): Promise<KumoNode>
  close(): Promise<void>
}

/** Starts `count` in-process nodes on free loopback ports and waits until all serve one map. */
export async function startCluster(count = 3, extra: Partial<NodeOptions> | ((i: number) => Partial<NodeOptions>) = {}): Promise<TestCluster> {
  const ports = await Promise.all(Array.from({ length: count }, () => freePort()))
  const addresses = ports.map((p) => `127.0.0.1:${p}`)
  const root = await tempDir()
  const dirs = addresses.map((_, i) => path.join(root, `n${i + 1}`))
  const options: NodeOptions[] = addresses.map((address, i) => ({
    id: `n${i + 1}`,
    listen: address,
    dataDir: dirs[i]!,
    seeds: addresses,
    gossipIntervalMs: 200,
    partitions: 64,
    ...(typeof extra === 'function' ? extra(i) : extra),
  }))
  const nodes: (KumoNode | undefined)[] = await Promise.all(options.map((o) => startNode(o)))
  const cluster: TestCluster = {
    nodes,
    addresses,
    dirs,
    options,
    async stopNode(i) {
      await nodes[i]?.stop()
      nodes[i] = undefined
    },
    async restartNode(i) {
      await nodes[i]?.stop()
      nodes[i] = await startNode(options[i]!)
      return nodes[i]!
    },
    async close() {
      await Promise.all(nodes.map((n) => n?.stop()))
      await rm(root, { recursive: true, force: true })
    },
  }
  await waitFor('all nodes serving one map with every node', () =>
    nodes.every((n) => n!.serving() && n!.membership.map?.nodes.length === count && n!.membership.map?.change === undefined && n!.membership.map?.epoch === nodes[0]!.membership.map?.epoch),
  )
  return cluster
}
