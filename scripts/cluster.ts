import { Command, InvalidArgumentError } from 'commander'
import type { ChildProcess } from 'node:child_process'
import path from 'node:path'
import { localSpecs, makeLocalSecurity, portTaken, spawnNode, stopChild, waitHealthy } from './local-cluster.js'

function wholeNumber(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive whole number')
  return n
}

const program = new Command()
  .name('npm run cluster --')
  .description('Start a local Kumo cluster in the foreground; Ctrl-C stops it. Data persists between runs.')
  .option('--nodes <n>', 'number of nodes', wholeNumber, 3)
  .option('--base-port <port>', 'port of the first node; the others follow', wholeNumber, 7001)
  .option('--data <dir>', 'data root; node i keeps its data in <dir>/node<i>', './data')
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--secure', 'TLS and authentication: a throwaway CA and node certificates, and an admin user with a new password (in <data>/tls)')
  .parse()

const opts = program.opts<{ nodes: number; basePort: number; data: string; host: string; secure?: boolean }>()

async function main(): Promise<void> {
  const specs = localSpecs(opts.nodes, opts.basePort, path.resolve(opts.data), opts.host)
  const seeds = specs.map((s) => s.address)
  for (const spec of specs) {
    const taken = await portTaken(spec.address)
    if (taken !== undefined) {
      process.stderr.write(`cluster: ${taken} (is a cluster already running? stop it, or use --base-port)\n`)
      process.exit(1)
    }
  }
  const security = opts.secure ? await makeLocalSecurity(path.resolve(opts.data, 'tls'), specs.map((s) => s.id)) : undefined
  const children = new Map<string, ChildProcess>()
  let stopping = false
  const stopAll = async (code: number): Promise<never> => {
    stopping = true
    await Promise.all([...children.values()].map((c) => stopChild(c)))
    process.exit(code)
  }
  process.on('SIGINT', () => {
    if (stopping) return
    process.stdout.write('\ncluster: stopping all nodes...\n')
    void stopAll(0)
  })
  process.on('SIGTERM', () => {
    if (!stopping) void stopAll(0)
  })

  let exitedDuringStart = false
  // A node converting a store written by an older Kumo says so, and again once it has
  // compacted it; until then the start is not given up on.
  const converting = new Set<string>()
  const onLine = (id: string, line: string): void => {
    if (line.includes('converting the store to storage layout')) converting.add(id)
    if (line.includes('the converted store is compacted')) converting.delete(id)
    process.stdout.write(`[${id}] ${line}\n`)
  }
  for (const spec of specs) {
    const child = spawnNode(spec, seeds, security?.nodeArgs(spec.id) ?? [], (line) => onLine(spec.id, line))
    children.set(spec.id, child)
    child.once('exit', (code, signal) => {
      if (stopping) return
      exitedDuringStart = true
      process.stdout.write(`cluster: node ${spec.id} exited (${signal ?? `code ${code}`}); the others keep serving\n`)
    })
  }
  process.stdout.write(`cluster: starting ${specs.length} nodes (data in ${path.resolve(opts.data)})...\n`)
  try {
    await waitHealthy(specs, 60_000, () => !exitedDuringStart, security, () => converting.size > 0)
  } catch (err) {
    process.stderr.write(`cluster: ${(err as Error).message}\n`)
    await stopAll(1)
  }
  const list = seeds.join(',')
  if (security !== undefined) {
    const ca = path.join(security.dir, 'ca.pem')
    process.stdout.write(
      [
        '',
        `Kumo is running with TLS and authentication: ${specs.map((s) => `${s.id} ${s.address}`).join(', ')}`,
        `(a throwaway CA and certificates in ${security.dir}; users in ${security.authFile})`,
        '',
        'From another terminal:',
        `  export KUMO_SEEDS=${list} KUMO_TLS_CA=${ca} KUMO_USER=admin KUMO_PASSWORD=${security.client.credentials.password}`,
        '  npx kumo put hello world && npx kumo get hello && npx kumo status',
        `  npx kumo user add app --auth-file ${security.authFile} --role readwrite --prefix app/   # more users`,
        '',
        'From your code:',
        `  import { readFileSync } from 'node:fs'`,
        `  import { connect } from 'kumodb'`,
        `  const db = await connect({ seeds: ['${seeds[0]}'], tls: { ca: readFileSync('${ca}') },`,
        `                             credentials: { user: 'admin', password: process.env.KUMO_PASSWORD } })`,
        '',
        'Ctrl-C stops the cluster.',
        '',
      ].join('\n'),
    )
    await new Promise(() => undefined)
  }
  process.stdout.write(
    [
      '',
      `Kumo is running: ${specs.map((s) => `${s.id} ${s.address}`).join(', ')}`,
      '',
      'From another terminal:',
      `  npx kumo --seeds ${list} put hello world`,
      `  npx kumo --seeds ${list} get hello`,
      `  npx kumo --seeds ${list} status`,
      '',
      'From your code:',
      `  import { connect } from 'kumodb'`,
      `  const db = await connect({ seeds: ['${seeds[0]}'] })`,
      `  await db.put('hello', 'world'); console.log((await db.get('hello'))?.toString())`,
      '',
      'Ctrl-C stops the cluster.',
      '',
    ].join('\n'),
  )
  await new Promise(() => undefined)
}

void main()
