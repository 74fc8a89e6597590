import { KumoError } from '../core/errors.js'
import { peerRequestMsgBytes, type GossipMsg, type PeerRequestMsg, type PeerResponseMsg } from './messages.js'
import { Responsiveness, type ResponsivenessConfig } from '../core/responsiveness.js'
import { MultiplexedStream } from './multiplexed-stream.js'
import { noPeerFields } from './peer-fields.js'
import { PeerClient } from './proto.js'
import { channelOptions, fromServiceError } from './status.js'
import { insecureChannels, secured, type ChannelSecurity } from './channel-security.js'

export type PeerRequest = Omit<PeerRequestMsg, 'id'>

/** The link to one peer node: its Exchange stream for replica traffic, and gossip calls. */
export class PeerChannel {
  private readonly stream: MultiplexedStream<PeerRequestMsg, PeerResponseMsg>

  constructor(
    readonly nodeId: string,
    readonly address: string,
    private readonly onSend?: (op: string) => void,
    responsiveness?: Responsiveness,
    security: ChannelSecurity = insecureChannels,
  ) {
    // A seed's channel (id "seed:<address>") accepts any node's certificate; a peer's, only its own.
    const expectedNodeId = nodeId.startsWith('seed:') ? undefined : nodeId
    this.stream = new MultiplexedStream(() => new PeerClient(address, ...secured(security(expectedNodeId, address), channelOptions)), {
      method: 'exchange',
      describe: `node ${nodeId} (${address})`,
      bytesOf: peerRequestMsgBytes,
      // A read of no keys: answered at once.
      probe: { ...noPeerFields, op: 'READ_LOCAL' },
      ...(responsiveness === undefined ? {} : { responsiveness }),
    })
  }

  get createdAtMs(): number {
    return this.stream.createdAtMs
  }

  /** Requests awaiting a reply from this peer (the least-connections signal). */
  get inFlight(): number {
    return this.stream.inFlight
  }

  /** How long this peer has recently taken to answer (AnswerTime), or undefined. */
  answerMs(): number | undefined {
    return this.stream.answerMs()
  }

  /** False while the transport is known to be broken: callers skip this peer without waiting. */
  get reachable(): boolean {
    return this.stream.reachable
  }

  /** Reachable, and not avoided for leaving a request unanswered (Responsiveness). */
  get usable(): boolean {
    return this.stream.usable
  }

  /** How long a replica request of `bytes` to this peer may wait, from its measured answer times. */
  replicaTimeoutMs(bytes = 0): number {
    return this.stream.replicaTimeoutMs(bytes)
  }

  /** Sends a replica request; an error answer rejects with the peer's error code. */
  async request(req: PeerRequest, timeoutMs: number): Promise<PeerResponseMsg> {
    this.onSend?.(req.op)
    const res = await this.stream.request(req, timeoutMs)
    if (res.errorCode !== '') throw new KumoError(res.errorCode as KumoError['code'], `node ${this.nodeId}: ${res.errorMessage}`)
    return res
  }

  /** A gossip exchange. Its round trip times the peer like a replica request (it rides the same connection). */
  gossip(message: GossipMsg, timeoutMs: number): Promise<GossipMsg> {
    const sentAt = performance.now()
    return new Promise((resolve, reject) => {
      this.stream.client.gossip(message, { deadline: Date.now() + timeoutMs }, (err: unknown, res: GossipMsg) => {
        if (err) {
          const error = fromServiceError(err)
          if (error.code === 'TIMEOUT') this.stream.noteTimeout(performance.now() - sentAt)
          reject(error)
        } else {
          this.stream.noteAnswer(performance.now() - sentAt)
          resolve(res)
        }
      })
    })
  }

  /** Closes the channel; requests in flight fail with `code` (UNAVAILABLE lets callers fail over). */
  close(code: 'CLOSED' | 'UNAVAILABLE' = 'CLOSED'): void {
    this.stream.close(code)
  }
}

const redialMs = 50

/** Channels to peers by node id; replaced when a node's address changes or it is back. */
export class PeerPool {
  private readonly channels = new Map<string, PeerChannel>()
  /** Per peer, kept across its channels (a replaced channel must not make an avoided peer look fresh). */
  private readonly responsiveness = new Map<string, { address: string; state: Responsiveness }>()

  constructor(
    private readonly onSend?: (op: string) => void,
    private readonly responsivenessConfig?: Partial<ResponsivenessConfig>,
    private readonly security: ChannelSecurity = insecureChannels,
  ) {}

  private responsivenessOf(nodeId: string, address: string): Responsiveness {
    let entry = this.responsiveness.get(nodeId)
    if (entry === undefined || entry.address !== address) this.responsiveness.set(nodeId, (entry = { address, state: new Responsiveness(this.responsivenessConfig) }))
    return entry.state
  }

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
      channel = new PeerChannel(nodeId, address, this.onSend, this.responsivenessOf(nodeId, address), this.security)
      this.channels.set(nodeId, channel)
    }
    return channel
  }

  /** Per peer: times avoided for leaving a request unanswered, and its replica timeout now (ms). */
  responsivenessStats(): Map<string, { avoided: number; timeoutMs: number; usable: boolean }> {
    return new Map([...this.responsiveness].map(([id, entry]) => [id, { avoided: entry.state.avoidedCount, timeoutMs: entry.state.timeoutMs(), usable: entry.state.usable() }]))
  }

  find(nodeId: string): PeerChannel | undefined {
    return this.channels.get(nodeId)
  }

  close(): void {
    for (const channel of this.channels.values()) channel.close()
    this.channels.clear()
  }
}
