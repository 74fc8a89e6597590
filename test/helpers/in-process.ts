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
  let root: string | undefined
  return {
    nodes,
    async options(id, seeds) {
      root ??= await tempDir()
      const listen = `127.0.0.1:${await freePort()}`
      return { id, listen, dataDir: path.join(root, id), seeds: seeds === 'self' ? [listen] : seeds, gossipIntervalMs: 200, partitions }
    },
    async stopAll() {
      await Promise.all(nodes.splice(0).map((n) => n.stop()))
      if (root !== undefined) await rm(root, { recursive: true, force: true })
      root = undefined
    },
  }
}
