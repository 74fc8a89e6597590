import http from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/**
 * Prometheus metrics of one node. Each node has its own registry, so several in-process nodes
 * (tests) do not mix their numbers.
 */
export class NodeMetrics {
  readonly registry = new Registry()
  readonly requests: Counter<'op' | 'outcome'>
  readonly latency: Histogram<'op'>
  readonly replicaMessages: Counter<'op' | 'direction'>
  readonly hintsPending: Gauge<'target'>
  readonly repairPartitionsRepaired: Gauge
  readonly repairInProgress: Gauge
  readonly partitionsFilling: Gauge
  readonly partitionsMoving: Gauge<'stage'>
  readonly partitionsStray: Gauge
  readonly partitionsHeld: Gauge<'role'>
  readonly peers: Gauge<'state'>
  readonly rowCacheHits: Counter
  readonly rowCacheMisses: Counter
  readonly rowCacheBytes: Gauge
  readonly rowCacheEntries: Gauge
  readonly storageFailing: Gauge
  readonly tableFiles: Gauge
  readonly openTablesMax: Gauge
  readonly prewarming: Gauge
  readonly clockOffset: Gauge<'peer'>
  readonly peerStateChanges: Counter<'peer' | 'state'>
  readonly peerAvoided: Counter<'peer'>
  readonly peerTimeout: Gauge<'peer'>
  readonly connections: Gauge
  readonly connectionsRefused: Counter
  readonly refused: Counter<'code'>
  readonly copiedRecords: Counter
  readonly scansRunning: Gauge
  readonly scansWaiting: Gauge
  readonly scansRefused: Counter
  readonly copiedBytes: Counter
  readonly moveRate: Gauge
  readonly loopDelay: Gauge
  readonly requestBytesInFlight: Gauge
  private server: http.Server | undefined

  constructor(nodeId: string, collect: (metrics: NodeMetrics) => void) {
    this.registry.setDefaultLabels({ node: nodeId })
    const registers = [this.registry]
    this.requests = new Counter({ name: 'kumo_requests_total', help: 'Client requests coordinated, by operation and outcome (ok or error code)', labelNames: ['op', 'outcome'], registers })
    this.latency = new Histogram({
      name: 'kumo_request_duration_seconds',
      help: 'Client request latency at the coordinator',
      labelNames: ['op'],
      // Sub-millisecond buckets: most requests finish in well under a millisecond of node time.
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    })
    this.replicaMessages = new Counter({ name: 'kumo_replica_messages_total', help: 'Node-to-node requests, by operation and direction (sent or received)', labelNames: ['op', 'direction'], registers })
    // Gauges are filled at scrape time (collect, on the first gauge registered, so it runs before
    // the others are read) rather than kept current on the hot path.
    this.hintsPending = new Gauge({ name: 'kumo_hints_pending', help: 'Hints held for other nodes, by target', labelNames: ['target'], registers, collect: () => collect(this) })
    this.repairPartitionsRepaired = new Gauge({ name: 'kumo_repair_partitions_repaired', help: 'Partitions held that anti-entropy has repaired since start', registers })
    this.repairInProgress = new Gauge({ name: 'kumo_repair_in_progress', help: '1 while anti-entropy runs', registers })
    this.partitionsFilling = new Gauge({ name: 'kumo_partitions_filling', help: 'Partitions a membership change makes this node a new replica of that it is still copying (not read here until done)', registers })
    this.partitionsMoving = new Gauge({ name: 'kumo_partitions_moving', help: 'Partitions the membership change in flight still moves, as this node\'s map says: copying (new replicas catching up), retiring (reads moved; old replicas still take writes) or queued (waiting for a later wave)', labelNames: ['stage'], registers })
    this.partitionsStray = new Gauge({ name: 'kumo_partitions_stray', help: 'Partitions this node holds data of without taking their writes, kept until every node holds the map that moved them', registers })
    this.partitionsHeld = new Gauge({ name: 'kumo_partitions_held', help: 'Partitions held, as primary or as any replica', labelNames: ['role'], registers })
    this.peers = new Gauge({ name: 'kumo_peers', help: 'Peers by state as this node sees them', labelNames: ['state'], registers })
    // Counted by the storage engine on its hot path as plain numbers, copied in at scrape time.
    this.rowCacheHits = new Counter({ name: 'kumo_row_cache_hits_total', help: 'Record lookups answered from the row cache', registers })
    this.rowCacheMisses = new Counter({ name: 'kumo_row_cache_misses_total', help: 'Record lookups the row cache could not answer (read from LevelDB)', registers })
    this.rowCacheBytes = new Gauge({ name: 'kumo_row_cache_bytes', help: 'Bytes of records (with per-entry overhead) held by the row cache', registers })
    this.rowCacheEntries = new Gauge({ name: 'kumo_row_cache_entries', help: 'Records held by the row cache', registers })
    this.tableFiles = new Gauge({ name: 'kumo_storage_table_files', help: "LevelDB's table files on this node (reads reopen files while there are more than kumo_storage_open_tables_max; LevelDB maps 1,000 and reads the others with pread, see --table-file-size)", registers })
    this.openTablesMax = new Gauge({ name: 'kumo_storage_open_tables_max', help: 'Table files LevelDB keeps open at most (--open-tables)', registers })
    this.prewarming = new Gauge({ name: 'kumo_storage_prewarming', help: '1 while this node maps its table files in (at start and after kumo compact): until then its reads fault pages in', registers })
    this.storageFailing = new Gauge({ name: 'kumo_storage_failing', help: '1 while this node\'s storage fails writes (it is read-only until a probe write succeeds)', registers })
    this.clockOffset = new Gauge({ name: 'kumo_clock_offset_seconds', help: 'Each node\'s clock minus the cluster\'s (the median of the live nodes\' clocks), as this node measures it through gossip', labelNames: ['peer'], registers })
    this.peerStateChanges = new Counter({ name: 'kumo_peer_state_changes_total', help: 'Times a peer\'s state (failure detector) changed to up, suspect or down, as this node sees it', labelNames: ['peer', 'state'], registers })
    this.peerAvoided = new Counter({ name: 'kumo_peer_avoided_total', help: 'Times a peer was avoided for leaving a request unanswered (then probed back in)', labelNames: ['peer'], registers })
    this.peerTimeout = new Gauge({ name: 'kumo_peer_replica_timeout_seconds', help: 'How long this node waits for a peer\'s reply before counting it failed: from its measured answer times, within 250 ms and the replica timeout', labelNames: ['peer'], registers })
    this.connections = new Gauge({ name: 'kumo_connections', help: 'Connections open to this node (clients and peers)', registers })
    this.connectionsRefused = new Counter({ name: 'kumo_connections_refused_total', help: 'Connections refused for the connection limit (--max-connections)', registers })
    this.refused = new Counter({ name: 'kumo_requests_refused_total', help: 'Calls refused for who made them: UNAUTHENTICATED (no or wrong credentials) or PERMISSION_DENIED (role, key prefixes, or the Peer service without a node certificate)', labelNames: ['code'], registers })
    this.copiedRecords = new Counter({ name: 'kumo_copied_records_total', help: 'Records copied into partitions this node gained (a join, a leave, a removal, a replacement), by range reads from another replica', registers })
    this.moveRate = new Gauge({ name: 'kumo_move_rate_records_per_second', help: 'Records a second this node may copy or exchange now (membership changes and repairs): paced by how late the cluster\'s event loops run, between a tenth of --move-rate and --move-rate, times this node\'s share of a change\'s copying (1 over the nodes that copy in it)', registers })
    this.loopDelay = new Gauge({ name: 'kumo_loop_delay_seconds', help: 'How late this node\'s event loop ran over its last heartbeat interval (p99 of timer lateness)', registers })
    this.copiedBytes = new Counter({ name: 'kumo_copied_bytes_total', help: 'Bytes (keys and records) copied into partitions this node gained', registers })
    this.scansRunning = new Gauge({ name: 'kumo_scans_running', help: 'Scans running on this node now (at most --max-scans)', registers })
    this.scansWaiting = new Gauge({ name: 'kumo_scans_waiting', help: 'Scans waiting their turn to run (up to 2 s, 64 at most)', registers })
    this.requestBytesInFlight = new Gauge({ name: 'kumo_requests_in_flight_bytes', help: 'Bytes of requests on Pipeline streams (the client library\'s and peers\') this node has received and not yet answered: what it buffers of them, about --max-request-bytes at most (a frame is refused past it)', registers })
    this.scansRefused = new Counter({ name: 'kumo_scans_refused_total', help: 'Scans refused with OVERLOADED: the line was full, or a scan waited 2 s', registers })
    collectDefaultMetrics({ register: this.registry, prefix: 'kumo_' })
  }

  /**
   * Serves /metrics on the port, and the plain-HTTP probes Kubernetes can make whatever the
   * gRPC port's TLS: /healthz (the process answers) and /readyz (200 while the node is
   * SERVING, 503 otherwise, with the reason). Resolves with the bound port.
   */
  listen(port: number, host = '127.0.0.1', ready: () => string | undefined = () => undefined): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = http.createServer((req, res) => {
        if (req.url === '/healthz') {
          res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
          return
        }
        if (req.url === '/readyz') {
          const notReady = ready()
          res.writeHead(notReady === undefined ? 200 : 503, { 'content-type': 'text/plain' }).end(notReady === undefined ? 'SERVING\n' : `NOT_SERVING: ${notReady}\n`)
          return
        }
        if (req.url !== '/metrics') {
          res.writeHead(404).end('not found: try /metrics, /healthz or /readyz\n')
          return
        }
        this.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
          (err: Error) => res.writeHead(500).end(`${err.message}\n`),
        )
      })
      server.once('error', reject)
      server.listen(port, host, () => {
        this.server = server
        resolve((server.address() as { port: number }).port)
      })
    })
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.server === undefined) resolve()
      else this.server.close(() => resolve())
    })
  }
}
