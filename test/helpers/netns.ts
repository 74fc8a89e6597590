import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

/**
 * Test hosts with real addresses: one network namespace per host on one bridge, made and
 * removed by the test itself. The root namespace is on the bridge too, with the first address
 * of the subnet: clients run there (or in a host of their own) and reach every host.
 *
 * Links are cut with iptables in the *receiving* namespace (INPUT, by source address), so the
 * sender sees nothing at all: a DROP in the sender's OUTPUT chain would fail its send at once
 * with EPERM, which is a refusal, not a silent cut. Each namespace gets a chain of its own
 * (named after this network, jumped to from INPUT), and a change of links is one
 * iptables-restore per namespace, all at once, so a split takes effect everywhere in the same
 * moment rather than link by link over seconds. In the root namespace the chain only ever
 * holds rules for the addresses of test hosts, so nothing outside the test is touched.
 *
 * This kernel has no netem (CONFIG_NET_SCH_NETEM is not set), so loss is iptables' statistic
 * match and latency is a relay process (test/hosts/delay-relay.ts), not a queueing discipline.
 */
export class TestNetwork {
  /** The rules in place, by namespace ('' for the root namespace). */
  private readonly rules = new Map<string, string[][]>()
  private chained = false
  private closed = false
  private readonly children = new Set<ChildProcess>()
  private readonly onExit = (): void => this.closeSync()

  private constructor(
    /** Short unique tag: names of namespaces, links and rule comments start with it. */
    readonly tag: string,
    readonly subnet: string,
    readonly hosts: ReadonlyMap<string, { ns: string; ip: string }>,
  ) {}

  /** The root namespace's address on the bridge: where clients in the test process come from. */
  get clientIp(): string {
    return `${this.subnet}.1`
  }

  static async create(hostIds: readonly string[]): Promise<TestNetwork> {
    await sweepStale()
    // The pid in the tag tells a later run whether the owner of leftovers still runs.
    const tag = `k${process.pid.toString(36)}x${(networksMade++).toString(36)}`
    // 10.200-249.x.0/24: a subnet no real network here uses, picked at random per run.
    const subnet = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`
    const hosts = new Map(hostIds.map((id, i) => [id, { ns: `${tag}-${id}`, ip: `${subnet}.${i + 2}` }]))
    const net = new TestNetwork(tag, subnet, hosts)
    process.once('exit', net.onExit)
    process.once('SIGINT', net.onExit)
    process.once('SIGTERM', net.onExit)
    try {
      const bridge = `${tag}-br`
      await ip('link', 'add', bridge, 'type', 'bridge')
      await ip('addr', 'add', `${net.clientIp}/24`, 'dev', bridge)
      await ip('link', 'set', bridge, 'up')
      let i = 0
      for (const [, host] of hosts) {
        const outside = `${tag}-v${i++}`
        await ip('netns', 'add', host.ns)
        await ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns)
        await ip('link', 'set', outside, 'master', bridge)
        await ip('link', 'set', outside, 'up')
        await ip('-n', host.ns, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0')
        await ip('-n', host.ns, 'link', 'set', 'eth0', 'up')
        await ip('-n', host.ns, 'link', 'set', 'lo', 'up')
      }
      await net.makeChains()
    } catch (err) {
      await net.close()
      throw err
    }
    return net
  }

  host(id: string): { ns: string; ip: string } {
    const host = this.hosts.get(id)
    if (host === undefined) throw new Error(`no test host ${id}`)
    return host
  }

  /** The address of a host, or of the client side (the root namespace). */
  ipOf(id: string): string {
    return id === 'client' ? this.clientIp : this.host(id).ip
  }

  /** Spawns `argv` inside a host's namespace (`ip netns exec` execs it: the pid is the program's). */
  spawnIn(id: string, argv: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.host(id).ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...options })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  /** Runs a command in a host's namespace and returns its output. */
  async exec(id: string, argv: string[]): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', this.host(id).ns, ...argv])
    return stdout
  }

  /** The iptables chain of this network, in every namespace it touches. */
  private get chain(): string {
    return `${this.tag}-cut`
  }

  private namespaces(): string[] {
    return ['', ...[...this.hosts.values()].map((h) => h.ns)]
  }

  /** Makes the chain in each namespace, jumped to from INPUT. */
  private async makeChains(): Promise<void> {
    if (this.chained) return
    this.chained = true
    await Promise.all(
      this.namespaces().map(async (ns) => {
        await iptables(ns, ['-N', this.chain])
        await iptables(ns, ['-I', 'INPUT', '-j', this.chain])
      }),
    )
  }

  /** Rules to drop what `from` sends to `to` ('client': the root namespace), one direction. */
  private dropRule(from: string, to: string, probability: number): { ns: string; spec: string[] } {
    const match = probability >= 1 ? [] : ['-m', 'statistic', '--mode', 'random', '--probability', String(probability)]
    return { ns: to === 'client' ? '' : this.host(to).ns, spec: ['-s', this.ipOf(from), ...match, '-j', 'DROP'] }
  }

  /** Adds rules, one iptables-restore per namespace, all namespaces at once. */
  private async add(rules: { ns: string; spec: string[] }[]): Promise<void> {
    await this.makeChains()
    const byNs = new Map<string, string[][]>()
    for (const rule of rules) {
      let list = byNs.get(rule.ns)
      if (list === undefined) byNs.set(rule.ns, (list = []))
      list.push(rule.spec)
    }
    await Promise.all(
      [...byNs].map(async ([ns, specs]) => {
        const input = ['*filter', ...specs.map((spec) => `-A ${this.chain} ${spec.join(' ')}`), 'COMMIT', ''].join('\n')
        await restore(ns, input)
        this.rules.set(ns, [...(this.rules.get(ns) ?? []), ...specs])
      }),
    )
  }

  /** Packets from `from` to `to` vanish ('client' is the root namespace). One direction only. */
  async drop(from: string, to: string, probability = 1): Promise<void> {
    await this.add([this.dropRule(from, to, probability)])
  }

  /** Both directions between every member of `a` and every member of `b`, all at once. */
  async cut(a: readonly string[], b: readonly string[], probability = 1): Promise<void> {
    const rules: { ns: string; spec: string[] }[] = []
    for (const x of a) {
      for (const y of b) rules.push(this.dropRule(x, y, probability), this.dropRule(y, x, probability))
    }
    await this.add(rules)
  }

  /** Every link of `id`, both ways, to every other host and to the client side. */
  async isolate(id: string): Promise<void> {
    await this.cut([id], [...[...this.hosts.keys()].filter((h) => h !== id), 'client'])
  }

  /** Removes every cut and loss rule, in every namespace at once. */
  async heal(): Promise<void> {
    const namespaces = [...this.rules.keys()]
    this.rules.clear()
    await Promise.all(namespaces.map((ns) => iptables(ns, ['-F', this.chain]).catch(() => undefined)))
  }

  /** Whether any cut is in place. */
  get cutting(): boolean {
    return this.rules.size > 0
  }

  async close(): Promise<void> {
    if (this.closed) return
    await this.heal()
    for (const child of this.children) child.kill('SIGKILL')
    this.closeSync()
  }

  /** Synchronous teardown, also from process exit and signal handlers. */
  private closeSync(): void {
    if (this.closed) return
    this.closed = true
    process.removeListener('exit', this.onExit)
    process.removeListener('SIGINT', this.onExit)
    process.removeListener('SIGTERM', this.onExit)
    for (const child of this.children) child.kill('SIGKILL')
    // The root namespace's chain and its jump (the others go with their namespaces).
    if (this.chained) {
      for (const args of [['-D', 'INPUT', '-j', this.chain], ['-F', this.chain], ['-X', this.chain]]) {
        try {
          execFileSync('iptables', ['-w', ...args], { stdio: 'ignore' })
        } catch {
          // already gone
        }
      }
    }
    this.rules.clear()
    for (const [, host] of this.hosts) {
      try {
        execFileSync('ip', ['netns', 'del', host.ns], { stdio: 'ignore' })
      } catch {
        // already gone
      }
    }
    try {
      execFileSync('ip', ['link', 'del', `${this.tag}-br`], { stdio: 'ignore' })
    } catch {
      // already gone
    }
  }
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args)
}

/** iptables in a namespace ('' for the root namespace). */
async function iptables(ns: string, args: string[]): Promise<void> {
  if (ns === '') await run('iptables', ['-w', ...args])
  else await run('ip', ['netns', 'exec', ns, 'iptables', '-w', ...args])
}

/** iptables-restore of `input` without flushing, in a namespace ('' for the root namespace). */
function restore(ns: string, input: string): Promise<void> {
  const argv = ns === '' ? ['iptables-restore', '-w', '-n'] : ['ip', 'netns', 'exec', ns, 'iptables-restore', '-w', '-n']
  return new Promise((resolve, reject) => {
    const child = execFile(argv[0]!, argv.slice(1), (err) => (err ? reject(err) : resolve()))
    child.stdin?.end(input)
  })
}

/**
 * Removes what a run killed before it could clean up (SIGKILL of the test process): test
 * namespaces and bridges whose tag no running test owns, and root-namespace rules naming them.
 */
async function sweepStale(): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list'])
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const tag = tagPattern.exec(name)
    if (tag !== null && !ownerRuns(tag[1]!)) await run('ip', ['netns', 'del', name]).catch(() => undefined)
  }
  const links = (await run('ip', ['-o', 'link', 'show', 'type', 'bridge'])).stdout
  for (const m of links.matchAll(/\d+: (k[0-9a-z]+x[0-9a-z]+)-br[:@]/g)) {
    if (!ownerRuns(tagPattern.exec(`${m[1]}-`)![1]!)) await run('ip', ['link', 'del', `${m[1]}-br`]).catch(() => undefined)
  }
  const chains = (await run('iptables', ['-w', '-S']).catch(() => ({ stdout: '' }))).stdout
  for (const m of chains.matchAll(/^-N (k([0-9a-z]+)x[0-9a-z]+-cut)$/gm)) {
    if (ownerRuns(m[2]!)) continue
    for (const args of [['-D', 'INPUT', '-j', m[1]!], ['-F', m[1]!], ['-X', m[1]!]]) await run('iptables', ['-w', ...args]).catch(() => undefined)
  }
}

let networksMade = 0
/** A network's tag: k, the owner's pid in base 36, x, a counter. */
const tagPattern = /^k([0-9a-z]+)x[0-9a-z]+-/

function ownerRuns(pid36: string): boolean {
  const pid = parseInt(pid36, 36)
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

let skipReported = false

/**
 * Why test hosts cannot run here, or undefined when they can (said once on stdout: a skipped
 * scenario must say so). Installs iptables if it is missing and it may.
 */
export function testHostsUnavailable(): string | undefined {
  const reason = hostsUnavailableReason()
  if (reason !== undefined && !skipReported) {
    skipReported = true
    process.stdout.write(`test hosts skipped: ${reason}\n`)
  }
  return reason
}

function hostsUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return 'test hosts need Linux network namespaces'
  if (process.getuid?.() !== 0) return 'test hosts need root (network namespaces, iptables, mounts); CI runs as root'
  if (!has('ip')) return 'test hosts need iproute2 (`ip`)'
  if (!has('iptables') && !aptInstall('iptables')) return 'test hosts need iptables (apt-get install -y iptables failed)'
  try {
    execFileSync('iptables', ['-w', '-S', 'INPUT'], { stdio: 'ignore' })
  } catch {
    return 'iptables does not work in this kernel'
  }
  return undefined
}

export function has(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

let aptUpdated = false

/** Installs a Debian package (as root); false when that is not possible here. */
export function aptInstall(pkg: string): boolean {
  if (process.getuid?.() !== 0 || !has('apt-get')) return false
  try {
    if (!aptUpdated) execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', timeout: 180_000 })
    aptUpdated = true
    execFileSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'ignore', timeout: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
    return true
  } catch {
    return false
  }
}
