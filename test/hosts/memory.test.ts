import { execFile } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import * as grpc from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { partitionOf } from '../../src/core/partitioner.js'
import { encodeRecord } from '../../src/core/record.js'
import { encodeVersion } from '../../src/core/version.js'
import { KvClient } from '../../src/wire/proto.js'
import { waitFor } from '../helpers/cluster.js'
import { testHostsUnavailable } from '../helpers/netns.js'
import { runScenario } from '../helpers/scenario.js'

const skip = testHostsUnavailable()

/** Runs `count` scans of `prefix` at once, in a process of their own (test/hosts/scan-abuser.ts). */
async function scanAbuse(seeds: string[], count: number, prefix: string, pauseMs: number): Promise<number[]> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
  const { stdout } = await run(process.execPath, ['--import', 'tsx', path.join(root, 'test/hosts/scan-abuser.ts')], {
    cwd: root,
    env: { ...process.env, KUMO_SCANS: JSON.stringify({ seeds, count, prefix, pauseMs }) },
    maxBuffer: 1024 * 1024,
  })
  return JSON.parse(stdout.trim().split('\n').pop()!) as number[]
}

/**
 * Under abuse that keeps both cores busy, nodes stall for moments (their event loops busy for
 * a second at a time), and the others avoid them meanwhile: a request that finds too few
 * replicas answering fails at once with UNAVAILABLE, a clear and retryable error. A few may,
 * never silently, never past their deadline, and no acknowledged write is lost.
 */
function expectFewFastFailures(result: { requests: number; failed: number; failuresByKind: Record<string, number>; lost: number }): void {
  expect(result.lost).toBe(0)
  expect(result.failed).toBeLessThanOrEqual(Math.ceil(result.requests * 0.01))
  for (const kind of Object.keys(result.failuresByKind)) expect(kind).toMatch(/ UNAVAILABLE$/)
}

/** The bound this issue states on a node's resident memory under the abuse below. */
const rssBoundMiB = 1024
const mib = 1024 * 1024
const run = promisify(execFile)

describe.skipIf(skip !== undefined)('memory under abuse (test hosts)', () => {
  it('scans of 1 MiB values: a scan with a limit works, and twenty at once over 66 MiB (1.3 GiB if each held it all) keep every node under 1 GiB', { timeout: 300_000 }, async () => {
    let limited = 0
    let scanned = 0
    let baseline = { p50Ms: 0, p99Ms: 0, requests: 0 }
    let abused = { p50Ms: 0, p99Ms: 0, requests: 0 }
    const result = await runScenario({
      name: 'scans of large values, 3 hosts',
      hosts: 3,
      load: { writesPerSecond: 200, readsPerSecond: 100 },
      // 66 values of 1 MiB, loaded before the load and the scans begin.
      prepare: async (_c, db) => {
        const value = Buffer.alloc(mib - 64, 7)
        for (let i = 0; i < 66; i += 3) {
          await db.batch([0, 1, 2].map((j) => ({ type: 'put' as const, key: `big/${String(i + j).padStart(4, '0')}`, value })), { timeoutMs: 30_000 })
        }
      },
      fault: async () => undefined,
      faultMs: 0,
      during: async (c, load, db) => {
        const value = Buffer.alloc(mib - 64, 7)
        // A scan with a limit returns what it asks for, page by page.
        for await (const entry of db.scan({ prefix: "big/", limit: 100 })) {
          expect(entry.value.length).toBe(value.length)
          limited++
        }
        // Twenty scans of everything at once, read slowly, by another process: a node
        // buffers at most its scans' pages; the client's back-pressure holds the rest.
        load.markWindow()
        await load.progress(0, 3000)
        baseline = load.windowLatency()
        load.markWindow()
        const counts = await scanAbuse(c.seeds, 20, 'big/', 50)
        abused = load.windowLatency()
        // Every scan either read everything or was refused (a node runs 4 at most; the next
        // wait their turn for up to 2 s).
        for (const n of counts) expect([0, 66]).toContain(n)
        scanned = counts.filter((n) => n > 0).length
        await load.progress(100)
      },
    })
    process.stdout.write(`  a limited scan returned ${limited} values of 1 MiB; ${scanned} of 20 concurrent scans ran to the end (the others were refused after waiting their turn)\n`)
    process.stdout.write(`  other clients' p99: ${baseline.p99Ms.toFixed(1)} ms before (${baseline.requests} requests), ${abused.p99Ms.toFixed(1)} ms while the scans ran (${abused.requests})\n`)
    expect(limited).toBe(66)
    expectFewFastFailures(result)
    for (const [id, peak] of Object.entries(result.peakRssMiB)) expect(peak, `peak RSS of ${id}`).toBeLessThan(rssBoundMiB)
  })

  it('twelve connections sending frames of 7 and 15 MiB: each node stays under 1 GiB and other clients are served', { timeout: 300_000 }, async () => {
    let baseline = { p50Ms: 0, p99Ms: 0, requests: 0 }
    let abused = { p50Ms: 0, p99Ms: 0, requests: 0 }
    const result = await runScenario({
      name: 'large frames, 3 hosts',
      hosts: 3,
      load: { writesPerSecond: 200, readsPerSecond: 100 },
      fault: async () => undefined,
      faultMs: 0,
      during: async (c, load, db) => {
        load.markWindow()
        await load.progress(0, 5000)
        baseline = load.windowLatency()
        const topology = await db.topology()
        const ownKeys: Buffer[] = []
        for (let k = 0; ownKeys.length < 12 * 60; k++) {
          const key = Buffer.from(`abuse/${k}`)
          if (topology.partitions[partitionOf(key, topology.partitionCount)]!.includes('n1')) ownKeys.push(key)
        }
        // Frames of valid replica writes of 256 KiB values as fast as the connection takes
        // them: the node must store what it accepts. 15 MiB frames are past what a node takes at
        // all; 7 MiB ones are not, and past the bytes it holds in flight they are refused.
        const abusers = Array.from({ length: 12 }, (_, i) => {
          const client = new KvClient(c.seeds[0]!, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 * mib }) as grpc.Client & Record<string, Function>
          const size = i % 2 === 0 ? 7 * mib : 15 * mib
          const count = Math.floor(size / (256 * 1024))
          const version = encodeVersion({ ms: Date.now(), counter: i }, `abuser${i}`)
          const records = Array.from({ length: count }, () => encodeRecord(version, Buffer.alloc(256 * 1024 - 64, 1)))
          // Keys of n1's own partitions: the direct write path refuses others.
          const keys = ownKeys.slice(i * count, (i + 1) * count)
          let running = true
          let stream: grpc.ClientDuplexStream<unknown, unknown> | undefined
          const open = (): void => {
            if (!running) return
            const current = client.pipeline() as grpc.ClientDuplexStream<unknown, unknown>
            stream = current
            current.on('data', () => undefined)
            // Refused or ended: open another and go on.
            current.on('error', () => setTimeout(open, 10))
            const pump = (): void => {
              while (running && stream === current && current.write({ requests: [{ id: 1, op: 'REPLICA_WRITE', keys, records }] }));
              if (running && stream === current) current.once('drain', pump)
            }
            pump()
          }
          open()
          return () => {
            running = false
            stream?.cancel()
            client.close()
          }
        })
        load.markWindow()
        await load.progress(300, 15_000)
        abused = load.windowLatency()
        for (const stop of abusers) stop()
      },
    })
    expectFewFastFailures(result)
    for (const [id, peak] of Object.entries(result.peakRssMiB)) expect(peak, `peak RSS of ${id}`).toBeLessThan(rssBoundMiB)
    process.stdout.write(`  other clients: p50 ${baseline.p50Ms.toFixed(1)} ms, p99 ${baseline.p99Ms.toFixed(1)} ms before (${baseline.requests} requests); p50 ${abused.p50Ms.toFixed(1)} ms, p99 ${abused.p99Ms.toFixed(1)} ms while the frames came (${abused.requests})\n`)
    // Served means the median request stays fast (unbounded frames took it to 300 ms). A
    // p99 bound would be a timing test: on two cores shared by three nodes, twelve abusers and
    // the load, a light load's p99 swings between 30 and 100 ms from run to run.
    expect(abused.p50Ms).toBeLessThan(Math.max(25, 3 * baseline.p50Ms))
  })

  it('thousands of idle connections: refused past the limit with a clear error, closed when idle, and clients are served', { timeout: 300_000 }, async () => {
    let refusal = ''
    let refused = 0
    let connectionsLeft = 0
    const result = await runScenario({
      name: 'idle connections, 3 hosts',
      hosts: 3,
      cluster: { args: ['--max-connections', '1000', '--idle-timeout', '3000'] },
      load: { writesPerSecond: 200, readsPerSecond: 100 },
      fault: async () => undefined,
      faultMs: 0,
      during: async (c, load) => {
        const [host, port] = c.seeds[0]!.split(':')
        const sockets: net.Socket[] = []
        for (let i = 0; i < 3000; i++) {
          const socket = net.connect(Number(port), host)
          socket.on('error', () => undefined)
          // Read (and drop) what the node sends, so its close is seen.
          socket.resume()
          sockets.push(socket)
        }
        try {
          // Past the limit, a gRPC call on a new connection is told why.
          await waitFor('a call refused for the connection limit', async () => {
            const client = new KvClient(c.seeds[0]!, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as grpc.Client & Record<string, Function>
            try {
              refusal = await new Promise<string>((resolve) => client.topology({}, { deadline: Date.now() + 2000 }, (err: grpc.ServiceError | null) => resolve(err?.details ?? '')))
            } finally {
              client.close()
            }
            return refusal.includes('connections at most')
          }, 10_000, 100).catch((err: Error) => {
            throw new Error(`${err.message}; the last answer: ${JSON.stringify(refusal)}`)
          })
          // Silent connections are closed: the node is left with its peers' and clients'.
          // (Many of the test's sockets never got past the node's full accept queue: the
          // kernel dropped their handshake's last packet, so they think they are connected.)
          const open = await waitFor('the idle connections to be closed', async () => {
            const count = await c.metric('kumo_connections', { node: 'n1' })
            return count < 50 ? { count } : undefined
          }, 30_000, 200)
          refused = await c.metric('kumo_connections_refused_total', { node: 'n1' })
          connectionsLeft = open.count
          await load.progress(300)
        } finally {
          for (const socket of sockets) socket.destroy()
        }
      },
    })
    process.stdout.write(`  past the limit: ${refusal} (${refused} connections refused; ${connectionsLeft} left open once the silent ones were closed)\n`)
    expect(result.failures).toEqual([])
  })
})
