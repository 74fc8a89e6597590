import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { FrameBatcher } from './frame-batcher.js'
import type { GossipMsg, PeerRequestMsg, PeerRequestFrameMsg, PeerResponseFrameMsg, PeerResponseMsg } from './messages.js'
import { PendingTable } from './pending-table.js'
import { PeerClient } from './proto.js'
import { channelOptions, fromServiceError } from './status.js'

export type PeerRequest = Omit<PeerRequestMsg, 'id'>

function requestBytes(req: PeerRequest): number {
  let bytes = 16
  for (const k of req.keys) bytes += k.length
  for (const r of req.records) bytes += r.length
  return bytes
}

/**
 * One long-lived bidirectional stream to a peer node. Requests made in the same event-loop
 * turn travel in one frame; replies are matched by id. When the stream breaks, everything in
 * flight fails at once with UNAVAILABLE (the coordinator moves on to other replicas) and the
 * next request opens a new stream.
 */
export class PeerChannel {
  private readonly client: grpc.Client & Record<string, Function>
  private stream: grpc.ClientDuplexStream<PeerRequestFrameMsg, PeerResponseFrameMsg> | undefined
  private readonly pending: PendingTable<PeerResponseMsg>
  private readonly batcher: FrameBatcher<PeerRequestMsg>
  private closed = false
  readonly createdAtMs = Date.now()
  /** Time of the last stream failure; cleared by the next reply. */
  private failedAtMs = 0

  constructor(
    readonly nodeId: string,
    readonly address: string,
    private readonly onSend?: (op: string) => void,
  ) {
    this.client = new PeerClient(address, grpc.credentials.createInsecure(), channelOptions) as never
    this.pending = new PendingTable(`node ${nodeId} (${address})`)
    this.batcher = new FrameBatcher((requests) => this.sendFrame(requests), frameOpsMax, frameBytesMax)
  }

  /** Requests awaiting a reply from this peer (the least-connections signal). */
  get inFlight(): number {
    return this.pending.size + this.batcher.pending
  }

  /** False while the transport is known to be broken: callers skip this peer without waiting. */
  get reachable(): boolean {
    if (this.closed) return false
    const state = this.client.getChannel().getConnectivityState(false)
    return state !== grpc.connectivityState.TRANSIENT_FAILURE && state !== grpc.connectivityState.SHUTDOWN
  }

  get recentlyFailed(): boolean {
    return this.failedAtMs !== 0 && Date.now() - this.failedAtMs < 1000
  }

  request(req: PeerRequest, timeoutMs: number): Promise<PeerResponseMsg> {
    if (this.closed) return Promise.reject(new KumoError('CLOSED', 'peer channel closed'))
    if (!this.reachable) {
      // Ask for a reconnect so the channel recovers without waiting for the next request.
      this.client.getChannel().getConnectivityState(true)
      return Promise.reject(new KumoError('UNAVAILABLE', `node ${this.nodeId} (${this.address}) is unreachable`))
    }
    this.onSend?.(req.op)
    return new Promise<PeerResponseMsg>((resolve, reject) => {
      const id = this.pending.add(timeoutMs, resolve, reject)
      this.batcher.push({ ...req, id }, requestBytes(req))
    }).then((res) => {
      if (res.errorCode !== '') {
        throw new KumoError(
          (res.errorCode as KumoError['code']) ?? 'INTERNAL',
          `node ${this.nodeId}: ${res.errorMessage}`,
        )
      }
      return res
    })
  }

  private openStream(): grpc.ClientDuplexStream<PeerRequestFrameMsg, PeerResponseFrameMsg> {
    const stream = this.client.exchange() as grpc.ClientDuplexStream<PeerRequestFrameMsg, PeerResponseFrameMsg>
    stream.on('data', (frame: PeerResponseFrameMsg) => {
      this.failedAtMs = 0
      for (const res of frame.responses) this.pending.resolve(res.id, res)
    })
    const broken = (err?: unknown): void => {
      if (this.stream !== stream) return
      this.stream = undefined
      this.failedAtMs = Date.now()
      const reason = err === undefined ? 'stream ended' : fromServiceError(err).message
      this.pending.rejectAll(new KumoError('UNAVAILABLE', `node ${this.nodeId} (${this.address}): ${reason}`))
    }
    stream.on('error', broken)
    stream.on('end', () => broken())
    stream.on('close', () => broken())
    return stream
  }

  private sendFrame(requests: PeerRequestMsg[]): void {
    if (this.closed) return
    if (this.stream === undefined) this.stream = this.openStream()
    this.stream.write({ requests })
  }

  gossip(message: GossipMsg, timeoutMs: number): Promise<GossipMsg> {
    return new Promise((resolve, reject) => {
      this.client.gossip(message, { deadline: Date.now() + timeoutMs }, (err: unknown, res: GossipMsg) => {
        if (err) reject(fromServiceError(err))
        else resolve(res)
      })
    })
  }

  /** Closes the channel; requests in flight fail with `code` (UNAVAILABLE lets callers fail over). */
  close(code: 'CLOSED' | 'UNAVAILABLE' = 'CLOSED'): void {
    if (this.closed) return
    this.closed = true
    this.batcher.drain()
    this.pending.rejectAll(new KumoError(code, `channel to node ${this.nodeId} closed`))
    this.pending.close()
    this.stream?.cancel()
    this.stream = undefined
    this.client.close()
  }
}

const redialMs = 50

/** Channels to peers by node id; replaced when a node's address changes or it is back. */
export class PeerPool {
  private readonly channels = new Map<string, PeerChannel>()

  constructor(private readonly onSend?: (op: string) => void) {}

  /**
   * The channel to a node. Callers ask only for nodes they believe alive, so a channel stuck in
   * reconnect backoff (grpc-js fails calls at once until the backoff ends, even if the node is
   * back) is replaced by a fresh one, at most every `redialMs`.
   */
  get(nodeId: string, address: string): PeerChannel {
    let channel = this.channels.get(nodeId)
    if (channel !== undefined && (channel.address !== address || (!channel.reachable && Date.now() - channel.createdAtMs > redialMs))) {
      channel.close('UNAVAILABLE')
      channel = undefined
    }
    if (channel === undefined) {
      channel = new PeerChannel(nodeId, address, this.onSend)
      this.channels.set(nodeId, channel)
    }
    return channel
  }

  /**
   * Drops the channel to a node, so the next request dials afresh. Used when a node restarts:
   * the old channel may sit in reconnect backoff for a while after the node is back.
   */
  reset(nodeId: string): void {
    const channel = this.channels.get(nodeId)
    if (channel === undefined) return
    this.channels.delete(nodeId)
    // In-flight requests on the old channel fail over as on any broken stream.
    channel.close('UNAVAILABLE')
  }

  find(nodeId: string): PeerChannel | undefined {
    return this.channels.get(nodeId)
  }

  close(): void {
    for (const channel of this.channels.values()) channel.close()
    this.channels.clear()
  }
}
