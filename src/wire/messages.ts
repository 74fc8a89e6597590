/** TypeScript shapes of the decoded proto messages (proto-loader: camelCase, defaults on). */
export type OpName = 'GET' | 'PUT' | 'DEL' | 'BATCH' | 'GET_MANY' | 'REPLICA_READ' | 'REPLICA_WRITE' | 'REPLICATE' | 'STORE_HINTS'

export interface BatchOpMsg {
  type: 'PUT' | 'DEL'
  key: Buffer
  value: Buffer
  ttlMs: number
}

export interface RequestMsg {
  id: number
  op: OpName
  key: Buffer
  value: Buffer
  consistency: string
  ttlMs: number
  timeoutMs: number
  ops: BatchOpMsg[]
  keys: Buffer[]
  records: Buffer[]
  hintTarget: string
  unresponsive: string[]
  /** REPLICA_READ: keys whose record headers only are asked (digest reads). */
  versionKeys: Buffer[]
}

export interface ResponseMsg {
  id: number
  errorCode: string
  errorMessage: string
  found: boolean
  value: Buffer
  values?: { found: boolean; value: Buffer }[]
  records?: Buffer[]
  /** REPLICA_READ: one record header per key of versionKeys (empty where none). */
  versions?: Buffer[]
}

const noBytes = Buffer.alloc(0)

/** A request with every field not given at its proto3 default (the id is set when sent). */
export function requestMsg(fields: Partial<RequestMsg> & { op: OpName }): RequestMsg {
  return { id: 0, key: noBytes, value: noBytes, consistency: '', ttlMs: 0, timeoutMs: 0, ops: [], keys: [], records: [], hintTarget: '', unresponsive: [], versionKeys: [], ...fields }
}

/** About the bytes a request takes on the wire and in memory (frame cutting, in-flight bounds). */
export function requestMsgBytes(req: RequestMsg): number {
  let bytes = 24 + req.key.length + req.value.length
  for (const op of req.ops) bytes += 8 + op.key.length + op.value.length
  for (const key of req.keys) bytes += 4 + key.length
  for (const key of req.versionKeys) bytes += 4 + key.length
  for (const record of req.records) bytes += 4 + record.length
  return bytes
}

/** About the bytes a node-to-node request takes (a forwarded client request included). */
export function peerRequestMsgBytes(req: PeerRequestMsg): number {
  let bytes = 16 + (req.forward ? requestMsgBytes(req.forward) : 0)
  for (const key of req.keys) bytes += 4 + key.length
  for (const record of req.records) bytes += 4 + record.length
  return bytes
}

export interface RequestFrameMsg {
  requests: RequestMsg[]
  /** The sender's partition map epoch (0: unknown). */
  epoch?: number
}

export interface ResponseFrameMsg {
  responses: ResponseMsg[]
  epoch: number
}

export type PeerOpName = 'READ' | 'WRITE' | 'FORWARD' | 'SCAN' | 'HINT' | 'DIGEST' | 'LEAVES' | 'READ_LOCAL' | 'SCAN_ACROSS'

export interface PeerRequestMsg {
  id: number
  op: PeerOpName
  partition: number
  keys: Buffer[]
  records: Buffer[]
  forward?: RequestMsg | null
  gte: Buffer
  lt: Buffer
  limit: number
  hintTarget: string
  leaves: number[]
  partitions: number[]
  bytesMax: number
  valueBytesMax: number
  /** READ: headers only (version, flags, expiry), for a digest read. */
  headersOnly: boolean
}

export interface PeerResponseMsg {
  id: number
  errorCode: string
  errorMessage: string
  keys: Buffer[]
  records: Buffer[]
  forward?: ResponseMsg | null
  hashes: number[]
  leftOut: number
  /** SCAN_ACROSS: the partition of each key, and whether the range goes on after resumeAfter. */
  partitions: number[]
  more: boolean
  resumeAfter: Buffer
}

export interface PeerRequestFrameMsg {
  requests: PeerRequestMsg[]
}

export interface PeerResponseFrameMsg {
  responses: PeerResponseMsg[]
}

export interface NodeInfoMsg {
  id: string
  address: string
  state: string
  load: number
  weight: number
  hintsHeld: number
  readOnly: boolean
  clockOffsetMs: number
  /** Partitions it gained and is still copying from their other replicas. */
  partitionsFilling?: number
  /** Records and bytes copied into gained partitions since it started (its own entry only). */
  recordsCopied?: number
  bytesCopied?: number
  /** Partitions it holds data of without taking their writes, as of its last sweep (its own entry only). */
  partitionsStray?: number
}

export interface TopologyMsg {
  epoch: number
  partitionCount: number
  replicationFactor: number
  nodes: NodeInfoMsg[]
  /** Per partition: its read replicas, and while it moves, the list it moves to (`target`, else empty). */
  partitions: { nodes: string[]; target?: string[]; retiring?: string[]; goal?: string[] }[]
  answeredBy: string
  repair?: RepairStateMsg | null
  /** Nodes removed for good. */
  removed?: string[]
  /** The membership change in flight. */
  change?: MapChangeMsg | null
}

export interface MapChangeMsg {
  epoch: number
  kind: string
  adds: string[]
  removes: string[]
  cancelled?: boolean
  /** The partitions carry goal lists (a change moving a wave at a time). */
  waves?: boolean
  /** The epoch of the map that staged the latest wave (0 or absent: the change's own). */
  waveEpoch?: number
}

export interface RepairStateMsg {
  inProgress: boolean
  partitionsRepaired: number
  partitionsHeld: number
  oldestRepairMs: number
  lastRepairMs: number
  partitionRepairedMs?: number[]
}

export interface RepairResponseMsg {
  node: string
  partitions: number
  pulled: number
  pushed: number
  skipped: number
  durationMs: number
}

export interface MemberMsg {
  id: string
  address: string
  generation: number
  heartbeat: number
  status: string
  load: number
  weight: number
  /** Partitions it is still copying (a membership change is in flight while any member is). */
  filling?: number
  /** The dead node it was started to replace (kumo start --replace). */
  replaces?: string
  /** The epoch of the map it holds. */
  mapEpoch?: number
  /** The change whose pending partitions it reports caught up on (`ready`). */
  readyEpoch?: number
  ready?: number[]
  /** Started with --standby: joins only when asked (kumo join). */
  standby?: boolean
  /** How late its event loop ran over the last heartbeat interval (p99, ms). */
  loopDelayMs?: number
  /** It moves a change's partitions in waves. */
  waves?: boolean
}

export interface GossipMsg {
  from: string
  members: MemberMsg[]
  map?: TopologyMsg | null
  sentAtMs: number
  echoSentAtMs: number
}

export interface ScanRequestMsg {
  prefix: Buffer
  gte: Buffer
  lt: Buffer
  limit: number
  pageSize: number
}
