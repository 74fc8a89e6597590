import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { connect } from '../src/client/client.js'
import { healthProbe } from '../src/cli/probes.js'
import { addUser, makeCertificates } from '../src/cli/security.js'
import { clientChannels, insecureChannels, type TlsOptions, type UserCredentials } from '../src/wire/channel-security.js'

/** A throwaway CA, node certificates and an auth file with one admin: a local cluster with TLS and authentication. */
export interface LocalSecurity {
  dir: string
  authFile: string
  /** What a client needs: the CA, and the admin's credentials. */
  client: { tls: TlsOptions; credentials: UserCredentials }
  /** Node `id`'s start options for TLS and authentication. */
  nodeArgs(id: string): string[]
  /** Makes a certificate for one more node, from the same CA. */
  addNode(id: string): Promise<void>
}

export async function makeLocalSecurity(dir: string, nodeIds: string[]): Promise<LocalSecurity> {
  await makeCertificates({ out: dir, nodes: nodeIds, hosts: [], users: [], days: 30, force: true }, () => undefined)
  const authFile = path.join(dir, 'auth.json')
  const password = randomBytes(18).toString('base64url')
  await addUser(authFile, 'admin', 'admin', [], password)
  return {
    dir,
    authFile,
    client: { tls: { ca: readFileSync(path.join(dir, 'ca.pem')) }, credentials: { user: 'admin', password } },
    nodeArgs: (id) => ['--tls-ca', path.join(dir, 'ca.pem'), '--tls-cert', path.join(dir, `${id}.pem`), '--tls-key', path.join(dir, `${id}-key.pem`), '--auth-file', authFile],
    addNode: async (id) => {
      await makeCertificates({ out: dir, nodes: [id], hosts: [], users: [], days: 30, force: true, caCert: path.join(dir, 'ca.pem'), caKey: path.join(dir, 'ca-key.pem') }, () => undefined)
    },
  }
}

/** The compiled CLI, whether this file runs from dist/ or from source under tsx. */
export const cliPath = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const root = here.includes(`${path.sep}dist${path.sep}`) || here.endsWith(`${path.sep}dist`) ? path.resolve(here, '../..') : path.resolve(here, '..')
  return path.join(root, 'dist', 'src', 'cli', 'main.js')
})()

export interface LocalNodeSpec {
  id: string
  /** The address peers and clients use. */
  address: string
  dataDir: string
  /** Where the node listens, when not at `address` (something in between relays to it). */
  listen?: string
}

export function localSpecs(count: number, basePort: number, dataRoot: string, host = '127.0.0.1'): LocalNodeSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `n${i + 1}`,
    address: `${host}:${basePort + i}`,
    dataDir: path.join(dataRoot, `node${i + 1}`),
  }))
}

/** A free loopback port (bound, read, released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** Resolves to an error message if the port cannot be bound, undefined if it is free. */
export function portTaken(address: string): Promise<string | undefined> {
  const at = address.lastIndexOf(':')
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE' ? `port ${address} is already in use` : `cannot bind ${address}: ${err.message}`))
    server.listen(Number(address.slice(at + 1)), address.slice(0, at), () => server.close(() => resolve(undefined)))
  })
}

/**
 * Environment every node started here gets unless the caller's environment says otherwise.
 * MALLOC_ARENA_MAX=2: glibc gives each thread that allocates at once an arena of its own (up to
 * eight a core), and LevelDB's reads, writes and compactions on libuv's thread pool kept four to
 * six arenas of 37-64 MiB each; two took 50-90 MiB off a node's peak anonymous memory on the large
 * benchmark (bench/RESULTS.md). It must be set before the process starts, so `kumo start` alone
 * cannot: the README says to set it.
 */
export const nodeEnvironmentDefaults: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' }

/**
 * V8 flags every node started here runs with. `--initial-old-space-size=128`: V8 sizes a small
 * heap's old-generation limit from its live size (20-30 MB on a node), so under reads a node ran a
 * full mark-compact every 100-250 ms; the flag sets a 128 MiB floor under that limit. On 2 GB a
 * node read uniformly, the nodes' full collections fell from 45-64 to 1-2 in a 10 s run and read
 * p99 from 19-26 ms to 11-16 ms, at 9% less of the nodes' CPU a read (bench/RESULTS.md). The heap
 * may grow to the floor before it is collected. A V8 flag must be on the command line
 * (NODE_OPTIONS refuses it): the README says how to start a node with it.
 */
export const nodeV8Flags: readonly string[] = ['--initial-old-space-size=128']

export function spawnNode(
  spec: LocalNodeSpec,
  seeds: string[],
  extraArgs: string[] = [],
  onLine?: (line: string) => void,
  env: Record<string, string> = {},
  /** A command the node runs under, e.g. `ip netns exec NS` (tests run nodes on test hosts so). */
  launcher: readonly string[] = [],
): ChildProcess {
  const listen = spec.listen === undefined ? ['--listen', spec.address] : ['--listen', spec.listen, '--advertise', spec.address]
  // KUMO_CPU_PROF_DIR=dir: each node writes a V8 CPU profile there when it stops (for finding where its time goes).
  const profile = process.env.KUMO_CPU_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.KUMO_CPU_PROF_DIR}`] : []
  const argv = [process.execPath, ...nodeV8Flags, ...profile, cliPath, 'start', '--id', spec.id, ...listen, '--data', spec.dataDir, '--seeds', seeds.join(','), ...extraArgs]
  const command = [...launcher, ...argv]
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...nodeEnvironmentDefaults, ...process.env, ...env } })
  const forward = (stream: NodeJS.ReadableStream | null): void => {
    let buffer = ''
    stream?.setEncoding('utf8')
    stream?.on('data', (chunk: string) => {
      buffer += chunk
      let nl: number
      while ((nl = buffer.indexOf('\n')) >= 0) {
        onLine?.(buffer.slice(0, nl))
        buffer = buffer.slice(nl + 1)
      }
    })
  }
  forward(child.stdout)
  forward(child.stderr)
  return child
}

/**
 * Waits until every node answers SERVING and one of them reports a map with all of them. Past
 * `timeoutMs` it goes on waiting while `working()` says a node still reports progress on a long
 * start (a store converted at open).
 */
export async function waitHealthy(specs: LocalNodeSpec[], timeoutMs: number, isAlive: () => boolean = () => true, security?: LocalSecurity, working: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + timeoutMs
  const channels = security === undefined ? insecureChannels : clientChannels(security.client.tls, security.client.credentials)
  while ((Date.now() < deadline || working()) && isAlive()) {
    const probes = await Promise.all(specs.map((s) => healthProbe(s.address, 1000, '', channels, s.id)))
    if (probes.every((p) => p.ok)) {
      try {
        const db = await connect({ seeds: [specs[0]!.address], timeoutMs: 2000, ...(security?.client ?? {}) })
        const topology = await db.topology()
        await db.close()
        if (specs.every((s) => topology.nodes.some((n) => n.id === s.id && n.state === 'up')) && topology.partitions.every((p) => p.length === Math.min(topology.replicationFactor, specs.length))) return
      } catch {
        // not yet
      }
    }
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(isAlive() ? `the cluster was not healthy within ${timeoutMs} ms` : 'a node exited during startup')
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs)
    child.once('exit', () => {
      clearTimeout(kill)
      resolve()
    })
    child.kill('SIGTERM')
  })
}
