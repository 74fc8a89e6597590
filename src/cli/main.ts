#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander'
import { changeInWords, changeSettled, connect, topologyMap, type KumoClient } from '../client/client.js'
import { pendingPartitionsOf, queuedPartitionsOf } from '../core/handoff.js'
import { loadBalancingPolicies, type LoadBalancing } from '../core/balancing.js'
import { defaultTableFileBytes, tableFileBytesMax } from '../core/cache-sizes.js'
import { consistencyLevels, type Consistency } from '../core/consistency.js'
import { KumoError } from '../core/errors.js'
import { nodeCacheSizes, nodeOpenTables, nodePrewarmBytes, startNode } from '../node/node.js'
import { clusterStatus, formatPartitions, formatStatus } from './status.js'
import { profileOnSignal } from './cpu-profile-signal.js'
import { planInWords } from './plan.js'
import { moveBytesPerSecondDefault, moveRecordsPerSecondDefault } from '../core/move-pace.js'
import { loadFormats, recordsOf } from './load-file.js'
import { planKinds, type PlanKind } from '../core/change-plan.js'
import { addUser, clientSecurity, listUsers, makeCertificates, passwordFromStdin, removeUser, type ClientSecurityOptions } from './security.js'

const mebibyte = 1024 * 1024
/** The cache sizes a node started here gets by default (for help text). */
const defaultCaches = nodeCacheSizes()
const defaultOpenTablesHere = nodeOpenTables()
const defaultPrewarmHere = nodePrewarmBytes()

const defaultSeeds = process.env.KUMO_SEEDS ?? '127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003'

function list(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean)
}

function wholeNumber(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number')
  return n
}

function share(value: string): number {
  const n = Number(value)
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError('must be a fraction above 0 and at most 1')
  return n
}

const program = new Command()
program
  .name('kumo')
  .description('Kumo: a partitioned, replicated key-value database.\nRun a node with `kumo start`; use a cluster with the other commands.')
  .option('--seeds <hosts>', 'comma-separated host:port of cluster nodes', defaultSeeds)
  .addOption(new Option('--consistency <level>', 'read/write consistency').choices(consistencyLevels as string[]).default('quorum'))
  .addOption(new Option('--load-balancing <policy>', 'replica selection policy').choices(loadBalancingPolicies as string[]))
  .option('--timeout <ms>', 'deadline per request in milliseconds', wholeNumber, 5000)
  .option('--tls-ca <file>', "TLS: the cluster's CA certificate (PEM; default $KUMO_TLS_CA)")
  .option('--tls-cert <file>', 'TLS: a user certificate to authenticate with (default $KUMO_TLS_CERT)')
  .option('--tls-key <file>', 'TLS: its key (default $KUMO_TLS_KEY)')
  .option('--user <name>', 'authenticate as this user (default $KUMO_USER); the password comes from $KUMO_PASSWORD')
  .showHelpAfterError()
  // Global options go before the command (kumo --seeds h:p get k), so `start --seeds` is start's own.
  .enablePositionalOptions()

interface GlobalOptions extends ClientSecurityOptions {
  seeds: string
  consistency: Consistency
  loadBalancing?: LoadBalancing
  timeout: number
}

async function withClient<T>(fn: (db: KumoClient, opts: GlobalOptions) => Promise<T>): Promise<T> {
  const opts = program.opts<GlobalOptions>()
  const db = await connect({
    seeds: list(opts.seeds),
    consistency: opts.consistency,
    timeoutMs: opts.timeout,
    ...clientSecurity(opts),
    ...(opts.loadBalancing ? { loadBalancing: opts.loadBalancing } : {}),
  })
  try {
    return await fn(db, opts)
  } finally {
    await db.close()
  }
}

program
  .command('start')
  .description('run a node in the foreground until SIGINT or SIGTERM')
  .requiredOption('--id <id>', 'unique node id, e.g. n1')
  .requiredOption('--listen <host:port>', 'address to listen on, e.g. 127.0.0.1:7001')
  .requiredOption('--data <dir>', 'data directory (created if missing)')
  .option('--seeds <hosts>', 'comma-separated host:port of nodes to join (may include this one)')
  .option('--advertise <host:port>', 'address peers and clients should use (default: --listen)')
  .option('--partitions <n>', 'partitions when founding a cluster (power of two)', wholeNumber, 256)
  .option('--replicas <n>', 'replicas per partition (N)', wholeNumber, 3)
  .option('--weight <n>', 'weight for weighted-round-robin', wholeNumber, 1)
  .option('--sync', 'fsync every write batch', false)
  // Kept so that scripts written for it still start a node: every store keeps its records in key order now.
  .addOption(new Option('--no-key-index', 'ignored (records are stored in key order since storage layout 2)').hideHelp())
  .option('--block-cache <MiB>', `LevelDB's block cache (default: 3/4 of 1/128 of memory, ${defaultCaches.blockCacheBytes / mebibyte} MiB here)`, wholeNumber)
  .option('--row-cache <MiB>', `memory for recently used records in front of LevelDB, 0: none (default: 1/4 of 1/128 of memory, ${defaultCaches.rowCacheBytes / mebibyte} MiB here)`, wholeNumber)
  .option('--open-tables <n>', `table files LevelDB keeps open (its index and filters in memory, ~1/64 of a file each); reads of others reopen them (default: as many as 1/64 of memory holds, ${defaultOpenTablesHere} of ${defaultTableFileBytes / mebibyte} MiB here)`, wholeNumber)
  .option('--table-file-size <MiB>', `the size LevelDB cuts its table files at, 1 to ${tableFileBytesMax / mebibyte}: LevelDB maps 1,000 files at most and reads the others with slower copies, so a node whose store is larger than 1,000 files of this size reads part of it slower; files written before keep their size until compacted (default: ${defaultTableFileBytes / mebibyte})`, wholeNumber)
  .option('--prewarm-max <MiB>', `map the table files in at start and after kumo compact when they hold at most this much, so reads do not fault them in one page at a time; 0: never (default: 1/4 of memory, ${defaultPrewarmHere / mebibyte} MiB here)`, wholeNumber)
  .addOption(new Option('--quorum <mode>', 'sloppy: hints on fallback nodes count toward W; strict: only replicas').choices(['sloppy', 'strict']).default('sloppy'))
  .option('--hint-window <ms>', 'drop hints older than this', wholeNumber, 3 * 60 * 60 * 1000)
  .option('--repair-interval <ms>', 'background anti-entropy period (0: off)', wholeNumber, 10 * 60 * 1000)
  .option('--repair-share <fraction>', "the share of its time a background anti-entropy pass spends repairing at most, past its first 2 s of work (it pauses between partitions)", share, 0.1)
  .option('--move-rate <records/s>', 'records a second this node repairs at most; a membership change\'s copies share it: each of the nodes that copy in it takes its part', wholeNumber, moveRecordsPerSecondDefault)
  .option('--move-bytes <MiB/s>', 'MiB a second this node copies at most while it takes over partitions or repairs them', wholeNumber, moveBytesPerSecondDefault / mebibyte)
  .option('--moves-at-once <partitions>', 'partitions a membership change moves at once when this node is the claimant (a wave: queued ones are staged as others finish)', wholeNumber, 64)
  .option('--move-loop-delay <ms>', "slow copies and repairs down (to a tenth of --move-rate at least) while the cluster's latest event loop runs later than this (p99 over a heartbeat); 0: always at --move-rate (the default)", wholeNumber, 0)
  .option('--tombstone-grace <ms>', 'purge tombstones and expired values this long after they died', wholeNumber, 10 * 24 * 60 * 60 * 1000)
  .option('--metrics-port <port>', 'serve Prometheus metrics on http://<listen host>:<port>/metrics', wholeNumber)
  .option('--clock-offset-max <ms>', "coordinate no writes while this node's clock is further than this from the cluster's", wholeNumber, 10_000)
  .option('--max-connections <n>', 'connections served at once; past it a new one is refused (OVERLOADED)', wholeNumber, 4096)
  .option('--idle-timeout <ms>', 'close a connection idle this long', wholeNumber, 120_000)
  .option('--max-scans <n>', 'scans running at once; past it a scan waits its turn (up to 2 s, 64 in line), then is refused (OVERLOADED)', wholeNumber, 4)
  .option('--scan-rate <MiB>', 'MiB a second all scans together send at most', wholeNumber, 32)
  .option('--max-request-bytes <MiB>', 'bytes of requests received and not yet answered, over all connections', wholeNumber, 256)
  .addOption(new Option('--load-balancing <policy>', 'how this node picks replicas to read from and forward to').choices(loadBalancingPolicies as string[]))
  .option('--tls-ca <file>', "TLS for clients and peers: the cluster's CA certificate (default $KUMO_TLS_CA)")
  .option('--tls-cert <file>', 'this node\'s certificate, naming it (urn:kumo:node:<id>; kumo certs makes one) (default $KUMO_TLS_CERT)')
  .option('--tls-key <file>', 'its key (default $KUMO_TLS_KEY)')
  .option('--auth-file <file>', 'users, password hashes and roles (kumo user add); needs TLS. Reloaded when it changes')
  .option('--insecure', 'allow a non-loopback --listen without TLS and authentication (warns at every start)', false)
  .option('--replace <dead-id>', 'join as the replacement of a node that is dead for good: take exactly its partitions')
  .option('--standby', 'join the cluster as a member that owns nothing until made an owner (kumo join ID..., or kumo plan join + kumo commit): several nodes added so join in one change', false)
  .option('--metrics-host <host>', 'address the metrics port listens on (default: the --listen host)')
  .addOption(new Option('--gossip-interval <ms>', 'gossip and heartbeat period').argParser(wholeNumber).default(1000).hideHelp())
  .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'silent']).default('warn'))
  .action(async (o, cmd: Command) => {
    const globals = cmd.parent!.opts<GlobalOptions>()
    if (o.keyIndex === false) console.error('kumo start: --no-key-index is ignored: records are stored in key order since storage layout 2')
    const node = await startNode({
      id: o.id,
      listen: o.listen,
      dataDir: o.data,
      seeds: o.seeds ? list(o.seeds) : [],
      ...(o.advertise ? { advertise: o.advertise } : {}),
      partitions: o.partitions,
      replicationFactor: o.replicas,
      weight: o.weight,
      sync: o.sync,
      ...(o.rowCache === undefined ? {} : { rowCacheBytes: o.rowCache * mebibyte }),
      ...(o.blockCache === undefined ? {} : { blockCacheBytes: o.blockCache * mebibyte }),
      ...(o.openTables === undefined ? {} : { openTables: o.openTables }),
      ...(o.tableFileSize === undefined ? {} : { tableFileBytes: o.tableFileSize * mebibyte }),
      ...(o.prewarmMax === undefined ? {} : { prewarmBytesMax: o.prewarmMax * mebibyte }),
      quorum: o.quorum,
      hintWindowMs: o.hintWindow,
      repairIntervalMs: o.repairInterval,
      repairShare: o.repairShare,
      repairRecordsPerSecond: o.moveRate,
      repairBytesPerSecond: o.moveBytes * mebibyte,
      moveLoopDelayTargetMs: o.moveLoopDelay,
      movesAtOnce: o.movesAtOnce,
      tombstoneGraceMs: o.tombstoneGrace,
      clockOffsetMaxMs: o.clockOffsetMax,
      connectionsMax: o.maxConnections,
      idleTimeoutMs: o.idleTimeout,
      scansInFlightMax: o.maxScans,
      scanBytesPerSecond: o.scanRate * mebibyte,
      requestBytesInFlightMax: o.maxRequestBytes * mebibyte,
      gossipIntervalMs: o.gossipInterval,
      consistency: globals.consistency,
      ...(o.metricsPort !== undefined ? { metricsPort: o.metricsPort } : {}),
      ...((o.loadBalancing ?? globals.loadBalancing) ? { loadBalancing: o.loadBalancing ?? globals.loadBalancing } : {}),
      logLevel: o.logLevel,
      ...nodeTls(o),
      ...(o.replace ? { replace: o.replace } : {}),
      ...(o.standby === true ? { standby: true } : {}),
      ...(o.metricsHost ? { metricsHost: o.metricsHost } : {}),
      ...(o.authFile ? { authFile: o.authFile } : {}),
      insecure: o.insecure === true,
      onRemoved: (message, left) => {
        if (left) process.stdout.write(`kumo node ${o.id}: ${message}\n`)
        else process.stderr.write(`kumo: FAILED_PRECONDITION: ${message}\n`)
        process.exit(left ? 0 : 3)
      },
    })
    process.stdout.write(
      `kumo node ${node.id} listening on ${node.address}, data in ${o.data}${node.metricsPort !== undefined ? `, metrics on :${node.metricsPort}/metrics` : ''}\n`,
    )
    burnForTests()
    const stopProfile = profileOnSignal(node.id, o.data, (line) => process.stdout.write(`${line}\n`))
    let stopping = false
    const stop = (signal: string): void => {
      if (stopping) return
      stopping = true
      process.stdout.write(`kumo node ${node.id}: ${signal}, stopping\n`)
      // A profile still running is written before the node stops (it never fails: it says why).
      stopProfile().then(() => node.stop()).then(
        () => process.exit(0),
        (err) => {
          process.stderr.write(`kumo node ${node.id}: stop failed: ${(err as Error).message}\n`)
          process.exit(1)
        },
      )
    }
    process.on('SIGINT', () => stop('SIGINT'))
    process.on('SIGTERM', () => stop('SIGTERM'))
    await new Promise(() => undefined)
  })

/**
 * Test-only switch: KUMO_TEST_BURN_PERCENT=80 makes this process spin for 80% of every 10 ms,
 * so tests can show that load balancing steers traffic away from a slow node.
 */
function burnForTests(): void {
  const percent = Number(process.env.KUMO_TEST_BURN_PERCENT ?? 0)
  if (!(percent > 0)) return
  const burnMs = Math.min(95, percent) / 10
  setInterval(() => {
    const until = performance.now() + burnMs
    while (performance.now() < until) {
      // spin
    }
  }, 10)
}

program
  .command('put <key> <value>')
  .description('store a value')
  .option('--ttl <ms>', 'expire after this many milliseconds', wholeNumber)
  .action(async (key: string, value: string, o) => {
    await withClient((db) => db.put(key, value, o.ttl ? { ttlMs: o.ttl } : {}))
    process.stdout.write('OK\n')
  })

program
  .command('get <key>')
  .description('print a value (exit 1 if the key is absent)')
  .action(async (key: string) => {
    const value = await withClient((db) => db.get(key))
    if (value === undefined) {
      process.stderr.write(`(not found)\n`)
      process.exitCode = 1
    } else process.stdout.write(`${value.toString('utf8')}\n`)
  })

program
  .command('del <key>')
  .description('delete a key')
  .action(async (key: string) => {
    await withClient((db) => db.del(key))
    process.stdout.write('OK\n')
  })

program
  .command('scan')
  .description('print keys and values in key order, tab-separated')
  .option('--prefix <p>', 'only keys starting with this')
  .option('--gte <key>', 'from this key (inclusive)')
  .option('--lt <key>', 'up to this key (exclusive)')
  .option('--limit <n>', 'at most this many entries', wholeNumber)
  .action(async (o) => {
    await withClient(async (db) => {
      for await (const { key, value } of db.scan({ prefix: o.prefix, gte: o.gte, lt: o.lt, limit: o.limit })) {
        process.stdout.write(`${key.toString('utf8')}\t${value.toString('utf8')}\n`)
      }
    })
  })

program
  .command('load <file>')
  .description("load many records fast from a file ('-': standard input): batches in flight, retried on retryable errors, with progress on stderr")
  .addOption(new Option('--format <format>', 'jsonl: {"key": "...", "value": "...", "ttl": ms} a line; tsv: key TAB value a line, as kumo scan prints').choices(loadFormats).default('jsonl'))
  .option('--batch-size <n>', 'records per batch (at most 1000; a batch also ends past ~3 MiB, below the 4 MiB batch limit)', wholeNumber, 500)
  .option('--concurrency <n>', 'batches in flight at most (halved by a retry, once a stall, growing back as batches are acknowledged)', wholeNumber, 16)
  .action(async (file: string, o) => {
    await withClient(async (db) => {
      const position = { bytes: 0 }
      let last = { records: 0, bytes: 0, retried: 0, inFlightLimit: o.concurrency as number, seconds: 0 }
      const report = (): void => {
        const backedOff = last.inFlightLimit < o.concurrency ? ` (the cluster fell behind: ${last.inFlightLimit} of ${o.concurrency} batches in flight for now)` : ''
        process.stderr.write(`loaded ${last.records.toLocaleString('en-US')} records (${mib(position.bytes)} read), ${rate(last)} records/s${last.retried ? `, ${last.retried} batches retried` : ''}${backedOff}\n`)
      }
      const ticker = setInterval(report, 2000)
      try {
        last = await db.load(recordsOf(file, o.format, position), { batchSize: o.batchSize, concurrency: o.concurrency, onProgress: (p) => (last = p), onRetry: (_error, p) => (last = p) })
      } finally {
        clearInterval(ticker)
      }
      process.stdout.write(`loaded ${last.records.toLocaleString('en-US')} records (${mib(last.bytes)} of keys and values) in ${last.seconds.toFixed(1)} s: ${rate(last)} records/s${last.retried ? `; ${last.retried} batches retried after a retryable error` : ''}\n`)
    })
  })

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const rate = (p: { records: number; seconds: number }): string => Math.round(p.records / Math.max(p.seconds, 0.001)).toLocaleString('en-US')

program
  .command('status')
  .description('each node: state as its peers see it, partitions held, L4 TCP and L7 health checks')
  .option('--json', 'print JSON')
  .option('--partitions', 'also list every partition: its replicas and when each last repaired it')
  .action(async (o) => {
    const opts = program.opts<GlobalOptions>()
    const status = await clusterStatus(list(opts.seeds), opts.timeout, { partitions: o.partitions === true, ...clientSecurity(opts) })
    if (o.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`)
    else process.stdout.write(`${formatStatus(status)}\n${o.partitions ? `\n${formatPartitions(status)}\n` : ''}`)
  })

program
  .command('compact')
  .description("compact every node's storage now, one node after another, until its data sits in one level (worth it after a bulk load: reads otherwise share the disk with the compactions it left)")
  .action(async () => {
    await withClient(async (db) => {
      process.stdout.write('compacting each node...\n')
      await db.compact({ onNode: (r) => process.stdout.write(`  ${r.node}: compacted in ${(r.durationMs / 1000).toFixed(1)} s\n`) })
      process.stdout.write('compaction done\n')
    })
  })

program
  .command('repair')
  .description('run anti-entropy now on every node: replicas compare hash trees and exchange what differs')
  .option('--partition <n>', 'only this partition', wholeNumber)
  .action(async (o) => {
    await withClient(async (db) => {
      process.stdout.write(`repairing ${o.partition === undefined ? 'every partition' : `partition ${o.partition}`} on each node...\n`)
      await db.repair({
        ...(o.partition === undefined ? {} : { partition: o.partition }),
        onNode: (r) =>
          process.stdout.write(
            `  ${r.node}: ${r.partitions} partitions in ${(r.durationMs / 1000).toFixed(1)} s, pulled ${r.pulled}, pushed ${r.pushed}${r.skipped ? `, ${r.skipped} replica comparisons skipped (peer down)` : ''}\n`,
          ),
      })
      process.stdout.write('repair done\n')
    })
  })

/**
 * Shows a membership change's progress until it is done, then what became of it: `ids` removed
 * for good (leave, remove) or still members (cancelled, or a new replica went down and its
 * moves reverted).
 */
async function waitSettled(db: KumoClient, epoch: number, ids: readonly string[], kind: 'join' | 'leave' | 'remove' = 'remove'): Promise<void> {
  let last = ''
  for (;;) {
    const views = await db.nodeViews()
    if (changeSettled(views, epoch)) break
    const topology = await db.topology()
    const behind = views.filter((v) => v.epoch < epoch)
    const copying = views.filter((v) => v.partitionsFilling > 0)
    const line = [
      `  ${changeInWords(topology) ?? 'finishing'}`,
      copying.length > 0 ? `copying: ${copying.map((v) => `${v.id} ${v.partitionsFilling}`).join(', ')}` : '',
      behind.length > 0 ? `waiting for ${behind.map((v) => v.id).join(', ')} to take map epoch ${epoch}` : '',
    ]
      .filter((part) => part !== '')
      .join('; ')
    if (line !== last) process.stdout.write(`${line}\n`)
    last = line
    await new Promise((r) => setTimeout(r, 500))
  }
  const topology = await db.topology()
  if (kind === 'join') {
    const owners = ids.filter((id) => topology.partitions.some((list) => list.includes(id)))
    if (owners.length === ids.length) {
      process.stdout.write(`done: ${ids.map((id) => `${id} holds ${topology.partitions.filter((list) => list.includes(id)).length} partitions`).join(', ')}\n`)
      return
    }
    const outside = ids.filter((id) => !owners.includes(id))
    process.stdout.write(`the change ended without ${outside.join(', ')} owning partitions (cancelled, or it went down and its moves went back); run the command again to retry\n`)
    process.exitCode = 1
    return
  }
  const kept = ids.filter((id) => !topology.removed.includes(id))
  if (kept.length === 0) {
    process.stdout.write(`done: ${ids.join(', ')} removed for good; every partition has its replicas on the other nodes\n`)
    return
  }
  const holds = kept.map((id) => `${id} holds ${topology.partitions.filter((list) => list.includes(id)).length} partitions`).join(', ')
  process.stdout.write(`the change ended without removing ${kept.join(', ')} (cancelled, or a new replica went down and its moves went back): ${holds}; run the command again to retry\n`)
  process.exitCode = 1
}

program
  .command('transfers')
  .description('partitions still being copied after a membership change: per node, what is left, the copy rate and an estimate of the time left')
  .option('--watch', 'keep printing every 2 s until nothing is being copied')
  .action(async (o) => {
    await withClient(async (db) => {
      // Partitions a node still has to take, from one map (so that a wave staged between two
      // readings moves none from one count to the other): pending there, and queued for later waves.
      const leftOf = async (): Promise<Map<string, { pending: number; queued: number }>> => {
        const map = topologyMap(await db.topology())
        return new Map(map.nodes.map((id) => [id, { pending: pendingPartitionsOf(map, id).length, queued: queuedPartitionsOf(map, id).length }]))
      }
      const total = (l: { pending: number; queued: number } | undefined): number => (l === undefined ? 0 : l.pending + l.queued)
      let before = await db.nodeViews()
      let movingBefore = await leftOf()
      let at = Date.now()
      for (;;) {
        await new Promise((r) => setTimeout(r, 2000))
        const now = await db.nodeViews()
        const movingNow = await leftOf()
        const seconds = (Date.now() - at) / 1000
        // What is left, from the partitions' sizes: an ETA at the measured copy rate while no
        // partition has completed yet.
        const left = await db.copiesLeft().catch(() => [])
        const rows = [['NODE', 'MAP EPOCH', 'PARTITIONS LEFT (queued)', 'COPIED (records, MB)', 'RATE (records/s, MB/s)', 'PARTITIONS/s', 'ETA', 'RECORDS LEFT (approx.)']]
        for (const v of now) {
          const was = before.find((b) => b.id === v.id)
          const records = was === undefined ? 0 : (v.recordsCopied - was.recordsCopied) / seconds
          const bytes = was === undefined ? 0 : (v.bytesCopied - was.bytesCopied) / seconds
          const queued = movingNow.get(v.id)?.queued ?? 0
          const partitionsLeft = total(movingNow.get(v.id))
          const done = was === undefined || !movingBefore.has(v.id) ? 0 : Math.max(0, total(movingBefore.get(v.id)) - partitionsLeft) / seconds
          const l = left.find((x) => x.node === v.id)
          const remaining = l === undefined ? undefined : Math.max(0, l.source - l.held)
          // Partitions count down as their reads move to the node (copied, then compared with
          // every replica); while none has, the records left say more.
          const eta =
            partitionsLeft === 0
              ? '-'
              : done > 0
                ? `~${Math.ceil(partitionsLeft / done)} s`
                : records > 0
                  ? remaining !== undefined
                    ? `~${Math.ceil(remaining / records)} s to copy, then compare`
                    : 'copying; known once partitions complete'
                  : 'unknown yet'
          rows.push([v.id, String(v.epoch), queued > 0 ? `${partitionsLeft} (${queued})` : String(partitionsLeft), `${v.recordsCopied}, ${(v.bytesCopied / 1e6).toFixed(1)}`, `${Math.round(records)}, ${(bytes / 1e6).toFixed(2)}`, done.toFixed(2), eta, remaining === undefined ? '-' : remaining.toLocaleString('en-US')])
        }
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
        const change = changeInWords(await db.topology())
        process.stdout.write(`${change === undefined ? 'no membership change in flight' : `change: ${change}`}\n`)
        process.stdout.write(`${rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')}\n`)
        const busy = change !== undefined || now.some((v) => v.partitionsFilling > 0)
        if (!o.watch || !busy) {
          if (!busy) process.stdout.write('nothing is being copied\n')
          return
        }
        process.stdout.write('\n')
        before = now
        movingBefore = movingNow
        at = Date.now()
      }
    })
  })

program
  .command('leave <id>')
  .description('drain a live node (admin): its partitions get new replicas, which copy them while it keeps serving; once all moved it is removed for good and stops')
  .option('--wait', 'show progress and return once the change is done')
  .action(async (id: string, o) => {
    await withClient(async (db) => {
      const { epoch, replicasMoved } = await db.leaveNode(id)
      process.stdout.write(`draining ${id} (change staged at map epoch ${epoch}): ${replicasMoved} replicas move to other nodes, which copy them while ${id} keeps serving; ${id} stops once they have (kumo transfers shows the progress; kumo cancel stops the change)\n`)
      if (o.wait) await waitSettled(db, epoch, [id])
    })
  })

program
  .command('remove <ids...>')
  .description('take nodes that are dead for good out of the cluster (admin): the others copy their partitions from the remaining replicas; several dead nodes go in one change')
  .option('--wait', 'show progress and return once the change is done')
  .action(async (ids: string[], o) => {
    await withClient(async (db) => {
      const { epoch, replicasMoved } = await db.removeNode(ids)
      process.stdout.write(`removing ${ids.join(', ')} (change staged at map epoch ${epoch}): ${replicasMoved} replicas move to other nodes, copied from the remaining replicas\n`)
      if (!o.wait) {
        process.stdout.write('kumo transfers shows the copying; once done, a node restarted on a removed one\'s data is refused\n')
        return
      }
      await waitSettled(db, epoch, ids)
    })
  })

program
  .command('join <ids...>')
  .description('make standby nodes (started with --standby) owners, in one change (admin): each takes its share of partitions, copied while the old replicas keep serving')
  .option('--wait', 'show progress and return once the change is done')
  .action(async (ids: string[], o) => {
    await withClient(async (db) => {
      const { epoch, replicasMoved } = await db.joinNodes(ids)
      process.stdout.write(`joining ${ids.join(', ')} (change staged at map epoch ${epoch}): ${replicasMoved} replicas move to ${ids.length === 1 ? 'it' : 'them'}, copied while the old replicas keep serving (kumo transfers shows the progress; kumo cancel stops the change)\n`)
      if (o.wait) await waitSettled(db, epoch, ids, 'join')
    })
  })

program
  .command('plan <kind> <ids...>')
  .description('show what a membership change would move, without making it (admin): join standby nodes, leave (drain) a live node, or remove dead ones; kumo commit then makes it')
  .addHelpText('after', '\nExamples:\n  kumo plan join n4 n5     two standby nodes become owners in one change\n  kumo plan leave n3       drain n3\n  kumo plan remove n2      take out n2, dead for good\nThen: kumo commit [--wait]. A plan is kept on the claimant until committed, replaced by another plan, or made stale by any map change.')
  .option('--partitions', 'list every partition that moves')
  .option('--json', 'print the plan, with sizes, as JSON')
  .action(async (kind: string, ids: string[], o) => {
    if (!planKinds.includes(kind as PlanKind)) throw new KumoError('INVALID_ARGUMENT', `kumo plan: the kind of change is one of ${planKinds.join(', ')}, not ${JSON.stringify(kind)}`)
    await withClient(async (db) => {
      const plan = await db.planChange(kind as PlanKind, ids)
      const sizes = await db.planSizes(plan)
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ ...plan, moves: plan.moves.map((m) => ({ ...m, ...sizes.get(m.partition) })) }, null, 2)}\n`)
        return
      }
      process.stdout.write(planInWords(plan, sizes, o.partitions === true))
      process.stdout.write('kumo commit makes this change (kumo commit --wait shows it through)\n')
    })
  })

program
  .command('commit')
  .description('make the membership change planned last (kumo plan), if the map has not changed since (admin)')
  .option('--wait', 'show progress and return once the change is done')
  .action(async (o) => {
    await withClient(async (db) => {
      const plan = await db.commitPlan()
      process.stdout.write(`committed: ${plan.kind} ${plan.nodes.join(' ')} (change staged at map epoch ${plan.epoch}): ${plan.replicasMoved} replicas move (kumo transfers shows the progress; kumo cancel stops the change)\n`)
      if (o.wait) await waitSettled(db, plan.epoch, plan.nodes, plan.kind)
    })
  })

program
  .command('cancel')
  .description('cancel the membership change in flight (admin): partitions whose new replicas have not caught up stay with their old ones')
  .action(async () => {
    await withClient(async (db) => {
      const { epoch, partitionsReverted } = await db.cancelChange()
      process.stdout.write(`cancelled (map epoch ${epoch}): ${partitionsReverted} partitions stay with their old replicas; partitions whose reads had moved finish moving\n`)
    })
  })

program
  .command('topology')
  .description('print the partition map as JSON')
  .action(async () => {
    const topology = await withClient((db) => db.topology())
    process.stdout.write(`${JSON.stringify(topology, null, 2)}\n`)
  })

program
  .command('certs')
  .description('make a CA and TLS certificates for nodes (and users) of a deployment')
  .requiredOption('--out <dir>', 'directory to write PEM files to (keys are written 0600)')
  .option('--nodes <ids>', 'comma-separated node ids: a certificate naming each (urn:kumo:node:<id>)', list, [])
  .option('--hosts <names>', 'comma-separated host names and IP addresses the node certificates are also for', list, [])
  .option('--users <names>', 'comma-separated user names: a client certificate for each (urn:kumo:user:<name>)', list, [])
  .option('--days <n>', 'validity in days', wholeNumber, 825)
  .option('--ca-cert <file>', 'issue with this CA rather than a new one (with --ca-key)')
  .option('--ca-key <file>', "the CA's key")
  .option('--force', 'replace files that exist', false)
  .action(async (o) => {
    await makeCertificates(o, (line) => process.stdout.write(`${line}\n`))
    process.stdout.write(`start each node with --tls-ca ${o.out}/ca.pem --tls-cert ${o.out}/<id>.pem --tls-key ${o.out}/<id>-key.pem\n`)
  })

const user = program.command('user').description("manage the users of an auth file (nodes reload it within seconds)")
user
  .command('add <name>')
  .description('add or replace a user; the password is read from stdin, or made and printed when stdin is a terminal')
  .requiredOption('--auth-file <file>', 'the auth file (created if missing)')
  .addOption(new Option('--role <role>', 'what the user may do').choices(['read', 'readwrite', 'admin']).makeOptionMandatory())
  .option('--prefix <prefix>', 'limit the user to keys starting with this (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
  .option('--certificate-only', 'no password: the user authenticates with a client certificate naming them', false)
  .action(async (name: string, o) => {
    const made = o.certificateOnly ? undefined : await passwordFromStdin()
    await addUser(o.authFile, name, o.role, o.prefix, made?.password)
    process.stdout.write(`user ${name} (${o.role}${o.prefix.length ? `, keys ${o.prefix.join(', ')}` : ''}) written to ${o.authFile}\n`)
    if (made?.generated) process.stdout.write(`password: ${made.password}\n(shown once; connect with KUMO_USER=${name} KUMO_PASSWORD=...)\n`)
  })
user
  .command('remove <name>')
  .description('remove a user')
  .requiredOption('--auth-file <file>', 'the auth file')
  .action((name: string, o) => {
    if (!removeUser(o.authFile, name)) throw new KumoError('INVALID_ARGUMENT', `no user ${name} in ${o.authFile}`)
    process.stdout.write(`user ${name} removed from ${o.authFile}\n`)
  })
user
  .command('list')
  .description('list users and their roles (never their password hashes)')
  .requiredOption('--auth-file <file>', 'the auth file')
  .action((o) => {
    for (const u of listUsers(o.authFile)) process.stdout.write(`${u.name}\t${u.role}\t${u.prefixes.length ? u.prefixes.join(',') : '*'}\t${u.password ? 'password' : 'certificate'}\n`)
  })

/** A node's TLS files from start's options or $KUMO_TLS_*: all three, or none. */
function nodeTls(o: { tlsCa?: string; tlsCert?: string; tlsKey?: string }): { tls?: { ca: string; cert: string; key: string } } {
  const ca = o.tlsCa ?? process.env.KUMO_TLS_CA
  const cert = o.tlsCert ?? process.env.KUMO_TLS_CERT
  const key = o.tlsKey ?? process.env.KUMO_TLS_KEY
  if (ca === undefined && cert === undefined && key === undefined) return {}
  if (ca === undefined || cert === undefined || key === undefined) throw new KumoError('INVALID_ARGUMENT', 'TLS needs all of --tls-ca, --tls-cert and --tls-key')
  return { tls: { ca, cert, key } }
}

program.parseAsync().catch((err: unknown) => {
  const code = err instanceof KumoError ? err.code : 'ERROR'
  process.stderr.write(`kumo: ${code}: ${(err as Error).message}\n`)
  process.exit(2)
})
