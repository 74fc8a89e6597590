import { readFileSync } from 'node:fs'
import os from 'node:os'
import { defaultCacheSizes, defaultOpenTables, defaultPrewarmBytes, defaultTableFileBytes, openTablesLimit, tableFileBytesMax, tableFileBytesMin, type CacheSizes } from '../core/cache-sizes.js'
import { performance } from 'node:perf_hooks'
import * as grpc from '@grpc/grpc-js'
import { HealthImplementation } from 'grpc-health-check'
import { pino, destination, type Logger } from 'pino'
import { defaultLoadBalancing, loadBalancingPolicies, type LoadBalancing } from '../core/balancing.js'
import { parseConsistency, type Consistency } from '../core/consistency.js'
import { KumoError, toKumoError } from '../core/errors.js'
import { HybridClock } from '../core/hlc.js'
import { messageBytesMax, requestMessageBytesMax } from '../core/limits.js'
import { assertValidMap, removedOf, type PartitionMap } from '../core/partition-map.js'
import { defaultPartitionCount } from '../core/partitioner.js'
import { responsivenessWithin } from '../core/responsiveness.js'
import { TokenBucket } from '../core/token-bucket.js'
import { LoopDelayWatch } from './loop-delay.js'
import { versionAheadMsMax } from '../core/validate.js'
import { nodeIdBytesMax, versionTimestamp } from '../core/version.js'
import { Membership, type MemberView } from '../cluster/membership.js'
import { ClassicLevelEngine } from '../storage/classic-level-engine.js'
import type { StorageEngine } from '../storage/engine.js'
import { partitionCountMax } from '../storage/keys.js'
import { peerRequestMsgBytes, type PeerRequestFrameMsg, type PeerRequestMsg, type PeerResponseFrameMsg, type PeerResponseMsg, type TopologyMsg } from '../wire/messages.js'
import { InFlightBytes, serveMultiplexed } from '../wire/serve-stream.js'
import { isMalformed, kvService, peerService } from '../wire/proto.js'
import { toServiceError } from '../wire/status.js'
import { mapToMsg } from '../wire/map-codec.js'
import { AntiEntropy, defaultAntiEntropyConfig } from '../cluster/anti-entropy.js'
import { defaultHintDeliveryConfig, HintDelivery } from '../cluster/hint-delivery.js'
import { defaultPurgerConfig, Purger } from '../cluster/purger.js'
import { defaultStraySweeperConfig, StraySweeper } from '../cluster/stray-sweeper.js'
import { movesAtOnceDefault, pendingPartitions, queuedPartitions, retiringPartitions, takesWrites } from '../core/handoff.js'
import { ClockSkewWatch, defaultClockOffsetMaxMs } from './clock-skew-watch.js'
import { Coordinator } from './coordinator.js'
import { HintSink } from './hint-sink.js'
import { StorageHealth } from './storage-health.js'
import { VersionBoundStorage } from './version-bound-storage.js'
import { noPeerFields } from '../wire/peer-fields.js'
import { kvHandlers } from './kv-service.js'
import { defaultConnectionsMax, Listener, refusingServer, serverIdleOptions } from './listener.js'
import { ReplicaScanSource } from './replica-scan-source.js'
import { ScanAdmission } from './scan-admission.js'
import { PeerPool } from '../wire/peer-channel.js'
import { insecureChannels, nodeIdentityCheck, tlsChannel, type ChannelSecurity } from '../wire/channel-security.js'
import { Authenticator, type CallIdentity } from './authenticator.js'
import { CertificateFiles, type CertificatePaths } from './certificate-files.js'
import { UserStore } from './user-store.js'
import { NodeMetrics } from './metrics.js'
import { checkPartitions, ReplicaService } from './replica-service.js'

/**
 * The memory this node may count on: the machine's, or its container's limit (cgroup v2
 * memory.max) when that is lower.
 */
export function machineMemoryBytes(): number {
  let limit = Infinity
  try {
    const text = readFileSync('/sys/fs/cgroup/memory.max', 'latin1').trim()
    if (/^\d+$/.test(text)) limit = Number(text)
  } catch {
    // Not Linux, or no cgroup v2: the machine's memory.
  }
  return Math.min(os.totalmem(), limit)
}

/** The caches a node gets unless told otherwise: a share of machineMemoryBytes() (defaultCacheSizes). */
export function nodeCacheSizes(): CacheSizes {
  return defaultCacheSizes(machineMemoryBytes())
}

/** The table-file bytes up to which a node maps its store in at start and after a compaction, unless told otherwise (defaultPrewarmBytes of machineMemoryBytes()). */
export function nodePrewarmBytes(): number {
  return defaultPrewarmBytes(machineMemoryBytes())
}

/** The table files a node's LevelDB keeps open unless told otherwise (defaultOpenTables of machineMemoryBytes()). */
export function nodeOpenTables(tableFileBytes = defaultTableFileBytes): number {
  return defaultOpenTables(machineMemoryBytes(), tableFileBytes)
}

/** The engine's cache settings: those given, the machine's defaults for the rest (memory read only when one is missing). */
function cacheSizesOf(options: Pick<NodeOptions, 'rowCacheBytes' | 'blockCacheBytes' | 'openTables' | 'tableFileBytes'>): { rowCacheBytes: number; cacheBytes: number; openTablesMax: number; tableFileBytes: number } {
  const defaults = options.rowCacheBytes === undefined || options.blockCacheBytes === undefined ? nodeCacheSizes() : undefined
  return {
    rowCacheBytes: options.rowCacheBytes ?? defaults!.rowCacheBytes,
    cacheBytes: options.blockCacheBytes ?? defaults!.blockCacheBytes,
    openTablesMax: options.openTables ?? nodeOpenTables(options.tableFileBytes),
    tableFileBytes: options.tableFileBytes ?? defaultTableFileBytes,
  }
}

export interface NodeOptions {
  /** Unique, stable node id (1-64 bytes). */
  id: string
  /** host:port to listen on; port 0 picks a free one. */
  listen: string
  dataDir: string
  /** Addresses of nodes to contact first (this node's own may be included). */
  seeds?: string[]
  /** The address peers and clients use to reach this node (default: the bound listen address). */
  advertise?: string
  partitions?: number
  replicationFactor?: number
  consistency?: Consistency
  weight?: number
  gossipIntervalMs?: number
  replicaTimeoutMs?: number
  requestTimeoutMs?: number
  /** fsync every write batch. */
  sync?: boolean
  /** Bytes of recently used records kept in memory in front of LevelDB (0: none; default: see nodeCacheSizes). */
  rowCacheBytes?: number
  /** LevelDB's block cache, in bytes (default: see nodeCacheSizes). */
  blockCacheBytes?: number
  /** Table files LevelDB keeps open at most (default: see nodeOpenTables). */
  openTables?: number
  /** The size LevelDB cuts its table files at (default: defaultTableFileBytes, 8 MiB). */
  tableFileBytes?: number
  /**
   * Map the store's table files in at start and after a full compaction when they hold at most
   * this many bytes (storage/prewarm.ts; 0: never; default: see nodePrewarmBytes).
   */
  prewarmBytesMax?: number
  loadBalancing?: LoadBalancing
  logLevel?: string
  /** How long stop() lets in-flight requests finish. */
  drainTimeoutMs?: number
  /** sloppy (default): hints on fallback nodes count toward W. strict: only true replicas count. */
  quorum?: 'sloppy' | 'strict'
  /** Hints older than this are dropped (default 3 hours). */
  hintWindowMs?: number
  /** Background anti-entropy period (default 10 minutes; 0 turns it off). */
  repairIntervalMs?: number
  /**
   * The share of its time a background anti-entropy pass spends repairing, past its first 2 s
   * of work (default 0.1): it pauses between partitions to keep to it (core/duty-cycle).
   */
  repairShare?: number
  /** Records per second anti-entropy and the copies of a membership change move at most (default 2,500: core/move-pace). */
  repairRecordsPerSecond?: number
  /** Bytes a second anti-entropy and the copies of a membership change exchange at most (default 32 MiB). */
  repairBytesPerSecond?: number
  /**
   * Event-loop delay (ms, p99 over a heartbeat) of the cluster's latest node above which copies
   * and repairs slow down, down to a tenth of their most (default 0: always at the most; 20 on a busy cluster).
   */
  moveLoopDelayTargetMs?: number
  /** Partitions a membership change moves at once, a wave at a time, when this node stages or steps it (default 64). */
  movesAtOnce?: number
  /** Client requests a node coordinates at once; past it, requests get OVERLOADED (default 10,000). */
  requestsInFlightMax?: number
  /** Hints held per target node at most; past it, writes for that node are left to anti-entropy (default 1,000,000). */
  hintsPerTargetMax?: number
  /** Tombstones and expired values are purged this long after they died (default 10 days). */
  tombstoneGraceMs?: number
  /** How often the purge sweeps (default 1 hour; 0 turns it off). */
  purgeIntervalMs?: number
  /** How often to look for copies of partitions this node no longer holds, to delete them (default 5 s; 0: never). */
  straySweepIntervalMs?: number
  /** A node whose clock is further than this from the cluster's coordinates no writes (default 10 s). */
  clockOffsetMaxMs?: number
  /** How often a node whose storage fails writes probes it with a write (default 1 s). */
  storageProbeIntervalMs?: number
  /** Bytes a second all scans together send at most (default 32 MiB): they share the node with point requests. */
  scanBytesPerSecond?: number
  /** Bytes of requests received and not yet answered, over all connections, at most (default 256 MiB; a connection: 64 MiB at most). */
  requestBytesInFlightMax?: number
  /** Connections served at once at most; past it, a new one is refused with OVERLOADED (default 4096). */
  connectionsMax?: number
  /** A connection idle this long is closed (default 2 minutes; a live client's keepalive pings keep it open). */
  idleTimeoutMs?: number
  /** Scans running at once at most (default 4): a scan of large values keeps a core busy. Past it a scan waits its turn, up to 2 s and 64 in line, then gets OVERLOADED. */
  scansInFlightMax?: number
  /** Serve Prometheus metrics on http://<metricsHost>:<port>/metrics (0 picks a port; unset: off). */
  metricsPort?: number
  metricsHost?: string
  /**
   * TLS for clients and peers: PEM files of the cluster's CA, and this node's certificate
   * (naming it: urn:kumo:node:<id>) and key. Replaced files take effect for new connections.
   */
  tls?: CertificatePaths
  /** Users, their hashed passwords and roles (see UserStore); needs tls. Unset: no authentication. */
  authFile?: string
  /** Allow a non-loopback listen address without TLS and authentication (a warning at every start). */
  insecure?: boolean
  /**
   * Start as the replacement of `replace`, a node dead for good: this node takes exactly its
   * partitions (copied from their other replicas) and the dead id is removed for good.
   */
  replace?: string
  /** Start as a standby member: it owns nothing until a join makes it an owner (kumo join, or a committed plan). */
  standby?: boolean
  /** Called (after the node stopped) once the cluster's map no longer lists this node: removed for good, or `left` (it was asked to leave). */
  onRemoved?: (message: string, left: boolean) => void
}

export interface KumoNode {
  readonly id: string
  /** The address peers and clients use. */
  readonly address: string
  readonly storage: StorageEngine
  readonly membership: Membership
  readonly hintDelivery: HintDelivery
  readonly antiEntropy: AntiEntropy
  readonly purger: Purger
  readonly straySweeper: StraySweeper
  readonly metrics: NodeMetrics
  /** The port metrics are served on, if they are. */
  readonly metricsPort: number | undefined
  /** True once storage is open and the node is in the cluster's partition map. */
  serving(): boolean
  topology(repairDetail?: boolean): TopologyMsg
  /** First half of a graceful stop: NOT_SERVING, tell peers, let in-flight requests finish. */
  drain(): Promise<void>
  /** Graceful stop: drain, then close the server and storage. */
  stop(): Promise<void>
}

function checkOptions(o: NodeOptions): void {
  const bad = (message: string): never => {
    throw new KumoError('INVALID_ARGUMENT', message)
  }
  if (typeof o.id !== 'string' || o.id.length === 0 || Buffer.byteLength(o.id) > nodeIdBytesMax) bad('node id must be 1 to 64 bytes')
  if (!/^[A-Za-z0-9._-]+$/.test(o.id)) bad(`node id ${JSON.stringify(o.id)} may use only letters, digits, '.', '_' and '-'`)
  if (!/^[^:\s]+:\d+$/.test(o.listen)) bad(`listen address ${JSON.stringify(o.listen)} must be host:port`)
  if (!o.dataDir) bad('a data directory is required')
  const p = o.partitions ?? defaultPartitionCount
  if (!Number.isInteger(p) || p < 1 || p > partitionCountMax || (p & (p - 1)) !== 0) bad(`partitions must be a power of two up to ${partitionCountMax}`)
  const n = o.replicationFactor ?? 3
  if (!Number.isInteger(n) || n < 1 || n > 7) bad('replication factor must be 1 to 7')
  const w = o.weight ?? 1
  if (!Number.isInteger(w) || w < 1 || w > 100) bad('weight must be a whole number from 1 to 100')
  if (o.quorum !== undefined && o.quorum !== 'sloppy' && o.quorum !== 'strict') bad(`quorum must be sloppy or strict, got ${JSON.stringify(o.quorum)}`)
  if (o.hintWindowMs !== undefined && !(o.hintWindowMs > 0)) bad('hint window must be positive')
  if (o.repairIntervalMs !== undefined && !(o.repairIntervalMs >= 0)) bad('repair interval must be 0 or more')
  if (o.repairShare !== undefined && !(o.repairShare > 0 && o.repairShare <= 1)) bad('repair share must be above 0 and at most 1')
  if (o.requestsInFlightMax !== undefined && !(Number.isInteger(o.requestsInFlightMax) && o.requestsInFlightMax >= 1)) bad('requestsInFlightMax must be a whole number of at least 1')
  if (o.hintsPerTargetMax !== undefined && !(Number.isInteger(o.hintsPerTargetMax) && o.hintsPerTargetMax >= 0)) bad('hintsPerTargetMax must be a whole number of at least 0')
  if (o.tombstoneGraceMs !== undefined && !(o.tombstoneGraceMs >= 0)) bad('tombstone grace must be 0 or more')
  if (o.blockCacheBytes !== undefined && !(Number.isSafeInteger(o.blockCacheBytes) && o.blockCacheBytes >= 1024 * 1024)) bad('block cache size must be a whole number of bytes, 1 MiB or more')
  if (o.openTables !== undefined && !(Number.isSafeInteger(o.openTables) && o.openTables >= 100 && o.openTables <= openTablesLimit)) bad(`open tables must be a whole number from 100 to ${openTablesLimit} (LevelDB keeps no more open)`)
  if (o.tableFileBytes !== undefined && !(Number.isSafeInteger(o.tableFileBytes) && o.tableFileBytes >= tableFileBytesMin && o.tableFileBytes <= tableFileBytesMax)) bad(`the table file size must be a whole number of bytes from ${tableFileBytesMin / 2 ** 20} MiB to ${tableFileBytesMax / 2 ** 20} MiB`)
  if (o.rowCacheBytes !== undefined && !(Number.isSafeInteger(o.rowCacheBytes) && o.rowCacheBytes >= 0)) bad('row cache size must be a whole number of bytes, 0 or more')
  if (o.prewarmBytesMax !== undefined && !(Number.isSafeInteger(o.prewarmBytesMax) && o.prewarmBytesMax >= 0)) bad('the prewarm bound must be a whole number of bytes, 0 or more')
  if (o.purgeIntervalMs !== undefined && !(o.purgeIntervalMs >= 0)) bad('purge interval must be 0 or more')
  if (o.repairRecordsPerSecond !== undefined && !(Number.isFinite(o.repairRecordsPerSecond) && o.repairRecordsPerSecond >= 1)) bad('repair records a second must be at least 1')
  if (o.movesAtOnce !== undefined && !(Number.isSafeInteger(o.movesAtOnce) && o.movesAtOnce >= 1)) bad('partitions moved at once must be a whole number, 1 or more')
  if (o.moveLoopDelayTargetMs !== undefined && !(Number.isFinite(o.moveLoopDelayTargetMs) && o.moveLoopDelayTargetMs >= 0)) bad('the move loop delay target must be 0 or more ms')
  if (o.repairBytesPerSecond !== undefined && !(Number.isFinite(o.repairBytesPerSecond) && o.repairBytesPerSecond >= 1)) bad('repair bytes a second must be at least 1')
  if (o.straySweepIntervalMs !== undefined && !(o.straySweepIntervalMs >= 0)) bad('stray sweep interval must be 0 or more')
  if (o.requestBytesInFlightMax !== undefined && !(Number.isSafeInteger(o.requestBytesInFlightMax) && o.requestBytesInFlightMax >= 1024 * 1024)) bad('requestBytesInFlightMax must be a whole number of bytes, at least 1 MiB')
  if (o.connectionsMax !== undefined && !(Number.isInteger(o.connectionsMax) && o.connectionsMax >= 1)) bad('connectionsMax must be a whole number of at least 1')
  if (o.idleTimeoutMs !== undefined && !(Number.isInteger(o.idleTimeoutMs) && o.idleTimeoutMs >= 1000)) bad('idle timeout must be at least 1000 ms')
  if (o.scanBytesPerSecond !== undefined && !(Number.isSafeInteger(o.scanBytesPerSecond) && o.scanBytesPerSecond >= 1024 * 1024)) bad('scanBytesPerSecond must be a whole number of bytes, at least 1 MiB')
  if (o.scansInFlightMax !== undefined && !(Number.isInteger(o.scansInFlightMax) && o.scansInFlightMax >= 1)) bad('scansInFlightMax must be a whole number of at least 1')
  if (o.clockOffsetMaxMs !== undefined && !(o.clockOffsetMaxMs > 0 && o.clockOffsetMaxMs < versionAheadMsMax)) bad(`clock offset limit must be positive and under ${versionAheadMsMax} ms (the bound on versions ahead)`)
  if (o.storageProbeIntervalMs !== undefined && !(o.storageProbeIntervalMs > 0)) bad('storage probe interval must be positive')
  if (o.replicaTimeoutMs !== undefined && !(Number.isFinite(o.replicaTimeoutMs) && o.replicaTimeoutMs >= 1)) bad('replica timeout must be at least 1 ms')
  if (o.loadBalancing !== undefined && !loadBalancingPolicies.includes(o.loadBalancing)) {
    bad(`unknown load balancing ${JSON.stringify(o.loadBalancing)}: use ${loadBalancingPolicies.join(', ')}`)
  }
  if (o.authFile !== undefined && o.tls === undefined) bad('an auth file needs TLS (--tls-ca, --tls-cert, --tls-key): passwords would cross the network in the clear, and nodes could not be told from clients')
  if (o.tls !== undefined && !(typeof o.tls.ca === 'string' && typeof o.tls.cert === 'string' && typeof o.tls.key === 'string')) bad('tls needs the paths of ca, cert and key')
  const listenHost = o.listen.slice(0, o.listen.lastIndexOf(':'))
  if (!isLoopback(listenHost) && (o.tls === undefined || o.authFile === undefined) && o.insecure !== true) {
    bad(
      `refusing to listen on ${o.listen} without ${o.tls === undefined ? 'TLS and authentication' : 'authentication'}: anyone who can reach it could read, write and take over the cluster. ` +
        'Give --tls-ca, --tls-cert, --tls-key (make them with kumo certs) and --auth-file (kumo user add), or --insecure on a network you trust',
    )
  }
  if (o.replace !== undefined && (o.replace === o.id || !/^[A-Za-z0-9._-]{1,64}$/.test(o.replace))) bad(`--replace names the dead node this one replaces: another node's id, not ${JSON.stringify(o.replace)}`)
  if (o.metricsPort !== undefined && (!Number.isInteger(o.metricsPort) || o.metricsPort < 0 || o.metricsPort > 65535)) bad('metrics port must be 0 to 65535')
  for (const seed of o.seeds ?? []) if (!/^[^:\s]+:\d+$/.test(seed)) bad(`seed ${JSON.stringify(seed)} must be host:port`)
}

/** Whether a listen host is reachable from this machine only. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '')
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h)
}

/** Starts a node in this process. Resolves once it listens; it serves once it is in the map. */
export async function startNode(options: NodeOptions): Promise<KumoNode> {
  checkOptions(options)
  const logger: Logger = pino({ name: `kumo:${options.id}`, level: options.logLevel ?? 'warn' }, destination(2))
  const partitionConfig = {
    partitionCount: options.partitions ?? defaultPartitionCount,
    replicationFactor: options.replicationFactor ?? 3,
  }
  const defaultConsistency = parseConsistency(options.consistency, 'quorum')
  if (options.insecure === true && !isLoopback(options.listen.slice(0, options.listen.lastIndexOf(':'))) && (options.tls === undefined || options.authFile === undefined)) {
    logger.warn({ listen: options.listen, tls: options.tls !== undefined, auth: options.authFile !== undefined }, 'INSECURE: listening beyond loopback without TLS and authentication; anyone who reaches this port can read, write and take over the cluster')
  }
  // TLS files and users are read and checked before anything else: a bad one stops startup.
  const certificates = options.tls === undefined ? undefined : new CertificateFiles(options.tls, options.id, logger)
  let users: UserStore | undefined
  try {
    users = options.authFile === undefined ? undefined : new UserStore(options.authFile, logger)
  } catch (err) {
    certificates?.close()
    throw err
  }
  // Membership is made later; a removed node's certificate stops counting as a node's then.
  let isRemoved = (_id: string): boolean => false
  const authenticator = new Authenticator(certificates !== undefined, users, (id) => isRemoved(id))
  const channelSecurity: ChannelSecurity =
    certificates === undefined
      ? insecureChannels
      : (expectedNodeId, address) =>
          tlsChannel(grpc.experimental.createCertificateProviderChannelCredentials(certificates, certificates, { checkServerIdentity: nodeIdentityCheck(expectedNodeId, address, true) }), address)
  // The client-certificate request is optional: clients with passwords have none; a node's
  // is checked against the CA, and a certificate that fails the check authenticates nobody.
  const serverCredentials = certificates === undefined ? grpc.ServerCredentials.createInsecure() : grpc.experimental.createCertificateProviderServerCredentials(certificates, certificates, false)
  const closeSecurity = (): void => {
    certificates?.close()
    users?.close()
  }
  // Storage failures make the node read-only (StorageHealth); every stored version is bounded
  // by the cluster's clock (VersionBoundStorage). Both are wired once the rest exists.
  let storageFailed = (_error: KumoError): void => undefined
  // Concurrent scans, each holding at most its cursors' pages (scanCursorBytesMax) and a page
  // out. A scan past the running bound waits its turn for up to 2 s (scans cost what they
  // return, so most are short), 64 in line at most.
  const scanAdmission = new ScanAdmission(options.id, options.scansInFlightMax ?? 4, 64, 2000)
  let clusterOffsetMs = (): number => 0
  const engine = new ClassicLevelEngine(options.dataDir, {
    sync: options.sync ?? false,
    // Once, on a store written by a Kumo from before layout 2 (storage/keys.ts): a pass over every record.
    onConvert: (records, done) =>
      records < 0
        ? logger.warn('the converted store is compacted')
        : logger.warn({ records }, done ? 'the store is converted to storage layout 2; compacting it' : records === 0 ? 'converting the store to storage layout 2, records in key order (once; a pass over every record)' : 'converting the store to storage layout 2'),
    ...cacheSizesOf(options),
    prewarmBytesMax: options.prewarmBytesMax ?? nodePrewarmBytes(),
    onWriteFailure: (error) => storageFailed(error),
  })
  try {
    await engine.open()
  } catch (err) {
    closeSecurity()
    throw err
  }
  const storage = new VersionBoundStorage(engine, () => Date.now() + clusterOffsetMs())

  let restored: { map: PartitionMap; members: MemberView[] } | undefined
  try {
    const mapBytes = await storage.getMeta('map')
    const membersBytes = await storage.getMeta('members')
    if (mapBytes !== undefined && membersBytes !== undefined) {
      const map = JSON.parse(mapBytes.toString('utf8')) as PartitionMap
      assertValidMap(map)
      if (map.partitionCount !== partitionConfig.partitionCount) {
        throw new KumoError(
          'INVALID_ARGUMENT',
          `data directory ${options.dataDir} belongs to a cluster with ${map.partitionCount} partitions, not ${partitionConfig.partitionCount}`,
        )
      }
      if (removedOf(map).includes(options.id)) {
        throw new KumoError(
          'FAILED_PRECONDITION',
          `node ${options.id} was removed from its cluster for good (map epoch ${map.epoch}); its data in ${options.dataDir} is stale. To bring this machine back, wipe the data directory and start it under a new id (a removed id is never taken back)`,
        )
      }
      restored = { map, members: JSON.parse(membersBytes.toString('utf8')) as MemberView[] }
    }
  } catch (err) {
    await storage.close()
    closeSecurity()
    throw toKumoError(err)
  }

  const server = new grpc.Server({
    'grpc.max_receive_message_length': requestMessageBytesMax,
    'grpc.max_send_message_length': messageBytesMax,
    ...serverIdleOptions(options.idleTimeoutMs ?? 120_000),
  })
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'))
  const connectionsMax = options.connectionsMax ?? defaultConnectionsMax
  const refuser = refusingServer([kvService, peerService], () => `node ${options.id} serves ${connectionsMax} connections at most and has that many open; try another node`)
  const listener = new Listener(server, refuser, serverCredentials, { connectionsMax, silentMs: Math.min(10_000, options.idleTimeoutMs ?? 120_000) })
  let port: number
  try {
    port = await listener.listen(host, Number(options.listen.slice(options.listen.lastIndexOf(':') + 1)))
  } catch (err) {
    await storage.close()
    closeSecurity()
    throw err
  }
  const address = options.advertise ?? `${host}:${port}`

  const metrics = new NodeMetrics(options.id, (m) => {
    m.hintsPending.reset()
    for (const [target, count] of storage.hintCounts()) m.hintsPending.set({ target }, count)
    const repair = antiEntropy.state()
    m.repairPartitionsRepaired.set(repair.partitionsRepaired)
    m.repairInProgress.set(repair.inProgress ? 1 : 0)
    m.partitionsFilling.set(antiEntropy.fillingCount)
    m.partitionsStray.set(Math.max(0, straySweeper.strayPartitions))
    m.copiedRecords.reset()
    m.copiedRecords.inc(antiEntropy.copiedRecords)
    m.copiedBytes.reset()
    m.copiedBytes.inc(antiEntropy.copiedBytes)
    m.moveRate.set(antiEntropy.moveRate)
    m.loopDelay.set(membership.ownLoopDelayMs() / 1000)
    const map = membership.map
    m.partitionsMoving.set({ stage: 'copying' }, map === undefined ? 0 : pendingPartitions(map).length)
    m.partitionsMoving.set({ stage: 'retiring' }, map === undefined ? 0 : retiringPartitions(map).length)
    m.partitionsMoving.set({ stage: 'queued' }, map === undefined ? 0 : queuedPartitions(map).length)
    m.partitionsHeld.set({ role: 'primary' }, map?.replicas.filter((l) => l[0] === options.id).length ?? 0)
    m.partitionsHeld.set({ role: 'replica' }, map?.replicas.filter((l) => l.includes(options.id)).length ?? 0)
    const states = { up: 0, suspect: 0, down: 0 }
    for (const member of membership.allMembers()) if (member.id !== options.id) states[membership.health(member.id)]++
    for (const [state, count] of Object.entries(states)) m.peers.set({ state }, count)
    m.scansRunning.set(scanAdmission.runningNow)
    m.requestBytesInFlight.set(inFlightBytes.used)
    m.scansWaiting.set(scanAdmission.waitingNow)
    m.scansRefused.reset()
    m.scansRefused.inc(scanAdmission.refused)
    const cache = engine.rowCacheStats()
    m.rowCacheHits.reset()
    m.rowCacheHits.inc(cache.hits)
    m.rowCacheMisses.reset()
    m.rowCacheMisses.inc(cache.misses)
    m.rowCacheBytes.set(cache.bytes)
    m.rowCacheEntries.set(cache.entries)
    m.prewarming.set(engine.prewarmRunning ? 1 : 0)
    const tables = engine.cacheStats()
    m.tableFiles.set(tables.tableFiles)
    m.openTablesMax.set(tables.openTablesMax)
    m.storageFailing.set(storageHealth.failing === undefined ? 0 : 1)
    m.connections.set(listener.connections)
    m.connectionsRefused.reset()
    m.connectionsRefused.inc(listener.refused)
    m.peerStateChanges.reset()
    for (const [peer, changes] of membership.healthChanges) for (const [state, count] of Object.entries(changes)) if (count > 0) m.peerStateChanges.inc({ peer, state }, count)
    m.peerAvoided.reset()
    m.peerTimeout.reset()
    for (const [peer, stats] of peers.responsivenessStats()) {
      if (stats.avoided > 0) m.peerAvoided.inc({ peer }, stats.avoided)
      m.peerTimeout.set({ peer }, stats.timeoutMs / 1000)
    }
    m.clockOffset.reset()
    for (const member of membership.allMembers()) {
      const offset = membership.clockOffsetOf(member.id)
      if (offset !== undefined) m.clockOffset.set({ peer: member.id }, offset / 1000)
    }
  })
  // A gossip round must not outlast the interval much: an unanswered peer is the detector's job.
  const gossipTimeoutMs = Math.max(200, options.gossipIntervalMs ?? 1000)
  const replicaTimeoutMs = options.replicaTimeoutMs ?? 1000
  const peers = new PeerPool((op) => metrics.replicaMessages.inc({ op, direction: 'sent' }), responsivenessWithin(replicaTimeoutMs), channelSecurity)
  const seedChannels = new PeerPool(undefined, undefined, channelSecurity)
  const loopDelay = new LoopDelayWatch()
  let elu = performance.eventLoopUtilization()
  let cpu = process.cpuUsage()
  let wall = performance.now()
  let persistChain = Promise.resolve()
  const membership = new Membership(
    { id: options.id, address, weight: options.weight ?? 1, ...(options.replace === undefined ? {} : { replaces: options.replace }), ...(options.standby === true ? { standby: true } : {}) },
    options.seeds ?? [],
    {
      gossipIntervalMs: options.gossipIntervalMs ?? 1000,
      foundingRoundsMax: 10,
      phi: { firstIntervalMs: options.gossipIntervalMs ?? 1000 },
      partitions: partitionConfig,
      movesAtOnce: options.movesAtOnce ?? movesAtOnceDefault,
    },
    {
      gossip: (id, addr, message) =>
        (id !== undefined ? peers.get(id, addr) : seedChannels.get(`seed:${addr}`, addr)).gossip(message, gossipTimeoutMs),
      persist: (map, members) => {
        // Writes are chained so an older map can never land after a newer one.
        persistChain = persistChain
          .then(async () => {
            await storage.putMeta('members', Buffer.from(JSON.stringify(members)))
            await storage.putMeta('map', Buffer.from(JSON.stringify(map)))
          })
          .catch((err) => logger.error({ err }, 'could not persist the partition map'))
      },
      now: () => Date.now(),
      filling: (): number => antiEntropy.fillingCount,
      loopDelayMs: () => loopDelay.read(),
      ready: (): { epoch: number; partitions: readonly number[] } => antiEntropy.ready(),
      // Load = the busier of event-loop utilization and CPU time (one core = 1) since the last
      // heartbeat: the event loop shows a node too busy to answer, CPU shows native work
      // (LevelDB, compression) that the event loop does not see.
      load: () => {
        const next = performance.eventLoopUtilization()
        const delta = performance.eventLoopUtilization(next, elu)
        elu = next
        const cpuNow = process.cpuUsage()
        const wallNow = performance.now()
        const cpuMs = (cpuNow.user - cpu.user + cpuNow.system - cpu.system) / 1000
        const cpuShare = wallNow > wall ? Math.min(1, cpuMs / (wallNow - wall)) : 0
        cpu = cpuNow
        wall = wallNow
        return Math.max(delta.utilization, cpuShare)
      },
    },
    restored,
  )
  clusterOffsetMs = () => membership.clusterOffsetMs()
  isRemoved = (id) => membership.isRemoved(id)

  const clock = new HybridClock()
  // After a restart the wall clock may be behind what this node already wrote (an NTP step,
  // a fast clock before): start the HLC above the newest stored version, so a new write is
  // never ordered before an older one.
  const highWater = storage.highWaterVersion()
  if (highWater.length >= 8) {
    const stored = versionTimestamp(highWater)
    if (!clock.observe(stored, Date.now())) {
      logger.warn({ storedMs: stored.ms, nowMs: Date.now() }, 'stored versions are far ahead of this clock; check the system time')
    }
  }
  // A partition is read only once its replicas have caught up (core/handoff): its storage is its answer.
  const readRecords = (partitions: readonly number[], keys: readonly Buffer[]): Promise<(Buffer | undefined)[]> => storage.getRecordsAt(partitions, keys)
  const hints = new HintSink({ selfId: options.id, storage, membership, peers, hintsPerTargetMax: options.hintsPerTargetMax ?? 1_000_000 })
  const storageHealth = new StorageHealth(
    {
      recover: () => engine.recover(),
      logger,
      onChange: (failing) => {
        void membership.setReadOnly(failing)
        updateHealth()
      },
    },
    { probeIntervalMs: options.storageProbeIntervalMs ?? 1000 },
  )
  storageFailed = (error) => storageHealth.writeFailed(error)
  const clockOffsetMaxMs = options.clockOffsetMaxMs ?? defaultClockOffsetMaxMs
  const clockWatch = new ClockSkewWatch({ skewMs: () => -membership.clusterOffsetMs(), logger }, { limitMs: clockOffsetMaxMs, intervalMs: options.gossipIntervalMs ?? 1000 })
  const coordinator = new Coordinator(
    { selfId: options.id, storage, membership, peers, clock, readRecords, hints, storageFailing: () => storageHealth.failing !== undefined },
    {
      defaultConsistency,
      replicaTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs ?? 5000,
      loadBalancing: options.loadBalancing ?? defaultLoadBalancing,
      quorum: options.quorum ?? 'sloppy',
      clockOffsetMaxMs,
    },
  )
  const purger = new Purger(
    { selfId: options.id, storage, membership, logger },
    {
      intervalMs: options.purgeIntervalMs ?? defaultPurgerConfig.intervalMs,
      graceMs: options.tombstoneGraceMs ?? defaultPurgerConfig.graceMs,
    },
  )
  const straySweeper = new StraySweeper({ selfId: options.id, storage, membership, logger }, { intervalMs: options.straySweepIntervalMs ?? defaultStraySweeperConfig.intervalMs })
  const hintDelivery = new HintDelivery(
    { selfId: options.id, storage, membership, peers, logger },
    { ...defaultHintDeliveryConfig, windowMs: options.hintWindowMs ?? defaultHintDeliveryConfig.windowMs },
  )
  const antiEntropy = new AntiEntropy(
    { selfId: options.id, storage, membership, peers, logger, beforeFill: () => straySweeper.idle(), loopDelayMs: () => membership.worstLoopDelayMs() },
    {
      ...defaultAntiEntropyConfig,
      loopDelayTargetMs: options.moveLoopDelayTargetMs ?? defaultAntiEntropyConfig.loopDelayTargetMs,
      intervalMs: options.repairIntervalMs ?? defaultAntiEntropyConfig.intervalMs,
      backgroundShare: options.repairShare ?? defaultAntiEntropyConfig.backgroundShare,
      recordsPerSecondMax: options.repairRecordsPerSecond ?? defaultAntiEntropyConfig.recordsPerSecondMax,
      bytesPerSecondMax: options.repairBytesPerSecond ?? defaultAntiEntropyConfig.bytesPerSecondMax,
    },
  )
  const replicaService = new ReplicaService({
    storage,
    readRecords,
    takesWrites: (partition) => {
      const map = membership.map
      return map !== undefined && partition < map.partitionCount && takesWrites(map, partition, options.id)
    },
    coordinate: (req) => coordinator.handle(req, true),
    // Writes this node stamps later then sort above what it has stored (and skip the version read).
    observe: (version) => coordinator.observe(version),
    extensions: {
      HINT: async (req) => {
        if (!req.hintTarget) throw new KumoError('INVALID_ARGUMENT', 'HINT without a target')
        if (req.keys.length !== req.records.length) throw new KumoError('INVALID_ARGUMENT', 'keys and records differ in count')
        const partitions = req.partitions.length > 0 ? checkPartitions(req) : undefined
        await storage.putHints(
          req.keys.map((key, i) => ({ target: req.hintTarget, partition: partitions?.[i] ?? req.partition, key, record: req.records[i]! })),
          Date.now(),
          options.hintsPerTargetMax ?? 1_000_000,
        )
        return {}
      },
      DIGEST: async (req) => ({ hashes: await antiEntropy.leafHashes(req.partition) }),
      LEAVES: async (req) => {
        const entries = await antiEntropy.leafEntries(req.partition, req.leaves)
        return { keys: entries.map((e) => e.key), records: entries.map((e) => e.version) }
      },
    },
  })

  let state: 'starting' | 'serving' | 'draining' | 'stopped' = 'starting'
  let inFlight = 0
  const cacheFigures = (): { blockCacheBytes: number; rowCacheBytes: number; rowCacheHits: number; rowCacheMisses: number; storageMemoryBytes: number; tableFiles: number; openTablesMax: number } => {
    const sizes = engine.cacheStats()
    const row = engine.rowCacheStats()
    return { ...sizes, rowCacheHits: row.hits, rowCacheMisses: row.misses }
  }
  let compacting: Promise<{ node: string; durationMs: number }> | undefined
  // Maps the table files in (storage/prewarm.ts): at start, in the background of the requests
  // already served, and after a full compaction, whose new files are unmapped.
  const prewarm = async (after: 'start' | 'compaction'): Promise<void> => {
    const outcome = await engine.prewarm()
    const fields = { after, tableMiB: Math.round(outcome.tableBytes / 2 ** 20), seconds: outcome.ms / 1000, ...(outcome.reason === undefined ? {} : { reason: outcome.reason }) }
    if (outcome.state === 'failed') logger.warn(fields, 'mapping the table files in failed; reads fault them in instead')
    else logger.info(fields, outcome.state === 'done' ? 'table files mapped in' : outcome.state === 'skipped' ? 'table files not mapped in' : 'mapping the table files in stopped')
  }
  const requestsInFlightMax = options.requestsInFlightMax ?? 10_000
  const health = new HealthImplementation({ '': 'NOT_SERVING', 'kumo.Kv': 'NOT_SERVING' })
  const inMap = (): boolean => membership.map?.replicas !== undefined && membership.map.nodes.includes(options.id)
  // SERVING once in the map, and while storage takes writes; a read-only node still answers
  // reads (admit() lets them through), but says NOT_SERVING to health checks.
  const updateHealth = (): void => {
    if (state === 'starting' && inMap() && membership.confirmed) {
      state = 'serving'
      logger.info({ epoch: membership.map?.epoch }, 'serving')
    }
    if (state !== 'serving') return
    const status = storageHealth.failing === undefined ? 'SERVING' : 'NOT_SERVING'
    health.setStatus('', status)
    health.setStatus('kumo.Kv', status)
  }
  membership.onChange(updateHealth)
  if (options.replace !== undefined) {
    // Why this node is not in the map yet, whenever that changes: the operator is waiting on it.
    let said: string | undefined
    membership.onChange(() => {
      const wait = membership.replacementWait()
      if (wait !== undefined && wait !== said) logger.warn({ replace: options.replace }, `not serving yet: ${wait}`)
      if (wait === undefined && said !== undefined) logger.warn(`replacing ${options.replace}: took over its partitions`)
      said = wait
    })
  }
  const hintHandOverMs = 30_000
  // Removed for good while it was away: it must not serve its stale data, nor rejoin under this id.
  membership.onRemoved((epoch, left) => {
    const message = left
      ? `node ${options.id} left the cluster (map epoch ${epoch}): the other nodes copy its partitions from their replicas; it stopped, and its data directory (${options.dataDir}) may be deleted`
      : `node ${options.id} was removed from the cluster for good (map epoch ${epoch}); stopping. To bring this machine back, wipe its data directory (${options.dataDir}) and start it under a new id (a removed id is never taken back)`
    if (left) logger.info({ epoch }, message)
    else logger.error({ epoch }, message)
    // Hints this node holds for others would die with it: a node that left hands them to the
    // partitions' owners first. (One removed for good is stale, and its hints with it; the
    // owners' anti-entropy covers what they carried.)
    const handedOver = left ? hintDelivery.handOver(hintHandOverMs) : Promise.resolve(0)
    void handedOver
      .then((still) => {
        if (still > 0) logger.warn({ hints: still }, `${still} hints could not be handed to their partitions' owners within ${hintHandOverMs / 1000} s; anti-entropy among the owners covers them`)
      })
      .catch((err) => logger.warn({ err }, 'handing over hints failed; anti-entropy among the owners covers them'))
      .then(() => stop())
      .then(() => options.onRemoved?.(message, left))
  })
  antiEntropy.mapChanged()
  membership.onChange(() => antiEntropy.mapChanged())

  const topology = (repairDetail = false): TopologyMsg => {
    const map = membership.map
    if (map === undefined) throw new KumoError('NOT_SERVING', 'this node has not joined a cluster yet')
    const held = storage.hintCounts()
    const nodes = membership.allMembers().map((m) => ({
      id: m.id,
      address: m.address,
      state: membership.health(m.id),
      load: m.load,
      weight: m.weight,
      hintsHeld: held.get(m.id) ?? 0,
      readOnly: m.id === options.id ? storageHealth.failing !== undefined : m.status === 'read-only',
      clockOffsetMs: membership.clockOffsetOf(m.id) ?? 0,
      partitionsFilling: m.id === options.id ? antiEntropy.fillingCount : m.filling,
      ...(m.id === options.id ? { recordsCopied: antiEntropy.copiedRecords, bytesCopied: antiEntropy.copiedBytes, partitionsStray: straySweeper.strayPartitions } : {}),
    }))
    const repair = antiEntropy.state()
    const detail = repairDetail ? { partitionRepairedMs: map.replicas.map((_, p) => antiEntropy.lastRepairOf(p) ?? 0) } : {}
    return { ...mapToMsg(map, nodes, options.id), repair: { ...repair, ...detail } }
  }

  const reachable = (id: string): boolean => membership.address(id) !== undefined && membership.isAlive(id) && peers.find(id)?.usable !== false
  const scanSource = new ReplicaScanSource({
    selfId: options.id,
    storage,
    partitionCount: () => membership.map!.partitionCount,
    replicasOf: (partition) => membership.map!.replicas[partition]!,
    reachable,
    request: (id, req) => peers.get(id, membership.address(id)!).request(req, options.requestTimeoutMs ?? 5000),
    readElsewhere: async (partition, key) => {
      const res = await askReplica(partition, { op: 'READ_LOCAL', partition, keys: [key] })
      return res.records[0]?.length ? res.records[0] : undefined
    },
  })
  const askReplica = async (partition: number, req: Partial<PeerRequestMsg> & { op: PeerRequestMsg['op'] }): Promise<PeerResponseMsg> => {
    let lastError: unknown = new KumoError('UNAVAILABLE', `no replica of partition ${partition} is reachable`)
    for (const id of membership.map!.replicas[partition]!) {
      if (!reachable(id)) continue
      try {
        return await peers.get(id, membership.address(id)!).request({ ...noPeerFields, ...req }, options.requestTimeoutMs ?? 5000)
      } catch (err) {
        lastError = err
      }
    }
    throw toKumoError(lastError)
  }

  // Requests received and not yet answered, in bytes: over all streams, and on any one.
  const inFlightBytes = new InFlightBytes(options.requestBytesInFlightMax ?? 256 * 1024 * 1024)
  const streamBytesMax = Math.min(inFlightBytes.max, 64 * 1024 * 1024)

  const scanBytesPerSecond = options.scanBytesPerSecond ?? 32 * 1024 * 1024
  const scanPace = new TokenBucket(scanBytesPerSecond, scanBytesPerSecond)

  server.addService(
    kvService,
    kvHandlers({
      authenticate: (call) => authenticator.authenticate(call),
      refused: (code) => metrics.refused.inc({ code }),
      usersGeneration: () => users?.generation ?? 0,
      handle: async (req, clientEpoch) => {
        const started = performance.now()
        const res = await coordinator.handle(req, false, clientEpoch)
        metrics.requests.inc({ op: req.op, outcome: res.errorCode || 'OK' })
        const seconds = (performance.now() - started) / 1000
        metrics.latency.observe({ op: req.op }, seconds)
        if (seconds > 1) logger.warn({ op: req.op, ms: Math.round(seconds * 1000), error: res.errorCode || undefined, message: res.errorMessage || undefined }, 'slow request')
        return res
      },
      probe: async () => {
        const failing = storageHealth.failing
        if (failing !== undefined) {
          return { ok: false, detail: `storage fails writes since ${new Date(failing.sinceMs).toISOString()}: ${failing.message}`, writeMs: 0, readMs: 0, ...cacheFigures() }
        }
        // L7: a write and a read of a reserved key in this node's own storage.
        const stamp = Buffer.from(String(Date.now()))
        const t0 = performance.now()
        await storage.putMeta('probe', stamp)
        const t1 = performance.now()
        const back = await storage.getMeta('probe')
        const t2 = performance.now()
        const ok = back !== undefined && back.equals(stamp)
        return { ok, detail: ok ? 'read back what it wrote' : 'read back something else', writeMs: t1 - t0, readMs: t2 - t1, ...cacheFigures() }
      },
      topology,
      epoch: () => membership.map?.epoch ?? 0,
      scanSource,
      scanPace,
      inFlightBytes,
      streamBytesMax,
      admitScan: () => scanAdmission.admit(),
      admit: () => {
        if (state !== 'serving') return new KumoError('NOT_SERVING', `node ${options.id} is ${state === 'starting' ? 'starting' : 'shutting down'}`)
        // Back-pressure: past this many client requests in flight, refuse rather than queue
        // without bound; the client tries another replica or backs off.
        if (inFlight >= requestsInFlightMax) return new KumoError('OVERLOADED', `node ${options.id} has ${inFlight} requests in flight (limit ${requestsInFlightMax})`)
        return undefined
      },
      track: (delta) => {
        inFlight += delta
      },
      // Asked right after the last change finished, a change waits (a few gossip rounds at most)
      // for every node's word that it holds the newest map, rather than being refused for it.
      remove: async (ids, leave) => {
        await membership.mapsAgree(4 * (options.gossipIntervalMs ?? 1000))
        return leave ? membership.leave(ids[0]!) : membership.remove(ids)
      },
      cancel: () => membership.cancel(),
      plan: async (kind, ids, commit) => {
        await membership.mapsAgree(4 * (options.gossipIntervalMs ?? 1000))
        if (!commit) return { ...membership.plan(kind, ids), epoch: 0 }
        const plan = membership.plan(kind, ids)
        return { ...plan, epoch: membership.commit(plan.baseEpoch).epoch }
      },
      commit: (baseEpoch) => {
        const { plan, epoch } = membership.commit(baseEpoch)
        return { ...plan, epoch }
      },
      partitionSizes: async (partitions) => {
        const count = membership.map?.partitionCount ?? 0
        for (const p of partitions) if (!Number.isInteger(p) || p < 0 || p >= count) throw new KumoError('INVALID_ARGUMENT', `partition ${p} is not one of this cluster's (0 to ${count - 1})`)
        if (partitions.length > count) throw new KumoError('INVALID_ARGUMENT', `at most ${count} partitions at a time`)
        const sizes = []
        for (const p of partitions) sizes.push(await storage.partitionSize(p))
        return { records: sizes.map((s) => s.records), bytes: sizes.map((s) => s.bytes) }
      },
      compact: () => {
        // One compaction at a time: a second request while one runs waits for that one.
        compacting ??= (async () => {
          const started = Date.now()
          try {
            await storage.compact()
          } catch (err) {
            throw new KumoError('INTERNAL', `compaction failed: ${(err as Error).message}`, { cause: err })
          }
          // Every table file is new: mapped in before the compaction counts as done, so reads
          // after `kumo compact` do not pay for it a fault at a time.
          await prewarm('compaction')
          return { node: options.id, durationMs: Date.now() - started }
        })().finally(() => {
          compacting = undefined
        })
        return compacting
      },
      repair: async (partition) => {
        const result = await antiEntropy.repair(partition === undefined ? undefined : [partition])
        return { node: options.id, ...result }
      },
    }),
  )
  // The Peer service (the partition map, replica records under any version, hints, repair) is
  // for the cluster's nodes: with TLS, a caller whose certificate names no node is refused, and
  // a node may gossip only as itself.
  const peerRefusal = (call: CallIdentity, claimedId?: string): KumoError | undefined => {
    if (certificates === undefined) return undefined
    const node = authenticator.nodeOf(call)
    if (node === undefined) {
      metrics.refused.inc({ code: 'PERMISSION_DENIED' })
      return new KumoError('PERMISSION_DENIED', 'the Peer service is for the nodes of the cluster: the caller has no node certificate from its CA')
    }
    if (membership.isRemoved(node)) {
      metrics.refused.inc({ code: 'PERMISSION_DENIED' })
      return new KumoError('PERMISSION_DENIED', `node ${node} was removed from the cluster for good`)
    }
    if (claimedId !== undefined && claimedId !== node) {
      metrics.refused.inc({ code: 'PERMISSION_DENIED' })
      logger.warn({ certificate: node, claimed: claimedId }, 'refused gossip from a node claiming to be another')
      return new KumoError('PERMISSION_DENIED', `gossip from node ${node} claims to come from ${claimedId}`)
    }
    return undefined
  }
  server.addService(peerService, {
    Exchange: (call: grpc.ServerDuplexStream<PeerRequestFrameMsg, PeerResponseFrameMsg>) => {
      const refused = peerRefusal(call)
      if (refused !== undefined) {
        call.emit('error', toServiceError(refused))
        return
      }
      serveMultiplexed(
        call,
        (req: PeerRequestMsg) => {
          metrics.replicaMessages.inc({ op: req.op, direction: 'received' })
          return replicaService.handle(req)
        },
        (res: PeerResponseMsg) => {
          let bytes = 16
          for (const r of res.records) bytes += r.length
          return bytes
        },
        {
          requestBytes: peerRequestMsgBytes,
          streamBytesMax,
          node: inFlightBytes,
          refuse: (req, error) => ({ id: req.id, errorCode: error.code, errorMessage: error.message, keys: [], records: [], forward: null, hashes: [], leftOut: 0, partitions: [], more: false, resumeAfter: Buffer.alloc(0) }),
        },
      )
    },
    Gossip: (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      if (isMalformed(call.request)) {
        callback(toServiceError(new KumoError('INVALID_ARGUMENT', 'malformed gossip')))
        return
      }
      // A node removed for good is told so (our map lists it) and heard no further.
      if (membership.isRemoved(call.request.from) && (certificates === undefined || authenticator.nodeOf(call) === call.request.from)) {
        callback(null, membership.answerRemoved(call.request))
        return
      }
      const refused = peerRefusal(call, call.request.from)
      if (refused !== undefined) {
        callback(toServiceError(refused))
        return
      }
      callback(null, membership.receive(call.request))
    },
  })
  health.addToServer(server)

  let metricsPort: number | undefined
  if (options.metricsPort !== undefined) {
    try {
      metricsPort = await metrics.listen(options.metricsPort, options.metricsHost ?? host, () => {
        if (state !== 'serving') return state === 'starting' ? 'starting (not in the partition map yet)' : 'shutting down'
        if (storageHealth.failing !== undefined) return 'storage fails writes (read-only)'
        return undefined
      })
    } catch (err) {
      await listener.close()
      server.forceShutdown()
      refuser.forceShutdown()
      await storage.close()
      closeSecurity()
      throw new KumoError('ADDRESS_IN_USE', `cannot serve metrics on port ${options.metricsPort}: ${(err as Error).message}`)
    }
  }
  listener.serve()
  membership.start()
  clockWatch.start()
  hintDelivery.start()
  antiEntropy.start()
  purger.start()
  straySweeper.start()
  updateHealth()
  logger.info({ address, dataDir: options.dataDir }, 'started')
  void prewarm('start')

  let draining: Promise<void> | undefined
  const drain = (): Promise<void> => {
    draining ??= (async () => {
      state = 'draining'
      health.setStatus('', 'NOT_SERVING')
      health.setStatus('kumo.Kv', 'NOT_SERVING')
      // Peers (and through them, clients) stop routing here before the server goes away.
      await membership.announceStopping().catch(() => undefined)
      membership.stop()
      clockWatch.stop()
      storageHealth.stop()
      hintDelivery.stop()
      antiEntropy.stop()
      loopDelay.stop()
      purger.stop()
      straySweeper.stop()
      const deadline = Date.now() + (options.drainTimeoutMs ?? 5000)
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    })()
    return draining
  }
  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping ??= stopNow()
    return stopping
  }
  const stopNow = async (): Promise<void> => {
    await drain()
    await listener.close()
    refuser.forceShutdown()
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown()
        resolve()
      }, 1000)
      server.tryShutdown(() => {
        clearTimeout(force)
        resolve()
      })
    })
    peers.close()
    seedChannels.close()
    await metrics.close()
    await persistChain
    await engine.close()
    closeSecurity()
    state = 'stopped'
    logger.info('stopped')
  }

  return {
    id: options.id,
    address,
    storage,
    membership,
    hintDelivery,
    antiEntropy,
    purger,
    straySweeper,
    metrics,
    metricsPort,
    drain,
    serving: () => state === 'serving',
    topology,
    stop,
  }
}
