import * as grpc from '@grpc/grpc-js'
import { KumoError } from '../core/errors.js'
import { frameBytesMax, frameOpsMax } from '../core/limits.js'
import { FrameBatcher } from './frame-batcher.js'
import { PendingTable } from './pending-table.js'
import { fromServiceError } from './status.js'

interface Frame<T> {
  requests?: T[]
  responses?: T[]
}

/**
 * Many requests over one long-lived bidirectional gRPC stream. Requests made in the same
 * event-loop turn travel in one frame (`{ requests }`); replies come back in frames
 * (`{ responses }`) and are matched by id. When the stream breaks, everything in flight fails
 * at once with UNAVAILABLE (callers move on to another node) and the next request opens a new
 * stream. Used by the client (Pipeline) and between nodes (Exchange).
 */
export class MultiplexedStream<Req extends { id: number }, Res extends { id: number }> {
  private stream: grpc.ClientDuplexStream<Frame<Req>, Frame<Res>> | undefined
  private readonly pending: PendingTable<Res>
  private readonly batcher: FrameBatcher<Req>
  private closed = false
  readonly createdAtMs = Date.now()

  constructor(
    private readonly client: grpc.Client & Record<string, Function>,
    /** The client method that opens the stream (`pipeline`, `exchange`). */
    private readonly method: string,
    /** Names the other end in error messages. */
    private readonly describe: string,
    private readonly bytesOf: (req: Req) => number,
    /** Sees every response frame before its responses are matched. */
    private readonly onFrame?: (frame: Frame<Res>) => void,
  ) {
    this.pending = new PendingTable(describe)
    this.batcher = new FrameBatcher((requests) => this.send(requests), frameOpsMax, frameBytesMax)
  }

  /** Requests awaiting a reply (the least-connections signal). */
  get inFlight(): number {
    return this.pending.size + this.batcher.pending
  }

  /** False while the transport is known to be broken: callers skip this node without waiting. */
  get reachable(): boolean {
    if (this.closed) return false
    const state = this.client.getChannel().getConnectivityState(false)
    return state !== grpc.connectivityState.TRANSIENT_FAILURE && state !== grpc.connectivityState.SHUTDOWN
  }

  /**
   * Sends `req` (its id is assigned here) and resolves with the reply. `immediate`: the frame
   * goes out now, with whatever else is queued, instead of at the end of the turn.
   */
  request(req: Omit<Req, 'id'>, timeoutMs: number, immediate = false): Promise<Res> {
    if (this.closed) return Promise.reject(new KumoError('CLOSED', `${this.describe}: closed`))
    if (!this.reachable) {
      // Ask for a reconnect so the channel recovers without waiting for the next request.
      this.client.getChannel().getConnectivityState(true)
      return Promise.reject(new KumoError('UNAVAILABLE', `${this.describe} is unreachable`))
    }
    return new Promise<Res>((resolve, reject) => {
      const full = req as Req
      full.id = this.pending.add(timeoutMs, resolve, reject)
      this.batcher.push(full, this.bytesOf(full))
      if (immediate) this.batcher.flush()
    })
  }

  /** How long the other end has recently taken to answer (AnswerTime), or undefined. */
  answerMs(): number | undefined {
    return this.pending.answerMs()
  }

  private open(): grpc.ClientDuplexStream<Frame<Req>, Frame<Res>> {
    const stream = this.client[this.method]!() as grpc.ClientDuplexStream<Frame<Req>, Frame<Res>>
    stream.on('data', (frame: Frame<Res>) => {
      this.onFrame?.(frame)
      const now = performance.now()
      for (const res of frame.responses ?? []) this.pending.resolve(res.id, res, now)
    })
    const broken = (err?: unknown): void => {
      if (this.stream !== stream) return
      this.stream = undefined
      const reason = err === undefined ? 'stream closed' : fromServiceError(err).message
      this.pending.rejectAll(new KumoError('UNAVAILABLE', `${this.describe}: ${reason}`))
    }
    stream.on('error', broken)
    stream.on('end', () => broken())
    stream.on('close', () => broken())
    return stream
  }

  private send(requests: Req[]): void {
    if (this.closed) return
    if (this.stream === undefined) this.stream = this.open()
    this.stream.write({ requests })
  }

  /** Closes the stream; requests in flight fail with `code` (UNAVAILABLE lets callers fail over). */
  close(code: 'CLOSED' | 'UNAVAILABLE' = 'CLOSED'): void {
    if (this.closed) return
    this.closed = true
    this.batcher.drain()
    this.pending.rejectAll(new KumoError(code, `${this.describe}: closed`))
    this.pending.close()
    this.stream?.cancel()
    this.stream = undefined
  }
}
