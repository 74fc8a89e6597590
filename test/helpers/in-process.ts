import { rm } from 'node:fs/promises'
import path from 'node:path'
import type { KumoNode, NodeOptions } from '../../src/index.js'
import { freePort, tempDir } from './cluster.js'

/**
 * Nodes a test starts one by one in this process, under one temporary directory: `options`
 * gives a node's options (seeds 'self': it founds a cluster alone), `stopAll` (from afterEach)
 * stops every node pushed to `nodes` and deletes the directory.
 */
export function inProcessNodes(partitions: number): {
  nodes: KumoNode[]
  options(id: string, seeds: string[] | 'self'): Promise<NodeOptions>
  stopAll(): Promise<void>
} {
  const nodes: KumoNode[] = []
  // A promise, not a path: options() called for several nodes at once (Promise.all) must share
  // one directory, or stopAll deletes only the last one made.
  let root: Promise<string> | undefined
  return {
    nodes,
    async options(id, seeds) {
      root ??= tempDir()
      const dir = await root
      const listen = `127.0.0.1:${await freePort()}`
      return { id, listen, dataDir: path.join(dir, id), seeds: seeds === 'self' ? [listen] : seeds, gossipIntervalMs: 200, partitions }
    },
    async stopAll() {
      const dir = root
      root = undefined
      try {
        await Promise.all(nodes.splice(0).map((n) => n.stop()))
      } finally {
        // Deleted even when a node failed to stop (or the directory was never made).
        const made = await dir?.catch(() => undefined)
        if (made !== undefined) await rm(made, { recursive: true, force: true })
      }
    },
  }
}
