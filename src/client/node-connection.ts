import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { FrameBatcher } from '../wire/frame-batcher.js'
import type { RepairResponseMsg, RequestFrameMsg, RequestMsg, ResponseFrameMsg, ResponseMsg, ScanRequestMsg, TopologyMsg } from '../wire/messages.js'
import { PendingTable } from '../wire/pending-table.js'
import { KvClient } from '../wire/proto.js'
import { channelOptions, fromServiceError } from '../wire/status.js'

function requestBytes(req: RequestMsg): number {
  let bytes = 24 + req.key.length + req.value.length
  for (const op of req.ops) bytes += 8 + op.key.length + op.value.length
  for (const key of req.keys) bytes += 4 + key.length
  return bytes
}

/**
 * The client's link to one node: a Pipeline stream carrying every request made in one
 * event-loop turn as one frame, replies matched by id.
 */
export class NodeConnection {
  private readonly client: grpc.Client & Record<string, Function>
  private stream: grpc.ClientDuplexStream<RequestFrameMsg, ResponseFrameMsg> | undefined
  private readonly pending: PendingTable<ResponseMsg>
  private readonly batcher: FrameBatcher<RequestMsg>
  private closed = false
  readonly createdAtMs = Date.now()

  constructor(
    readonly nodeId: string,
    readonly address: string,
    private readonly onEpoch: (epoch: number) => void,
  ) {
    this.client = new KvClient(address, grpc.credentials.createInsecure(), channelOptions) as never
    this.pending = new PendingTable(`node ${nodeId} (${address})`)
    this.batcher = new FrameBatcher((requests) => this.send(requests), frameOpsMax, frameBytesMax)
  }

  get inFlight(): number {
    return this.pending.size + this.batcher.pending
  }

  /** False while the transport is known to be broken, so the client skips it at once. */
  get reachable(): boolean {
    if (this.closed) return false
    const state = this.client.getChannel().getConnectivityState(false)
    return state !== grpc.connectivityState.TRANSIENT_FAILURE && state !== grpc.connectivityState.SHUTDOWN
  }

  request(req: Omit<RequestMsg, 'id'>, timeoutMs: number): Promise<ResponseMsg> {
    if (this.closed) return Promise.reject(new KumoError('CLOSED', 'client closed'))
    if (!this.reachable) {
      this.client.getChannel().getConnectivityState(true)
      return Promise.reject(new KumoError('UNAVAILABLE', `node ${this.nodeId} (${this.address}) is unreachable`))
    }
    return new Promise<ResponseMsg>((resolve, reject) => {
      const id = this.pending.add(timeoutMs, resolve, reject)
      const full = req as RequestMsg
      full.id = id
      this.batcher.push(full, requestBytes(full))
    })
  }

  private openStream(): grpc.ClientDuplexStream<RequestFrameMsg, ResponseFrameMsg> {
    const stream = this.client.pipeline() as grpc.ClientDuplexStream<RequestFrameMsg, ResponseFrameMsg>
    stream.on('data', (frame: ResponseFrameMsg) => {
      if (frame.epoch) this.onEpoch(frame.epoch)
      for (const res of frame.responses) this.pending.resolve(res.id, res)
    })
    const broken = (err?: unknown): void => {
      if (this.stream !== stream) return
      this.stream = undefined
      const reason = err === undefined ? 'stream closed' : fromServiceError(err).message
      this.pending.rejectAll(new KumoError('UNAVAILABLE', `node ${this.nodeId} (${this.address}): ${reason}`))
    }
    stream.on('error', broken)
    stream.on('end', () => broken())
    stream.on('close', () => broken())
    return stream
  }

  private send(requests: RequestMsg[]): void {
    if (this.closed) return
    if (this.stream === undefined) this.stream = this.openStream()
    this.stream.write({ requests })
  }

  topology(timeoutMs: number): Promise<TopologyMsg> {
    return new Promise((resolve, reject) => {
      this.client.topology({}, { deadline: Date.now() + timeoutMs }, (err: unknown, res: TopologyMsg) => {
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

  scan(req: ScanRequestMsg, deadlineMs: number): grpc.ClientReadableStream<{ entries: { key: Buffer; value: Buffer }[] }> {
    return this.client.scan(req, { deadline: deadlineMs })
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.batcher.drain()
    this.pending.rejectAll(new KumoError('CLOSED', 'client closed'))
    this.pending.close()
    this.stream?.end()
    this.stream = undefined
    this.client.close()
  }
}
