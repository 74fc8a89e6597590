import type * as grpc from '@grpc/grpc-js'
import type { Responsiveness } from '../core/responsiveness.js'
import { requestMsg, requestMsgBytes, type RepairResponseMsg, type RequestMsg, type ResponseFrameMsg, type ResponseMsg, type ScanRequestMsg, type TopologyMsg } from '../wire/messages.js'
import { MultiplexedStream } from '../wire/multiplexed-stream.js'
import { KvClient } from '../wire/proto.js'
import { ReplicaCoalescer } from './replica-coalescer.js'
import { channelOptions, fromServiceError } from '../wire/status.js'
import { insecureChannels, secured, type ChannelSecurity } from '../wire/channel-security.js'

/** The client's link to one node: its Pipeline stream, plus the unary admin calls. */
export class NodeConnection {
  private readonly stream: MultiplexedStream<RequestMsg, ResponseMsg>

  constructor(
    readonly nodeId: string,
    readonly address: string,
    onEpoch: (epoch: number) => void,
    responsiveness?: Responsiveness,
    security: ChannelSecurity = insecureChannels,
    /** A seed: any node of the cluster may answer (its certificate need not name `nodeId`). */
    anyNode = false,
    /** The client's map epoch, sent with every request frame. */
    epoch: () => number = () => 0,
  ) {
    this.stream = new MultiplexedStream(() => new KvClient(address, ...secured(security(anyNode ? undefined : nodeId, address), channelOptions)), {
      method: 'pipeline',
      describe: `node ${nodeId} (${address})`,
      bytesOf: requestMsgBytes,
      onFrame: (frame) => {
        const epoch = (frame as ResponseFrameMsg).epoch
        if (epoch) onEpoch(epoch)
      },
      frameFields: () => ({ epoch: epoch() }),
      // A replica read of no keys: answered at once, without touching storage.
      probe: requestMsg({ op: 'REPLICA_READ' }),
      ...(responsiveness === undefined ? {} : { responsiveness }),
    })
  }

  /** Scans whose stream has not ended. */
  private scans = 0

  private get client(): grpc.Client & Record<string, Function> {
    return this.stream.client
  }

  get createdAtMs(): number {
    return this.stream.createdAtMs
  }

  /** Requests in flight to this node: a scan counts as one until its stream ends. */
  get inFlight(): number {
    return this.stream.inFlight + this.replica.inFlight + this.scans
  }

  /** False while the transport is known to be broken, so the client skips it at once. */
  get reachable(): boolean {
    return this.stream.reachable
  }

  /** Reachable, and not avoided for leaving a request unanswered (Responsiveness). */
  get usable(): boolean {
    return this.stream.usable
  }

  /** How long a replica request of `bytes` to this node may wait, from its measured answer times. */
  replicaTimeoutMs(bytes = 0): number {
    return this.stream.replicaTimeoutMs(bytes)
  }

  request(req: Omit<RequestMsg, 'id'>, timeoutMs: number, immediate = false): Promise<ResponseMsg> {
    return this.stream.request(req, timeoutMs, immediate)
  }

  /** How long this node has recently taken to answer (AnswerTime), or undefined. */
  answerMs(): number | undefined {
    return this.stream.answerMs()
  }

  /** Direct replica reads and writes of one turn, merged into one request each. */
  readonly replica = new ReplicaCoalescer(this)

  topology(timeoutMs: number, repairDetail = false): Promise<TopologyMsg> {
    return new Promise((resolve, reject) => {
      this.client.topology({ repairDetail }, { deadline: Date.now() + timeoutMs }, (err: unknown, res: TopologyMsg) => {
        if (err) reject(fromServiceError(err))
        else resolve(res)
      })
    })
  }

  repair(partition: number | undefined, timeoutMs: number): Promise<RepairResponseMsg> {
    return new Promise((resolve, reject) => {
      this.client.repair(
        { partition: partition ?? 0, onePartition: partition !== undefined },
        { deadline: Date.now() + timeoutMs },
        (err: unknown, res: RepairResponseMsg) => (err ? reject(fromServiceError(err)) : resolve(res)),
      )
    })
  }

  compact(timeoutMs: number): Promise<{ node: string; durationMs: number }> {
    return new Promise((resolve, reject) => {
      this.client.compact({}, { deadline: Date.now() + timeoutMs }, (err: unknown, res: { node: string; durationMs: number }) => (err ? reject(fromServiceError(err)) : resolve({ node: res.node, durationMs: Number(res.durationMs) })))
    })
  }

  remove(nodes: readonly string[], timeoutMs: number, leave = false): Promise<{ epoch: number; replicasMoved: number }> {
    return new Promise((resolve, reject) => {
      this.client.remove({ node: nodes[0], also: nodes.slice(1), leave }, { deadline: Date.now() + timeoutMs }, (err: unknown, res: { epoch: number; replicasMoved: number }) => (err ? reject(fromServiceError(err)) : resolve(res)))
    })
  }

  cancel(timeoutMs: number): Promise<{ epoch: number; partitionsReverted: number }> {
    return new Promise((resolve, reject) => {
      this.client.cancel({}, { deadline: Date.now() + timeoutMs }, (err: unknown, res: { epoch: number; partitionsReverted: number }) => (err ? reject(fromServiceError(err)) : resolve(res)))
    })
  }

  plan(req: { kind: string; nodes: readonly string[]; commit: boolean }, timeoutMs: number): Promise<PlanMsg> {
    return new Promise((resolve, reject) => {
      this.client.plan(req, { deadline: Date.now() + timeoutMs }, (err: unknown, res: PlanMsg) => (err ? reject(fromServiceError(err)) : resolve(res)))
    })
  }

  commit(baseEpoch: number, timeoutMs: number): Promise<PlanMsg> {
    return new Promise((resolve, reject) => {
      this.client.commit({ baseEpoch }, { deadline: Date.now() + timeoutMs }, (err: unknown, res: PlanMsg) => (err ? reject(fromServiceError(err)) : resolve(res)))
    })
  }

  partitionSizes(partitions: readonly number[], timeoutMs: number): Promise<{ records: number[]; bytes: number[] }> {
    return new Promise((resolve, reject) => {
      this.client.partitionSizes({ partitions }, { deadline: Date.now() + timeoutMs }, (err: unknown, res: { records: unknown[]; bytes: unknown[] }) =>
        err ? reject(fromServiceError(err)) : resolve({ records: (res.records ?? []).map(Number), bytes: (res.bytes ?? []).map(Number) }),
      )
    })
  }

  scan(req: ScanRequestMsg, deadlineMs: number): grpc.ClientReadableStream<{ entries: { key: Buffer; value: Buffer }[] }> {
    const stream: grpc.ClientReadableStream<{ entries: { key: Buffer; value: Buffer }[] }> = this.client.scan(req, { deadline: deadlineMs })
    this.scans++
    let ended = false
    const end = (): void => {
      if (ended) return
      ended = true
      this.scans--
    }
    // Every call ends with its status (after its last page, an error or a cancel).
    stream.once('status', end)
    stream.once('close', end)
    return stream
  }

  close(): void {
    this.stream.close()
  }
}

/** A PlanResponse as decoded. */
export interface PlanMsg {
  baseEpoch: number | string
  kind: string
  nodes: string[]
  moves: { partition: number; from: string[]; to: string[]; replicas: string[] }[]
  replicasMoved: number
  epoch: number | string
}
